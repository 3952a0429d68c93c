"""One generation request and its validation, shared by the pipeline, the CLI and the demo.

Every caller builds a :class:`GenerationRequest` from whatever it received (argparse values, JSON from
an API client, Python arguments) and calls :meth:`GenerationRequest.validate` with its own
:class:`Limits`. Validation never lets a Python exception escape with an internal message: anything
unusable raises :class:`RequestError` (a ``ValueError``) whose text names the field, the expected value
and, shortened, what was given.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mfmjt.guidance import GUIDANCE_CHOICES

MAX_SEED = 2**31 - 1


class RequestError(ValueError):
    """A request field is unusable; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class Limits:
    """What one caller accepts. The demo is stricter than the library."""

    max_steps: int = 200
    max_cfg: float = 100.0
    max_prompt_chars: int = 2000  # CLIP reads 77 tokens; longer prompts only cost memory and time
    max_seed: int = 2**63 - 1


@dataclass(frozen=True)
class Recommended:
    """Sampling settings that suit a model."""

    steps: int
    cfg_strength: float


def recommended_settings(objective: str) -> Recommended:
    """Steps and ω that suit a model trained with ``objective`` (flow matching: 25 / 4.5; MeanFlow: 1 / 1.5).

    The single place to switch to a model directory's own ``recommended`` settings.
    """
    if objective == "flow_matching":
        return Recommended(steps=25, cfg_strength=4.5)
    return Recommended(steps=1, cfg_strength=1.5)


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 400-digit number or a 10 MB string stays short)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"a {len(str(abs(value)))}-digit number"
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _number(value: Any, field: str, expected: str) -> float:
    """``value`` as a finite float, or RequestError (never OverflowError, TypeError...)."""
    if isinstance(value, bool):
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
    if isinstance(value, str) and len(value) > 100:
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
    return number


def _whole(value: Any, field: str, low: int, high: int) -> int:
    expected = f"a whole number from {low} to {high}"
    if isinstance(value, int) and not isinstance(value, bool):  # exact: a float cannot hold 2**63 - 1
        if not low <= value <= high:
            raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
        return int(value)
    number = _number(value, field, expected)
    if number != int(number) or not low <= number <= high:
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
    if isinstance(value, int):
        return int(value)
    return int(number)


def _text(value: Any, field: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError(f"{field} must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise RequestError(f"{field} is {len(value)} characters long; at most {limit} are accepted")
    if "\x00" in value:
        raise RequestError(f"{field} contains a NUL character")
    return value


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. Fields hold raw values until :meth:`validate` returns a checked copy.

    ``duration`` None (or 0) means the whole video / the default length; ``cfg_strength`` None means
    the model's recommended ω for ``steps``; ``seed`` None draws a random seed.
    """

    video: str | Path | None = None
    prompt: Any = ""
    negative_prompt: Any = ""
    duration: Any = None
    steps: Any = 1
    cfg_strength: Any = None
    guidance: Any = "scaled"
    seed: Any = 0

    def validate(self, limits: Limits = Limits(), objective: str = "meanflow") -> GenerationRequest:  # noqa: B008
        """A copy with every field checked and normalised; raises RequestError naming the first bad one."""
        prompt = _text(self.prompt, "prompt", limits.max_prompt_chars)
        negative = _text(self.negative_prompt, "negative prompt", limits.max_prompt_chars)
        video = self.video
        if video is not None and not isinstance(video, (str, Path)):
            raise RequestError(f"video must be a file path, got {type(video).__name__}")
        if video is not None and not str(video):
            video = None
        if video is None and not prompt.strip():
            raise RequestError("give a video, a prompt, or both")
        steps = _whole(self.steps, "steps", 1, limits.max_steps)
        if self.cfg_strength is None:
            cfg = recommended_settings(objective if steps == 1 else "flow_matching").cfg_strength
        else:
            expected = f"a number from 0 to {limits.max_cfg:g}"
            cfg = _number(self.cfg_strength, "ω (cfg_strength)", expected)
            if not 0 <= cfg <= limits.max_cfg:
                raise RequestError(f"ω (cfg_strength) must be {expected}, got {_shown(self.cfg_strength)}")
        if not isinstance(self.guidance, str) or self.guidance not in GUIDANCE_CHOICES:
            raise RequestError(
                f"guidance must be one of {list(GUIDANCE_CHOICES)}, got {_shown(self.guidance)}"
            )
        duration: float | None = None
        if self.duration is not None and self.duration != "":
            expected = "0 (the default) or a positive number of seconds"
            duration = _number(self.duration, "duration", expected)
            if duration < 0:
                raise RequestError(f"duration must be {expected}, got {_shown(self.duration)}")
            duration = duration or None
        seed = (
            random.randint(0, MAX_SEED)
            if self.seed is None
            else _whole(self.seed, "seed", 0, limits.max_seed)
        )
        return replace(
            self,
            video=video,
            prompt=prompt,
            negative_prompt=negative,
            duration=duration,
            steps=steps,
            cfg_strength=cfg,
            guidance=self.guidance,
            seed=seed,
        )
