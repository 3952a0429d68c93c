"""Throughput of ``mfmjt score`` on the CPU: files per second, cold and with the reference side cached.

Writes ``--clips`` reference clips (44.1 kHz wav) and as many generated clips (16 kHz flac), 8 s each,
plus videos (25 fps, 64x48) when ``--video``; then scores the generated folder three times in one
process: with an empty embedding cache, against a second generated folder with the reference side
cached (the situation of scoring a new model), and fully cached. The extractors are random-weight
builds of the registry (``--extractors registry``: ``get_extractor(name, weights="random")``) or the
small log-mel projections of tests/projection_extractors.py (``--extractors projection``, the default
until the registry lands), so the numbers are the scorer's own cost (decoding, resampling, batching,
cache) plus whatever the extractors cost. Prints a markdown table, the machine and its load.

    nice -n 15 python benchmarks/score_throughput.py                 # 32 clips, audio metrics
    nice -n 15 python benchmarks/score_throughput.py --clips 64 --video
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from mfmjt.scoring import score

REPO = Path(__file__).resolve().parent.parent


def _audio(rate: int, seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.2 * np.sin(2 * np.pi * (150 + 40 * (seed % 20)) * t) + 0.05 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def _video(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for i in range(round(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _extractors(kind: str) -> dict | None:
    if kind == "registry":
        return None  # score() loads get_extractor(name, weights="random")
    sys.path.insert(0, str(REPO / "tests"))
    from projection_extractors import projection_extractors

    return projection_extractors()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--video", action="store_true", help="also IB-score and DeSync (decodes videos)")
    parser.add_argument("--extractors", choices=["projection", "registry"], default="projection")
    args = parser.parse_args()

    metrics = ["fad", "fd", "kl", "is", "fd_passt", "kl_passt", "is_panns"] + (["ib", "desync"] * args.video)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref, gen_a, gen_b, vids = (root / n for n in ("ref", "gen_a", "gen_b", "videos"))
        for d in (ref, gen_a, gen_b, vids):
            d.mkdir()
        for i in range(args.clips):
            sf.write(ref / f"c{i:04d}.wav", _audio(44_100, i, args.seconds), 44_100)
            sf.write(gen_a / f"c{i:04d}.flac", _audio(16_000, 1000 + i, args.seconds), 16_000)
            sf.write(gen_b / f"c{i:04d}.flac", _audio(16_000, 2000 + i, args.seconds), 16_000)
            if args.video:
                _video(vids / f"c{i:04d}.mp4", args.seconds, i)
        extractors = _extractors(args.extractors)
        common = dict(
            videos=vids if args.video else None,
            metric_names=metrics,
            duration=args.seconds,
            batch_size=args.batch_size,
            device="cpu",
            weights="random",
            extractors=extractors,
            cache_dir=root / "cache",
            progress=False,
        )
        rows = []
        for label, gen in (
            ("cold cache", gen_a),
            ("reference cached (new model)", gen_b),
            ("all cached", gen_b),
        ):
            start = time.perf_counter()
            result = score(gen, ref, **common)
            seconds = time.perf_counter() - start
            files = 2 * args.clips  # generated + reference
            rows.append((label, seconds, files / seconds, result.cache["hits"], result.cache["misses"]))

    load = os.getloadavg()
    print(
        f"{args.clips} generated + {args.clips} reference clips of {args.seconds:g} s; "
        f"metrics {' '.join(metrics)}; extractors: {args.extractors}; batch {args.batch_size}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
        f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("| run | seconds | files/s | cache hits | misses | speed-up vs cold |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, seconds, rate, hits, misses in rows:
        print(f"| {label} | {seconds:.2f} | {rate:.1f} | {hits} | {misses} | {rows[0][1] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
