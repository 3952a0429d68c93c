"""One read interface over both store layouts: mfmjt's own and MMAudio's.

:func:`open_feature_store` detects the layout of a directory; :class:`TrainingStore` is what
training relies on; :func:`store_latent_stats` gives either layout's latent normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from mfmjt.data.mmaudio_store import MMAudioStore, is_mmaudio_store
from mfmjt.feature_store import FORMAT, FeatureStore, _compute_latent_stats, latent_stats
from mfmjt.store_base import TrainingStoreBase

# Keys of a training batch: the five feature arrays, then per-item has_video and the item index.
FEATURE_NAMES = ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f")


@runtime_checkable
class TrainingStore(Protocol):
    """What training reads from a store (``FeatureStore`` and ``MMAudioStore`` both provide it, through
    their one base class :class:`TrainingStoreBase`)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]  # per-item (length, channels) of FEATURE_NAMES

    def __len__(self) -> int: ...

    @property
    def duration(self) -> float | None: ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def extra(self) -> dict[str, Any]: ...

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]: ...

    def empty_text_features(self) -> torch.Tensor | None: ...


def store_layout(path: str | Path) -> str:
    """``"mfmjt"`` or ``"mmaudio"``; ValueError naming both layouts when it is neither."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"feature store {path} does not exist: extract features first")
    meta = path / "meta.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta} is not valid JSON: {err}") from None
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return "mfmjt"
        if is_mmaudio_store(path):
            return "mmaudio"
    raise ValueError(
        f"no feature store at {path}: expected either an mfmjt store (meta.json and .npy arrays written by "
        "mfmjt extract) or MMAudio's extracted features (a tensordict memmap directory with meta.json, "
        "mean.memmap, std.memmap, text_features.memmap and a .tsv beside it)"
    )


def open_feature_store(path: str | Path) -> FeatureStore | MMAudioStore:
    """Open a store of either layout (detected from its ``meta.json``)."""
    return FeatureStore(path) if store_layout(path) == "mfmjt" else MMAudioStore(path)


def store_has_video(store: TrainingStore) -> np.ndarray:
    """Per-item bool: whether the item carries real video features."""
    if isinstance(store, MMAudioStore):
        return np.full(len(store), store.has_video)
    return np.asarray(store.array("has_video"), dtype=bool)


def store_has_audio(store: TrainingStore) -> bool:
    """Whether a store's items carry audio latents (a store extracted without audio has none)."""
    return "latent_mean" in store.shapes


def store_latent_stats(store: TrainingStore) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)`` [C] float32 over (items, time) of the stored posterior means
    (MMAudio's ``compute_latent_stats``: unbiased std)."""
    if isinstance(store, FeatureStore):
        return latent_stats(store)
    mean, std = _compute_latent_stats(store.array("latent_mean"))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def array_label(store: TrainingStore, name: str) -> str:
    """How a user knows an array: MMAudio's name for MMAudio stores, ours otherwise."""
    if isinstance(store, MMAudioStore):
        return f"{store.mmaudio_name(name)} ({name})"
    return name


__all__ = [
    "FEATURE_NAMES",
    "TrainingStore",
    "TrainingStoreBase",
    "array_label",
    "open_feature_store",
    "store_has_audio",
    "store_has_video",
    "store_latent_stats",
    "store_layout",
]
