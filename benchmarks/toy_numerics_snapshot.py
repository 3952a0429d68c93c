"""Snapshot of the toy domain's numerics, to check that a refactor changes nothing.

Scenes (audio, frames, positions, events, captions, onsets) for a few seeds and configs, the
offline encoders' outputs on decoded scene mp4s (both sync token kinds), the text encoder, a fitted
codec's state and its encode/decode, and the SHA-256 of the scene mp4 files::

    python benchmarks/toy_numerics_snapshot.py runs/before.npz          # on the old commit
    python benchmarks/toy_numerics_snapshot.py runs/after.npz --compare runs/before.npz

``--compare`` exits non-zero and lists the arrays that differ (bitwise).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mfmjt import media
from mfmjt.onsets import detect_onsets
from mfmjt.toy.captions import caption_vocabulary
from mfmjt.toy.codec import OfflineAudioCodec
from mfmjt.toy.encoders import OfflineEncoderConfig
from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig
from mfmjt.toy.stack import make_offline_stack

logger = logging.getLogger("toy_snapshot")
SEEDS = (0, 1, 7, 123, 2_000_005)
CONFIGS = (
    SceneConfig(duration=2.0),
    SceneConfig(duration=3.0, text_only_prob=0.3, max_objects=4),
    SceneConfig(),
)


def snapshot() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    scenes = []
    for ci, cfg in enumerate(CONFIGS):
        for seed in SEEDS:
            s = make_scene(seed, cfg)
            key = f"c{ci}_s{seed}"
            out[key + "_audio"], out[key + "_pos"] = s.audio, s.positions
            if s.frames is not None:
                out[key + "_frames"] = s.frames
            out[key + "_caption"] = np.array(s.caption)
            truth = repr(s.events) + repr(s.continuous) + repr(s.objects) + repr(s.background)
            out[key + "_events"] = np.array(truth)
            out[key + "_onsets"] = detect_onsets(s.audio, s.sample_rate)
            scenes.append(s)
    out["vocab"] = np.array(" ".join(caption_vocabulary()))
    torch.manual_seed(0)
    codec = OfflineAudioCodec.fit([s.audio for s in scenes[:5]])
    out.update({"codec_" + k: v.numpy() for k, v in codec.state_dict().items()})
    for kind in ("acceleration", "projected"):
        stack = make_offline_stack(codec, OfflineEncoderConfig(sync_features=kind))
        with tempfile.TemporaryDirectory() as tmp:
            for s in scenes[:3]:
                path = write_scene_mp4(s, Path(tmp) / "scene.mp4")
                out[f"mp4_{kind}_{s.seed}"] = np.array(hashlib.sha256(path.read_bytes()).hexdigest())
                decoded = media.decode_video(path, 1.5)
                out[f"clip_{kind}_{s.seed}"] = stack.clip(decoded.clip_frames[None]).numpy()
                out[f"sync_{kind}_{s.seed}"] = stack.sync(decoded.sync_frames[None]).numpy()
        out[f"text_{kind}"] = stack.text(["a red ball bounces twice", ""]).numpy()
    mean, std = codec.encode(torch.from_numpy(scenes[0].audio)[None])
    out["enc_mean"], out["enc_std"] = mean.numpy(), std.numpy()
    out["dec"] = codec.decode(mean).numpy()
    return out


def differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [
        k
        for k in keys
        if k not in a or k not in b or a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="write the snapshot here (.npz)")
    parser.add_argument("--compare", type=Path, default=None, help="an earlier snapshot to compare with")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    data = snapshot()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **data)
    logger.info("wrote %d arrays to %s", len(data), args.out)
    if args.compare is None:
        return 0
    with np.load(args.compare) as earlier:
        bad = differing(dict(earlier), data)
    logger.info("%d arrays compared, %d differ%s", len(data), len(bad), f": {bad}" if bad else "")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
