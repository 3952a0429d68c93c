"""The demo's models: which can be chosen, loading them, and what the page says about each one.

Every model is loaded in the main process (at start-up by :meth:`ModelCache.load_all`, or on first
selection), never inside a GPU reservation, as ZeroGPU requires. What the page shows about a model (its
title, description, About text and examples) comes from the model's own directory: ``config.json``
(``name``, ``description``), a ``README.md`` model card and an optional ``examples.json``
(``{"videos": [{"video": path, "prompt": text}], "prompts": [text]}``, paths relative to the directory).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mfmjt.pipeline import MMAUDIO_NAMES, Pipeline, default_model_dir
from mfmjt.request import Recommended, recommended_settings

logger = logging.getLogger(__name__)

README_NAMES = ("README.md", "MODEL_CARD.md", "model_card.md")


class ModelError(ValueError):
    """A model is unknown or could not be loaded; the message is for the user."""


def registry_names() -> list[str]:
    """The public registry models, by their canonical (dashed) names, from :data:`pipeline.MMAUDIO_NAMES`."""
    return [name for name in MMAUDIO_NAMES if name.startswith("mmaudio-")]


def offered_names(configured: list[str]) -> list[str]:
    """The configured models first, then every registry model not already among them."""
    names = list(dict.fromkeys(configured))
    return names + [name for name in registry_names() if name not in names]


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


def model_settings(pipe: Pipeline) -> Recommended:
    """Default steps and ω for a loaded model (see :func:`mfmjt.request.recommended_settings`)."""
    return recommended_settings(pipe.objective)


class ModelCache:
    """Pipelines by name: loaded once in the main process, then kept. A failed load is retried next time."""

    def __init__(self, loaders: dict[str, Callable[[], Pipeline]]) -> None:
        if not loaders:
            raise ValueError("no models configured")
        self.loaders = dict(loaders)
        self.names = list(self.loaders)
        self._pipelines: dict[str, Pipeline] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Pipeline:
        """The pipeline ``name``, loading it if needed; ModelError if unknown or unloadable."""
        if not isinstance(name, str) or name not in self.loaders:
            raise ModelError(f"unknown model {str(name)[:60]!r}; choose one of {self.names}")
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
        """Load ``names`` (default: all) now; failures are logged and reported when chosen."""
        for name in names or self.names:
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
            return f"**{name}**: not loaded yet (it is fetched when selected)"
        info = pipe.info()
        card = ModelCard.read(name, pipe)
        return (
            f"**Model:** {card.title} · {info['kind']} · {info['device']} · {info['dtype']} · "
            f"{info['parameters']} parameters · {pipe.sample_rate / 1000:g} kHz · "
            f"up to {pipe.max_duration:g} s per request"
        )
