"""MMAudio's extracted-feature layout: read it for training, write it from ``mfmjt extract``.

MMAudio's extraction scripts (``training/extract_video_training_latents.py`` and
``extract_audio_training_latents.py``) leave, for a store named ``NAME``::

    NAME/                   a tensordict memory-mapped directory (``TensorDict(...).memmap_(NAME)``)
        meta.json           tensordict's metadata: per key its shape, dtype, device
        mean.memmap         [N, L, C] VAE posterior means (channel-last), raw float32
        std.memmap          [N, L, C] VAE posterior standard deviations
        text_features.memmap [N, 77, 1024] CLIP text token features
        clip_features.memmap [N, 64, 1024] CLIP frame features        (video stores only)
        sync_features.memmap [N, 192, 768] Synchformer features         (video stores only)
    NAME.tsv                tab-separated, header ``id<TAB>label`` (video) or ``id<TAB>caption``
                            (audio-text), one row per item in memmap order

Audio-text stores (AudioCaps, WavCaps, Clotho) have no clip/sync arrays. Nothing here writes into
a store that is read: users train on their MMAudio directories unchanged.

Reading: :class:`MMAudioStore` presents the same interface as
:class:`mfmjt.feature_store.FeatureStore` (both are :class:`mfmjt.store_base.TrainingStoreBase`:
``len``, ``get_batch``, ``shapes``, ``duration``, ``latent_dim``, ``ids``, ``captions``), with
MMAudio's names mapped to ours: ``mean`` -> ``latent_mean``, ``std`` -> ``latent_std``,
``clip_features`` -> ``clip_f``, ``sync_features`` -> ``sync_f``, ``text_features`` -> ``text_f``.
An audio-text store answers ``has_video`` False for every item and returns zero clip/sync features
of :attr:`MMAudioStore.video_fill_shapes` (which training replaces by the network's learned "no
video" features, as MMAudio does).

Writing (for ``mfmjt extract --layout mmaudio``)::

    writer = MMAudioStoreWriter.create(out_dir, ids, captions, shapes)   # or resumes, see below
    for indices, arrays in work(writer.pending):                         # only what is missing
        writer.write_batch(indices, **arrays)      # indices: item numbers or ids; arrays with a
                                                   # leading batch dim, our names or MMAudio's
    writer.close()                                 # writes NAME.tsv: the store is complete

``shapes`` maps per-item ``(length, channels)`` of ``latent`` (or ``mean``/``std``), ``text_f`` and,
for a video store, ``clip_f`` and ``sync_f`` (MMAudio's names are accepted too). Resume: while a store
is being written its directory holds ``.mfmjt_written.npy`` (which items are done) and
``.mfmjt_progress.json`` (ids, captions, shapes); ``create`` on such a directory with the same ids,
captions and shapes reopens it and :attr:`MMAudioStoreWriter.pending` lists the items still to
write. ``close`` deletes both files and writes the TSV beside the directory (MMAudio's readers never
see a half-written store: without the TSV it is not one).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt.config import AUDIO_MODES, CLIP_FPS, SequenceLengths
from mfmjt.store_base import TrainingStoreBase

logger = logging.getLogger(__name__)

META_NAME = "meta.json"
# ours -> MMAudio's array names
MMAUDIO_NAMES = {
    "latent_mean": "mean",
    "latent_std": "std",
    "clip_f": "clip_features",
    "sync_f": "sync_features",
    "text_f": "text_features",
}
OUR_NAMES = {v: k for k, v in MMAUDIO_NAMES.items()}
VIDEO_ARRAYS = ("clip_f", "sync_f")
AUDIO_ARRAYS = ("latent_mean", "latent_std", "text_f")
WRITTEN_NAME = ".mfmjt_written.npy"
PROGRESS_NAME = ".mfmjt_progress.json"
# MMAudio's feature sizes (data_dim): used for the zero clip/sync features of audio-text items
MMAUDIO_CLIP_DIM = 1024
MMAUDIO_SYNC_DIM = 768


def tsv_path(directory: str | Path) -> Path:
    """MMAudio's TSV of a store directory: ``NAME.tsv`` next to ``NAME/``."""
    directory = Path(directory)
    return directory.parent / f"{directory.name}.tsv"


def is_mmaudio_store(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a tensordict memmap with MMAudio's ``mean`` array."""
    directory = Path(directory)
    return (directory / META_NAME).is_file() and (directory / "mean.memmap").is_file()


def _our_name(name: str) -> str:
    if name in MMAUDIO_NAMES:
        return name
    if name in OUR_NAMES:
        return OUR_NAMES[name]
    raise ValueError(
        f"unknown feature array {name!r}; use {sorted(MMAUDIO_NAMES)} or MMAudio's {sorted(OUR_NAMES)}"
    )


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    """ids and captions of an MMAudio TSV (``label`` or ``caption`` column), as raw strings."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path} is empty; expected a header 'id<TAB>label' or 'id<TAB>caption'")
    header = rows[0]
    text_column = next((c for c in ("label", "caption") if c in header), None)
    if "id" not in header or text_column is None:
        raise ValueError(f"{path} has columns {header}; expected 'id' and 'label' (or 'caption')")
    i, j = header.index("id"), header.index(text_column)
    body = [r for r in rows[1:] if r]
    short = [n + 2 for n, r in enumerate(body) if len(r) <= max(i, j)]
    if short:
        raise ValueError(f"{path}: lines {short[:5]} have fewer than {max(i, j) + 1} columns")
    return [r[i] for r in body], [r[j] for r in body]


def _write_tsv(path: Path, ids: Sequence[str], captions: Sequence[str], text_column: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["id", text_column])
    writer.writerows(zip(ids, captions, strict=True))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def _duration_of(latent_len: int, latent_dim: int, clip_len: int | None) -> float | None:
    """Clip duration: CLIP frames / 8 fps when ``clip_len`` is given, else the 1/8 s multiple whose
    latent length (MMAudio's formula for the audio mode of ``latent_dim``) is ``latent_len``."""
    if clip_len is not None:
        return clip_len / CLIP_FPS
    mode = next((m for m in AUDIO_MODES.values() if m.latent_dim == latent_dim), None)
    if mode is None:
        return None
    seconds = round(latent_len / mode.latent_rate * 8) / 8
    if seconds > 0 and math.ceil(seconds * mode.latent_rate) == latent_len:
        return seconds
    return latent_len / mode.latent_rate


class MMAudioStore(TrainingStoreBase):
    """Read-only view of an MMAudio extracted-feature directory (and its TSV).

    ``tsv`` defaults to ``NAME.tsv`` beside the directory. Arrays are opened lazily (per process,
    so DataLoader workers do not pickle memory maps) with ``TensorDict.load_memmap``.
    """

    def __init__(self, path: str | Path, tsv: str | Path | None = None) -> None:
        self.path = Path(path)
        meta_path = self.path / META_NAME
        if not self.path.is_dir() or not meta_path.is_file():
            raise ValueError(
                f"no MMAudio feature directory at {self.path}: expected {META_NAME} and .memmap files"
            )
        if (self.path / WRITTEN_NAME).exists():
            raise ValueError(f"MMAudio-layout store {self.path} is incomplete (its writer was not closed)")
        meta = json.loads(meta_path.read_text())
        # tensordict itself reads the shapes (its metadata format differs between its versions)
        from tensordict import TensorDict

        try:
            td = TensorDict.load_memmap(self.path)
        except Exception as err:  # noqa: BLE001 (any failure means: not a readable tensordict memmap)
            raise ValueError(f"{self.path} is not a readable tensordict memmap directory: {err}") from err
        arrays = {k: {"shape": list(td[k].shape)} for k in td.keys()}  # noqa: SIM118
        missing = [MMAUDIO_NAMES[n] for n in AUDIO_ARRAYS if MMAUDIO_NAMES[n] not in arrays]
        if missing:
            raise ValueError(f"{meta_path} lacks {missing}; an MMAudio store has mean, std and text_features")
        video = [MMAUDIO_NAMES[n] in arrays for n in VIDEO_ARRAYS]
        if any(video) and not all(video):
            raise ValueError(
                f"{self.path} has only one of clip_features/sync_features; a video store needs both"
            )
        self.has_video = all(video)
        names = [*AUDIO_ARRAYS, *(VIDEO_ARRAYS if self.has_video else ())]
        shapes = {n: tuple(int(d) for d in arrays[MMAUDIO_NAMES[n]]["shape"]) for n in names}
        for n, shape in shapes.items():
            if len(shape) != 3:
                raise ValueError(
                    f"{self.path}: {MMAUDIO_NAMES[n]} has shape {list(shape)}; "
                    "expected [items, length, channels]"
                )
            file = self.path / f"{MMAUDIO_NAMES[n]}.memmap"
            if not file.is_file():
                raise ValueError(f"MMAudio store {self.path} is missing {file.name}")
        counts = {MMAUDIO_NAMES[n]: s[0] for n, s in shapes.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{self.path}: arrays hold different item counts {counts}")
        self.n_items = next(iter(counts.values()))
        if shapes["latent_std"] != shapes["latent_mean"]:
            raise ValueError(
                f"{self.path}: std has shape {list(shapes['latent_std'])}, mean {list(shapes['latent_mean'])}"
            )
        self.tsv = Path(tsv) if tsv is not None else tsv_path(self.path)
        if not self.tsv.is_file():
            raise ValueError(
                f"MMAudio store {self.path} has no TSV at {self.tsv} (ids and labels, written next to the "
                "memmap directory by MMAudio's extraction scripts)"
            )
        self._ids, self._captions = _read_tsv(self.tsv)
        if len(self._ids) != self.n_items:
            raise ValueError(f"{self.tsv} lists {len(self._ids)} items but {self.path} holds {self.n_items}")
        self.meta: dict[str, Any] = meta
        self.shapes: dict[str, tuple[int, ...]] = {n: s[1:] for n, s in shapes.items()}
        latent_len = self.shapes["latent_mean"][0]
        clip_len = self.shapes["clip_f"][0] if self.has_video else None
        # the audio latents set the clip length; the video arrays are checked against it, so a store
        # whose clip or sync features are too short names those arrays (mfmjt.data.compat)
        self._duration = _duration_of(latent_len, self.latent_dim, None) or _duration_of(
            latent_len, self.latent_dim, clip_len
        )
        self.video_fill_shapes: dict[str, tuple[int, int]] = {}
        if not self.has_video:
            lengths = self._default_lengths()
            self.video_fill_shapes = {
                "clip_f": (lengths[0], MMAUDIO_CLIP_DIM),
                "sync_f": (lengths[1], MMAUDIO_SYNC_DIM),
            }
            self.shapes.update(self.video_fill_shapes)
        self._arrays: Mapping[str, np.ndarray] | None = None

    def _default_lengths(self) -> tuple[int, int]:
        try:
            lengths = SequenceLengths.for_duration(self._duration or 8.0)
        except ValueError:  # shorter than one Synchformer segment: training fills from its video stores
            return (max(1, int(self._duration * CLIP_FPS)), 8)
        return (lengths.clip, lengths.sync)

    def set_video_fill(self, clip: Sequence[int], sync: Sequence[int]) -> None:
        """Per-item ``(length, channels)`` of the zero clip/sync features an audio-text store returns
        (to batch its items with a video store's, or to match the network's feature sizes)."""
        if self.has_video:
            raise ValueError(f"{self.path} holds real video features; there is nothing to fill")
        self.video_fill_shapes = {
            "clip_f": tuple(int(d) for d in clip),
            "sync_f": tuple(int(d) for d in sync),
        }
        self.shapes.update(self.video_fill_shapes)

    def _open_arrays(self) -> dict[str, np.ndarray]:
        from tensordict import TensorDict

        td = TensorDict.load_memmap(self.path)
        # NumPy views of the memory-mapped tensors (NumPy's gather is the fast one)
        return {n: td[MMAUDIO_NAMES[n]].numpy() for n in self._stored_names()}

    def _stored_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.shapes if n not in self.video_fill_shapes)

    def _fill_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.video_fill_shapes

    def _has_video_batch(self, arrays: Mapping[str, Any], idx: np.ndarray) -> torch.Tensor:
        return torch.full((len(idx),), self.has_video, dtype=torch.bool)

    @property
    def extra(self) -> dict[str, Any]:
        return {"layout": "mmaudio", "tsv": str(self.tsv), "video": self.has_video}

    def mmaudio_name(self, name: str) -> str:
        """MMAudio's name of one of our array names (for messages)."""
        return MMAUDIO_NAMES.get(name, name)

    def array(self, name: str) -> np.ndarray:
        """A read-only NumPy view ``[N, ...]`` of one stored array (our name or MMAudio's)."""
        name = _our_name(name)
        if name in self.video_fill_shapes or name not in self.shapes:
            raise ValueError(f"{self.path} stores no {MMAUDIO_NAMES[name]} (an audio-text store)")
        return self._open()[name]

    def empty_text_features(self) -> torch.Tensor | None:
        """MMAudio keeps the empty string's features outside the store (``empty_string.pth``)."""
        return None


def _normalise_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for key, value in shapes.items():
        shape = tuple(int(d) for d in value)
        names = ("latent_mean", "latent_std") if key == "latent" else (_our_name(key),)
        for name in names:
            out[name] = shape  # type: ignore[assignment]
    missing = [n for n in AUDIO_ARRAYS if n not in out]
    if missing:
        raise ValueError(f"shapes must give {list(AUDIO_ARRAYS)} ('latent' sets both); missing {missing}")
    video = [n in out for n in VIDEO_ARRAYS]
    if any(video) and not all(video):
        raise ValueError(
            "a video store needs shapes for both clip_f and sync_f (an audio-text store neither)"
        )
    for name, shape in out.items():
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"per-item shape of {name} must be [length, channels], got {list(shape)}")
    if out["latent_std"] != out["latent_mean"]:
        raise ValueError(
            f"latent_std shape {out['latent_std']} differs from latent_mean {out['latent_mean']}"
        )
    return out


class MMAudioStoreWriter:
    """Write a store in MMAudio's layout; see the module docstring. Use :meth:`create`."""

    def __init__(
        self,
        path: Path,
        ids: list[str],
        captions: list[str],
        shapes: dict[str, tuple[int, int]],
        arrays: dict[str, torch.Tensor] | None,
        written: np.ndarray,
    ) -> None:
        self.path = path
        self.ids, self.captions, self.shapes = ids, captions, shapes
        self.video = "clip_f" in shapes
        self._arrays = arrays
        self._written = written
        self._position = {item_id: i for i, item_id in enumerate(ids)}
        self.closed = arrays is None

    # ------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        out_dir: str | Path,
        ids: Sequence[str],
        captions: Sequence[str],
        shapes: Mapping[str, Sequence[int]],
        *,
        overwrite: bool = False,
    ) -> MMAudioStoreWriter:
        """Start (or resume) writing ``len(ids)`` items to ``out_dir`` (float32, as MMAudio)."""
        path = Path(out_dir)
        ids = [str(i) for i in ids]
        captions = [str(c) for c in captions]
        if not ids:
            raise ValueError("a store needs at least one item")
        if len(captions) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(captions)} captions")
        duplicates = sorted(k for k, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"ids must be unique; repeated: {duplicates[:5]}")
        for text in (*ids, *captions):
            if "\n" in text or "\r" in text:
                raise ValueError(f"ids and captions must be single lines, got {text!r}")
        norm = _normalise_shapes(shapes)
        progress = {"ids": ids, "captions": captions, "shapes": {k: list(v) for k, v in norm.items()}}
        tsv = tsv_path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            return cls._reopen(path, progress)
        if path.exists() and any(path.iterdir()):
            if not is_mmaudio_store(path):
                raise ValueError(f"refusing to overwrite {path}: it is not an MMAudio-layout store")
            for file in path.iterdir():
                if file.suffix == ".memmap" or file.name in (META_NAME, WRITTEN_NAME, PROGRESS_NAME):
                    file.unlink()
            tsv.unlink(missing_ok=True)
        from tensordict import TensorDict

        path.mkdir(parents=True, exist_ok=True)
        td = TensorDict({}, batch_size=[])
        td.memmap_(path)
        for name in (*AUDIO_ARRAYS, *(VIDEO_ARRAYS if "clip_f" in norm else ())):
            td.make_memmap(MMAUDIO_NAMES[name], (len(ids), *norm[name]), dtype=torch.float32)
        written = np.zeros(len(ids), dtype=bool)
        _save_written(path, written)
        _write_json(path / PROGRESS_NAME, progress)
        arrays = {OUR_NAMES[k]: td[k] for k in td.keys()}  # noqa: SIM118 (iterating a TensorDict walks its batch)
        logger.info("writing an MMAudio-layout store of %d items to %s", len(ids), path)
        return cls(path, ids, captions, norm, arrays, written)

    @classmethod
    def _reopen(cls, path: Path, progress: dict[str, Any]) -> MMAudioStoreWriter:
        norm = {k: tuple(v) for k, v in progress["shapes"].items()}
        if not (path / PROGRESS_NAME).is_file():
            if is_mmaudio_store(path) and tsv_path(path).is_file():
                store = MMAudioStore(path)
                same = store.ids == progress["ids"] and store.captions == progress["captions"]
                same = same and store.has_video == ("clip_f" in norm)
                if same and all(store.shapes.get(k) == v for k, v in norm.items()):
                    logger.info("%s is already complete", path)
                    return cls(path, store.ids, store.captions, norm, None, np.ones(len(store), dtype=bool))
                raise ValueError(
                    f"{path} holds a complete store of other items or shapes; "
                    "pass overwrite=True to replace it"
                )
            raise ValueError(f"{path} exists, is not empty and is not an unfinished MMAudio-layout store")
        before = json.loads((path / PROGRESS_NAME).read_text())
        for key in ("ids", "captions", "shapes"):
            if before[key] != progress[key]:
                raise ValueError(
                    f"cannot resume {path}: its {key} differ from this run's "
                    "(pass overwrite=True to start over)"
                )
        from tensordict import TensorDict

        td = TensorDict.load_memmap(path)
        written = np.load(path / WRITTEN_NAME)
        logger.info("resuming %s: %d of %d items already written", path, int(written.sum()), len(written))
        arrays = {OUR_NAMES[k]: td[k] for k in td.keys()}  # noqa: SIM118 (iterating a TensorDict walks its batch)
        return cls(path, progress["ids"], progress["captions"], norm, arrays, written)

    # ------------------------------------------------------------------------------ writing
    @property
    def pending(self) -> list[int]:
        """Item numbers not yet written (all of them for a new store, none once complete)."""
        return np.flatnonzero(~self._written).tolist()

    def _indices(self, items: Sequence[int] | Sequence[str] | np.ndarray) -> np.ndarray:
        items = list(np.asarray(items).reshape(-1).tolist()) if not isinstance(items, list) else items
        if items and all(isinstance(x, str) for x in items):
            unknown = [x for x in items if x not in self._position]
            if unknown:
                raise ValueError(
                    f"unknown item ids {unknown[:5]} (not among this store's {len(self.ids)} ids)"
                )
            return np.array([self._position[x] for x in items], dtype=np.int64)
        idx = np.asarray(items, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.ids)):
            raise ValueError(f"item numbers must be in [0, {len(self.ids)}), got {idx.tolist()[:8]}")
        return idx

    def write_batch(
        self, items: Sequence[int] | Sequence[str] | np.ndarray, **arrays: np.ndarray | torch.Tensor
    ) -> None:
        """Write items (numbers or ids) from arrays with a leading batch dimension; every array of
        the store must be given (our names or MMAudio's)."""
        if self._arrays is None:
            raise ValueError(f"the writer of {self.path} is closed")
        idx = self._indices(items)
        given = {_our_name(k): v for k, v in arrays.items()}
        expected = set(self.shapes)
        if set(given) != expected:
            raise ValueError(
                f"write_batch needs exactly {sorted(expected)}; got {sorted(given)}"
                + (" (an audio-text store has no clip/sync features)" if not self.video else "")
            )
        values = {}
        for name, value in given.items():
            tensor = torch.as_tensor(value).detach().to("cpu", torch.float32)
            if tuple(tensor.shape) != (len(idx), *self.shapes[name]):
                raise ValueError(
                    f"{MMAUDIO_NAMES[name]} ({name}) must have shape {[len(idx), *self.shapes[name]]}, "
                    f"got {list(tensor.shape)}"
                )
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{MMAUDIO_NAMES[name]} has non-finite values (items {idx.tolist()[:8]})")
            values[name] = tensor
        index = torch.from_numpy(idx)
        for name, tensor in values.items():
            self._arrays[name][index] = tensor
        self._written[idx] = True
        _save_written(self.path, self._written)

    def close(self) -> Path:
        """Check every item is written, write the TSV and drop the resume files; returns the directory."""
        if self._arrays is None:
            return self.path
        missing = self.pending
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(self.ids)} items were never written (first: {missing[:5]})"
            )
        self._arrays = None
        _write_tsv(tsv_path(self.path), self.ids, self.captions, "label" if self.video else "caption")
        (self.path / PROGRESS_NAME).unlink()
        (self.path / WRITTEN_NAME).unlink()
        self.closed = True
        logger.info(
            "wrote MMAudio-layout store %s (%d items) and %s", self.path, len(self.ids), tsv_path(self.path)
        )
        return self.path

    def __enter__(self) -> MMAudioStoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


def _save_written(path: Path, written: np.ndarray) -> None:
    tmp = path / (WRITTEN_NAME + ".tmp.npy")
    np.save(tmp, written)
    os.replace(tmp, path / WRITTEN_NAME)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


__all__ = [
    "MMAUDIO_NAMES",
    "MMAudioStore",
    "MMAudioStoreWriter",
    "is_mmaudio_store",
    "tsv_path",
]
