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

from mfmjt.guidance import GUIDANCE_CHOICES, check_guidance
from mfmjt.model_dir import SamplingSettings

MAX_SEED = 2**31 - 1  # random seeds are drawn up to this
MAX_REQUEST_SECONDS = 24 * 3600.0  # a longer duration is refused (the pipeline cuts to its max_duration)


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
class Sampling:
    """How to sample: steps, guidance strength ω and guidance rule; None means "the model's".

    The one object for sampling settings. :meth:`resolve` fills what is None from a model's
    recommendation (``Pipeline.recommended``, a model directory's ``recommended``): its steps, its ω
    at its steps (else 1.5 at one step, 4.5 above) and its guidance rule. The CLI, request validation,
    ``mfmjt evaluate``, the Python API and the demo resolve through it.
    """

    steps: int | None = None
    cfg_strength: float | None = None
    guidance: str | None = None

    def resolve(self, recommended: SamplingSettings | str) -> Sampling:
        """Every field set: what was given, else the recommendation (a ``SamplingSettings``, or an
        objective name for its defaults). Values are checked by :meth:`GenerationRequest.validate`."""
        if isinstance(recommended, str):
            recommended = SamplingSettings.for_objective(recommended)
        steps = recommended.steps if self.steps is None else self.steps
        cfg = self.cfg_strength
        if cfg is None:
            whole = isinstance(steps, (int, float)) and not isinstance(steps, bool) and steps == int(steps)
            cfg = recommended.cfg_for(int(steps)) if whole else recommended.cfg
        guidance = recommended.guidance if self.guidance is None else self.guidance
        return Sampling(steps, cfg, guidance)

    @property
    def modes(self) -> tuple[str, ...]:
        """The guidance modes computed (two for ``"both"``)."""
        return check_guidance(self.guidance or "scaled")


@dataclass(frozen=True)
class Recommended:
    """Steps and ω that suit a model (kept for earlier callers; see :class:`Sampling`)."""

    steps: int
    cfg_strength: float


def recommended_settings(objective: str) -> Recommended:
    """Steps and ω that suit a model trained with ``objective`` (flow matching: 25 / 4.5; MeanFlow: 1 / 1.5),
    from :meth:`mfmjt.model_dir.SamplingSettings.for_objective`. A loaded model's own recommendation is
    ``Pipeline.recommended``; prefer :meth:`Sampling.resolve` with it."""
    settings = SamplingSettings.for_objective(objective)
    return Recommended(steps=settings.steps, cfg_strength=settings.cfg)


def resolve_sampling(
    recommended: SamplingSettings | str,
    limits: Limits = Limits(),  # noqa: B008
    steps: Any = None,
    cfg_strength: Any = None,
    guidance: Any = None,
) -> Sampling:
    """The settings a model with this recommendation samples with for these arguments (None: the
    model's), checked against ``limits`` as a request's are (RequestError names a bad one). What
    ``Pipeline.sampling`` answers, and the demo's page before its models are loaded."""
    request = GenerationRequest(prompt="-", steps=steps, cfg_strength=cfg_strength, guidance=guidance)
    return request.validate(limits, recommended).sampling


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
    """A whole number in [low, high], compared exactly (a float is not rounded to a neighbour of ``high``)."""
    expected = f"a whole number from {low} to {high}"
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | float = value
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) <= 100:
        number = int(value.strip())
    else:
        number = _number(value, field, expected)
        if number != int(number):
            raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
        number = int(number)
    if not low <= number <= high:
        raise RequestError(f"{field} must be {expected}, got {_shown(value)}")
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

    ``duration`` None (or 0) means the whole video / the default length; ``steps``, ``cfg_strength`` and
    ``guidance`` None mean the model's (see :class:`Sampling`); ``seed`` None draws a random seed.
    """

    video: str | Path | None = None
    prompt: Any = ""
    negative_prompt: Any = ""
    duration: Any = None
    steps: Any = None
    cfg_strength: Any = None
    guidance: Any = None
    seed: Any = 0

    @property
    def sampling(self) -> Sampling:
        """The sampling settings (all set once validated)."""
        return Sampling(self.steps, self.cfg_strength, self.guidance)

    def validate(
        self,
        limits: Limits = Limits(),  # noqa: B008
        recommended: SamplingSettings | str = "meanflow",
    ) -> GenerationRequest:
        """A copy with every field checked and normalised, the sampling settings left unset resolved from
        ``recommended`` (the model's ``Pipeline.recommended``, or an objective name); raises
        RequestError naming the first bad field."""
        prompt = _text(self.prompt, "prompt", limits.max_prompt_chars)
        negative = _text(self.negative_prompt, "negative prompt", limits.max_prompt_chars)
        video = self.video
        if video is not None and not isinstance(video, (str, Path)):
            raise RequestError(f"video must be a file path, got {type(video).__name__}")
        if video is not None and not str(video):
            video = None
        if video is None and not prompt.strip():
            raise RequestError("give a video, a prompt, or both")
        given = Sampling(self.steps, self.cfg_strength, self.guidance)
        if given.guidance is not None and (
            not isinstance(given.guidance, str) or given.guidance not in GUIDANCE_CHOICES
        ):
            raise RequestError(
                f"guidance must be one of {list(GUIDANCE_CHOICES)}, got {_shown(self.guidance)}"
            )
        steps = None if given.steps is None else _whole(given.steps, "steps", 1, limits.max_steps)
        if given.cfg_strength is not None:
            expected = f"a number from 0 to {limits.max_cfg:g}"
            cfg = _number(given.cfg_strength, "ω (cfg_strength)", expected)
            if not 0 <= cfg <= limits.max_cfg:
                raise RequestError(f"ω (cfg_strength) must be {expected}, got {_shown(self.cfg_strength)}")
            given = replace(given, cfg_strength=cfg)
        sampling = replace(given, steps=steps).resolve(recommended)
        # a recommendation beyond what this caller allows is capped, never refused
        sampling = replace(
            sampling,
            steps=min(sampling.steps, limits.max_steps),
            cfg_strength=min(sampling.cfg_strength, limits.max_cfg),
        )
        duration: float | None = None
        if self.duration is not None and self.duration != "":
            expected = f"0 (the default) or a positive number of seconds up to {MAX_REQUEST_SECONDS:g}"
            duration = _number(self.duration, "duration", expected)
            if not 0 <= duration <= MAX_REQUEST_SECONDS:
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
            steps=sampling.steps,
            cfg_strength=sampling.cfg_strength,
            guidance=sampling.guidance,
            seed=seed,
        )
