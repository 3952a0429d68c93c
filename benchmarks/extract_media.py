"""Throughput of ``mfmjt extract --videos``: items per second for several decoding-worker counts.

Writes ``--n`` H.264/AAC test videos (moving noise, a tone, ``--size`` pixels, 25 fps) into a
temporary folder, then extracts them with the chosen feature stack once per ``--workers`` value,
and once with decoding alone (no encoders) to show which side limits the rate. Prints a markdown
table.

    python benchmarks/extract_media.py                         # embedded default stack, CPU
    python benchmarks/extract_media.py --features mmaudio-16k --device cuda --n 256 --workers 0 4 8
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mfmjt.data.extract_media import (  # noqa: E402
    ExtractMediaConfig,
    clip_spec,
    extract_media,
    pick_device,
)
from mfmjt.data.feature_stacks import resolve_feature_stack  # noqa: E402
from mfmjt.data.sources import UnitDataset, find_media  # noqa: E402
from mfmjt.data.tsv import read_caption_tsv  # noqa: E402
from mfmjt.media import VIDEO_SUFFIXES  # noqa: E402


def write_video(path: Path, seconds: float, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sr = 44100
    t = np.arange(round(seconds * sr)) / sr
    audio = (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32)
    with av.open(str(path), mode="w") as out:
        v = out.add_stream("libx264", rate=Fraction(25))
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=sr, layout="mono")
        base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for i in range(round(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = sr, start
            out.mux(a.encode(frame))
        out.mux(a.encode(None))


def decode_only(config: ExtractMediaConfig, stack) -> float:
    """Rows per second of decoding alone (in this process)."""
    rows = read_caption_tsv(config.tsv)
    dataset = UnitDataset(
        rows, find_media(config.media_dir, VIDEO_SUFFIXES), clip_spec(config, stack), video=True
    )
    start = time.perf_counter()
    for i in range(len(dataset)):
        assert dataset[i].failure is None, dataset[i].failure
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n", type=int, default=16, help="videos")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--precision", default="tf32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    device = pick_device(args.device)
    stack = resolve_feature_stack(args.features, device)
    with tempfile.TemporaryDirectory(prefix="mfmjt-bench-extract-") as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        for i in range(args.n):
            write_video(videos / f"v{i:04d}.mp4", args.duration + 0.5, *args.size, seed=i)
        tsv = root / "t.tsv"
        tsv.write_text("id\tlabel\n" + "".join(f"v{i:04d}\ttone {i}\n" for i in range(args.n)))

        def make(out: str, workers: int) -> ExtractMediaConfig:
            return ExtractMediaConfig(
                out=root / out,
                tsv=tsv,
                videos=videos,
                duration=args.duration,
                batch_size=args.batch_size,
                workers=workers,
                device=str(device),
                precision=args.precision,
                progress=False,
            )

        rows = [("decoding only, 1 process", decode_only(make("unused", 0), stack.stack))]
        for workers in args.workers:
            summary = extract_media(make(f"store{workers}", workers), stack)
            rows.append((f"extract, {workers} decoding workers", summary.items_per_s))

    print(
        f"\n{args.n} videos of {args.duration:g} s at {args.size[0]}x{args.size[1]}, stack {stack.name}, "
        f"device {device}, batch {args.batch_size}, {torch.get_num_threads()} torch threads, "
        f"{platform.processor() or platform.machine()}\n"
    )
    print("| run | items/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} |")


if __name__ == "__main__":
    main()
