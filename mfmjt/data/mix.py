"""Several feature stores as one training set, each drawn at its own share of every batch.

``mfmjt train --store vgg:3 --store audiocaps:1`` trains on batches of which 3/4 come from
``vgg`` and 1/4 from ``audiocaps``. Without weights each store's share is its size (the stores
are simply concatenated, as MMAudio's ``MultiModalDataset`` does); ``DIR:xK`` counts a store K
times in that concatenation (MMAudio's ``vgg_oversample_rate`` 5 is ``--store vgg-train:x5``).

The batch index stream is a pure function of (seed, rank, step), so a resumed run continues it
exactly without saved loader state:

- slots are dealt to stores by cumulative quotas: among the first ``G`` slots of a rank, store
  ``s`` owns ``floor(G·F_s) - floor(G·F_{s-1})`` (``F`` the cumulative shares, exact fractions),
  so every batch holds ``floor`` or ``ceil`` of ``B·share`` items of each store;
- store ``s``'s items come in order from its own stream: ``DistributedSampler`` epochs (seed
  ``seed + s``) back to back, over the items not held out for validation.

With one store and nothing held out this is exactly the stream of a single-store run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from mfmjt.data.stores import TrainingStore

VALIDATION_SEED = 20_240_917  # fixed: the held-out items do not change with --seed


@dataclass(frozen=True)
class StoreSpec:
    """A store directory with an optional sampling weight (``DIR:WEIGHT``, the store's relative
    share of a batch) or repeat count (``DIR:xK``, its size counted K times)."""

    path: Path
    weight: float | None = None
    repeat: float | None = None

    @classmethod
    def parse(cls, text: str | Path) -> StoreSpec:
        text = str(text)
        head, sep, tail = text.rpartition(":")
        if not (sep and head):
            return cls(Path(text))
        repeat = tail[:1] in ("x", "X")
        try:
            value = float(tail[1:] if repeat else tail)
        except ValueError:
            return cls(Path(text))  # a ':' inside the path
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"store weight must be a positive number, got {tail!r} in {text!r}")
        return cls(Path(head), repeat=value) if repeat else cls(Path(head), weight=value)

    def __str__(self) -> str:
        if self.repeat is not None:
            return f"{self.path}:x{self.repeat:g}"
        return str(self.path) if self.weight is None else f"{self.path}:{self.weight:g}"


def held_out_items(n_items: int, count: int) -> np.ndarray:
    """The ``count`` items of a store kept out of training for validation (sorted; fixed seed)."""
    if count < 0 or count >= n_items:
        raise ValueError(
            f"cannot hold out {count} of {n_items} items for validation (need 0 <= K < {n_items})"
        )
    order = np.random.default_rng(VALIDATION_SEED).permutation(n_items)
    return np.sort(order[:count])


class ItemStream:
    """Items of one store for one rank: ``DistributedSampler`` epochs over ``items``, back to back."""

    def __init__(self, items: np.ndarray, rank: int, world_size: int, seed: int) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        self.sampler = DistributedSampler(
            range(len(self.items)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.per_rank = self.sampler.num_samples
        self._cache: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            self.sampler.set_epoch(epoch)
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            self._cache[epoch] = self.items[list(iter(self.sampler))].tolist()
        return self._cache[epoch]

    def take(self, position: int, count: int) -> list[int]:
        """Items at stream positions ``[position, position + count)``."""
        out: list[int] = []
        while len(out) < count:
            epoch, offset = divmod(position, self.per_rank)
            n = min(count - len(out), self.per_rank - offset)
            out.extend(self._epoch(epoch)[offset : offset + n])
            position += n
        return out


class StoreMix:
    """The stores of a run as one dataset; global index ``offset[s] + i`` is item ``i`` of store ``s``.

    ``__getitems__`` (what the DataLoader calls) returns the stacked batch in the order asked, with
    the keys of :meth:`TrainingStore.get_batch` plus ``store`` (each item's store number).
    """

    def __init__(
        self,
        stores: Sequence[TrainingStore],
        weights: Sequence[float | None] | None = None,
        repeats: Sequence[float | None] | None = None,
    ) -> None:
        if not stores:
            raise ValueError("give at least one feature store")
        self.stores = list(stores)
        weights = list(weights) if weights is not None else [None] * len(stores)
        repeats = list(repeats) if repeats is not None else [None] * len(stores)
        if len(weights) != len(stores) or len(repeats) != len(stores):
            raise ValueError(f"{len(weights)} weights and {len(repeats)} repeats for {len(stores)} stores")
        given = [w is not None for w in weights]
        if any(given) and (not all(given) or any(r is not None for r in repeats)):
            raise ValueError(
                "give a sampling weight to every store (DIR:WEIGHT) or to none (shares by size, DIR:xK "
                "counting a store K times)"
            )
        if all(given):
            raw = [float(w) for w in weights]  # type: ignore[arg-type]
        else:
            raw = [len(s) * (1.0 if r is None else float(r)) for s, r in zip(stores, repeats, strict=True)]
        self.weights = raw
        total = sum(Fraction(w) for w in raw)
        cumulative, acc = [], Fraction(0)
        for w in raw:
            acc += Fraction(w)
            cumulative.append(acc / total)
        self.cumulative = cumulative  # F_s, exact; the last is 1
        self.offsets = np.cumsum([0, *(len(s) for s in stores)]).tolist()

    @property
    def shares(self) -> list[float]:
        """Each store's expected share of a batch."""
        prev = [Fraction(0), *self.cumulative[:-1]]
        return [float(c - p) for c, p in zip(self.cumulative, prev, strict=True)]

    def __len__(self) -> int:
        return self.offsets[-1]

    def slots_before(self, store: int, slots: int) -> int:
        """How many of a rank's first ``slots`` batch slots belong to ``store``."""
        low = self.cumulative[store - 1] if store else Fraction(0)
        return math.floor(slots * self.cumulative[store]) - math.floor(slots * low)

    def locate(self, index: int) -> tuple[int, int]:
        """(store, item) of a global index."""
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return s, index - self.offsets[s]

    def get_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        parts, order = [], []
        for s in np.unique(which):
            rows = np.flatnonzero(which == s)
            batch = self.stores[s].get_batch(idx[rows] - self.offsets[s])
            batch["store"] = torch.full((len(rows),), int(s), dtype=torch.int64)
            parts.append(batch)
            order.append(rows)
        if len(parts) == 1:
            return parts[0]
        inverse = np.argsort(np.concatenate(order), kind="stable")
        index = torch.from_numpy(inverse)
        return {k: torch.cat([p[k] for p in parts])[index] for k in parts[0]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.get_batch(indices)


class MixedIndexStream:
    """Global indices of one rank's batch at every step (see the module docstring)."""

    def __init__(
        self,
        mix: StoreMix,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        held_out: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        self.mix, self.batch_size = mix, batch_size
        held_out = held_out or {}
        self.streams = []
        for s, store in enumerate(mix.stores):
            items = np.arange(len(store))
            if s in held_out and len(held_out[s]):
                items = np.setdiff1d(items, held_out[s])
            self.streams.append(ItemStream(items, rank, world_size, seed + s))

    def counts(self, step: int) -> list[int]:
        """Items of each store in batch ``step``."""
        lo, hi = step * self.batch_size, (step + 1) * self.batch_size
        return [self.mix.slots_before(s, hi) - self.mix.slots_before(s, lo) for s in range(len(self.streams))]

    def batch(self, step: int) -> list[int]:
        lo = step * self.batch_size
        out: list[int] = []
        for s, (stream, n) in enumerate(zip(self.streams, self.counts(step), strict=True)):
            if n:
                items = stream.take(self.mix.slots_before(s, lo), n)
                out.extend(self.mix.offsets[s] + i for i in items)
        return out


class BatchSampler:
    """The DataLoader's batch sampler: batches ``start .. stop - 1`` of a stream."""

    def __init__(self, stream: MixedIndexStream, start: int, stop: int) -> None:
        self.stream, self.start, self.stop = stream, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        return (self.stream.batch(s) for s in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


__all__ = ["BatchSampler", "ItemStream", "MixedIndexStream", "StoreMix", "StoreSpec", "held_out_items"]
