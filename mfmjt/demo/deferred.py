"""A value made once, by whoever asks for it first, that everyone else waits for.

``app.py`` makes the demo's service this way: the page answers first, and torch, the service and the
configured models load right after, in a background thread that asks for it; a request that arrives
meanwhile waits for them instead of failing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StartupError(RuntimeError):
    """Making the value failed (a bug or a broken installation: the cause is logged with its traceback)."""


class Deferred(Generic[T]):
    """``make()`` run once, by the first :meth:`get`; later calls wait for it and share its result."""

    def __init__(self, make: Callable[[], T], name: str = "deferred") -> None:
        self._make = make
        self.name = name
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self._value: T | None = None
        self._error: Exception | None = None

    @classmethod
    def of(cls, value: T) -> Deferred[T]:
        """A value that is already made."""
        made = cls(lambda: value)
        made.get()
        return made

    @property
    def done(self) -> bool:
        """Whether the value is made (or making it failed)."""
        return self._done.is_set()

    def _claim(self) -> bool:
        """Whether the caller is the first to ask, the one to make the value."""
        with self._lock:
            if self._started:
                return False
            self._started = True
            return True

    def _run(self) -> None:
        try:
            self._value = self._make()
        except Exception as exc:  # kept for every caller of get()
            logger.exception("%s failed", self.name)
            self._error = exc
        finally:
            self._done.set()

    def get(self, waiting: Callable[[], object] | None = None, timeout: float | None = None) -> T:
        """The value: made here by the first caller; the others wait for it, calling ``waiting`` first
        when it is not ready yet (e.g. to tell the user). Raises :class:`StartupError` if making it
        failed, TimeoutError after ``timeout`` seconds."""
        if self._claim():
            self._run()
        elif not self._done.is_set():
            if waiting is not None:
                waiting()
            if not self._done.wait(timeout):
                raise TimeoutError(f"{self.name} is not ready after {timeout:g} s")
        if self._error is not None:
            raise StartupError(f"{self.name} failed: {self._error}") from self._error
        return self._value  # type: ignore[return-value]
