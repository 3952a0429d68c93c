"""The demo's parts without Gradio: video tracks and muxing, spectrogram pictures, temporary folders, what
the page is laid out from before torch is imported, and the start-up's wait."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import probe, write_clip

from mfmjt.demo import plots, video_track
from mfmjt.demo.deferred import Deferred, StartupError
from mfmjt.demo.models import ModelCache, model_settings, read_recommendation
from mfmjt.demo.service import DemoService
from mfmjt.pipeline import default_model_dir, load_pipeline
from mfmjt.request import Recommended

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s of H.264 at 25 fps in MP4: usable as a track as it is."""
    return write_clip(tmp_path_factory.mktemp("track") / "clip.mp4", 2.0, fps=25)


def test_an_h264_mp4_that_needs_no_cut_is_its_own_track(clip, tmp_path):
    assert not video_track.needs_encode(clip, 2.0)
    assert not video_track.needs_encode(clip, 1.97)  # every frame starts inside the audio
    assert video_track.prepare_track(clip, 2.0, tmp_path) == clip
    assert list(tmp_path.iterdir()) == []


def test_a_cut_is_encoded_once_into_an_h264_track(clip, tmp_path):
    assert video_track.needs_encode(clip, 1.0)
    track = video_track.prepare_track(clip, 1.0, tmp_path)
    streams = probe(track)
    assert streams["audio"] == [] and streams["video"][0] == pytest.approx(1.0, abs=0.041)
    with av.open(str(track)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_other_containers_are_encoded(tmp_path):
    mkv = write_clip(tmp_path / "clip.mkv", 1.0, fps=25)
    assert video_track.needs_encode(mkv, 1.0)


@pytest.mark.parametrize("sample_rate", [16_000, 44_100])
def test_muxing_copies_the_video_and_keeps_the_sample_rate(clip, tmp_path, sample_rate):
    wave = np.sin(2 * np.pi * 440 * np.arange(int(1.5 * sample_rate)) / sample_rate).astype(np.float32)
    out = video_track.mux_audio(clip, wave, sample_rate, tmp_path / "out.mp4", 2.0)
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == sample_rate
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=1024 / sample_rate)  # padded
        with av.open(str(clip)) as source:
            src = source.streams.video[0]
            assert video.frames == src.frames  # copied, not re-encoded
            assert [bytes(p) for p in container.demux(video) if p.size][:3] == [
                bytes(p) for p in source.demux(src) if p.size
            ][:3]


def test_spectrogram_panels_mark_onsets_where_the_sound_starts():
    rate, seconds = 16_000, 4.0
    t = np.arange(int(rate * seconds)) / rate
    clicks = {"early": (1.0, 3.0), "late": (1.5,)}
    waves = {
        name: sum((t >= s) * np.exp(-(t - s) * 30) * np.sin(2 * np.pi * 1000 * t) for s in starts).astype(
            np.float32
        )
        for name, starts in clicks.items()
    }
    for name, starts in clicks.items():
        found = plots.onsets(waves[name], rate)
        assert len(found) == len(starts) and np.allclose(found, starts, atol=0.01)
    image = np.asarray(plots.spectrogram_panels(waves, rate, seconds))
    assert image.shape == (2 * (plots.PANEL_HEIGHT + plots.LABEL_HEIGHT) + plots.AXIS_HEIGHT, plots.WIDTH, 3)
    row = plots.LABEL_HEIGHT + plots.PANEL_HEIGHT // 2  # the middle of the first panel
    marked = np.flatnonzero((image[row] == plots.ONSET_COLOURS[0]).all(axis=1))
    expected = [round(s / seconds * (plots.WIDTH - 1)) for s in clicks["early"]]
    assert all(np.abs(marked - x).min() <= 1 for x in expected)  # a solid tick at each own onset
    faint = np.flatnonzero((image[row] == (200, 200, 200)).all(axis=1))
    assert np.abs(faint - round(1.5 / seconds * (plots.WIDTH - 1))).min() <= 1  # the other panel's onset


# ------------------------------------------------------------------------------- before torch
def test_the_page_is_laid_out_from_modules_that_do_not_import_torch():
    """What ``app.py`` lays the page out from: the demo's settings, model names, cards and recommended
    sampling (read from the model directory), the start-up's wait, the upload guard and the files."""
    code = (
        "import sys\n"
        "from mfmjt.demo import deferred, files, models, settings, upload_guard\n"
        "import mfmjt.request, mfmjt.weights\n"
        "card = models.ModelCard.read('default')\n"
        "own = models.model_settings(models.read_recommendation('default'))\n"
        "names = models.offered_names(['default'])[0]\n"
        "print('torch' in sys.modules, own.steps, own.cfg_strength, bool(card.about), len(names))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "1", "1.5", "True", "6"]


def test_the_recommended_sampling_read_before_loading_is_the_loaded_models(tmp_path):
    """One owner: the page's starting steps and ω, read from ``config.json`` before the model loads, are the
    loaded pipeline's recommendation, and what the demo resolves a request that leaves them unset to
    (within the demo's limits)."""
    directory = tmp_path / "model"
    shutil.copytree(default_model_dir(), directory)
    config = json.loads((directory / "config.json").read_text())
    config["recommended"] = {"steps": 4, "cfg": 2.5, "guidance": "scaled"}
    (directory / "config.json").write_text(json.dumps(config))
    name = str(directory)
    pipe = load_pipeline(name)
    assert read_recommendation(name) == pipe.recommended
    assert model_settings(read_recommendation(name)) == model_settings(pipe) == Recommended(4, 2.5)
    service = DemoService(ModelCache({name: lambda: pipe}))
    request = service.check(None, "a ball", "", 1.0, None, None, "scaled", 0, False, name).request
    assert (request.steps, request.cfg_strength) == (4, 2.5)

    config["recommended"] = {"steps": 40, "cfg": 12.0, "guidance": "scaled"}  # beyond the demo's limits
    (directory / "config.json").write_text(json.dumps(config))
    assert model_settings(read_recommendation(name)) == Recommended(25, 10.0)  # capped, as requests are
    assert read_recommendation("default") == load_pipeline("default").recommended
    assert read_recommendation("mmaudio-small-16k") is None  # not a local directory: known once loaded
    (directory / "config.json").write_text("{")
    assert read_recommendation(name) is None


def test_the_start_up_is_made_once_and_requests_wait_for_it():
    gate, calls, told = threading.Event(), [], []

    def make() -> str:
        calls.append("made")
        assert gate.wait(30)
        return "service"

    startup = Deferred(make, name="the start-up")
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(startup.get)  # the start-up thread
        while not calls:
            threading.Event().wait(0.01)
        waiting = [pool.submit(startup.get, lambda: told.append("loading")) for _ in range(2)]
        with pytest.raises(TimeoutError, match="the start-up is not ready after 0.05 s"):
            startup.get(timeout=0.05)
        assert not startup.done and not any(f.done() for f in [first, *waiting])
        gate.set()
        assert [f.result(30) for f in [first, *waiting]] == ["service"] * 3
    assert calls == ["made"] and told.count("loading") == 2 and startup.done
    assert startup.get(lambda: told.append("again")) == "service" and "again" not in told
    assert Deferred.of("ready").get() == "ready"

    broken = Deferred(lambda: 1 / 0, name="the start-up")
    for _ in range(2):  # made once; every caller learns why
        with pytest.raises(StartupError, match="the start-up failed: division by zero"):
            broken.get()
