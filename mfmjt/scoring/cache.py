"""The embedding cache: an extractor's outputs for one input, keyed by what determines them.

A key is the SHA-256 of the input's content (the file's bytes, or a caption's text), the extractor's
name and weights, and the settings of the scorer (sample rate, clip length, windows, ...). Scoring a
second model against the same reference folder therefore reads the reference side from the cache.
Entries are ``.npz`` files written atomically; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what the scorer feeds an extractor changes
_CHUNK = 1 << 22


def file_digest(path: Path, _memo: dict[tuple[str, int, int], str] = {}) -> str:  # noqa: B006 - per process
    """SHA-256 of a file's bytes (remembered per path, size and mtime within the process)."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _memo[memo_key] = digest.hexdigest()
    return _memo[memo_key]


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(content: str, extractor: str, weights: str, settings: dict[str, object]) -> str:
    """The entry name for ``content`` (a digest) through ``extractor`` with ``weights`` and ``settings``."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "content": content, "extractor": extractor, "weights": weights, **settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """``root/<extractor>/<key[:2]>/<key>.npz``; ``root=None`` caches nothing."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, extractor: str, key: str) -> Path:
        assert self.root is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in extractor)
        return self.root / safe / key[:2] / f"{key}.npz"

    def get(self, extractor: str, key: str) -> dict[str, np.ndarray] | None:
        if self.root is None:
            return None
        path = self._path(extractor, key)
        try:
            with np.load(path, allow_pickle=False) as data:
                found = {name: data[name] for name in data.files}
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as err:
            logger.warning("ignoring an unreadable cache entry %s (%s)", path, err)
            self.misses += 1
            return None
        self.hits += 1
        return found

    def put(self, extractor: str, key: str, outputs: dict[str, np.ndarray]) -> None:
        if self.root is None:
            return
        path = self._path(extractor, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **outputs)
            os.replace(tmp, path)
        except OSError as err:  # a full or read-only disk costs speed, not the score
            logger.warning("could not write the cache entry %s (%s)", path, err)
