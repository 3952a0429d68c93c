"""The demo's temporary files: one folder per process under one root, removed at start and at exit.

Each process writes under ``<root>/<pid>``; at start-up the folders of processes that no longer run
are removed (what a killed server left), and at exit the process removes its own. Request folders
inside are pruned by count and age while it runs (Gradio copies returned files into its own cache).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "mfmjt_app"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: Path) -> int:
    """Remove the folders under ``root`` of processes that are gone; how many were removed."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.iterdir():
        if not path.is_dir():
            continue
        # a folder of a process that is gone, or one left by an older version of the demo
        gone = not path.name.isdigit() or (int(path.name) != os.getpid() and not _alive(int(path.name)))
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        logger.info("removed %d stale temporary folder(s) under %s", removed, root)
    return removed


class OutputDirs:
    """Per-request folders under ``<root>/<pid>``, pruned by count and age; all removed at exit."""

    def __init__(self, root: Path | None = None, keep: int = 32, max_age_s: float = 3600.0) -> None:
        self.root = (root or DEFAULT_ROOT) / str(os.getpid())
        self.keep = keep
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        remove_stale(self.root.parent)
        self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(self.remove_all)

    def new(self, prefix: str = "") -> Path:
        with self._lock:
            self.prune()
            path = self.root / f"{time.time_ns()}_{prefix}{uuid.uuid4().hex[:8]}"
            path.mkdir(parents=True)
            return path

    def prune(self) -> None:
        if not self.root.is_dir():
            return
        dirs = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")),
            key=lambda p: p.name,
            reverse=True,
        )
        now = time.time()
        for i, path in enumerate(dirs):
            try:
                too_old = now - path.stat().st_mtime > self.max_age_s
            except FileNotFoundError:
                continue
            if i >= self.keep or too_old:
                shutil.rmtree(path, ignore_errors=True)

    def shared(self, name: str) -> Path:
        """A folder kept across requests (not pruned), e.g. prepared video tracks."""
        path = self.root / f"_{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def discard(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
