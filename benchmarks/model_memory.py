"""Peak CPU memory and time of one request per MMAudio model, with random weights of the real size.

For each model, in a fresh process (so that peaks do not mix): build the network of the variant and
its audio codec (VAE + BigVGAN of the mode, real sizes, random weights), then generate 8 s of
text-to-audio in one step with CFG (one batched forward of the conditional and unconditional branch),
un-normalise and decode to a waveform. CLIP and Synchformer are not run (their weights are counted by
:mod:`mfmjt.memory`); the text features are random. Reports parameters, resident memory after building,
peak resident memory (``ru_maxrss``) and seconds per stage, and writes the table in Markdown.

    OMP_NUM_THREADS=1 python benchmarks/model_memory.py --out runs/model_memory.md
    python benchmarks/model_memory.py --models large_44k_v2 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger("model_memory")
MODELS = ("small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")
_GIB = 2**30


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@torch.inference_mode()
def measure_one(variant: str, duration: float, dtype: torch.dtype) -> dict:
    from mfmjt.config import SequenceLengths
    from mfmjt.features.audio import MMAudioCodec
    from mfmjt.features.mel import MelConverter
    from mfmjt.features.vae import VAE
    from mfmjt.features.vocoder import BigVGANVocoder
    from mfmjt.hub import pipeline_weights
    from mfmjt.model import MFMJTNetwork, NetworkConfig
    from mfmjt.sampler import predict_pair

    mode = pipeline_weights(variant).audio_mode
    rss_start = _rss_bytes()
    start = time.perf_counter()
    net = MFMJTNetwork(NetworkConfig.variant(variant)).to(dtype).eval()
    codec = MMAudioCodec(MelConverter(mode), VAE(mode).remove_weight_norm(), BigVGANVocoder(mode)).eval()
    build_s = time.perf_counter() - start
    rss_built = _rss_bytes()
    params = {
        "network": sum(t.numel() for t in net.state_dict().values()),
        "codec": sum(t.numel() for t in codec.state_dict().values()),
    }

    lengths = SequenceLengths.for_duration(duration, mode)
    text_f = torch.randn(1, 77, net.config.text_dim, generator=torch.Generator().manual_seed(0))
    clip_f, sync_f, _ = net.empty_features(1, lengths.clip, lengths.sync, text=False)
    start = time.perf_counter()
    cond = net.preprocess_conditions(clip_f, sync_f, text_f, lengths.latent)
    uncond = net.empty_conditions(1, lengths.latent, lengths.clip, lengths.sync)
    noise = torch.randn(1, lengths.latent, net.config.latent_dim, generator=torch.Generator().manual_seed(1))
    one = torch.tensor(1.0, dtype=torch.float64)
    u_c, u_u = predict_pair(net, noise.to(dtype), one, one, cond.cat(uncond))
    z0 = noise - (u_u + 4.5 * (u_c - u_u))
    network_s = time.perf_counter() - start
    start = time.perf_counter()
    wave = codec.decode(net.unnormalize(z0.to(dtype)).float())
    decode_s = time.perf_counter() - start
    assert wave.shape == (1, lengths.audio_samples), wave.shape
    return {
        "variant": variant,
        "mode": mode,
        "dtype": str(dtype).removeprefix("torch."),
        "duration": duration,
        "threads": torch.get_num_threads(),
        "parameters": params,
        "rss_start_gib": rss_start / _GIB,
        "rss_built_gib": rss_built / _GIB,
        "peak_gib": _peak_bytes() / _GIB,
        "build_s": build_s,
        "network_s": network_s,
        "decode_s": decode_s,
        "samples": lengths.audio_samples,
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | audio | network params | codec params | RSS after build (GiB) | peak RSS (GiB) "
        "| one step + CFG (s) | decode (s) |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['variant']} | {r['mode']} | {r['parameters']['network'] / 1e6:,.1f}M "
        f"| {r['parameters']['codec'] / 1e6:,.1f}M | {r['rss_built_gib']:.2f} | {r['peak_gib']:.2f} "
        f"| {r['network_s']:.1f} | {r['decode_s']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, help="write the Markdown table (and a .json next to it) here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dtype = getattr(torch, args.dtype)
    if args.one:
        print(json.dumps(measure_one(args.models[0], args.duration, dtype)))
        return 0
    rows = []
    for variant in args.models:
        logger.info("measuring %s (%s, %g s) in a fresh process", variant, args.dtype, args.duration)
        cmd = [sys.executable, __file__, "--one", "--models", variant, "--duration", str(args.duration)]
        done = subprocess.run([*cmd, "--dtype", args.dtype], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            logger.error("%s failed:\n%s", variant, done.stderr[-2000:])
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        logger.info("%s", json.dumps(rows[-1]))
        if args.out is not None:  # after each model, so a long run keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(markdown(rows))
            args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    return 0 if len(rows) == len(args.models) else 1


if __name__ == "__main__":
    raise SystemExit(main())
