"""Batch read speed of the two store layouts at MMAudio's real per-item shapes (8 s, 16 kHz).

Writes the same random items once as an mfmjt store (``.npy`` memory maps) and once in MMAudio's
layout (tensordict memmaps + TSV), then times random batches through the training read path
(``StoreMix.get_batch``, i.e. what the DataLoader calls), after one warm-up pass so the files are in
the page cache. Prints a markdown table of milliseconds per batch and MB/s.

    python benchmarks/store_read.py                       # 256 items, batch 64
    python benchmarks/store_read.py --items 1024 --batches 50
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mfmjt.data.mix import StoreMix
from mfmjt.data.mmaudio_store import MMAudioStoreWriter
from mfmjt.data.stores import open_feature_store
from mfmjt.feature_store import FeatureStoreWriter

SHAPES = {"latent": (250, 20), "clip_f": (64, 1024), "sync_f": (192, 768), "text_f": (77, 1024)}


def _write_both(root: Path, n: int, chunk: int = 32) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ids = [f"clip{i}" for i in range(n)]
    native = FeatureStoreWriter(root / "native", n, SHAPES)
    mm = MMAudioStoreWriter.create(root / "mm" / "vgg-train", ids, ["a dog barks"] * n, SHAPES)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        arrays = {
            "latent_mean": rng.standard_normal((b, *SHAPES["latent"]), dtype=np.float32),
            "latent_std": rng.random((b, *SHAPES["latent"]), dtype=np.float32),
            **{
                k: rng.standard_normal((b, *SHAPES[k]), dtype=np.float32)
                for k in ("clip_f", "sync_f", "text_f")
            },
        }
        native.write_batch(start, **arrays)
        mm.write_batch(list(range(start, start + b)), **arrays)
    native.close()
    mm.close()
    return root / "native", root / "mm" / "vgg-train"


def _time(path: Path, batches: int, batch_size: int) -> tuple[float, float]:
    mix = StoreMix([open_feature_store(path)])
    g = np.random.default_rng(1)
    draws = [g.integers(0, len(mix), batch_size) for _ in range(batches)]
    for idx in draws:  # warm-up: page cache
        mix.get_batch(idx)
    times = []
    for idx in draws:
        t0 = time.perf_counter()
        batch = mix.get_batch(idx)
        times.append(time.perf_counter() - t0)
    nbytes = sum(v.numel() * v.element_size() for v in batch.values())
    ms = statistics.median(times) * 1e3
    return ms, nbytes / (ms / 1e3) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        native, mm = _write_both(Path(tmp), args.items)
        rows = [
            (name, *_time(p, args.batches, args.batch_size))
            for name, p in (("mfmjt", native), ("MMAudio", mm))
        ]
    print(
        f"{args.items} items, batch {args.batch_size}, median of {args.batches}; "
        f"{platform.processor() or platform.machine()}"
    )
    print("| layout | ms per batch | MB/s |\n|---|---|---|")
    for name, ms, rate in rows:
        print(f"| {name} | {ms:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
