"""The demo's parts without Gradio: video tracks and muxing, spectrogram pictures, temporary folders."""

from __future__ import annotations

import av
import numpy as np
import pytest
from helpers import probe, write_clip

from mfmjt.demo import plots, video_track


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
