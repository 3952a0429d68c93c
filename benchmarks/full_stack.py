"""Per-stage CPU/GPU timings of the paper-size V2A stack with random weights.

Builds every full-size module (CLIP ViT-H/14 at 384 px, Synchformer ViT-B, the small_16k network,
the 16 kHz VAE decoder and BigVGAN) with random weights, runs one V2A request on a synthetic clip
through `Pipeline.generate` and prints the stage timings (seconds, and seconds per second of audio).
Random weights cost the same time as real ones; nothing is downloaded.

    python benchmarks/full_stack.py --duration 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from mfmjt.features.audio import MMAudioCodec
from mfmjt.features.base import FeatureStack
from mfmjt.features.clip import ClipTextEncoder, ClipVisualEncoder
from mfmjt.features.mel import MelConfig, MelConverter
from mfmjt.features.synchformer import SynchformerEncoder
from mfmjt.features.vae import VAE
from mfmjt.features.vocoder import BigVGANVocoder
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.pipeline import Pipeline
from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig

logger = logging.getLogger("benchmarks.full_stack")


def build_stack(device: str) -> tuple[Pipeline, dict[str, float]]:
    build: dict[str, float] = {}
    start = time.perf_counter()
    clip_model = open_clip.create_model("ViT-H-14-378-quickgelu", pretrained=None).eval()
    build["CLIP ViT-H/14"] = time.perf_counter() - start
    start = time.perf_counter()
    sync = SynchformerEncoder().eval()
    build["Synchformer"] = time.perf_counter() - start
    start = time.perf_counter()
    vae = VAE("16k")
    vae.remove_weight_norm()
    codec = MMAudioCodec(MelConverter(MelConfig.preset("16k")), vae, BigVGANVocoder("16k")).eval()
    build["VAE + BigVGAN"] = time.perf_counter() - start
    start = time.perf_counter()
    net = MFMJTNetwork(NetworkConfig.variant("small_16k"))
    build["network"] = time.perf_counter() - start
    features = FeatureStack(ClipVisualEncoder(clip_model), sync, ClipTextEncoder(clip_model), codec)
    return Pipeline(net, features, name="full-size random", device=device), build


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=2.0, help="clip seconds (8 s takes minutes on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    pipe, build = build_stack(args.device)
    params = {
        "CLIP": sum(p.numel() for p in pipe.features.clip.parameters()),
        "Synchformer": sum(p.numel() for p in pipe.features.sync.parameters()),
        "codec": sum(p.numel() for p in pipe.features.codec.parameters()),
        "network": sum(p.numel() for p in pipe.network.parameters()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(3, SceneConfig(duration=args.duration + 0.25))
        video = write_scene_mp4(scene, Path(tmp) / "clip.mp4")
        pipe.generate(prompt="warm-up", duration=1.0, cfg_strength=1.0)
        result = pipe.generate(video=video, prompt="a ball bounces", duration=args.duration, guidance="both")
    d = result.duration
    print(
        f"\nFull-size stack, random weights, {d:g} s clip, device {pipe.device} ({pipe.dtype}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("parameters: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in params.items()) + "\n")
    print("| stage | seconds | seconds per audio second |")
    print("|---|---|---|")
    for stage, secs in result.timings.items():
        print(f"| {stage} | {secs:.3f} | {secs / d:.3f} |")
    print("\nbuild (random init): " + ", ".join(f"{k} {v:.1f} s" for k, v in build.items()))


if __name__ == "__main__":
    main()
