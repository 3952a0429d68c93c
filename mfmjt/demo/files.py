"""The demo's temporary files: one folder per app instance under one root, removed at start and at exit.

Each process writes under ``<root>/<pid>-<token>`` (``token`` is drawn once per process, so a later
process that gets the same pid, as in a restarted container, is told apart), Gradio's cache and uploads
included: :func:`use_own_gradio_cache` points ``GRADIO_TEMP_DIR`` at ``<instance>/_gradio``. At start-up
the folders of instances that no longer run are removed (what a killed server left), and at exit,
SIGTERM included (see ``app.py``), the process removes its own. Request folders inside are pruned by
count and age while it runs. ``MFMJT_TEMP_DIR`` moves the root (default ``$TMPDIR/mfmjt_app``).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

_TOKEN = uuid.uuid4().hex[:8]  # this process's instance, with its pid
_INSTANCE = re.compile(r"^(\d+)-([0-9a-f]{8})$")
GRADIO_SUBDIR = "_gradio"


def default_root() -> Path:
    """``$MFMJT_TEMP_DIR``, else ``$TMPDIR/mfmjt_app``."""
    return Path(os.environ.get("MFMJT_TEMP_DIR") or Path(tempfile.gettempdir()) / "mfmjt_app")


def instance_dir(root: Path | None = None) -> Path:
    """This process's folder under ``root``."""
    return (root or default_root()) / f"{os.getpid()}-{_TOKEN}"


def use_own_gradio_cache(root: Path | None = None) -> Path:
    """Point Gradio's cache and uploads (``GRADIO_TEMP_DIR``) into this instance's folder, so that they
    are removed with it; a ``GRADIO_TEMP_DIR`` set by the user is kept (and left to them). Call it before
    Gradio is imported. Returns Gradio's folder."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(instance_dir(root) / GRADIO_SUBDIR)
    return Path(os.environ["GRADIO_TEMP_DIR"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(name: str) -> bool:
    """Whether the instance folder ``name`` belongs to a process that no longer runs."""
    match = _INSTANCE.match(name)
    if match is None:  # a folder of an older version of the demo, or not ours to keep
        return not (name.isdigit() and int(name) != os.getpid() and _alive(int(name)))
    pid = int(match[1])
    if pid == os.getpid():
        return match[2] != _TOKEN  # an earlier process with this pid
    return not _alive(pid)


def remove_stale(root: Path) -> int:
    """Remove the folders under ``root`` of instances that are gone; how many were removed."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.iterdir():
        if path.is_dir() and _gone(path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    if removed:
        logger.info("removed %d stale temporary folder(s) under %s", removed, root)
    return removed


class OutputDirs:
    """Per-request folders under this instance's folder, pruned by count and age; all removed at exit."""

    def __init__(self, root: Path | None = None, keep: int = 32, max_age_s: float = 3600.0) -> None:
        self.root = instance_dir(root)
        self.keep = keep
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._owner = os.getpid()  # a forked worker never removes its parent's folder
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
        """Remove the instance's folder (its requests, tracks and, by default, Gradio's cache)."""
        if os.getpid() == self._owner:
            shutil.rmtree(self.root, ignore_errors=True)
