"""The Gradio demo through its API (gradio_client), on the small random-weight stack."""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import probe, served, video_path, write_clip
from stacks import small_random_pipeline

from mfmjt.pipeline import Pipeline

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

os.environ.setdefault("MFMJT_APP_BUILD", "0")  # no module-level demo of the default model
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402
from mfmjt.demo.files import OutputDirs  # noqa: E402
from mfmjt.demo.models import ModelCache, ModelCard, ModelError, registry_names  # noqa: E402
from mfmjt.demo.service import GpuCost, gpu_seconds  # noqa: E402

# Gradio's queue trips pandas deprecation warnings in its own code
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

MAX_DURATION = 3.0
_demos: list = []


def client_demo_service():
    """The service behind the module's live server."""
    return _demos[-1].mfmjt_startup.get()


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return small_random_pipeline(max_duration=MAX_DURATION)


@pytest.fixture(scope="module")
def client(pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    demo = app.build_demo({"random": lambda: pipe})
    _demos.append(demo)
    with served(demo, **app.LAUNCH_KWARGS) as url:
        downloads = str(tmp_path_factory.mktemp("downloads"))
        yield Client(url, verbose=False, analytics_enabled=False, download_files=downloads)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 30 fps: the last frame is at 1.967 s, so 49 sync frames -> 1.96 s are used."""
    return write_clip(tmp_path_factory.mktemp("clips") / "square.mp4", 2.0)


def v2a(client: Client, video: Path | None, **settings) -> tuple:
    """``/video_to_audio`` called by parameter name, as docs/demo.md shows."""
    args = dict(
        prompt="",
        negative_prompt="",
        duration=0,
        steps=1,
        cfg_strength=1.5,
        guidance="both",
        seed=1,
        randomize_seed=False,
    )
    args.update(settings)
    video = handle_file(str(video)) if video else None
    return client.predict(video=video, **args, api_name="/video_to_audio")


def t2a(client: Client, prompt: str, **settings) -> tuple:
    args = dict(
        negative_prompt="",
        duration=1.5,
        steps=1,
        cfg_strength=1.5,
        guidance="both",
        seed=1,
        randomize_seed=False,
    )
    args.update(settings)
    return client.predict(prompt=prompt, **args, api_name="/text_to_audio")


V2A_PARAMETERS = [
    "video",
    "prompt",
    "negative_prompt",
    "duration",
    "steps",
    "cfg_strength",
    "guidance",
    "seed",
    "randomize_seed",
]


REMIX_PARAMETERS = ["cfg_strength", "guidance", "steps"]


def test_the_api_parameters_have_the_names_a_user_writes(client, pipe):
    api = client.view_api(print_info=False, return_format="dict")
    names = {
        name: [p["parameter_name"] for p in e["parameters"]] for name, e in api["named_endpoints"].items()
    }
    # every endpoint a client sees, one model (so no model parameter); the page's own events are private
    assert names == {
        "/video_to_audio": V2A_PARAMETERS,
        "/text_to_audio": V2A_PARAMETERS[1:],
        "/remix_v2a": REMIX_PARAMETERS,
        "/remix_t2a": REMIX_PARAMETERS,
        "/omega_sweep_v2a": [],
        "/omega_sweep_t2a": [],
    }
    assert api["unnamed_endpoints"] == {}
    # nothing callable is left out of the API page (an undocumented endpoint would be)
    hidden = [
        d["api_name"] for d in client.config["dependencies"] if d.get("api_visibility") == "undocumented"
    ]
    assert hidden == []
    # with several models the model is a parameter too
    demo = app.build_demo({"random": lambda: pipe, "again": lambda: pipe})
    with served(demo, **app.LAUNCH_KWARGS) as url:
        several = Client(url, verbose=False, analytics_enabled=False)
        endpoints = several.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert [p["parameter_name"] for p in endpoints["/video_to_audio"]["parameters"]][-1] == "model"
        assert [p["parameter_default"] for p in endpoints["/text_to_audio"]["parameters"]][-1] == "random"


def test_docs_calls_by_name_work_with_defaults(client, clip):
    """The calls of docs/demo.md: only the video (or prompt) and what differs from the defaults."""
    standard, scaled, wavs, info, seed = client.predict(
        video=handle_file(str(clip)), steps=1, guidance="scaled", api_name="/video_to_audio"
    )
    assert standard is None and len(wavs) == 1 and seed == 0
    standard, scaled, info, seed = client.predict(prompt="a ball", duration=1.5, api_name="/text_to_audio")
    assert len(sf.read(standard)[0]) == 24000 and "ω = 1.5" in info


def test_compare_mode_returns_two_mp4s_with_one_video_and_one_audio_stream(client, clip):
    standard, scaled, audio_files, info, seed = v2a(client, clip, prompt="a square", guidance="both")
    assert seed == 1
    for mp4 in (video_path(standard), video_path(scaled)):
        streams = probe(mp4)
        assert len(streams["video"]) == 1 and len(streams["audio"]) == 1
        # AAC frames are 1024 samples (64 ms at 16 kHz): allow one frame either way
        assert streams["video"][0] == pytest.approx(1.96, abs=0.07)
        assert streams["audio"][0] == pytest.approx(1.96, abs=0.07)
    assert sorted(Path(p).name.rsplit("_", 1)[-1] for p in audio_files) == ["scaled.wav", "standard.wav"]
    assert "standard CFG and scaled CFG" in info and "RTF" in info and "network" in info
    assert "16 kHz" in info


def test_single_mode_returns_one_mp4_and_no_second_player(client, clip):
    standard, scaled, audio_files, info, _ = v2a(client, clip, guidance="scaled", seed=2)
    assert standard is None and len(audio_files) == 1
    assert probe(video_path(scaled))["audio"]


def test_text_to_audio_returns_audio_of_the_requested_length_and_remixes(client):
    standard, scaled, info, _ = t2a(client, "a red ball bounces twice", duration=1.5)
    for path in (standard, scaled):
        data, rate = sf.read(path)
        assert rate == 16000 and len(data) == 24000 and np.isfinite(data).all()
    assert "1.50 s" in info
    standard, scaled, info, _ = client.predict(cfg_strength=2.0, guidance="standard", api_name="/remix_t2a")
    assert scaled is None and sf.read(standard)[0].shape == (24000,)
    assert "live remix" in info and "ω = 2" in info


def test_a_clip_longer_than_the_cap_is_cut_and_the_info_says_so(client, tmp_path):
    long_clip = write_clip(tmp_path / "long.mp4", MAX_DURATION + 1.5, fps=10)
    standard, _, _, info, _ = v2a(client, long_clip, guidance="standard")
    assert f"using the first {MAX_DURATION:.2f} s" in info
    streams = probe(video_path(standard))
    assert streams["audio"][0] == pytest.approx(MAX_DURATION, abs=0.07)
    # the H.264 stream is copied, and ffmpeg's -t keeps a few frames (here 10 fps) past the cut
    assert MAX_DURATION - 0.11 <= streams["video"][0] <= MAX_DURATION + 0.25


def bad_file(tmp: Path, kind: str) -> Path:
    if kind == "empty":
        (tmp / "empty.mp4").write_bytes(b"")
        return tmp / "empty.mp4"
    if kind == "corrupt":
        (tmp / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
        return tmp / "corrupt.mp4"
    if kind == "audio only":
        sf.write(tmp / "tone.wav", np.zeros(16000, np.float32), 16000)
        return tmp / "tone.wav"
    if kind == "huge":  # one 8200 x 16 frame: refused before any frame is decoded
        return write_clip(
            tmp / "huge.mkv", 0.04, width=8200, height=16, fps=25, codec="ffv1", pix_fmt="yuv420p"
        )
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"empty \(0 bytes\): empty\.mp4$"),
        ("corrupt", r"corrupt or not a supported media format$"),
        ("audio only", "has no video stream"),
        ("huge", "8200x16 pixels"),
    ],
)
def test_an_unusable_file_gives_its_reason(client, tmp_path, kind, message):
    with pytest.raises(AppError, match=message):
        v2a(client, bad_file(tmp_path, kind))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(steps=0), "steps must be a whole number from 1 to 25, got 0"),
        (dict(steps=1000), "steps must be a whole number from 1 to 25, got 1000"),
        (dict(cfg_strength=-1.0), r"ω \(cfg_strength\) must be a number from 0 to 10, got -1"),
        (dict(guidance="louder"), "guidance must be one of .* got 'louder'"),
        (dict(duration=-2.0), "duration must be 0 .* got -2"),
        (dict(seed=-1), "seed must be a whole number"),
    ],
)
def test_out_of_range_settings_are_refused(client, clip, settings, message):
    with pytest.raises(AppError, match=message):
        v2a(client, clip, **settings)


def test_no_video_and_no_prompt_are_refused(client):
    with pytest.raises(AppError, match="no video"):
        v2a(client, None)
    with pytest.raises(AppError, match="no prompt"):
        t2a(client, "  ")


def test_moving_omega_at_one_step_remixes_without_a_network_forward(client, clip, pipe, monkeypatch):
    first = v2a(client, clip, prompt="x", cfg_strength=1.5, seed=5)
    calls: list[int] = []
    original = pipe.network.inner_velocity
    monkeypatch.setattr(pipe.network, "inner_velocity", lambda *a, **k: calls.append(1) or original(*a, **k))
    # the UI's ω-release event, by name as docs/demo.md shows it (steps: the page's 1)
    remixed = client.predict(cfg_strength=3.5, guidance="both", api_name="/remix_v2a")
    # the same request through the public endpoint with another ω
    again = v2a(client, clip, prompt="x", cfg_strength=2.5, seed=5)
    assert calls == []
    assert "live remix" in remixed[3] and "ω = 3.5" in remixed[3] and "ω = 2.5" in again[3]
    audio = {name: sf.read(run[2][1])[0] for name, run in (("first", first), ("remix", remixed))}
    assert not np.allclose(audio["first"], audio["remix"])


def test_request_folders_are_pruned(tmp_path):
    (tmp_path / "999999999").mkdir()  # a folder of an older version, of a process that no longer runs
    (tmp_path / "999999999-0123abcd").mkdir()  # an instance that no longer runs
    (tmp_path / f"{os.getpid()}-0123abcd").mkdir()  # an earlier process with this pid (a restart)
    dirs = OutputDirs(root=tmp_path, keep=2)
    assert os.listdir(tmp_path) == [dirs.root.name]  # removed at start
    assert dirs.root.name.startswith(f"{os.getpid()}-")
    made = [dirs.new() for _ in range(4)]
    assert [p.exists() for p in made] == [False, True, True, True]  # pruned before each new one
    failed = dirs.new()
    dirs.discard(failed)
    assert sorted(os.listdir(dirs.root)) == sorted(p.name for p in made[2:])
    dirs.remove_all()  # what happens at exit
    assert os.listdir(tmp_path) == []


def test_gpu_reservation_follows_the_measured_cost():
    assert gpu_seconds(1, 8) == 30 and gpu_seconds(25, 8) == 60  # nothing measured yet
    cost = GpuCost(per_step=0.05, fixed=0.1)  # s per s of audio
    assert gpu_seconds(1, 8, cost) == int(10 + 3 * 8 * (0.1 + 0.05))
    assert gpu_seconds(25, 8, cost) == int(10 + 3 * 8 * (0.1 + 25 * 0.05))
    assert gpu_seconds(25, 30, cost) == 120  # capped


def test_the_reservation_uses_what_the_previous_request_measured(client, pipe):
    t2a(client, "a ball", duration=1.5, steps=2)
    service = client_demo_service()
    cost = service._costs["random"]
    assert cost.per_step > 0 and cost.fixed > 0
    request = service.check(None, "a ball", "", 1.5, 2, 1.5, "both", 1, False, "random").request
    assert service._request_seconds("random", request) == gpu_seconds(2, 1.5, cost)


def test_models_load_once_on_first_use_and_a_failure_is_reported(pipe):
    calls: list[str] = []

    def broken() -> Pipeline:
        calls.append("broken")
        raise FileNotFoundError("no weights here")

    models = ModelCache({"random": lambda: calls.append("random") or pipe, "broken": broken})
    assert models.get("random") is models.get("random") and calls == ["random"]
    with pytest.raises(ModelError, match="'broken' could not be loaded: no weights here"):
        models.get("broken")
    assert "could not be loaded" in models.describe("broken")
    assert "MeanFlow" in models.describe("random") and "2.0M parameters" in models.describe("random")


def test_the_model_card_comes_from_the_model_directory(tmp_path):
    write_clip(tmp_path / "bounce.mp4", 1.0)
    (tmp_path / "config.json").write_text('{"name": "Bouncer", "description": "knows balls", "lineage": "x"}')
    (tmp_path / "README.md").write_text("trained on balls\n\nmore details")
    examples = {
        "videos": [{"video": "bounce.mp4", "prompt": "a ball"}, {"video": "gone.mp4"}],
        "prompts": ["thud"],
    }
    (tmp_path / "examples.json").write_text(json.dumps(examples))
    card = ModelCard.read(str(tmp_path))
    assert (card.title, card.description, card.prompts) == ("Bouncer", "trained on balls", ["thud"])
    assert "trained on balls" in card.about and "lineage" not in card.about
    assert "more details" in card.about
    (tmp_path / "README.md").unlink()
    assert ModelCard.read(str(tmp_path)).description == "knows balls"  # without a card: config.json
    assert card.videos == [(str(tmp_path / "bounce.mp4"), "a ball")]  # the missing clip is left out


def test_the_embedded_model_card_has_its_own_examples():
    card = ModelCard.read("default")
    assert card.title.startswith("MF-MJT") and card.about and card.prompts
    assert card.videos and all(Path(v).is_file() for v, _ in card.videos)


def test_the_owner_allow_list_decides_what_visitors_may_load(monkeypatch):
    monkeypatch.setenv("MFMJT_MODEL", "default")
    monkeypatch.setenv("MFMJT_ALLOWED_MODELS", "mmaudio-small-16k, /srv/models/mine,")
    assert list(app.loaders_from_env()) == ["default", "mmaudio-small-16k", "/srv/models/mine"]
    assert app.offered_from_env()[1] == []  # the owner's list is not second-guessed
    monkeypatch.setenv("MFMJT_ALLOWED_MODELS", "")  # nothing besides the models loaded at start
    assert list(app.loaders_from_env()) == ["default"]
    models = ModelCache(app.loaders_from_env())
    with pytest.raises(
        ModelError, match=r"^the model 'mmaudio-large-44k-v2' is not offered by this demo; choose"
    ):
        models.get("mmaudio-large-44k-v2")


@pytest.mark.slow  # the estimates build every MMAudio network on the meta device: minutes on 2 busy cores
def test_by_default_only_registry_models_that_fit_in_memory_are_offered(monkeypatch, pipe):
    from mfmjt import memory
    from mfmjt.pipeline import MMAUDIO_NAMES

    monkeypatch.delenv("MFMJT_ALLOWED_MODELS", raising=False)
    monkeypatch.setenv("MFMJT_MODEL", "default")
    monkeypatch.setattr(memory.torch.cuda, "is_available", lambda: False)
    # a machine with just the memory the smallest model needs
    machine = memory.estimate_pipeline_memory(MMAUDIO_NAMES["mmaudio-small-16k"]).total_bytes
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: machine)
    names, checked = app.offered_from_env()
    assert names == ["default", *registry_names()] and checked == registry_names()
    models = ModelCache({name: lambda: pipe for name in names}, checked=checked)
    fitting = [n for n in checked if memory.estimate_pipeline_memory(MMAUDIO_NAMES[n]).total_bytes <= machine]
    assert models.offered() == ["default", *fitting]
    assert "mmaudio-small-16k" in fitting and "mmaudio-large-44k-v2" not in fitting
    assert models.get("mmaudio-small-16k") is pipe
    with pytest.raises(ModelError, match="'mmaudio-large-44k-v2' is not offered by this demo; choose one of"):
        models.get("mmaudio-large-44k-v2")


def test_unset_steps_and_omega_are_the_chosen_models_recommendation(pipe):
    """The endpoints' steps and ω default to None, the chosen model's own setting, as in the CLI and the
    Python API: a flow-matching model served beside a MeanFlow one gets its 25 steps at ω 4.5."""
    service = app.DemoService(ModelCache({"random": lambda: pipe}), OutputDirs())
    for endpoint in (app.video_endpoint(service), app.text_endpoint(service)):
        parameters = inspect.signature(endpoint).parameters
        assert parameters["steps"].default is None and parameters["cfg_strength"].default is None
    flow = Pipeline(
        pipe.network,
        pipe.features,
        name="flow",
        objective="flow_matching",
        device="cpu",
        max_duration=MAX_DURATION,
        window_seconds=MAX_DURATION,
    )
    demo = app.build_demo({"random": lambda: pipe, "flow": lambda: flow})
    with served(demo, **app.LAUNCH_KWARGS) as url:
        several = Client(url, verbose=False, analytics_enabled=False)
        settings = dict(prompt="a ball", duration=1.0, steps=None, cfg_strength=None, guidance="scaled")
        for model, expected in (("flow", "25 steps · ω = 4.5"), ("random", "1 step · ω = 1.5")):
            info = several.predict(**settings, model=model, api_name="/text_to_audio")[2]
            assert expected in info


def test_the_memory_checks_start_when_first_needed_and_run_once(pipe):
    """Not at start-up: the first check imports seconds of torch internals (app.main starts them once
    the page answers). Asking what is known now (timeout 0) starts nothing."""
    gate, calls = threading.Event(), []

    def check(name: str) -> bool:
        calls.append(name)
        gate.wait(30)
        return name == "fits"

    def checking() -> int:
        return sum(t.name == "model-checks" for t in threading.enumerate())

    before = checking()
    models = ModelCache(
        {n: lambda: pipe for n in ("mine", "fits", "too-big")}, checked=["fits", "too-big"], check=check
    )
    assert models.offered(timeout=0) == ["mine"] and checking() == before and calls == []
    models.start_checks()
    models.start_checks()
    assert checking() == before + 1
    gate.set()
    assert models.offered() == ["mine", "fits"] and calls == ["fits", "too-big"]
    lazy = ModelCache({n: lambda: pipe for n in ("mine", "fits")}, checked=["fits"], check=lambda n: True)
    assert lazy.offered() == ["mine", "fits"]  # the first question starts them and waits


def test_stopped_checks_end_after_the_running_one(pipe):
    """At exit (``app.stop_background``) the memory checks end between two models: a thread still inside
    torch when the interpreter ends aborts the process."""
    gate, calls = threading.Event(), []

    def check(name: str) -> bool:
        calls.append(name)
        return gate.wait(30)

    models = ModelCache({n: lambda: pipe for n in ("mine", "b", "c")}, checked=["b", "c"], check=check)
    models.start_checks()
    while not calls:
        threading.Event().wait(0.01)
    models.stop_checks(timeout=0)  # asked to stop while "b" is being checked
    gate.set()
    models.stop_checks(timeout=30)
    assert calls == ["b"] and models.offered(timeout=0) == ["mine", "b"]


STARTUP_SCRIPT = """
import os, sys, threading, time, urllib.request
os.environ["MFMJT_APP_BUILD"] = "0"
import app
from gradio_client import Client

demo = app.build_demo(background=True)  # what python app.py builds off ZeroGPU
url = "http://127.0.0.1:{port}/"
demo.launch(server_port={port}, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
with urllib.request.urlopen(url, timeout=30) as page:
    answered = page.status
checks = [t.name for t in threading.enumerate() if t.name == "model-checks"]
print("page", answered, "torch" in sys.modules, checks, demo.mfmjt_startup.done, flush=True)
start_up = app.start_in_background(demo)  # what app.main does once the page answers
waited = not demo.mfmjt_startup.done
client = Client(url, verbose=False, analytics_enabled=False)
standard, scaled, info, seed = client.predict(prompt="a ball", duration=1.0, api_name="/text_to_audio")
print("request", waited, bool(standard and scaled), info.splitlines()[0], flush=True)
imported = [m for m in ("torch", "torchvision", "open_clip") if m in sys.modules]
print("later", imported, flush=True)
demo.close()
app.stop_background(demo, start_up)  # as app.main does at exit: the process then ends cleanly
"""


@pytest.mark.slow  # a fresh interpreter importing Gradio, then torch and the embedded model
def test_the_page_answers_before_torch_and_an_immediate_request_waits_for_the_start_up():
    """``python app.py`` lays the page out and serves it without importing torch (nor torchvision, timm,
    torch._dynamo) or starting the registry models' memory checks; then, in the background, torch, the
    service, the embedded model and the modules requests import. A request sent at once waits for that
    and succeeds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(app.__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "MFMJT_ALLOWED_MODELS"}
    env.update(MFMJT_MODEL="default", PYTHONPATH=str(repo))
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT.format(port=port)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    # answered; torch not imported, no memory checks, nothing of the start-up done yet
    assert lines["page"] == "page 200 False [] False"
    assert lines["request"].startswith("request True True **standard CFG and scaled CFG** · 1 step · ω = 1.5")
    assert lines["later"] == "later ['torch', 'torchvision', 'open_clip']"


def test_a_request_during_the_start_up_waits_for_it(pipe):
    """Built with ``background`` (as ``python app.py`` builds it), the page is laid out before the model is
    loaded and says so; the first request (here before anything started the start-up) loads it once."""
    loaded: list[str] = []
    demo = app.build_demo({"random": lambda: loaded.append("random") or pipe}, background=True)
    assert loaded == [] and not demo.mfmjt_startup.done
    infos = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-info"]
    assert infos == ["**random**: loading… (the server has just started; requests wait for it)"]
    with served(demo, **app.LAUNCH_KWARGS) as url:
        client = Client(url, verbose=False, analytics_enabled=False)
        jobs = [client.submit(prompt=p, duration=1.0, api_name="/text_to_audio") for p in ("a", "b")]
        infos = [job.result(timeout=120)[2] for job in jobs]
    assert loaded == ["random"] and demo.mfmjt_startup.done
    assert all(info.startswith("**standard CFG and scaled CFG** · 1 step") for info in infos)


def test_the_demo_offers_a_model_selector_and_preloads_only_the_first_given_model(pipe):
    loaded: list[str] = []
    demo = app.build_demo({"random": lambda: pipe, "other": lambda: loaded.append("other") or pipe})
    assert loaded == []  # with explicit loaders only the first model loads at start-up
    kinds = {type(block).__name__ for block in demo.blocks.values()}
    assert "Dropdown" in kinds


def test_the_omega_sweep_renders_each_omega_with_at_most_one_forward_each(client, clip, pipe, monkeypatch):
    v2a(client, clip, prompt="x", cfg_strength=1.5, seed=11)
    calls: list[int] = []
    original = pipe.network.inner_velocity
    monkeypatch.setattr(pipe.network, "inner_velocity", lambda *a, **k: calls.append(1) or original(*a, **k))
    picture, wavs = client.predict(api_name="/omega_sweep_v2a")
    assert len(calls) <= 4  # one forward per ω at most (none with two-pass CFG's stored pair)
    names = sorted(Path(w).name for w in wavs)
    assert names == sorted(f"mfmjt_sweep_w{w:g}_scaled.wav" for w in (1.0, 1.5, 2.5, 4.0))
    audio = [sf.read(w)[0] for w in wavs]
    assert not np.allclose(audio[0], audio[-1])
    from PIL import Image

    assert Image.open(picture).size[0] == 900


def test_the_picture_shows_both_results_on_one_axis(client, clip):
    out = v2a(client, clip, guidance="both", seed=12)
    service = client_demo_service()
    state = {
        "wavs": {"standard": out[2][0], "scaled": out[2][1]},
        "sample_rate": 16000,
        "seconds": 1.96,
    }
    image = service.picture(state)
    from mfmjt.demo import plots

    assert image.size == (plots.WIDTH, 2 * (plots.PANEL_HEIGHT + plots.LABEL_HEIGHT) + plots.AXIS_HEIGHT)
    assert service.picture(None) is None
