"""The Gradio demo through its API (gradio_client), on the small random-weight stack."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from helpers import write_clip
from stacks import small_random_pipeline

from mfmjt.pipeline import Pipeline

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402

# Gradio's queue trips pandas deprecation warnings in its own code
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

MAX_DURATION = 3.0


def probe(path: str | Path) -> dict[str, list[float]]:
    """Durations in seconds of the video and audio streams of a media file."""
    with av.open(str(path)) as container:
        result: dict[str, list[float]] = {"video": [], "audio": []}
        for stream in container.streams:
            if stream.type in result:
                result[stream.type].append(float(stream.duration * stream.time_base))
        return result


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return small_random_pipeline(max_duration=MAX_DURATION)


@pytest.fixture(scope="module")
def client(pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    demo = app.build_demo({"random": lambda: pipe})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False
    )
    try:
        yield Client(
            f"http://127.0.0.1:{port}/",
            verbose=False,
            analytics_enabled=False,
            download_files=str(tmp_path_factory.mktemp("downloads")),
        )
    finally:
        demo.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 30 fps: the last frame is at 1.967 s, so 49 sync frames -> 1.96 s are used."""
    return write_clip(tmp_path_factory.mktemp("clips") / "square.mp4", 2.0)


def v2a(client: Client, video: Path | None, **settings) -> tuple:
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
    return client.predict(
        handle_file(str(video)) if video else None, *args.values(), api_name="/video_to_audio"
    )


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
    return client.predict(prompt, *args.values(), api_name="/text_to_audio")


def video_path(value) -> str:
    """gradio_client gives a Video output as a path (or a dict holding one)."""
    return value["video"] if isinstance(value, dict) else value


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
    standard, scaled, info, _ = client.predict(2.0, "standard", 1, api_name="/remix_t2a")
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
        ("corrupt", "corrupt or not a supported media format"),
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
        (dict(steps=0), "steps must be an integer from 1 to 25, got 0"),
        (dict(steps=1000), "steps must be an integer from 1 to 25, got 1000"),
        (dict(cfg_strength=-1.0), r"ω \(guidance strength\) must be from 0 to 10, got -1"),
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


def test_settings_validation_rejects_fractions_and_nan():
    with pytest.raises(gr.Error, match="steps must be an integer"):
        app._check_settings(1.5, 1.5, "both", 0, False)
    with pytest.raises(gr.Error, match="ω"):
        app._check_settings(1, float("nan"), "both", 0, False)
    with pytest.raises(gr.Error, match="guidance must be one of"):
        app._check_settings(1, 1.5, "louder", 0, False)
    assert app._check_settings(25, 4.5, "scaled", 7, False) == (25, 4.5, "scaled", 7)


def test_moving_omega_at_one_step_remixes_without_a_network_forward(client, clip, pipe, monkeypatch):
    first = v2a(client, clip, prompt="x", cfg_strength=1.5, seed=5)
    calls: list[int] = []
    original = pipe.network.inner_velocity
    monkeypatch.setattr(pipe.network, "inner_velocity", lambda *a, **k: calls.append(1) or original(*a, **k))
    # the UI's ω-release event: (ω, guidance, steps) + the session's last request
    remixed = client.predict(3.5, "both", 1, api_name="/remix_v2a")
    # the same request through the public endpoint with another ω
    again = v2a(client, clip, prompt="x", cfg_strength=2.5, seed=5)
    assert calls == []
    assert "live remix" in remixed[3] and "ω = 3.5" in remixed[3] and "ω = 2.5" in again[3]
    audio = {name: sf.read(run[2][1])[0] for name, run in (("first", first), ("remix", remixed))}
    assert not np.allclose(audio["first"], audio["remix"])


def test_request_folders_are_pruned(tmp_path):
    dirs = app.OutputDirs(root=tmp_path, keep=2)
    made = [dirs.new() for _ in range(4)]
    assert [p.exists() for p in made] == [False, True, True, True]  # pruned before each new one
    failed = dirs.new()
    dirs.discard(failed)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in made[2:])


def test_gpu_reservation_grows_with_steps_and_length():
    assert app._gpu_seconds(1, 8) < app._gpu_seconds(25, 8) < app._gpu_seconds(25, 30) <= 120
    assert app._gpu_seconds("junk", None) > 0


def test_models_load_once_on_first_use_and_a_failure_is_reported(pipe):
    calls: list[str] = []

    def broken() -> Pipeline:
        calls.append("broken")
        raise FileNotFoundError("no weights here")

    models = app.ModelCache({"random": lambda: calls.append("random") or pipe, "broken": broken})
    assert models.get("random") is models.get("random") and calls == ["random"]
    with pytest.raises(gr.Error, match="'broken' could not be loaded: no weights here"):
        models.get("broken")
    assert "could not be loaded" in models.describe("broken")
    assert "MeanFlow" in models.describe("random") and "2.0M parameters" in models.describe("random")


def test_the_demo_offers_a_model_selector_and_example_clips_when_there_are_some(pipe, tmp_path, monkeypatch):
    write_clip(tmp_path / "bounce.mp4", 1.0)
    (tmp_path / "bounce.txt").write_text("a ball bounces")
    monkeypatch.setattr(app, "EXAMPLES_DIR", tmp_path)
    loaded: list[str] = []
    demo = app.build_demo({"random": lambda: pipe, "other": lambda: loaded.append("other") or pipe})
    assert loaded == []  # only the first model loads at start-up
    kinds = {type(block).__name__ for block in demo.blocks.values()}
    assert {"Dropdown", "Dataset"} <= kinds  # Examples render as a Dataset
