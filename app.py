"""Gradio demo of MF-MJT: video-to-audio and text-to-audio, standard vs scaled CFG side by side.

Run ``python app.py`` (serves on 0.0.0.0:7860; ``PORT`` or ``GRADIO_SERVER_PORT`` override the port),
or ``gradio app.py`` for reload mode (it finds the module-level ``demo``). ``MFMJT_MODEL`` names the
model(s) loaded at start, comma-separated (default ``default``, the embedded model);
``MFMJT_ALLOWED_MODELS`` those visitors may select besides (comma-separated; default: the registry
models that pass the memory check on this machine), fetched when selected. ``MFMJT_MAX_DURATION`` caps
the seconds generated per request.
This file is also the Hugging Face Space entry point; on a ZeroGPU Space the model runs under
``spaces.GPU`` (see docs/demo.md). The work itself is in :mod:`mfmjt.demo.service`; this file is layout.

Start-up: the page is laid out without torch (from the models' names and directories) and answers first;
torch, the service and the configured models load right after, in the background (:func:`main`), and a
request that arrives meanwhile waits for them. On ZeroGPU, whose ``spaces`` imports torch anyway, the
models load before the server starts, as ZeroGPU requires.
"""

from __future__ import annotations

import os

from mfmjt.demo.files import use_own_gradio_cache

if __name__ == "__main__" or os.environ.get("MFMJT_APP_BUILD", "1") != "0":
    # the app's own folder holds Gradio's cache and uploads: removed at exit (SIGTERM too) and, after a
    # crash, by the next start; set before Gradio (which spaces imports) reads it
    use_own_gradio_cache()

try:  # must precede torch on a ZeroGPU Space
    import spaces
except ImportError:  # pragma: no cover - spaces is in requirements.txt
    spaces = None

import contextlib
import functools
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from starlette.middleware import Middleware

# nothing imported here imports torch (tests/test_app.py checks it): the page answers before torch loads
from mfmjt.demo.deferred import Deferred, StartupError
from mfmjt.demo.files import OutputDirs
from mfmjt.demo.models import ModelCache, ModelCard, model_settings, offered_names, read_recommendation
from mfmjt.demo.settings import DEMO_LIMITS, MODE_LABELS, T2A_DEFAULT_DURATION, UserError
from mfmjt.demo.upload_guard import UploadGuard
from mfmjt.model_dir import SamplingSettings
from mfmjt.request import MAX_SEED
from mfmjt.weights import PACKAGE_ASSETS

if TYPE_CHECKING:
    from mfmjt.demo.service import DemoService
    from mfmjt.pipeline import Pipeline

logger = logging.getLogger("mfmjt.app")

# names this file imported before its start-up left torch for later, imported when first asked for
_IMPORTED_LATER = {
    "DemoService": "mfmjt.demo.service",
    "describe_clip": "mfmjt.demo.service",
    "Pipeline": "mfmjt.pipeline",
    "load_pipeline": "mfmjt.pipeline",
    "options_from_env": "mfmjt.acceleration",
    "import_resizers": "mfmjt.media.frames",
}


def __getattr__(name: str) -> Any:
    if name in _IMPORTED_LATER:
        return getattr(importlib.import_module(_IMPORTED_LATER[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


REPO_ROOT = Path(__file__).resolve().parent
MAX_FILE_SIZE = "100mb"  # uploads; the pixel caps in mfmjt.media bound the decoding work
DELETE_CACHE = (600, 1800)  # Gradio's cache: every 10 min, files older than 30 min
# requests handled at once: their checks, decoding and file writing overlap, while the model itself runs
# one request at a time (DemoService.slot)
REQUESTS_AT_ONCE = 4
GUIDANCE_CHOICES = [("standard", "standard"), ("scaled", "scaled"), ("compare both", "both")]
LOADING = "loading the model (the server has just started)"
EXIT_WAIT_S = 30.0  # at exit, the longest wait for the background work to reach a stop


def _upload_roots() -> list[Path]:
    """Where files named in API payloads may live: Gradio's upload folder and the example clips."""
    from gradio.utils import get_upload_folder

    return [Path(get_upload_folder()), PACKAGE_ASSETS]


LAUNCH_KWARGS: dict[str, Any] = dict(
    max_file_size=MAX_FILE_SIZE,
    ssr_mode=False,
    app_kwargs={
        "middleware": [
            Middleware(UploadGuard, allowed_roots=_upload_roots, example_roots=lambda: [PACKAGE_ASSETS])
        ]
    },
)
HEADER = (
    "# MF-MJT — one-step video-to-audio\n"
    "Compare **standard** and **scaled** classifier-free guidance side by side; at one step, moving ω "
    "re-mixes the result live. Under the players, the two results' spectrograms share one time axis, "
    "with the detected onsets marked."
)


def _gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` where the ``spaces`` package is installed (a no-op off ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (``spaces`` in its ZeroGPU mode, which has imported torch)."""
    if spaces is None:
        return False
    from spaces.config import Config

    return bool(Config.zero_gpu)


def _ready(service: DemoService | Deferred[DemoService]) -> Deferred[DemoService]:
    """The service as handlers reach it: made at start-up, waited for while it is being made."""
    return service if isinstance(service, Deferred) else Deferred.of(service)


def _waiting(progress: Any) -> Callable[[], None]:
    """What a request shows while it waits for the start-up."""
    return lambda: progress(None, desc=LOADING)


@dataclass
class _Steps:
    """Sampling progress for a gr.Progress (a plain object, so it can cross to a ZeroGPU worker)."""

    progress: Any

    def __call__(self, done: int, total: int) -> None:
        self.progress((done, total), desc="sampling", unit="steps")


def _user_errors(fn: Callable) -> Callable:
    """Handlers raise gr.Error with the service's sentence; anything unexpected is logged, not shown.

    The handler keeps ``fn``'s signature (``functools.wraps``): Gradio names the API parameters after it.
    """

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            logger.info("refused: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            logger.exception("request failed")
            raise gr.Error(
                "generation failed on the server (the error is logged); please try again",
                print_exception=False,
            ) from None

    return handler


# ------------------------------------------------------------------------------------------ layout
@dataclass
class _Controls:
    duration: gr.Number
    steps: gr.Slider
    cfg: gr.Slider
    guidance: gr.Radio
    seed: gr.Number
    randomize: gr.Checkbox

    def inputs(self) -> list:
        return [self.duration, self.steps, self.cfg, self.guidance, self.seed, self.randomize]


def _controls(tab: str, duration: float, duration_info: str, steps: int, cfg: float) -> _Controls:
    with gr.Row():
        duration_box = gr.Number(duration, label="duration (s)", info=duration_info, minimum=0, precision=2)
        steps_slider = gr.Slider(
            1,
            DEMO_LIMITS.max_steps,
            value=steps,
            step=1,
            label="steps",
            info="1 = one-step MeanFlow; flow-matching models need ~25",
        )
    with gr.Row():
        cfg_slider = gr.Slider(
            0,
            DEMO_LIMITS.max_cfg,
            value=cfg,
            step=0.1,
            label="ω (guidance strength)",
            elem_id=f"{tab}-cfg",
            info="at 1 step, moving it re-mixes the shown result live",
        )
        guidance = gr.Radio(GUIDANCE_CHOICES, value="both", label="guidance", elem_id=f"{tab}-guidance")
    with gr.Row():
        seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=MAX_SEED)
        randomize = gr.Checkbox(False, label="random seed each time")
    return _Controls(duration_box, steps_slider, cfg_slider, guidance, seed, randomize)


def _sweep_panel(tab: str) -> tuple[gr.Button, gr.Image, gr.File]:
    with gr.Accordion("ω sweep: the shown request at one step, scaled guidance, a few ω", open=False):
        button = gr.Button("run the ω sweep (one forward per ω)", elem_id=f"{tab}-sweep")
        image = gr.Image(
            label="ω sweep", type="pil", format="png", interactive=False, elem_id=f"{tab}-sweep-image"
        )
        files = gr.File(label="sweep audio", file_count="multiple", interactive=False)
    return button, image, files


def _prompt_boxes(placeholder: str) -> tuple[gr.Textbox, gr.Textbox]:
    """The prompt and negative-prompt boxes."""
    prompt = gr.Textbox("", label="prompt", placeholder=placeholder, max_length=DEMO_LIMITS.max_prompt_chars)
    negative = gr.Textbox(
        "", label="negative prompt", placeholder="optional", max_length=DEMO_LIMITS.max_prompt_chars
    )
    return prompt, negative


@dataclass
class _Results:
    players: list  # standard, scaled
    picture: gr.Image
    files: gr.File | None
    info: gr.Markdown
    sweep: tuple[gr.Button, gr.Image, gr.File]


def _results_column(tab: str, player: Callable[..., gr.components.Component], files: bool) -> _Results:
    """The result column: one ``player`` per guidance mode, the spectrograms, the files, info, ω sweep."""
    with gr.Column():
        with gr.Row():
            players = [
                player(label=MODE_LABELS[mode], interactive=False, elem_id=f"{tab}-{mode}")
                for mode in ("standard", "scaled")
            ]
        picture = gr.Image(
            label="spectrograms (one time axis, onsets marked)",
            show_label=False,
            type="pil",
            format="png",
            interactive=False,
            elem_id=f"{tab}-picture",
        )
        file_list = gr.File(label="audio files", file_count="multiple", interactive=False) if files else None
        info = gr.Markdown(elem_id=f"{tab}-info")
        return _Results(players, picture, file_list, info, _sweep_panel(tab))


def _unpack(kind: str, out: Any) -> tuple:
    """A service output as the tab's outputs: the two players, (v2a) the wavs, info, seed and state."""
    shown = out.mp4s if kind == "v2a" else out.wavs
    players = tuple(str(shown[mode]) if mode in shown else None for mode in ("standard", "scaled"))
    files = ([str(p) for p in out.wavs],) if kind == "v2a" else ()
    return (*players, *files, out.info, out.seed, out.state)


def video_endpoint(service: DemoService | Deferred[DemoService]) -> Callable:
    """The ``/video_to_audio`` handler; its parameter names are the API's."""
    ready = _ready(service)

    def video_to_audio(
        video: Any,
        prompt: str = "",
        negative_prompt: str = "",
        duration: float = 0,
        steps: int | None = None,
        cfg_strength: float | None = None,
        guidance: str = "both",
        seed: int = 0,
        randomize_seed: bool = False,
        model: str = "default",
        progress: Any = gr.Progress(),  # noqa: B008 - Gradio's marker
    ) -> tuple:
        """Generate audio for a video, with standard and/or scaled classifier-free guidance.

        Args:
            video: the clip; from gradio_client, upload it with handle_file(path)
            prompt: optional text describing the sound
            negative_prompt: optional text describing what to avoid
            duration: seconds to generate; 0 = the whole clip (up to the server's limit)
            steps: sampling steps; None = the model's recommendation (MeanFlow: 1, flow matching: 25)
            cfg_strength: guidance strength ω; None = the model's recommendation for these steps
            guidance: "standard", "scaled" or "both"
            seed: the noise seed
            randomize_seed: draw a new seed instead of using seed
            model: which model (offered only when the demo serves several)

        Returns:
            The standard-CFG mp4 and the scaled-CFG mp4 (None for a mode not requested), the audio files
            (.wav), a markdown info text and the seed used.
        """
        out = ready.get(_waiting(progress)).video_to_audio(
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
            _Steps(progress),
        )
        return _unpack("v2a", out)

    return video_to_audio


def text_endpoint(service: DemoService | Deferred[DemoService]) -> Callable:
    """The ``/text_to_audio`` handler; its parameter names are the API's."""
    ready = _ready(service)

    def text_to_audio(
        prompt: str,
        negative_prompt: str = "",
        duration: float = T2A_DEFAULT_DURATION,
        steps: int | None = None,
        cfg_strength: float | None = None,
        guidance: str = "both",
        seed: int = 0,
        randomize_seed: bool = False,
        model: str = "default",
        progress: Any = gr.Progress(),  # noqa: B008 - Gradio's marker
    ) -> tuple:
        """Generate audio from a prompt, with standard and/or scaled classifier-free guidance.

        Args:
            prompt: text describing the sound
            negative_prompt: optional text describing what to avoid
            duration: seconds to generate (up to the server's limit)
            steps: sampling steps; None = the model's recommendation (MeanFlow: 1, flow matching: 25)
            cfg_strength: guidance strength ω; None = the model's recommendation for these steps
            guidance: "standard", "scaled" or "both"
            seed: the noise seed
            randomize_seed: draw a new seed instead of using seed
            model: which model (offered only when the demo serves several)

        Returns:
            The standard-CFG audio file and the scaled-CFG audio file (None for a mode not requested), a
            markdown info text and the seed used.
        """
        out = ready.get(_waiting(progress)).text_to_audio(
            prompt,
            negative_prompt,
            duration,
            steps,
            cfg_strength,
            guidance,
            seed,
            randomize_seed,
            model,
            _Steps(progress),
        )
        return _unpack("t2a", out)

    return text_to_audio


def _wire_results(
    service: Deferred[DemoService],
    kind: str,
    button: gr.Button,
    inputs: list,
    controls: _Controls,
    results: _Results,
    state: gr.State,
    generate: Callable,
) -> None:
    """Generate, remix (ω release, guidance change), the ω sweep and the follow-up picture / players."""
    queue = dict(concurrency_limit=REQUESTS_AT_ONCE, concurrency_id="requests", preprocess=False)
    files = [results.files] if results.files is not None else []
    outputs = [*results.players, *files, results.info, controls.seed, state]

    def show_players(state_value: dict | None) -> tuple:
        modes = state_value.get("modes", MODE_LABELS) if isinstance(state_value, dict) else MODE_LABELS
        return tuple(gr.update(visible=mode in modes) for mode in ("standard", "scaled"))

    def picture(state_value: dict | None) -> Any:
        return service.get().picture(state_value)

    def after(event: Any) -> None:
        event.success(show_players, state, results.players, api_visibility="private", queue=False).success(
            _user_errors(picture), state, results.picture, api_visibility="private"
        )

    after(button.click(_user_errors(generate), inputs, outputs, api_name=generate.__name__, **queue))

    def remix(
        cfg_strength: float | None = None,
        guidance: str = "both",
        steps: int | None = None,
        state_value: dict | None = None,
    ) -> tuple:
        """Re-mix the session's last one-step result with another ω or guidance (no new network forward
        with two-pass guidance), as releasing the ω slider or changing the guidance does on the page.

        Args:
            cfg_strength: the new guidance strength ω; None = the model's recommendation
            guidance: "standard", "scaled" or "both"
            steps: the page's steps setting; a remix applies only at 1 (None: the shown result's)

        Returns:
            As the endpoint that made the result; nothing new when this session has no one-step result.
        """
        result = service.get().remix(state_value, cfg_strength, guidance, steps)
        return tuple(gr.skip() for _ in outputs) if result is None else _unpack(kind, result)

    # the ω release is the API's /remix_<kind>; the guidance change calls the same handler, privately
    for trigger, visibility in ((controls.cfg.release, "public"), (controls.guidance.input, "private")):
        after(
            trigger(
                _user_errors(remix),
                [controls.cfg, controls.guidance, controls.steps, state],
                outputs,
                api_name=f"remix_{kind}" if visibility == "public" else None,
                api_visibility=visibility,
                show_progress="minimal",
                **queue,
            )
        )

    def nudge_cfg(steps: int, cfg_strength: float) -> Any:
        return 4.5 if steps > 1 and cfg_strength == 1.5 else gr.skip()

    controls.steps.input(
        nudge_cfg, [controls.steps, controls.cfg], controls.cfg, api_visibility="private", queue=False
    )

    def omega_sweep(state_value: dict | None = None) -> tuple:
        """The session's last request at one step, scaled guidance, a few ω: a picture and one wav per ω.

        Returns:
            The spectrograms of every ω side by side (png) and one audio file (.wav) per ω.
        """
        picture, files = service.get().omega_sweep(state_value)
        return picture, [str(f) for f in files]

    sweep_button, sweep_image, sweep_files = results.sweep
    sweep_button.click(
        _user_errors(omega_sweep),
        state,
        [sweep_image, sweep_files],
        api_name=f"omega_sweep_{kind}",
        concurrency_limit=REQUESTS_AT_ONCE,
        concurrency_id="requests",
    )


def video_tab(
    service: Deferred[DemoService],
    card: ModelCard,
    model: gr.components.Component,
    defaults: tuple,
    max_duration: float,
) -> tuple[_Controls, gr.Dataset | None]:
    """The Video-to-Audio tab; returns its controls and examples (both follow the chosen model)."""
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="video", sources=["upload"], height=320, elem_id="v2a-input")
            clip = gr.Markdown("")
            prompt, negative = _prompt_boxes("optional")
            controls = _controls("v2a", 0, f"0 = the whole clip, up to {max_duration:g} s", *defaults)
            button = gr.Button("Generate", variant="primary", elem_id="v2a-generate")
        results = _results_column("v2a", gr.Video, files=True)
    state = gr.State(None)
    examples = None
    if card.videos:
        examples = gr.Examples(
            [list(row) for row in card.videos],
            inputs=[video, prompt],
            cache_examples=False,
            label="example clips",
        ).dataset
    generate = video_endpoint(service)
    inputs = [video, prompt, negative, *controls.inputs(), model]
    _wire_results(service, "v2a", button, inputs, controls, results, state, generate)
    describe = partial(_describe_clip, service, max_duration=max_duration)
    video.change(describe, video, clip, api_visibility="private", queue=False)
    return controls, examples


def _describe_clip(service: Deferred[DemoService], video: str | None, max_duration: float) -> str:
    """:func:`mfmjt.demo.service.describe_clip`, once the start-up has imported its module (media, torch)."""
    service.get()
    from mfmjt.demo.service import describe_clip

    return describe_clip(video, max_duration)


def text_tab(
    service: Deferred[DemoService],
    card: ModelCard,
    model: gr.components.Component,
    defaults: tuple,
    max_duration: float,
) -> _Controls:
    """The Text-to-Audio tab; returns its controls."""
    with gr.Row():
        with gr.Column():
            prompt, negative = _prompt_boxes(card.prompts[0] if card.prompts else "")
            controls = _controls("t2a", T2A_DEFAULT_DURATION, f"up to {max_duration:g} s", *defaults)
            button = gr.Button("Generate", variant="primary", elem_id="t2a-generate")
        results = _results_column("t2a", partial(gr.Audio, type="filepath"), files=False)
    state = gr.State(None)
    if card.prompts:
        gr.Examples(
            [[p] for p in card.prompts], inputs=[prompt], cache_examples=False, label="example prompts"
        )
    generate = text_endpoint(service)
    inputs = [prompt, negative, *controls.inputs(), model]
    _wire_results(service, "t2a", button, inputs, controls, results, state, generate)
    return controls


def _about(card: ModelCard) -> str:
    """The model card (README.md) if the model has one, else its description."""
    return f"### {card.title}\n\n" + (card.about or card.description)


def build_demo(
    loaders: dict[str, Callable[[], Pipeline]] | None = None, preload: bool = True, background: bool = False
) -> gr.Blocks:
    """The demo for ``loaders`` (name -> pipeline factory; default: ``$MFMJT_MODEL`` plus the registry).

    The page is laid out from what is known without torch: the models' names and, for a model directory,
    its card and recommended sampling (``config.json``). Behind it, the service (and with ``preload`` the
    configured models, loaded in the main process; others on selection) is made now or, with
    ``background``, by the first to need it: :func:`start_in_background` once the page answers, else the
    first request or page visit; requests wait for it. ``demo.mfmjt_startup.get()`` is the service.
    """
    configured = loaders is None
    if loaders is None:
        loaders = loaders_from_env()
    first = next(iter(loaders), None)
    start_models = (configured_names() if configured else [first]) if preload else []
    models = ModelCache(loaders, checked=offered_from_env()[1] if configured else (), preload=start_models)
    outputs = OutputDirs()  # now: removes what a killed instance left, and this one's folder at exit

    def make_service() -> DemoService:
        from mfmjt.demo.service import DemoService  # imports torch: after the page answers

        service = DemoService(models, outputs, gpu=_gpu, allowed_roots=[*_upload_roots()])
        if models.preload:
            models.load_all()
        import_request_modules()
        return service

    startup: Deferred[DemoService] = Deferred(make_service, name="the demo's start-up")
    if not background:
        startup.get()
    pipe = models.peek(first)
    card = ModelCard.read(first, pipe)
    recommended = pipe.recommended if pipe is not None else read_recommendation(first)
    settings_known = recommended is not None
    # until a model says otherwise (one that is not a local directory, before it loads): MeanFlow's
    settings = model_settings(recommended or SamplingSettings.for_objective("meanflow"))
    defaults = (settings.steps, settings.cfg_strength)
    configured_max = max_duration_from_env() if configured else 30.0
    max_duration = pipe.max_duration if pipe is not None else configured_max

    with gr.Blocks(
        title="MF-MJT: one-step video-to-audio", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(HEADER)
        model_info = gr.Markdown(models.describe(first), elem_id="model-info")
        if len(models.names) > 1:
            model: gr.components.Component = gr.Dropdown(
                models.offered(timeout=0), value=first, label="model", interactive=True
            )
            # the registry models awaiting the memory check appear once it is done
            demo.load(
                lambda: gr.Dropdown(choices=models.offered()),
                None,
                model,
                api_visibility="private",
                queue=False,
            )
        else:
            model = gr.State(first)
        description = gr.Markdown(card.description, elem_id="model-description")
        with gr.Tabs():
            with gr.Tab("Video-to-Audio", id="v2a"):
                v, examples = video_tab(startup, card, model, defaults, max_duration)
            with gr.Tab("Text-to-Audio", id="t2a"):
                t = text_tab(startup, card, model, defaults, max_duration)
        with gr.Accordion("About this model", open=False):
            about = gr.Markdown(_about(card), elem_id="model-about")

        if not startup.done:

            def when_ready(name: str) -> tuple:
                """Once the start-up is done: the model's line and, where the page was laid out without
                them (a model that is not a local directory), its card and recommended settings."""
                loaded = startup.get().models
                pipe = loaded.peek(name)
                if settings_known or pipe is None or name != first:
                    return (loaded.describe(name), *(gr.skip() for _ in range(6)))
                card, own = ModelCard.read(name, pipe), model_settings(pipe)
                steps, w = own.steps, own.cfg_strength
                return loaded.describe(name), card.description, _about(card), steps, w, steps, w

            demo.load(
                when_ready,
                model,
                [model_info, description, about, v.steps, v.cfg, t.steps, t.cfg],
                api_visibility="private",
                show_progress="hidden",
                concurrency_limit=None,  # every visitor of the first seconds waits for the same start-up
                concurrency_id="startup",
            )

        if isinstance(model, gr.Dropdown):

            def select_model(name: str, progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
                """Load (fetching if needed) the chosen model, then show its card and settings."""
                try:
                    pipe = startup.get(_waiting(progress)).pipeline(name)
                except UserError as exc:
                    gr.Warning(str(exc))
                    return (models.describe(name), *(gr.skip() for _ in range(7)))
                card = ModelCard.read(name, pipe)
                recommended = model_settings(pipe)
                steps, w = recommended.steps, recommended.cfg_strength
                rows = [list(row) for row in card.videos]
                dataset = gr.Dataset(samples=rows, visible=bool(rows)) if examples is not None else gr.skip()
                return models.describe(name), card.description, _about(card), steps, w, steps, w, dataset

            model.change(
                select_model,
                model,
                [
                    model_info,
                    description,
                    about,
                    v.steps,
                    v.cfg,
                    t.steps,
                    t.cfg,
                    examples if examples is not None else gr.State(),
                ],
                api_visibility="private",
                concurrency_limit=1,
                concurrency_id="load_model",
            )
    demo.queue(max_size=16, default_concurrency_limit=1)
    demo.mfmjt_startup = startup  # the service, for main, tests and benchmarks: demo.mfmjt_startup.get()
    return demo


def configured_names() -> list[str]:
    """``$MFMJT_MODEL``, comma-separated (default "default")."""
    names = [n.strip() for n in os.environ.get("MFMJT_MODEL", "default").split(",") if n.strip()]
    return names or ["default"]


def offered_from_env() -> tuple[list[str], list[str]]:
    """The configured models and those the owner allows, and which of them await the memory check."""
    return offered_names(configured_names(), os.environ.get("MFMJT_ALLOWED_MODELS"))


def max_duration_from_env() -> float:
    """``$MFMJT_MAX_DURATION``: the most seconds generated per request (default 30)."""
    return float(os.environ.get("MFMJT_MAX_DURATION", "30"))


def loaders_from_env() -> dict[str, Callable[[], Pipeline]]:
    """The configured models, then those the owner allows (``$MFMJT_ALLOWED_MODELS``, default: the
    registry models that fit this machine's memory); ``$MFMJT_MAX_DURATION`` caps seconds per request."""
    max_duration = max_duration_from_env()
    names = offered_from_env()[0]
    return {name: partial(load_fast_pipeline, name, max_duration=max_duration) for name in names}


def load_fast_pipeline(name: str, *, max_duration: float, **fast: Any) -> Pipeline:
    """``load_pipeline`` with the fast-path options (default: ``$MFMJT_PRECISION``, ``$MFMJT_COMPILE``, see
    docs/gpu.md); a compiled model is warmed up at load, so that compilation and graph capture do not
    land in a user's first request."""
    from mfmjt.acceleration import options_from_env
    from mfmjt.pipeline import load_pipeline

    fast = fast or options_from_env()
    pipe = load_pipeline(name, max_duration=max_duration, **fast)
    if fast.get("compile"):
        logger.info("warming up the compiled %s: %s", name, pipe.warm_up(min(8.0, max_duration)))
    return pipe


def import_request_modules() -> None:
    """Import what requests would import at first use: torchvision (resizing video frames) and open_clip
    (tokenizing prompts; it imports timm). The start-up does it, in its one thread, before any request
    runs: torchvision's circular imports deadlock when two threads import it at once."""
    from mfmjt.media.frames import import_resizers

    import_resizers()
    import open_clip  # noqa: F401


def start_in_background(page: gr.Blocks) -> threading.Thread:
    """What :func:`main` starts once the page answers, in one background thread: torch, the service, the
    configured models and the modules requests need (requests wait for them all), then the allowed
    registry models' memory checks (which import nothing more). Returns the thread."""

    def finish_start_up() -> None:
        try:
            service = page.mfmjt_startup.get()
        except StartupError:
            return  # logged; every request reports it
        service.models.start_checks()

    thread = threading.Thread(target=finish_start_up, name="start-up", daemon=True)
    thread.start()
    return thread


def stop_background(page: gr.Blocks, start_up: threading.Thread, timeout: float = EXIT_WAIT_S) -> None:
    """Before the interpreter exits: let the start-up (``start_up``, its thread) and the memory checks reach
    a stop, waiting up to ``timeout`` s for each (a thread still inside torch at exit aborts the process,
    which then does not exit cleanly)."""
    start_up.join(timeout)
    if page.mfmjt_startup.done:
        with contextlib.suppress(StartupError):  # failed: there are no checks to stop
            page.mfmjt_startup.get().models.stop_checks(timeout)


def stop_cleanly_on_sigterm() -> None:
    """Treat SIGTERM (how Spaces, docker and systemd stop a service) as Ctrl-C: Gradio's launch then
    closes the server and returns, and the exit handlers remove the app's folder, Gradio's cache in it."""

    def stop(signum: int, frame: Any) -> None:
        logger.info("SIGTERM: stopping")
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    page = demo or build_demo(background=not on_zero_gpu())
    page.launch(server_name="0.0.0.0", server_port=port, prevent_thread_lock=True, **LAUNCH_KWARGS)
    start_up = start_in_background(page)  # the page answers now; the rest of the start-up follows
    try:
        page.block_thread()  # until Ctrl-C or SIGTERM, which close the server
    finally:
        stop_background(page, start_up)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_cleanly_on_sigterm()  # from here on, model loading included
# on ZeroGPU the models load before the server starts (its start packs their tensors); elsewhere after
demo = build_demo(background=not on_zero_gpu()) if os.environ.get("MFMJT_APP_BUILD", "1") != "0" else None

if __name__ == "__main__":
    main()
