"""What the demo does, as plain methods: check a request, generate, write the files, describe the result.

The Gradio layout (``app.py``) only wires components to these methods. Per request the work is split
so that only the network needs a GPU reservation and the one generation slot (:attr:`DemoService.slot`):
the request is checked and the video decoded on the CPU first, outside the slot, so that a small request
queued behind a heavy upload waits only for the model's share of it; :meth:`DemoService.run_model`
(wrapped by ``spaces.GPU`` on a ZeroGPU Space) computes features, samples and decodes audio; the mp4s
and pictures are written on the CPU afterwards, outside the slot again. The video track of a clip is
prepared once (copied, or re-encoded at most once) and shared by both guidance modes and by every
remix, which therefore only encode audio.

Every failure a user can cause raises :class:`UserError` with a plain sentence; anything else is
logged with its traceback and reported without internals.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import soundfile as sf
from PIL import Image

from mfmjt import media
from mfmjt.demo import plots, video_track
from mfmjt.demo.files import OutputDirs
from mfmjt.demo.models import ModelCache, ModelError
from mfmjt.demo.settings import DEMO_LIMITS, MODE_LABELS, SWEEP_OMEGAS, T2A_DEFAULT_DURATION, UserError
from mfmjt.pipeline import GenerationResult, Pipeline, file_digest
from mfmjt.request import GenerationRequest, Limits, RequestError

logger = logging.getLogger(__name__)

# DEMO_LIMITS, MODE_LABELS, SWEEP_OMEGAS, T2A_DEFAULT_DURATION and UserError live in mfmjt.demo.settings,
# importable without torch (the page is laid out from them); they are here as before too
STAGE_LABELS = {
    "decode_video": "decode video",
    "clip_features": "CLIP",
    "sync_features": "sync",
    "text_features": "text",
    "network": "network",
    "audio_decode": "audio decode",
    "video_track": "video track",
    "write_files": "write files",
}
ProgressCallback = Callable[[int, int], None]
GpuWrapper = Callable[[Callable[..., int]], Callable[[Callable], Callable]]


def _over(duration: Any, limit: float) -> bool:
    """Whether ``duration`` is a finite number of seconds beyond ``limit`` (validation judges the rest)."""
    if isinstance(duration, bool):
        return False
    try:
        seconds = float(duration)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(seconds) and seconds > limit


def _no_gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    return lambda fn: fn


@dataclass
class VideoOutput:
    mp4s: dict[str, Path]  # mode -> mp4
    wavs: list[Path]
    info: str
    seed: int
    state: dict


@dataclass
class AudioOutput:
    wavs: dict[str, Path]  # mode -> wav
    info: str
    seed: int
    state: dict


@dataclass
class _Prepared:
    """A checked request with its model and, for a video, the decoded frames and the track key."""

    model: str
    pipe: Pipeline
    request: GenerationRequest
    decoded: media.DecodedVideo | None = None
    digest: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""  # for the user, when the service changed the request (a duration over the limit)


class _LRU(OrderedDict):
    """A small thread-safe cache; ``evict`` is called on each value it drops."""

    def __init__(self, size: int, evict: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()
        self.evict = evict

    def fetch(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = make()
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                _, dropped = self.popitem(last=False)
                if self.evict is not None and dropped is not None and dropped != value:
                    self.evict(dropped)
        return value

    def forget(self, key: Any) -> None:
        with self.lock:
            self.pop(key, None)


@dataclass
class GpuCost:
    """Measured GPU-side seconds per second of audio: per sampling step, and the rest (features, vocoder)."""

    per_step: float
    fixed: float

    @classmethod
    def from_result(cls, result: GenerationResult) -> GpuCost:
        seconds = max(result.duration, 1e-3)
        network = result.timings.get("network", 0.0)
        rest = max(result.timings.get("total", 0.0) - network, 0.0)
        return cls(network / max(int(result.settings.get("steps", 1)), 1) / seconds, rest / seconds)


def gpu_seconds(steps: int, seconds: float, cost: GpuCost | None = None) -> int:
    """ZeroGPU reservation for one request: 10 s plus three times the measured cost, at most 120 s.

    ``cost`` is what the model's previous request measured inside the reservation; before the first one
    the reservation is a conservative 30 s for one step, 60 s for more.
    """
    if cost is None:
        return 30 if steps <= 1 else 60
    estimate = seconds * (cost.fixed + cost.per_step * max(steps, 1))
    return int(min(120, 10 + 3 * estimate))


class DemoService:
    """The demo's operations on a set of models, without any Gradio in them."""

    def __init__(
        self,
        models: ModelCache,
        outputs: OutputDirs | None = None,
        *,
        limits: Limits = DEMO_LIMITS,
        gpu: GpuWrapper = _no_gpu,
        allowed_roots: list[Path] | None = None,
    ) -> None:
        self.models = models
        self.outputs = outputs or OutputDirs()
        self.limits = limits
        self.allowed_roots = [Path(p).resolve() for p in allowed_roots] if allowed_roots else None
        self._decoded = _LRU(2)
        self._costs: dict[str, GpuCost] = {}  # per model, from its latest request
        self._tracks = _LRU(16, evict=lambda path: path.unlink(missing_ok=True))
        # the one generation slot: requests are checked, decoded and written concurrently (the app lets
        # a few run at once), but the model runs one request at a time
        self.slot = threading.Lock()
        self.run_model = gpu(self._request_seconds)(self._run_model)
        self.run_sweep = gpu(self._sweep_seconds)(self._run_sweep)

    # ------------------------------------------------------------------------------ checks
    def pipeline(self, model: str) -> Pipeline:
        try:
            return self.models.get(model)
        except ModelError as exc:
            raise UserError(str(exc)) from exc

    def _video_file(self, video: Any) -> Path:
        if isinstance(video, dict):  # a raw gr.Video / FileData payload
            video = video.get("video", video)
            video = video.get("path") if isinstance(video, dict) else video
        if not video:
            raise UserError(
                "no video: upload a video (for sound from a prompt alone, use the Text-to-Audio tab "
                "or the text_to_audio endpoint)"
            )
        if not isinstance(video, (str, Path)) or len(str(video)) > 4096:
            raise UserError("video must be an uploaded file")
        path = Path(video)
        try:
            resolved = path.resolve()
            is_file = resolved.is_file()
        except (OSError, ValueError):
            raise UserError("video must be an uploaded file") from None
        if self.allowed_roots is not None and not any(resolved.is_relative_to(r) for r in self.allowed_roots):
            raise UserError(f"the video {path.name[:80]!r} is not a file uploaded to this demo; upload it")
        if not is_file:
            raise UserError(f"the video file is missing on the server ({path.name[:80]}); upload it again")
        return resolved

    def check(
        self,
        video: Any,
        prompt: Any,
        negative_prompt: Any,
        duration: Any,
        steps: Any,
        cfg_strength: Any,
        guidance: Any,
        seed: Any,
        randomize_seed: Any,
        model: Any,
    ) -> _Prepared:
        """The checked request (raises UserError); for a video, also decoded (cached per file and length)."""
        pipe = self.pipeline(model)
        path = self._video_file(video) if video is not None else None
        capped = _over(duration, pipe.max_duration)
        if capped:  # a finite length beyond this demo's limit (even 1e308 s) is cut to the limit, and said
            duration = pipe.max_duration
        request = GenerationRequest(
            video=path,
            prompt=prompt,
            negative_prompt=negative_prompt,
            duration=duration,
            steps=steps,
            cfg_strength=cfg_strength,
            guidance=guidance,
            seed=None if randomize_seed is True else seed,
        )
        try:
            request = request.validate(self.limits, pipe.recommended)
        except RequestError as exc:
            raise UserError(str(exc)) from None
        prepared = _Prepared(str(model), pipe, request)
        if capped and path is None:
            prepared.note = f"Generated the first {pipe.max_duration:g} s: the limit of this demo."
        if path is not None:
            start = time.perf_counter()
            prepared.digest = file_digest(path)
            key = (prepared.digest, request.duration, pipe.max_duration)
            try:
                prepared.decoded = self._decoded.fetch(key, lambda: pipe.decode_video(path, request.duration))
            except media.MediaError as exc:
                raise UserError(str(exc).replace(str(path), path.name)) from None
            prepared.timings["decode_video"] = time.perf_counter() - start
        return prepared

    # ------------------------------------------------------------------------- GPU part
    def _request_seconds(self, model: str, request: GenerationRequest, *args: Any, **kwargs: Any) -> int:
        pipe = self.models.peek(model)
        max_duration = pipe.max_duration if pipe is not None else 30.0
        seconds = min(
            request.duration or (max_duration if request.video else T2A_DEFAULT_DURATION), max_duration
        )
        return gpu_seconds(int(request.steps), seconds, self._costs.get(model))

    def _sweep_seconds(self, model: str, request: GenerationRequest, *args: Any, **kwargs: Any) -> int:
        return self._request_seconds(model, request) + 5

    def _run_model(
        self,
        model: str,
        request: GenerationRequest,
        decoded: media.DecodedVideo | None,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Features, sampling and audio decoding for a checked request: the only GPU work."""
        pipe = self.models.get(model)
        try:
            return pipe.generate(
                video=request.video,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                duration=request.duration,
                steps=request.steps,
                cfg_strength=request.cfg_strength,
                guidance=request.guidance,
                seed=request.seed,
                progress=progress if request.steps > 1 else None,
                decoded=decoded,
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":
                raise UserError("out of memory: try a shorter duration or fewer steps") from None
            raise

    def _run_sweep(
        self,
        model: str,
        request: GenerationRequest,
        decoded: media.DecodedVideo | None,
        omegas: tuple[float, ...],
    ) -> list[GenerationResult]:
        """One single-mode one-step result per ω (one network forward each)."""
        return [self._run_model(model, replace(request, cfg_strength=w, steps=1), decoded) for w in omegas]

    # ------------------------------------------------------------------------ requests
    def _checked_run(
        self, video: Path | None, args: tuple, progress: ProgressCallback | None
    ) -> tuple[_Prepared, GenerationResult]:
        """Check a request (``args``: :meth:`check`'s arguments after the video) and run the model on it;
        the measured cost sizes the model's next GPU reservation."""
        prepared = self.check(video, *args)
        with self.slot:  # only the model waits for the one generation slot; decoding happened before
            result = self.run_model(prepared.model, prepared.request, prepared.decoded, progress)
        self._costs[prepared.model] = GpuCost.from_result(result)
        if prepared.note and not result.message:
            result.message = prepared.note
        return prepared, result

    def video_to_audio(
        self,
        video: Any,
        prompt: Any = "",
        negative_prompt: Any = "",
        duration: Any = None,
        steps: Any = None,
        cfg_strength: Any = None,
        guidance: Any = "both",
        seed: Any = 0,
        randomize_seed: Any = False,
        model: Any = "default",
        progress: ProgressCallback | None = None,
        remix: bool = False,
    ) -> VideoOutput:
        """Audio for a video: one mp4 (video + AAC) per guidance mode, the wavs, an info text, the seed."""
        video = self._video_file(video)  # refuses a missing video before anything else
        args = (prompt, negative_prompt, duration, steps, cfg_strength, guidance, seed, randomize_seed, model)
        prepared, result = self._checked_run(video, args, progress)
        request = prepared.request
        out_dir = self.outputs.new("v2a_")
        try:
            start = time.perf_counter()
            track = self._track(Path(request.video), prepared.digest, result.duration)
            prepared.timings["video_track"] = time.perf_counter() - start
            start = time.perf_counter()
            stem = f"mfmjt_{Path(request.video).stem[:40]}_{request.seed}"
            mp4s = {
                mode: video_track.mux_audio(
                    track, wave, result.sample_rate, out_dir / f"{stem}_{mode}.mp4", result.duration
                )
                for mode, wave in result.audio.items()
            }
            wavs = prepared.pipe.save_audio(result, out_dir, stem=stem, suffix=".wav")
            prepared.timings["write_files"] = time.perf_counter() - start
        except ValueError as exc:
            self.outputs.discard(out_dir)
            raise UserError(str(exc)) from None
        except Exception:
            self.outputs.discard(out_dir)
            raise
        state = self._state("v2a", prepared, result, wavs)
        state["video"] = str(request.video)
        return VideoOutput(mp4s, wavs, info_text(result, prepared.timings, remix), request.seed, state)

    def text_to_audio(
        self,
        prompt: Any,
        negative_prompt: Any = "",
        duration: Any = T2A_DEFAULT_DURATION,
        steps: Any = None,
        cfg_strength: Any = None,
        guidance: Any = "both",
        seed: Any = 0,
        randomize_seed: Any = False,
        model: Any = "default",
        progress: ProgressCallback | None = None,
        remix: bool = False,
    ) -> AudioOutput:
        """Audio from a prompt alone: one wav per guidance mode, an info text, the seed."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError("no prompt: describe the sound to generate")
        if duration in (None, "", 0):
            duration = T2A_DEFAULT_DURATION
        args = (prompt, negative_prompt, duration, steps, cfg_strength, guidance, seed, randomize_seed, model)
        prepared, result = self._checked_run(None, args, progress)
        out_dir = self.outputs.new("t2a_")
        start = time.perf_counter()
        files = prepared.pipe.save_audio(
            result, out_dir, stem=f"mfmjt_t2a_{prepared.request.seed}", suffix=".wav"
        )
        prepared.timings["write_files"] = time.perf_counter() - start
        wavs = dict(zip(result.audio, files, strict=True))
        state = self._state("t2a", prepared, result, files)
        return AudioOutput(wavs, info_text(result, prepared.timings, remix), prepared.request.seed, state)

    def remix(
        self, state: dict | None, cfg_strength: Any, guidance: Any, steps: Any
    ) -> VideoOutput | AudioOutput | None:
        """The shown one-step result again with another ω or guidance; None when there is nothing to remix."""
        if not isinstance(state, dict) or state.get("steps") != 1 or steps not in (1, None):
            return None
        common = dict(
            negative_prompt=state["negative_prompt"],
            duration=state["duration"],
            steps=1,
            cfg_strength=cfg_strength,
            guidance=guidance,
            seed=state["seed"],
            randomize_seed=False,
            model=state["model"],
            remix=True,
        )
        if state.get("kind") == "v2a":
            return self.video_to_audio(state["video"], state["prompt"], **common)
        return self.text_to_audio(state["prompt"], **common)

    def omega_sweep(
        self, state: dict | None, omegas: tuple[float, ...] = SWEEP_OMEGAS
    ) -> tuple[Image.Image, list[Path]]:
        """The shown request at one step with each ω (scaled guidance): a picture and one wav per ω."""
        if not isinstance(state, dict):
            raise UserError("generate something first; the sweep reuses its video, prompt and seed")
        prepared = self.check(
            state.get("video"),
            state["prompt"],
            state["negative_prompt"],
            state["duration"],
            1,
            omegas[0],
            "scaled",
            state["seed"],
            False,
            state["model"],
        )
        with self.slot:
            results = self.run_sweep(prepared.model, prepared.request, prepared.decoded, tuple(omegas))
        out_dir = self.outputs.new("sweep_")
        waves, files = {}, []
        for w, result in zip(omegas, results, strict=True):
            wave = result.audio["scaled"]
            waves[f"ω = {w:g}"] = wave
            files += prepared.pipe.save_audio(result, out_dir, stem=f"mfmjt_sweep_w{w:g}", suffix=".wav")
        picture = plots.spectrogram_panels(waves, results[0].sample_rate, results[0].duration)
        return picture, files

    @staticmethod
    def picture(state: dict | None) -> Image.Image | None:
        """Spectrograms of the shown results on one time axis, onsets marked (None before any result)."""
        if not isinstance(state, dict) or not state.get("wavs"):
            return None
        waves = {mode: sf.read(path, dtype="float32")[0] for mode, path in state["wavs"].items()}
        return plots.spectrogram_panels(waves, state["sample_rate"], state["seconds"], MODE_LABELS)

    # ------------------------------------------------------------------------- helpers
    def _track(self, video: Path, digest: str, duration: float) -> Path:
        """The H.264 track of ``video`` (content ``digest``) cut to ``duration`` s, prepared once.

        The cache is keyed, and a re-encoded track named, by the clip's content and the cut, so two
        users' clips never share a track. A clip usable as it is is cached as None and served from
        this request's own file, never from another request's upload.
        """
        key = (digest, round(duration, 6))

        def make() -> Path | None:
            track = video_track.prepare_track(video, duration, self.outputs.shared("tracks"), digest)
            return None if track == video else track

        track = self._tracks.fetch(key, make)
        if track is not None and not track.is_file():  # removed meanwhile (a cleanup): prepare it again
            self._tracks.forget(key)
            track = self._tracks.fetch(key, make)
        return video if track is None else track

    @staticmethod
    def _state(kind: str, prepared: _Prepared, result: GenerationResult, wavs: list[Path]) -> dict:
        request = prepared.request
        return dict(
            kind=kind,
            model=prepared.model,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            duration=request.duration,
            steps=request.steps,
            seed=request.seed,
            modes=list(result.audio),
            wavs={mode: str(p) for mode, p in zip(result.audio, wavs, strict=True)},
            sample_rate=result.sample_rate,
            seconds=result.duration,
        )


def info_text(result: GenerationResult, extra_timings: dict[str, float], remix: bool = False) -> str:
    """One markdown block: what was made, the cut-clip note if any, stage timings and RTF."""
    s = result.settings
    modes = " and ".join(MODE_LABELS[m] for m in result.audio)
    steps = f"{s['steps']} step" + ("s" if s["steps"] != 1 else "")
    head = (
        f"**{modes}** · {steps} · ω = {s['cfg_strength']:g} · seed {s['seed']} · {result.duration:.2f} s "
        f"at {result.sample_rate / 1000:g} kHz"
    )
    in_network = bool(s.get("guidance_in_network"))
    if in_network and s["cfg_strength"] != 1:
        head += " · guidance learnt in training (one forward per step)"
    if remix:
        head += " · live remix" + ("" if in_network else " of the stored one-step predictions")
    lines = [head]
    if result.message:
        lines.append(f"⚠️ {result.message}")
    timings = {**result.timings, **extra_timings}
    stages = " · ".join(
        f"{label} {timings[key]:.2f} s" for key, label in STAGE_LABELS.items() if timings.get(key)
    )
    total = result.timings.get("total", math.nan) + sum(extra_timings.values())
    lines.append(
        f"timings: {stages} — total {total:.2f} s · RTF {result.rtf:.3f} (generation) / "
        f"{total / result.duration:.3f} (with files)"
    )
    return "  \n".join(lines)


def describe_clip(video: str | None, max_duration: float) -> str:
    """A line about an uploaded clip (length, size), warning when it will be cut; never raises."""
    if not video:
        return ""
    import av

    try:
        with av.open(str(video)) as container:
            stream = media._video_stream(container)
            if stream is None:
                return "⚠️ this file has no video stream"
            seconds = container.duration / av.time_base if container.duration else None
            rate = stream.guessed_rate or stream.average_rate
            size = f"{stream.codec_context.width}×{stream.codec_context.height}"
    except Exception:  # noqa: BLE001 - a description only; generation reports the real error
        return "⚠️ this file cannot be read as a video"
    text = f"clip: {size}" + (f" · {float(rate):.3g} fps" if rate else "")
    if seconds is not None:
        text += f" · {seconds:.2f} s"
        if seconds > max_duration:
            text += f" — over this model's {max_duration:g} s limit: the first {max_duration:g} s are used"
    return text
