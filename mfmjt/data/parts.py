"""Resumable extraction: encoded items are committed in chunks, then merged into one store.

Each worker (a torchrun rank, or the single process) owns a folder ``r<rank>/`` of chunks::

    r0/chunk-000000/latent_mean.npy ...   arrays of the chunk's items, [n, ...]
    r0/chunk-000000/items.json            ids, captions, has_video, source unit of each row, and
                                          the units that failed since the previous chunk

A chunk is written under ``chunk-N.tmp/`` and renamed once its arrays are flushed to disk, so a
killed run leaves only whole chunks (the ``.tmp`` remains are deleted by the next run) and the
units of whole chunks are never extracted again. :func:`merge_parts` copies the chunks of every
rank into the final store in table order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

ARRAY_NAMES = ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f")
CONDITION_ARRAYS = ("clip_f", "sync_f", "text_f")  # all a chunk of a store without audio holds
VIDEO_ARRAYS = ("clip_f", "sync_f")  # all zero, and not saved, in a chunk without video items
ITEMS_FILE = "items.json"
_CHUNK_PREFIX = "chunk-"


@dataclass(frozen=True)
class Failure:
    """A table row that gave no item: ``reason`` is a short category, ``detail`` the message."""

    unit: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class ItemRecord:
    """Where one committed item lives: its chunk folder and row."""

    id: str
    caption: str
    unit: str
    has_video: bool
    chunk: Path
    row: int


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform/file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write one ``.npy`` and flush it to disk (tests replace this to simulate a full disk)."""
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


class ChunkWriter:
    """Commits chunks into ``root/r<rank>/``; removes half-written chunks left by a killed run."""

    def __init__(self, root: str | Path, rank: int = 0) -> None:
        self.dir = Path(root) / f"r{rank}"
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f"{_CHUNK_PREFIX}*.tmp"):
            logger.info("removing the unfinished chunk %s of an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        numbers = [int(p.name[len(_CHUNK_PREFIX) :]) for p in self._chunks()]
        self._next = max(numbers, default=-1) + 1

    def _chunks(self) -> list[Path]:
        return [p for p in self.dir.glob(f"{_CHUNK_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")]

    def commit(
        self,
        arrays: Mapping[str, np.ndarray] | None,
        items: Sequence[Mapping[str, Any]],
        failures: Sequence[Failure] = (),
    ) -> Path | None:
        """Write one chunk: ``arrays`` (each ``[len(items), ...]``), the items' ``id``, ``caption``,
        ``unit`` and ``has_video``, and failures (without the latent arrays for a store without
        audio). Nothing is written for an empty chunk."""
        if not items and not failures:
            return None
        if items:
            if arrays is None or set(arrays) not in (set(ARRAY_NAMES), set(CONDITION_ARRAYS)):
                raise ValueError(
                    f"a chunk needs the arrays {list(ARRAY_NAMES)} "
                    f"(or {list(CONDITION_ARRAYS)} without audio)"
                )
            bad = {k: v.shape for k, v in arrays.items() if v.shape[0] != len(items)}
            if bad:
                raise ValueError(f"arrays {bad} do not have {len(items)} rows")
        name = f"{_CHUNK_PREFIX}{self._next:06d}"
        tmp = self.dir / f"{name}.tmp"
        tmp.mkdir()
        any_video = any(it["has_video"] for it in items)
        shapes = {k: list(v.shape[1:]) for k, v in arrays.items()} if arrays is not None and items else {}
        try:
            for key, value in (arrays or {}).items() if items else ():
                if any_video or key not in VIDEO_ARRAYS:
                    save_array(tmp / f"{key}.npy", np.ascontiguousarray(value))
            meta = {
                "shapes": shapes,
                "items": [
                    {
                        "id": str(it["id"]),
                        "caption": str(it["caption"]),
                        "unit": str(it["unit"]),
                        "has_video": bool(it["has_video"]),
                    }
                    for it in items
                ],
                "failures": [{"unit": f.unit, "reason": f.reason, "detail": f.detail} for f in failures],
            }
            with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
                json.dump(meta, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            os.replace(tmp, self.dir / name)
            _fsync_dir(self.dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._next += 1
        return self.dir / name


@dataclass
class PartsIndex:
    """What the committed chunks under a parts folder hold."""

    items: dict[str, list[ItemRecord]] = field(default_factory=dict)  # unit -> its items in order
    failures: dict[str, Failure] = field(default_factory=dict)  # unit -> why it gave nothing
    chunks: list[Path] = field(default_factory=list)

    @property
    def done_units(self) -> set[str]:
        return set(self.items) | set(self.failures)

    @property
    def n_items(self) -> int:
        return sum(len(v) for v in self.items.values())


def scan_parts(root: str | Path) -> PartsIndex:
    """Index every committed chunk of every rank under ``root`` (missing root: empty index).

    A unit found in several chunks (possible only if two runs shared a store) keeps its first copy.
    """
    index = PartsIndex()
    root = Path(root)
    if not root.is_dir():
        return index
    chunks = sorted(
        (p for p in root.glob(f"r*/{_CHUNK_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")),
        key=lambda p: (p.parent.name, p.name),
    )
    for chunk in chunks:
        meta = json.loads((chunk / ITEMS_FILE).read_text(encoding="utf-8"))
        index.chunks.append(chunk)
        fresh: dict[str, list[ItemRecord]] = {}
        for row, it in enumerate(meta["items"]):
            record = ItemRecord(it["id"], it["caption"], it["unit"], it["has_video"], chunk, row)
            fresh.setdefault(record.unit, []).append(record)
        for unit, records in fresh.items():
            if unit in index.items:
                logger.warning("%s: unit %r is already in an earlier chunk; ignoring this copy", chunk, unit)
                continue
            index.items[unit] = records
            index.failures.pop(unit, None)
        for f in meta["failures"]:
            if f["unit"] not in index.items:
                index.failures[f["unit"]] = Failure(f["unit"], f["reason"], f.get("detail", ""))
    return index


class StoreWriter(Protocol):
    """What :func:`merge_parts` writes into (the native ``FeatureStoreWriter`` has this interface)."""

    def write_batch(
        self,
        start: int,
        *,
        latent_mean: np.ndarray | None = None,
        latent_std: np.ndarray | None = None,
        clip_f: np.ndarray,
        sync_f: np.ndarray,
        text_f: np.ndarray,
        has_video: np.ndarray | None = None,
        item_ids: Sequence[str] | None = None,
        captions: Sequence[str] | None = None,
    ) -> None: ...

    def set_empty_text(self, text_f: np.ndarray) -> None: ...

    def close(self) -> Path: ...


WriterFactory = Callable[[int, dict[str, tuple[int, ...]]], StoreWriter]


def _chunk_shapes(chunk: Path) -> dict[str, tuple[int, ...]]:
    meta = json.loads((chunk / ITEMS_FILE).read_text(encoding="utf-8"))
    return {n: tuple(meta["shapes"][n]) for n in ARRAY_NAMES if n in meta["shapes"]}


def item_shapes(index: PartsIndex) -> dict[str, tuple[int, ...]]:
    """Per-item array shapes, read from the first chunk holding items."""
    for records in index.items.values():
        return _chunk_shapes(records[0].chunk)
    raise ValueError("no item was extracted: nothing to merge")


def _open_chunk(chunk: Path) -> dict[str, np.ndarray]:
    """A chunk's arrays as memory maps; clip/sync arrays a video-less chunk did not save are zeros."""
    n = len(json.loads((chunk / ITEMS_FILE).read_text(encoding="utf-8"))["items"])
    out = {}
    for name, shape in _chunk_shapes(chunk).items():
        file = chunk / f"{name}.npy"
        out[name] = np.load(file, mmap_mode="r") if file.exists() else np.zeros((n, *shape), np.float32)
    return out


def ordered_items(index: PartsIndex, unit_order: Iterable[str]) -> list[ItemRecord]:
    """Committed items in table order (units absent from the table are left out)."""
    return [record for unit in unit_order for record in index.items.get(unit, [])]


def merge_parts(
    index: PartsIndex,
    unit_order: Iterable[str],
    make_writer: WriterFactory,
    *,
    empty_text: np.ndarray | None = None,
    batch_items: int = 256,
) -> Path:
    """Write the committed items in ``unit_order`` into a writer made by ``make_writer(n, shapes)``."""
    records = ordered_items(index, unit_order)
    if not records:
        raise ValueError("no item was extracted: nothing to merge")
    shapes = item_shapes(index)
    writer = make_writer(len(records), shapes)
    if empty_text is not None:
        writer.set_empty_text(empty_text)
    opened: dict[Path, dict[str, np.ndarray]] = {}
    for start in range(0, len(records), batch_items):
        batch = records[start : start + batch_items]
        arrays: dict[str, list[np.ndarray]] = {n: [] for n in shapes}
        for r in batch:
            if r.chunk not in opened:
                opened[r.chunk] = _open_chunk(r.chunk)
            for n in shapes:
                arrays[n].append(opened[r.chunk][n][r.row])
        writer.write_batch(
            start,
            **{n: np.stack(v) for n, v in arrays.items()},
            has_video=np.array([r.has_video for r in batch]),
            item_ids=[r.id for r in batch],
            captions=[r.caption for r in batch],
        )
        if len(opened) > 64:  # keep the number of open memory maps bounded
            opened.clear()
    return writer.close()
