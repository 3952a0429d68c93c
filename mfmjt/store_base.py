"""The one base of the training-store readers (:class:`mfmjt.feature_store.FeatureStore` and
:class:`mfmjt.data.mmaudio_store.MMAudioStore`).

:class:`TrainingStoreBase` owns what both layouts share: the ``torch.utils.data.Dataset`` protocol
(``len``, ``store[i]``, batched ``__getitems__``), :meth:`~TrainingStoreBase.get_batch`, lazy
per-process opening of the memory maps, ``duration``, ``ids``, ``captions``, ``has_audio`` and
``latent_dim``. A layout subclass says only how its arrays are opened and named: it sets ``path``,
``n_items``, ``shapes``, ``_duration``, ``_ids`` and ``_captions`` in ``__init__`` and implements
:meth:`~TrainingStoreBase._open_arrays`, :meth:`~TrainingStoreBase._stored_names` and
:meth:`~TrainingStoreBase._has_video_batch`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class TrainingStoreBase(Dataset, ABC):
    """A read-only store of ``n_items`` items: ``store[i]`` is a dict of tensors (float32 features
    under our names, bool ``has_video``, int ``index``); ``store.get_batch(indices)`` stacks several.
    A store without audio (:attr:`has_audio` false) has no ``latent_mean``/``latent_std``."""

    path: Path
    n_items: int
    shapes: dict[str, tuple[int, ...]]  # per-item (length, channels) of each feature array
    _duration: float | None
    _ids: list[str]
    _captions: list[str]
    _arrays: Mapping[str, Any] | None = None

    # ------------------------------------------------------------ what a layout says
    @abstractmethod
    def _open_arrays(self) -> Mapping[str, Any]:
        """The stored arrays under our names, each NumPy-indexable ``[N, ...]`` (memory maps)."""

    @abstractmethod
    def _stored_names(self) -> Sequence[str]:
        """The feature arrays :meth:`get_batch` reads from :meth:`_open_arrays`, in batch order."""

    def _fill_shapes(self) -> Mapping[str, tuple[int, ...]]:
        """Feature arrays the store does not hold and returns as zeros of these per-item shapes."""
        return {}

    @abstractmethod
    def _has_video_batch(self, arrays: Mapping[str, Any], idx: np.ndarray) -> torch.Tensor:
        """Bool ``[B]``: whether items ``idx`` carry real video features."""

    # ----------------------------------------------------------------- shared behaviour
    # Memory maps are opened lazily in each process (DataLoader workers must not pickle them).
    def _open(self) -> Mapping[str, Any]:
        if self._arrays is None:
            self._arrays = self._open_arrays()
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return self.n_items

    @property
    def duration(self) -> float | None:
        return self._duration

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def captions(self) -> list[str]:
        return list(self._captions)

    @property
    def has_audio(self) -> bool:
        """Whether the items carry audio latents (False: videos without sound, or prompts only)."""
        return "latent_mean" in self.shapes

    @property
    def latent_dim(self) -> int:
        self._need_audio()
        return self.shapes["latent_mean"][1]

    def _need_audio(self) -> None:
        if not self.has_audio:
            raise ValueError(
                f"feature store {self.path} has no audio latents (it was extracted without audio)"
            )

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Items ``indices`` stacked along a leading batch dimension (float32, our names, with
        ``has_video`` and ``index``)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_items):
            raise IndexError(f"indices must be in [0, {self.n_items}), got {idx.tolist()}")
        arrays = self._open()
        # NumPy's gather on the memory map is ~3x faster than indexing a tensor view of it
        batch = {
            name: torch.from_numpy(np.asarray(arrays[name][idx], dtype=np.float32))
            for name in self._stored_names()
        }
        for name, shape in self._fill_shapes().items():
            batch[name] = torch.zeros(len(idx), *shape)
        batch["has_video"] = self._has_video_batch(arrays, idx)
        batch["index"] = torch.from_numpy(idx.copy())
        return batch

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.get_batch(indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -self.n_items <= int(i) < self.n_items:
            raise IndexError(f"item {i} out of range for a store of {self.n_items}")
        return {k: v[0] for k, v in self.get_batch([int(i) % self.n_items]).items()}


__all__ = ["TrainingStoreBase"]
