"""Gradio demo of MF-MJT: one-step video-to-audio and text-to-audio, standard vs scaled CFG side by side.

Run ``python app.py`` (serves on 0.0.0.0:7860; ``PORT`` or ``GRADIO_SERVER_PORT`` override the port).
``MFMJT_MODEL`` names the model(s) to offer, comma-separated (default ``default``, the embedded model);
``MFMJT_MAX_DURATION`` caps the seconds generated per request. This file is also the Hugging Face Space
entry point; on a ZeroGPU Space the generation functions run under ``spaces.GPU``.
"""

from __future__ import annotations

try:  # must precede torch on a ZeroGPU Space
    import spaces
except ImportError:  # pragma: no cover - spaces is in requirements.txt
    spaces = None

import logging
import math
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import gradio as gr

from mfmjt.acceleration import options_from_env
from mfmjt.media import VIDEO_SUFFIXES
from mfmjt.pipeline import GenerationResult, Pipeline, load_pipeline

logger = logging.getLogger("mfmjt.app")

REPO_ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
MAX_STEPS = 25  # the steps slider's range, also enforced for API calls
MAX_CFG = 10.0
ONE_STEP_CFG, MULTI_STEP_CFG = 1.5, 4.5
T2A_DEFAULT_DURATION = 8.0
MAX_SEED = 2**31 - 1
GUIDANCE_CHOICES = [("standard", "standard"), ("scaled", "scaled"), ("compare both", "both")]
MODE_LABELS = {"standard": "standard CFG", "scaled": "scaled CFG"}
STAGE_LABELS = {
    "decode_video": "decode video",
    "clip_features": "CLIP",
    "sync_features": "sync",
    "text_features": "text",
    "conditions": "conditions",
    "network": "network",
    "audio_decode": "audio decode",
    "write_files": "write files",
}
T2A_EXAMPLES = [
    "a red ball bounces twice, a blue square falls and hits the ground",
    "a green triangle falls and hits the ground, rain",
    "a yellow diamond bounces three times",
]

ABOUT = """
**MF-MJT** (MeanFlow-accelerated multimodal video-to-audio) is an MMAudio-style multimodal transformer
that predicts the *average* velocity of the flow from noise to audio, so a single network evaluation
turns noise into a soundtrack. Its **scaled classifier-free guidance** rescales the unconditional
prediction by its projection onto the conditional one, which keeps one-step guidance from overshooting.
At one step the player pair and the ω slider let you compare both guidances live. The embedded default
learnt guidance in training: it takes ω and the guidance rule as inputs, so a guided sample costs one network
forward and moving ω runs that one forward again; for models guided the classic way (two forwards) moving ω
only re-mixes the two stored predictions.

**The embedded default model** is a small model trained on procedurally generated scenes: coloured balls,
squares, triangles and diamonds that fall, bounce, collide, roll or hover, with a little background or
off-screen noise. It knows nothing else, so real videos get synthetic clicks and knocks.

**Real videos** need full-size weights: `MFMJT_MODEL=mmaudio-small-16k python app.py` downloads MMAudio's
public small_16k model (a flow-matching model: use 25 steps and ω = 4.5; one step sounds poor).
No public MF-MJT weights exist yet; a trained model directory or Hugging Face repo id works the same way:
`MFMJT_MODEL=/path/to/model python app.py` (a comma-separated list adds a model selector).
"""


def _refuse(message: str) -> gr.Error:
    """A gr.Error for the user, without a traceback in the server log (the log gets one line)."""
    logger.info("refused: %s", message)
    return gr.Error(message, print_exception=False)


# ------------------------------------------------------------------------------------------ models
class ModelCache:
    """Pipelines by name: loaded on first use, then kept. A failed load is retried next time."""

    def __init__(self, loaders: dict[str, Callable[[], Pipeline]]) -> None:
        if not loaders:
            raise ValueError("no models configured")
        self.loaders = dict(loaders)
        self.names = list(self.loaders)
        self._pipelines: dict[str, Pipeline] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Pipeline:
        """The pipeline ``name``; raises ``gr.Error`` if it is unknown or cannot be loaded."""
        if name not in self.loaders:
            raise _refuse(f"unknown model {name!r}; choose one of {self.names}")
        with self._lock:
            if name not in self._pipelines:
                start = time.perf_counter()
                try:
                    self._pipelines[name] = self.loaders[name]()
                except Exception as exc:
                    logger.exception("loading model %r failed", name)
                    self._errors[name] = f"{type(exc).__name__}: {exc}"
                    raise _refuse(f"model {name!r} could not be loaded: {exc}") from exc
                self._errors.pop(name, None)
                logger.info(
                    "loaded model %r in %.1f s: %s",
                    name,
                    time.perf_counter() - start,
                    self._pipelines[name].info(),
                )
            return self._pipelines[name]

    def peek(self, name: str) -> Pipeline | None:
        return self._pipelines.get(name)

    def describe(self, name: str) -> str:
        """Markdown describing model ``name`` (loaded or not)."""
        pipe = self.peek(name)
        if pipe is None:
            error = self._errors.get(name)
            return f"**{name}**: " + (f"could not be loaded ({error})" if error else "not loaded yet")
        info = pipe.info()
        text = (
            f"**Model:** {info['name'] or name} · {info['kind']} · {info['device']} · {info['dtype']} · "
            f"{info['parameters']} parameters · up to {pipe.max_duration:g} s per request"
        )
        return text + (f"  \n{info['description']}" if info["description"] else "")


# ------------------------------------------------------------------------------------------ files
class OutputDirs:
    """Per-request output folders under one temporary root, pruned by count and age.

    Gradio copies returned files into its own cache, so old folders can go at any time.
    """

    def __init__(self, root: Path | None = None, keep: int = 32, max_age_s: float = 3600.0) -> None:
        self.root = root or Path(tempfile.gettempdir()) / "mfmjt_app"
        self.keep = keep
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            self.prune()
            path = self.root / f"{time.time_ns()}_{uuid.uuid4().hex[:8]}"
            path.mkdir(parents=True)
            return path

    def prune(self) -> None:
        if not self.root.is_dir():
            return
        dirs = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
        now = time.time()
        for i, path in enumerate(dirs):
            try:
                too_old = now - path.stat().st_mtime > self.max_age_s
            except FileNotFoundError:
                continue
            if i >= self.keep or too_old:
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def discard(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------- validation
def _check_settings(
    steps: Any, cfg_strength: Any, guidance: Any, seed: Any, randomize_seed: bool
) -> tuple[int, float, str, int]:
    """Validated (steps, ω, guidance, seed), as API callers can send anything; raises gr.Error."""
    try:
        steps_f = float(steps)
    except (TypeError, ValueError):
        raise _refuse(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}") from None
    if not (math.isfinite(steps_f) and steps_f == int(steps_f) and 1 <= steps_f <= MAX_STEPS):
        raise _refuse(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    try:
        w = float(cfg_strength)
    except (TypeError, ValueError):
        raise _refuse(f"ω (guidance strength) must be a number from 0 to {MAX_CFG:g}") from None
    if not (math.isfinite(w) and 0 <= w <= MAX_CFG):
        raise _refuse(f"ω (guidance strength) must be from 0 to {MAX_CFG:g}, got {cfg_strength!r}")
    choices = [value for _, value in GUIDANCE_CHOICES]
    if guidance not in choices:
        raise _refuse(f"guidance must be one of {choices}, got {guidance!r}")
    if randomize_seed:
        seed = random.randint(0, MAX_SEED)
    try:
        seed_f = float(seed)
    except (TypeError, ValueError):
        raise _refuse(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}") from None
    if not (math.isfinite(seed_f) and seed_f == int(seed_f) and 0 <= seed_f <= MAX_SEED):
        raise _refuse(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(steps_f), w, str(guidance), int(seed_f)


def _video_path(payload: str | dict | None) -> str | None:
    """The uploaded file's path from a raw (not preprocessed) gr.Video payload, or a plain path."""
    if isinstance(payload, dict):
        payload = payload.get("video", payload)  # {"video": FileData, "subtitles": ...} or FileData
        payload = payload.get("path") if isinstance(payload, dict) else payload
    if payload is not None and not isinstance(payload, str):
        raise _refuse(f"video must be an uploaded file, got {type(payload).__name__}")
    return payload or None


def _check_duration(duration: Any) -> float | None:
    """Seconds requested; 0 or empty means "default" (None)."""
    if duration is None or duration == "":
        return None
    try:
        value = float(duration)
    except (TypeError, ValueError):
        raise _refuse(f"duration must be a number of seconds, got {duration!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _refuse(f"duration must be 0 (default) or a positive number of seconds, got {duration!r}")
    return value or None


def _gpu_seconds(steps: Any, duration: Any) -> int:
    """ZeroGPU reservation for one request: start-up plus network time growing with steps and length."""
    try:
        n = min(max(int(steps), 1), MAX_STEPS)
        seconds = float(duration) if duration else 10.0
        seconds = min(max(seconds, 1.0), 60.0) if math.isfinite(seconds) else 10.0
    except (TypeError, ValueError):
        n, seconds = MAX_STEPS, 10.0
    return int(min(120, 20 + 0.3 * n * seconds / 8 * 2))


def _gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` on a ZeroGPU Space; the function unchanged elsewhere."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


# ------------------------------------------------------------------------------------- generation
def _run(
    pipe: Pipeline,
    video: str | None,
    prompt: str,
    negative_prompt: str,
    duration: float | None,
    steps: int,
    cfg_strength: float,
    guidance: str,
    seed: int,
    progress: gr.Progress | None,
) -> GenerationResult:
    """``pipe.generate`` with errors a user can act on turned into gr.Error."""

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc="sampling", unit="steps")

    try:
        return pipe.generate(
            video=video,
            prompt=prompt,
            negative_prompt=negative_prompt,
            duration=duration,
            steps=steps,
            cfg_strength=cfg_strength,
            guidance=guidance,
            seed=seed,
            progress=report if steps > 1 else None,
        )
    except ValueError as exc:  # and media.MediaError: unreadable, no video stream, too large, too short
        message = str(exc).replace(str(video), Path(video).name) if video else str(exc)
        raise _refuse(message) from exc  # without the server's upload folder
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":
            raise _refuse("out of memory: try a shorter duration or fewer steps") from exc
        logger.exception("generation failed")
        raise _refuse(f"generation failed ({type(exc).__name__}): {exc}") from exc


def _info_text(result: GenerationResult, extra_timings: dict[str, float], remix: bool = False) -> str:
    """One markdown block: what was made, the cut-clip note if any, stage timings and RTF."""
    s = result.settings
    modes = " and ".join(MODE_LABELS[m] for m in result.audio)
    steps = f"{s['steps']} step" + ("s" if s["steps"] != 1 else "")
    head = f"**{modes}** · {steps} · ω = {s['cfg_strength']:g} · seed {s['seed']} · {result.duration:.2f} s"
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


def _show_players(state: dict | None) -> tuple[dict, dict]:
    """(standard, scaled) player visibility for the shown result: both until there is one."""
    modes = state.get("modes", ("standard", "scaled")) if state else ("standard", "scaled")
    return gr.update(visible="standard" in modes), gr.update(visible="scaled" in modes)


def _describe_clip(video: str | None, max_duration: float) -> str:
    """A line about an uploaded clip (length, size), warning when it will be cut; never raises."""
    if not video:
        return ""
    try:
        with av.open(video) as container:
            if not container.streams.video:
                return "⚠️ this file has no video stream"
            stream = container.streams.video[0]
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


# ------------------------------------------------------------------------------------------- demo
def build_demo(loaders: dict[str, Callable[[], Pipeline]] | None = None) -> gr.Blocks:
    """The demo for ``loaders`` (name -> pipeline factory; default: ``$MFMJT_MODEL``).

    The first model is loaded now; the others when selected.
    """
    if loaders is None:
        loaders = loaders_from_env()
    models = ModelCache(loaders)
    outputs = OutputDirs()
    first = models.names[0]
    try:
        first_pipe: Pipeline | None = models.get(first)
    except gr.Error:
        first_pipe = None  # the page says why; generation retries the load
    flow_matching = first_pipe is not None and first_pipe.objective == "flow_matching"
    steps_default = MAX_STEPS if flow_matching else 1
    cfg_default = MULTI_STEP_CFG if flow_matching else ONE_STEP_CFG
    max_duration = first_pipe.max_duration if first_pipe is not None else 30.0

    # ------------------------------------------------------------------ handlers
    def _v2a(
        video: str | dict | None,
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        steps: int,
        cfg_strength: float,
        guidance: str,
        seed: int,
        randomize_seed: bool,
        model: str,
        progress: gr.Progress | None,
        remix: bool = False,
    ) -> tuple:
        video = _video_path(video)
        if not video:
            raise _refuse(
                "no video: upload a video (for sound from a prompt alone, use the Text-to-Audio tab "
                "or the text_to_audio endpoint)"
            )
        if not Path(video).is_file():
            raise _refuse(f"the video file is missing on the server ({Path(video).name}); upload it again")
        steps, w, guidance, seed = _check_settings(steps, cfg_strength, guidance, seed, randomize_seed)
        seconds = _check_duration(duration)
        prompt, negative_prompt = str(prompt or ""), str(negative_prompt or "")
        pipe = models.get(model)
        result = _run(pipe, video, prompt, negative_prompt, seconds, steps, w, guidance, seed, progress)
        out_dir = outputs.new()
        try:
            start = time.perf_counter()
            stem = f"mfmjt_{Path(video).stem[:40]}_{seed}"
            mp4s = pipe.mux(result, video, out_dir, stem=stem)
            audio_files = pipe.save_audio(result, out_dir, stem=stem, suffix=".wav")
            write_s = time.perf_counter() - start
        except ValueError as exc:
            outputs.discard(out_dir)
            raise _refuse(str(exc)) from exc
        except Exception:
            outputs.discard(out_dir)
            raise
        paths = {mode: str(p) for mode, p in zip(result.audio, mp4s, strict=True)}
        state = dict(
            kind="v2a",
            model=model,
            video=video,
            prompt=prompt,
            negative_prompt=negative_prompt,
            duration=seconds,
            steps=steps,
            seed=seed,
            modes=list(result.audio),
        )
        info = _info_text(result, {"write_files": write_s}, remix=remix)
        return (paths.get("standard"), paths.get("scaled"), [str(p) for p in audio_files], info, seed, state)

    def _t2a(
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        steps: int,
        cfg_strength: float,
        guidance: str,
        seed: int,
        randomize_seed: bool,
        model: str,
        progress: gr.Progress | None,
        remix: bool = False,
    ) -> tuple:
        prompt, negative_prompt = str(prompt or ""), str(negative_prompt or "")
        if not prompt.strip():
            raise _refuse("no prompt: describe the sound to generate")
        steps, w, guidance, seed = _check_settings(steps, cfg_strength, guidance, seed, randomize_seed)
        seconds = _check_duration(duration) or T2A_DEFAULT_DURATION
        pipe = models.get(model)
        result = _run(pipe, None, prompt, negative_prompt, seconds, steps, w, guidance, seed, progress)
        out_dir = outputs.new()
        try:
            start = time.perf_counter()
            files = pipe.save_audio(result, out_dir, stem=f"mfmjt_t2a_{seed}", suffix=".wav")
            write_s = time.perf_counter() - start
        except Exception as exc:
            outputs.discard(out_dir)
            if isinstance(exc, ValueError):
                raise _refuse(str(exc)) from exc
            raise
        paths = {mode: str(p) for mode, p in zip(result.audio, files, strict=True)}
        state = dict(
            kind="t2a",
            model=model,
            prompt=prompt,
            negative_prompt=negative_prompt,
            duration=seconds,
            steps=steps,
            seed=seed,
            modes=list(result.audio),
        )
        info = _info_text(result, {"write_files": write_s}, remix=remix)
        return paths.get("standard"), paths.get("scaled"), info, seed, state

    def _v2a_seconds(video, prompt, negative_prompt, duration, steps, *args, **kwargs) -> int:
        return _gpu_seconds(steps, duration or max_duration)

    def _t2a_seconds(prompt, negative_prompt, duration, steps, *args, **kwargs) -> int:
        return _gpu_seconds(steps, duration or T2A_DEFAULT_DURATION)

    def _remix_seconds(*args, **kwargs) -> int:
        return 15

    @_gpu(_v2a_seconds)
    def video_to_audio(
        video: str | dict | None,
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        steps: int,
        cfg_strength: float,
        guidance: str,
        seed: int,
        randomize_seed: bool,
        model: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's progress marker
    ) -> tuple:
        """Generate audio for a video. Returns the standard-CFG mp4, the scaled-CFG mp4 (None for a mode
        not requested), the audio files (.wav), a markdown info text and the seed used."""
        return _v2a(
            video,
            prompt,
            negative_prompt,
            duration,
            steps,
            cfg_strength,
            guidance,
            seed,
            randomize_seed,
            model,
            progress,
        )

    @_gpu(_t2a_seconds)
    def text_to_audio(
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        steps: int,
        cfg_strength: float,
        guidance: str,
        seed: int,
        randomize_seed: bool,
        model: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's progress marker
    ) -> tuple:
        """Generate audio from a prompt. Returns the standard-CFG audio file, the scaled-CFG audio file
        (None for a mode not requested), a markdown info text and the seed used."""
        return _t2a(
            prompt,
            negative_prompt,
            duration,
            steps,
            cfg_strength,
            guidance,
            seed,
            randomize_seed,
            model,
            progress,
        )

    def make_remix(kind: str) -> Callable[..., tuple]:
        n_outputs = 6 if kind == "v2a" else 5

        @_gpu(_remix_seconds)
        def remix(cfg_strength: float, guidance: str, steps: int, state: dict | None) -> tuple:
            """Re-mix the shown one-step result with a new ω or guidance (no network forward with
            two-pass CFG; one forward for a model with guidance learnt in training)."""
            if not state or state.get("steps") != 1 or steps != 1:
                return tuple(gr.skip() for _ in range(n_outputs))
            common = dict(
                negative_prompt=state["negative_prompt"],
                duration=state["duration"],
                steps=1,
                cfg_strength=cfg_strength,
                guidance=guidance,
                seed=state["seed"],
                randomize_seed=False,
                model=state["model"],
                progress=None,
                remix=True,
            )
            if kind == "v2a":
                return _v2a(state["video"], state["prompt"], **common)
            return _t2a(state["prompt"], **common)

        return remix

    def select_model(name: str) -> tuple:
        try:
            pipe = models.get(name)
        except gr.Error as exc:
            gr.Warning(str(exc))
            return (models.describe(name), *(gr.skip() for _ in range(4)))
        fm = pipe.objective == "flow_matching"
        steps, w = (MAX_STEPS, MULTI_STEP_CFG) if fm else (1, ONE_STEP_CFG)
        return models.describe(name), steps, w, steps, w

    def nudge_cfg(steps: int, cfg_strength: float) -> Any:
        return MULTI_STEP_CFG if steps > 1 and cfg_strength == ONE_STEP_CFG else gr.skip()

    # ------------------------------------------------------------------------ layout
    with gr.Blocks(
        title="MF-MJT: one-step video-to-audio", analytics_enabled=False, delete_cache=(1800, 3600)
    ) as demo:
        gr.Markdown(
            "# MF-MJT — one-step video-to-audio\n"
            "MeanFlow turns noise into audio in **one** network evaluation; compare **standard** and "
            "**scaled** classifier-free guidance side by side, and move ω to re-mix them live."
        )
        model_info = gr.Markdown(models.describe(first), elem_id="model-info")
        if len(models.names) > 1:
            model_choice: gr.components.Component = gr.Dropdown(
                models.names, value=first, label="model", interactive=True
            )
        else:
            model_choice = gr.State(first)

        def controls(tab: str, duration_value: float, duration_info: str) -> tuple:
            with gr.Row():
                duration = gr.Number(
                    duration_value, label="duration (s)", info=duration_info, minimum=0, precision=2
                )
                steps = gr.Slider(
                    1,
                    MAX_STEPS,
                    value=steps_default,
                    step=1,
                    label="steps",
                    info="1 = one-step MeanFlow; flow-matching models need ~25",
                )
            with gr.Row():
                cfg = gr.Slider(
                    0,
                    MAX_CFG,
                    value=cfg_default,
                    step=0.1,
                    label="ω (guidance strength)",
                    elem_id=f"{tab}-cfg",
                    info="1.5 suits one step, 4.5 is usual for multi-step; at 1 step moving "
                    "it re-mixes the result live",
                )
                guidance = gr.Radio(
                    GUIDANCE_CHOICES, value="both", label="guidance", elem_id=f"{tab}-guidance"
                )
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
                randomize = gr.Checkbox(False, label="random seed each time")
            return duration, steps, cfg, guidance, seed, randomize

        with gr.Tabs():
            with gr.Tab("Video-to-Audio", id="v2a"):
                with gr.Row():
                    with gr.Column():
                        v_video = gr.Video(label="video", sources=["upload"], height=320, elem_id="v2a-input")
                        v_clip = gr.Markdown("")
                        v_prompt = gr.Textbox("", label="prompt", placeholder="optional, e.g. 'a ball'")
                        v_negative = gr.Textbox("", label="negative prompt", placeholder="optional")
                        v_duration, v_steps, v_cfg, v_guidance, v_seed, v_random = controls(
                            "v2a", 0, f"0 = the whole clip, up to {max_duration:g} s"
                        )
                        v_button = gr.Button("Generate", variant="primary", elem_id="v2a-generate")
                    with gr.Column():
                        with gr.Row():
                            v_out_std = gr.Video(
                                label=MODE_LABELS["standard"], elem_id="v2a-standard", interactive=False
                            )
                            v_out_scaled = gr.Video(
                                label=MODE_LABELS["scaled"], elem_id="v2a-scaled", interactive=False
                            )
                        v_files = gr.File(label="audio files", file_count="multiple", interactive=False)
                        v_info = gr.Markdown(label="info", elem_id="v2a-info")
                v_state = gr.State(None)
                examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
                if examples:
                    rows = []
                    for path in examples:
                        caption = path.with_suffix(".txt")
                        rows.append([str(path), caption.read_text().strip() if caption.is_file() else ""])
                    gr.Examples(rows, inputs=[v_video, v_prompt], cache_examples=False, label="example clips")

            with gr.Tab("Text-to-Audio", id="t2a"):
                with gr.Row():
                    with gr.Column():
                        t_prompt = gr.Textbox("", label="prompt", placeholder=T2A_EXAMPLES[0])
                        t_negative = gr.Textbox("", label="negative prompt", placeholder="optional")
                        t_duration, t_steps, t_cfg, t_guidance, t_seed, t_random = controls(
                            "t2a", T2A_DEFAULT_DURATION, f"up to {max_duration:g} s"
                        )
                        t_button = gr.Button("Generate", variant="primary", elem_id="t2a-generate")
                    with gr.Column():
                        with gr.Row():
                            t_out_std = gr.Audio(
                                label=MODE_LABELS["standard"],
                                type="filepath",
                                interactive=False,
                                elem_id="t2a-standard",
                            )
                            t_out_scaled = gr.Audio(
                                label=MODE_LABELS["scaled"],
                                type="filepath",
                                interactive=False,
                                elem_id="t2a-scaled",
                            )
                        t_info = gr.Markdown(label="info", elem_id="t2a-info")
                t_state = gr.State(None)
                gr.Examples(
                    [[p] for p in T2A_EXAMPLES],
                    inputs=[t_prompt],
                    cache_examples=False,
                    label="example prompts (what the embedded model knows)",
                )

        with gr.Accordion("About", open=False):
            gr.Markdown(ABOUT)

        # ------------------------------------------------------------------ events
        # One generation at a time. preprocess=False: the handlers get the raw values and check them
        # themselves, so an API call with steps=0 hears "steps must be ...", not Gradio's unnamed
        # "Value 0 is less than minimum value 1." (uploads are still checked and moved by Gradio).
        gpu_queue = dict(concurrency_limit=1, concurrency_id="generate", preprocess=False)
        v_outputs = [v_out_std, v_out_scaled, v_files, v_info, v_seed, v_state]
        t_outputs = [t_out_std, t_out_scaled, t_info, t_seed, t_state]
        v_players, t_players = [v_out_std, v_out_scaled], [t_out_std, t_out_scaled]
        # the endpoints return plain file paths; hiding the unused player is a UI-only follow-up
        v_button.click(
            video_to_audio,
            [
                v_video,
                v_prompt,
                v_negative,
                v_duration,
                v_steps,
                v_cfg,
                v_guidance,
                v_seed,
                v_random,
                model_choice,
            ],
            v_outputs,
            api_name="video_to_audio",
            **gpu_queue,
        ).success(_show_players, v_state, v_players, api_visibility="private", queue=False)
        t_button.click(
            text_to_audio,
            [t_prompt, t_negative, t_duration, t_steps, t_cfg, t_guidance, t_seed, t_random, model_choice],
            t_outputs,
            api_name="text_to_audio",
            **gpu_queue,
        ).success(_show_players, t_state, t_players, api_visibility="private", queue=False)
        for kind, cfg, guidance, steps, state, outs, players in (
            ("v2a", v_cfg, v_guidance, v_steps, v_state, v_outputs, v_players),
            ("t2a", t_cfg, t_guidance, t_steps, t_state, t_outputs, t_players),
        ):
            # undocumented (callable, not listed): the tests drive it through gradio_client
            remix_args = dict(
                fn=make_remix(kind),
                inputs=[cfg, guidance, steps, state],
                outputs=outs,
                api_name=f"remix_{kind}",
                api_visibility="undocumented",
                show_progress="minimal",
                **gpu_queue,
            )
            for trigger in (cfg.release, guidance.input):
                trigger(**remix_args).success(
                    _show_players, state, players, api_visibility="private", queue=False
                )
            steps.input(nudge_cfg, [steps, cfg], cfg, api_visibility="private", queue=False)
        v_video.change(
            partial(_describe_clip, max_duration=max_duration),
            v_video,
            v_clip,
            api_visibility="private",
            queue=False,
        )
        if isinstance(model_choice, gr.Dropdown):
            model_choice.change(
                select_model,
                model_choice,
                [model_info, v_steps, v_cfg, t_steps, t_cfg],
                api_visibility="private",
            )
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def loaders_from_env() -> dict[str, Callable[[], Pipeline]]:
    """``$MFMJT_MODEL`` (comma-separated, default "default") -> lazy loaders; ``$MFMJT_MAX_DURATION`` caps."""
    names = [n.strip() for n in os.environ.get("MFMJT_MODEL", "default").split(",") if n.strip()]
    max_duration = float(os.environ.get("MFMJT_MAX_DURATION", "30"))
    fast = options_from_env()  # $MFMJT_PRECISION, $MFMJT_COMPILE (see docs/gpu.md)
    return {n: partial(load_pipeline, n, max_duration=max_duration, **fast) for n in names or ["default"]}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    build_demo().launch(server_name="0.0.0.0", server_port=port)


if __name__ == "__main__":
    main()
