"""Pre-computed training features in a memory-mapped directory (MMAudio's rule: extract once).

Layout of a store directory::

    meta.json            format, item count, per-array shapes and dtypes, clip duration, ids,
                         captions, latent statistics, free-form ``extra`` metadata, ``complete``
    latent_mean.npy      [N, L, C]   VAE posterior means (channel-last)
    latent_std.npy       [N, L, C]   VAE posterior standard deviations
    clip_f.npy           [N, Lc, Dc] CLIP frame features
    sync_f.npy           [N, Ls, Ds] Synchformer features
    text_f.npy           [N, Lt, Dt] text token features
    has_video.npy        [N] bool    False for audio-text items (clip/sync are then ignored)
    empty_text_f.npy     [Lt, Dt]    optional: features of the empty string (the "no text" condition)

A store *without audio* (videos without sound, or prompts only: ``meta.json`` says
``"has_audio": false``) has no latent arrays; its items are conditions only, for distillation
from a teacher that makes the audio (:mod:`mfmjt.distill`).
    empty_text_f.npy     [Lt, Dt]    optional: features of the empty string (the "no text" condition)

The ``.npy`` files are plain NumPy arrays opened with ``mmap_mode``, so a store larger than memory
is read through the OS page cache. :class:`FeatureStoreWriter` creates a store,
:class:`FeatureStore` reads it (a ``torch.utils.data.Dataset``), :func:`latent_stats` gives the
per-channel latent normalisation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt.store_base import TrainingStoreBase

logger = logging.getLogger(__name__)

FORMAT = "mfmjt-features"
VERSION = 1
META_NAME = "meta.json"
FEATURE_NAMES = ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f")
LATENT_NAMES = ("latent_mean", "latent_std")  # absent from a store without audio
HAS_VIDEO = "has_video"
EMPTY_TEXT = "empty_text_f"

_CONDITION_NAMES = ("clip_f", "sync_f", "text_f")

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _to_numpy(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _normalise_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Per-item shapes of the five feature arrays; ``latent`` stands for both latent arrays, and
    leaving out both latent arrays makes a store without audio."""
    out = {k: tuple(int(d) for d in v) for k, v in shapes.items() if k != "latent"}
    if "latent" in shapes:
        for key in LATENT_NAMES:
            out.setdefault(key, tuple(int(d) for d in shapes["latent"]))
    wanted = FEATURE_NAMES if any(k in out for k in LATENT_NAMES) else _CONDITION_NAMES
    missing = [k for k in wanted if k not in out]
    unknown = sorted(set(out) - set(FEATURE_NAMES))
    if missing or unknown:
        raise ValueError(
            f"shapes must give per-item shapes for {list(FEATURE_NAMES)} ('latent' sets both latent arrays)"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    for name, shape in out.items():
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"per-item shape of {name} must be [length, channels], got {list(shape)}")
    if "latent_mean" in out and out["latent_std"] != out["latent_mean"]:
        raise ValueError(
            f"latent_std shape {out['latent_std']} differs from latent_mean {out['latent_mean']}"
        )
    return out


class FeatureStoreWriter:
    """Create a store of ``n_items`` items and fill it item by item (or in batches).

    ``shapes`` maps ``latent_mean``/``latent_std`` (or ``latent``), ``clip_f``, ``sync_f`` and
    ``text_f`` to their per-item ``(length, channels)``; without the latent arrays the store has no
    audio (its items are then written without them). Call :meth:`close` (or use ``with``) once
    every item is written: only then is the store marked complete and readable.
    """

    def __init__(
        self,
        path: str | Path,
        n_items: int,
        shapes: Mapping[str, Sequence[int]],
        *,
        duration: float | None = None,
        dtype: np.dtype | str = np.float32,
        extra: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if int(n_items) < 1:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.path = Path(path)
        self.n_items = int(n_items)
        self.shapes = _normalise_shapes(shapes)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating-point type, got {self.dtype}")
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"{self.path} exists and is not empty; pass overwrite=True to replace a store"
                )
            if not (self.path / META_NAME).is_file():
                raise ValueError(
                    f"refusing to overwrite {self.path}: it is not a feature store (no {META_NAME})"
                )
            for name in (*FEATURE_NAMES, HAS_VIDEO, EMPTY_TEXT):
                (self.path / f"{name}.npy").unlink(missing_ok=True)
            (self.path / META_NAME).unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self._arrays: dict[str, np.memmap] = {
            name: np.lib.format.open_memmap(
                self.path / f"{name}.npy", mode="w+", dtype=self.dtype, shape=(self.n_items, *shape)
            )
            for name, shape in self.shapes.items()
        }
        self._arrays[HAS_VIDEO] = np.lib.format.open_memmap(
            self.path / f"{HAS_VIDEO}.npy", mode="w+", dtype=np.bool_, shape=(self.n_items,)
        )
        self._written = np.zeros(self.n_items, dtype=bool)
        self._ids = [str(i) for i in range(self.n_items)]
        self._captions = [""] * self.n_items
        self._empty_text: np.ndarray | None = None
        self.has_audio = "latent_mean" in self.shapes
        self._meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "complete": False,
            "n_items": self.n_items,
            "has_audio": self.has_audio,
            "duration": None if duration is None else float(duration),
            "arrays": {
                **{
                    n: {"shape": [self.n_items, *s], "dtype": self.dtype.name} for n, s in self.shapes.items()
                },
                HAS_VIDEO: {"shape": [self.n_items], "dtype": "bool"},
            },
            "extra": dict(extra or {}),
        }
        _write_json_atomic(self.path / META_NAME, self._meta)
        self._closed = False

    def write(
        self,
        i: int,
        *,
        latent_mean: ArrayLike | None = None,
        latent_std: ArrayLike | None = None,
        clip_f: ArrayLike,
        sync_f: ArrayLike,
        text_f: ArrayLike,
        has_video: bool = True,
        item_id: str | None = None,
        caption: str | None = None,
    ) -> None:
        """Write item ``i`` (arrays of the per-item shapes; numpy or torch)."""
        self.write_batch(
            int(i),
            latent_mean=None if latent_mean is None else _to_numpy(latent_mean)[None],
            latent_std=None if latent_std is None else _to_numpy(latent_std)[None],
            clip_f=_to_numpy(clip_f)[None],
            sync_f=_to_numpy(sync_f)[None],
            text_f=_to_numpy(text_f)[None],
            has_video=[bool(has_video)],
            item_ids=None if item_id is None else [item_id],
            captions=None if caption is None else [caption],
        )

    def write_batch(
        self,
        start: int,
        *,
        latent_mean: ArrayLike | None = None,
        latent_std: ArrayLike | None = None,
        clip_f: ArrayLike,
        sync_f: ArrayLike,
        text_f: ArrayLike,
        has_video: ArrayLike | None = None,
        item_ids: Sequence[str] | None = None,
        captions: Sequence[str] | None = None,
    ) -> None:
        """Write items ``start .. start + B - 1`` from arrays with a leading batch dimension (the
        latent arrays exactly when the store has audio)."""
        if self._closed:
            raise ValueError("the store writer is closed")
        latents = {"latent_mean": latent_mean, "latent_std": latent_std}
        given = [k for k, v in latents.items() if v is not None]
        if self.has_audio and len(given) < 2:
            raise ValueError(f"{self.path} is a store with audio: give latent_mean and latent_std")
        if not self.has_audio and given:
            raise ValueError(f"{self.path} is a store without audio: it takes no {' or '.join(given)}")
        arrays = {
            **{k: _to_numpy(v) for k, v in latents.items() if v is not None},
            "clip_f": _to_numpy(clip_f),
            "sync_f": _to_numpy(sync_f),
            "text_f": _to_numpy(text_f),
        }
        b = arrays["text_f"].shape[0] if arrays["text_f"].ndim else 0
        if not start >= 0 or start + b > self.n_items or b < 1:
            raise ValueError(f"items {start}..{start + b - 1} are outside the store's 0..{self.n_items - 1}")
        for name, value in arrays.items():
            if value.shape != (b, *self.shapes[name]):
                raise ValueError(f"{name} must have shape {[b, *self.shapes[name]]}, got {list(value.shape)}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} has non-finite values (items {start}..{start + b - 1})")
        video = np.ones(b, dtype=bool) if has_video is None else _to_numpy(has_video).astype(bool).reshape(-1)
        for name, seq in (("has_video", video), ("item_ids", item_ids), ("captions", captions)):
            if seq is not None and len(seq) != b:
                raise ValueError(f"{name} has {len(seq)} entries for a batch of {b}")
        sl = slice(start, start + b)
        for name, value in arrays.items():
            self._arrays[name][sl] = value
        self._arrays[HAS_VIDEO][sl] = video
        if item_ids is not None:
            self._ids[sl] = [str(x) for x in item_ids]
        if captions is not None:
            self._captions[sl] = [str(x) for x in captions]
        self._written[sl] = True

    def set_empty_text(self, text_f: ArrayLike) -> None:
        """Store the features of the empty string ``[Lt, Dt]`` (copied into the network's
        ``empty_string_feat`` by training)."""
        value = _to_numpy(text_f)
        if value.shape != self.shapes["text_f"]:
            raise ValueError(
                f"empty text features must have shape {list(self.shapes['text_f'])}, got {list(value.shape)}"
            )
        self._empty_text = value.astype(self.dtype)

    def close(self) -> Path:
        """Flush, compute the latent statistics and mark the store complete; returns its path."""
        if self._closed:
            return self.path
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise ValueError(
                f"{missing.size} of {self.n_items} items were never written (first: {missing[:5].tolist()})"
            )
        for array in self._arrays.values():
            array.flush()
        if self._empty_text is not None:
            np.save(self.path / f"{EMPTY_TEXT}.npy", self._empty_text)
            self._meta["arrays"][EMPTY_TEXT] = {
                "shape": list(self._empty_text.shape),
                "dtype": self.dtype.name,
            }
        self._meta.update(complete=True, ids=self._ids, captions=self._captions)
        if self.has_audio:
            mean, std = _compute_latent_stats(self._arrays["latent_mean"])
            self._meta["latent_stats"] = {"mean": mean.tolist(), "std": std.tolist()}
        _write_json_atomic(self.path / META_NAME, self._meta)
        self._arrays.clear()
        self._closed = True
        logger.info("wrote feature store %s (%d items)", self.path, self.n_items)
        return self.path

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


class FeatureStore(TrainingStoreBase):
    """Read-only view of a complete store. ``store[i]`` is a dict of tensors (float32 features,
    bool ``has_video``, int ``index``); ``store.get_batch(indices)`` stacks several items. The items
    of a store without audio (:attr:`has_audio` false) have no ``latent_mean``/``latent_std``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / META_NAME
        if not meta_path.is_file():
            raise ValueError(
                f"no feature store at {self.path}: expected {META_NAME} and .npy arrays written by "
                "FeatureStoreWriter (run the feature extractor first)"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{meta_path} is not a {FORMAT} v{VERSION} store")
        if not meta.get("complete"):
            raise ValueError(f"feature store {self.path} is incomplete (its writer was not closed)")
        self.meta: dict[str, Any] = meta
        self.n_items = int(meta["n_items"])
        self.names = tuple(n for n in FEATURE_NAMES if n in meta["arrays"])
        self.shapes = {name: tuple(meta["arrays"][name]["shape"][1:]) for name in self.names}
        for name, info in meta["arrays"].items():
            file = self.path / f"{name}.npy"
            if not file.is_file():
                raise ValueError(f"feature store {self.path} is missing {file.name}")
            array = np.load(file, mmap_mode="r")
            if list(array.shape) != list(info["shape"]):
                raise ValueError(f"{file} has shape {list(array.shape)}, meta.json says {info['shape']}")
        self._duration = meta.get("duration")
        self._ids, self._captions = meta["ids"], meta["captions"]
        self._arrays: Mapping[str, np.ndarray] | None = None

    def _open_arrays(self) -> dict[str, np.ndarray]:
        return {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in (*self.names, HAS_VIDEO)}

    def _stored_names(self) -> tuple[str, ...]:
        return self.names

    def _has_video_batch(self, arrays: Mapping[str, Any], idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(arrays[HAS_VIDEO][idx], dtype=bool))

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.meta.get("extra", {}))

    def array(self, name: str) -> np.ndarray:
        """The read-only memory map of one stored array (``[N, ...]``)."""
        if name in LATENT_NAMES:
            self._need_audio()
        if name not in (*FEATURE_NAMES, HAS_VIDEO):
            raise ValueError(f"unknown array {name!r}; stored arrays are {[*FEATURE_NAMES, HAS_VIDEO]}")
        return self._open()[name]

    def empty_text_features(self) -> torch.Tensor | None:
        """The stored empty-string features ``[Lt, Dt]`` (float32), or None if the store has none."""
        if EMPTY_TEXT not in self.meta["arrays"]:
            return None
        return torch.from_numpy(np.load(self.path / f"{EMPTY_TEXT}.npy").astype(np.float32))


def _compute_latent_stats(means: np.ndarray, chunk_items: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased std over (items, time), two chunked float64 passes."""
    n, length, channels = means.shape
    count = n * length
    total = np.zeros(channels, dtype=np.float64)
    for start in range(0, n, chunk_items):
        total += np.asarray(means[start : start + chunk_items], dtype=np.float64).sum(axis=(0, 1))
    mean = total / count
    sq = np.zeros(channels, dtype=np.float64)
    for start in range(0, n, chunk_items):
        sq += np.square(np.asarray(means[start : start + chunk_items], dtype=np.float64) - mean).sum(
            axis=(0, 1)
        )
    std = np.sqrt(sq / max(count - 1, 1))
    return mean, std


def latent_stats(store: FeatureStore | str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)`` [C] float32 of the stored posterior means over (items, time).

    MMAudio's rule: ``mean.mean(dim=(0, 1)), mean.std(dim=(0, 1))`` (unbiased std). Read from
    ``meta.json`` when the writer recorded it, otherwise computed in chunks.
    """
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    cached = store.meta.get("latent_stats")
    if cached is not None:
        mean, std = np.asarray(cached["mean"]), np.asarray(cached["std"])
    else:
        mean, std = _compute_latent_stats(store.array("latent_mean"))
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
