"""The demo's models: which can be chosen, loading them, and what the page says about each one.

Every model is loaded in the main process (at start-up by :meth:`ModelCache.load_all`, or on first
selection), never inside a GPU reservation, as ZeroGPU requires. What the page shows about a model (its
title, description, About text and examples) comes from the model's own directory: ``config.json``
(``name``, ``description``), a ``README.md`` model card and an optional ``examples.json``
(``{"videos": [{"video": path, "prompt": text}], "prompts": [text]}``, paths relative to the directory).

Nothing here imports torch until a model is loaded or checked: the page is laid out from this module
(names, cards, recommended sampling read from ``config.json``) before torch is imported.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mfmjt.demo.settings import DEMO_LIMITS
from mfmjt.model_dir import SamplingSettings, read_model_config
from mfmjt.request import Limits, Recommended, resolve_sampling
from mfmjt.weights import MMAUDIO_NAMES, default_model_dir

if TYPE_CHECKING:
    from mfmjt.pipeline import Pipeline

logger = logging.getLogger(__name__)

README_NAMES = ("README.md", "MODEL_CARD.md", "model_card.md")


class ModelError(ValueError):
    """A model is unknown or could not be loaded; the message is for the user."""


def registry_names() -> list[str]:
    """The public registry models, by their canonical (dashed) names, from :data:`weights.MMAUDIO_NAMES`."""
    return [name for name in MMAUDIO_NAMES if name.startswith("mmaudio-")]


def fits_in_memory(name: str) -> bool:
    """Whether registry model ``name`` passes the memory check it gets before loading
    (:func:`mfmjt.memory.check_memory_before_loading`, on the device it would load onto)."""
    import torch

    from mfmjt.memory import InsufficientMemoryError, check_memory_before_loading, estimate_pipeline_memory

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        check_memory_before_loading(estimate_pipeline_memory(MMAUDIO_NAMES[name], dtype), device)
    except InsufficientMemoryError as exc:
        logger.info("not offering %s: %s", name, exc)
        return False
    return True


def offered_names(configured: list[str], allowed: str | None = None) -> tuple[list[str], list[str]]:
    """The models visitors may choose, and those of them still subject to the memory check.

    The configured ones (loaded at start) come first, then ``allowed`` (the owner's comma-separated
    allow-list, ``$MFMJT_ALLOWED_MODELS``; "" allows no others). When ``allowed`` is None: every registry
    model, each offered only if it passes the memory check (:class:`ModelCache` runs the checks in the
    background, as they take seconds)."""
    names = list(dict.fromkeys(configured))
    if allowed is None:
        others = [name for name in registry_names() if name not in names]
        return names + others, others
    others = [name.strip() for name in allowed.split(",") if name.strip()]
    return names + [name for name in dict.fromkeys(others) if name not in names], []


def model_directory(name: str) -> Path | None:
    """The local directory a model name loads from, if it is one (``default`` or a path)."""
    if name == "default":
        return default_model_dir()
    path = Path(name).expanduser()
    return path if (path / "config.json").is_file() else None


@dataclass
class ModelCard:
    """What the page says about one model."""

    title: str
    description: str = ""
    about: str = ""  # the README / model card, markdown
    videos: list[tuple[str, str]] = field(default_factory=list)  # (video path, prompt)
    prompts: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, name: str, pipe: Pipeline | None = None) -> ModelCard:
        """The card of model ``name``: from its directory when it has one, else from the loaded pipeline."""
        directory = model_directory(name)
        card = cls(title=(pipe.name if pipe is not None and pipe.name else name))
        if pipe is not None:
            card.description = pipe.description
        if directory is None:
            return card
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            logger.warning("cannot read %s/config.json: %s", directory, exc)
            config = {}
        card.title = str(config.get("name") or card.title)
        card.description = str(config.get("description") or card.description)
        for readme in README_NAMES:
            if (directory / readme).is_file():
                card.about = (directory / readme).read_text(errors="replace").strip()
                break
        if card.about:  # the card's first paragraph is the short description; the rest is in About
            card.description = card.about.split("\n\n")[0]
        examples_file = directory / "examples.json"
        if examples_file.is_file():
            try:
                examples = json.loads(examples_file.read_text())
                for item in examples.get("videos", []):
                    video = (directory / item["video"]).resolve()
                    if video.is_file():
                        card.videos.append((str(video), str(item.get("prompt", ""))))
                card.prompts = [str(p) for p in examples.get("prompts", [])]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring %s: %s", examples_file, exc)
        return card


def read_recommendation(name: str) -> SamplingSettings | None:
    """Model ``name``'s recommended sampling as its directory's ``config.json`` states it, read without
    loading anything (what ``Pipeline.recommended`` will be once loaded); None for a model that is not a
    local directory (a registry model, a Hub repo id, a bare network file), or an unreadable config."""
    directory = model_directory(name)
    if directory is None:
        return None
    try:
        return read_model_config(directory).recommended
    except (OSError, ValueError) as exc:
        logger.warning("cannot read the recommended sampling of %s: %s", directory, exc)
        return None


def model_settings(model: Pipeline | SamplingSettings, limits: Limits = DEMO_LIMITS) -> Recommended:
    """The page's default steps and ω for a model: what a request that leaves them unset gets
    (:func:`mfmjt.request.resolve_sampling` of the model's recommendation within the demo's ``limits``, as
    :meth:`DemoService.check` resolves it), from a loaded pipeline or, before loading, from
    :func:`read_recommendation`."""
    recommended = model if isinstance(model, SamplingSettings) else model.recommended
    sampling = resolve_sampling(recommended, limits)
    return Recommended(steps=sampling.steps, cfg_strength=sampling.cfg_strength)


class ModelCache:
    """Pipelines by name: loaded once in the main process, then kept. A failed load is retried next time."""

    def __init__(
        self,
        loaders: dict[str, Callable[[], Pipeline]],
        *,
        checked: list[str] | tuple[str, ...] = (),
        check: Callable[[str], bool] = fits_in_memory,
        preload: Sequence[str] = (),
    ) -> None:
        """``checked``: names offered only if ``check`` passes (run once, in a background thread started
        when first needed, see :meth:`start_checks`). ``preload``: the names loaded at start-up
        (:meth:`load_all` with no names); until they are, :meth:`describe` says they are loading."""
        if not loaders:
            raise ValueError("no models configured")
        self.loaders = dict(loaders)
        self.names = list(self.loaders)
        self.preload = [n for n in preload if n in self.loaders]
        self._pipelines: dict[str, Pipeline] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._checked = [n for n in checked if n in self.loaders]
        self._check = check
        self._passed: dict[str, bool] = {}
        self._checks_done = threading.Event()
        self._checks_lock = threading.Lock()  # not _lock: that one is held while a model loads
        self._checks_started = False
        self._checks_thread: threading.Thread | None = None
        self._stop_checks = threading.Event()
        if not self._checked:
            self._checks_done.set()

    def start_checks(self) -> None:
        """Start the memory checks in the background (once). They are not started with the cache: the
        first check builds models on torch's meta device, whose first use imports seconds of torch
        internals, and that should not delay a server's start-up. ``app.main`` starts them once the
        server answers; else the first question about what is offered does."""
        with self._checks_lock:
            if self._checks_started or self._checks_done.is_set():
                return
            self._checks_started = True
            self._checks_thread = threading.Thread(target=self._run_checks, name="model-checks", daemon=True)
        self._checks_thread.start()

    def stop_checks(self, timeout: float | None = None) -> None:
        """Let the memory checks end after the one running and wait up to ``timeout`` s for it (at exit: a
        thread still inside torch when the interpreter ends aborts it). Unchecked models stay unoffered."""
        self._stop_checks.set()
        if self._checks_thread is not None:
            self._checks_thread.join(timeout)

    def _run_checks(self) -> None:
        for name in self._checked:
            if self._stop_checks.is_set():
                break
            try:
                self._passed[name] = bool(self._check(name))
            except Exception:  # noqa: BLE001 - a check that fails offers nothing
                logger.exception("checking model %r failed", name)
                self._passed[name] = False
        self._checks_done.set()

    def offered(self, timeout: float | None = None) -> list[str]:
        """The names visitors may choose (waiting up to ``timeout`` s for the checks; those not done yet
        are left out). ``timeout=0`` asks what is known now, without starting the checks."""
        if timeout != 0:
            self.start_checks()
        self._checks_done.wait(timeout)
        return [n for n in self.names if n not in self._checked or self._passed.get(n, False)]

    def get(self, name: str) -> Pipeline:
        """The pipeline ``name``, loading it if needed; ModelError if not offered or unloadable."""
        known = isinstance(name, str) and name in self.loaders
        if not known or (name in self._checked and name not in self.offered()):  # checked: wait for it
            raise ModelError(
                f"the model {str(name)[:60]!r} is not offered by this demo; choose one of {self.offered()}"
            )
        with self._lock:
            if name not in self._pipelines:
                start = time.perf_counter()
                try:
                    self._pipelines[name] = self.loaders[name]()
                except Exception as exc:
                    logger.exception("loading model %r failed", name)
                    self._errors[name] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    raise ModelError(f"model {name!r} could not be loaded: {self._errors[name]}") from exc
                self._errors.pop(name, None)
                logger.info("loaded model %r in %.1f s", name, time.perf_counter() - start)
            return self._pipelines[name]

    def load_all(self, names: list[str] | None = None) -> None:
        """Load ``names`` (default: :attr:`preload`, else all) now; failures are logged and reported when
        chosen."""
        for name in names or self.preload or self.names:
            try:
                self.get(name)
            except ModelError as exc:
                logger.warning("%s", exc)

    def peek(self, name: str) -> Pipeline | None:
        return self._pipelines.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._pipelines

    def describe(self, name: str) -> str:
        """One markdown line about model ``name`` (loaded or not)."""
        pipe = self.peek(name)
        if pipe is None:
            error = self._errors.get(name)
            if error:
                return f"**{name}**: could not be loaded ({error})"
            if name in self.preload:
                return f"**{name}**: loading… (the server has just started; requests wait for it)"
            return f"**{name}**: not loaded yet (it is fetched when selected)"
        info = pipe.info()
        card = ModelCard.read(name, pipe)
        return (
            f"**Model:** {card.title} · {info['kind']} · {info['device']} · {info['dtype']} · "
            f"{info['parameters']} parameters · {pipe.sample_rate / 1000:g} kHz · "
            f"up to {pipe.max_duration:g} s per request"
        )
