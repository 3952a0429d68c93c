"""What the scorer reads: audio of every format at its own rate, av-benchmark's loading steps, video
frames at an extractor's rate, caption tables, and the embedding cache."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf
from helpers import cfr, write_mp4, write_video

from mfmjt.scoring.cache import EmbeddingCache, cache_key
from mfmjt.scoring.inputs import (
    ScoreInputError,
    decode_frames,
    prepare_audio,
    read_captions,
    read_waveform,
    scan_folder,
)


def _sine(rate: int, hz: float, seconds: float, offset: float = 0.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t) + offset).astype(np.float32)


def _write_mp3(path, wave: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        for start in range(0, len(wave), 1152):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1152], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".mp4"])
def test_audio_is_read_at_its_own_rate_from_every_format(tmp_path, suffix):
    wave, rate = _sine(22_050, 440.0, 2.0), 22_050
    path = tmp_path / f"a{suffix}"
    if suffix == ".mp3":
        _write_mp3(path, wave, rate)
    elif suffix == ".mp4":
        write_mp4(path, 2.0, wave, rate)
    else:
        sf.write(path, wave, rate)
    got, got_rate = read_waveform(path)
    assert got_rate == rate
    assert abs(len(got) - len(wave)) <= 2048  # codecs pad a frame at most
    spectrum = np.abs(np.fft.rfft(got[:rate]))
    assert np.fft.rfftfreq(rate, 1 / rate)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)


def test_prepare_audio_removes_the_mean_resamples_and_keeps_the_first_seconds():
    wave = _sine(44_100, 1000.0, 3.0, offset=0.25)
    out = prepare_audio(wave, 44_100, 16_000, duration=2.0, remove_dc=True)
    assert len(out) == 32_000
    middle = out[1000:-1000]  # away from the filter's edges
    assert abs(middle.mean()) < 1e-3
    np.testing.assert_allclose(middle, _sine(16_000, 1000.0, 2.0)[1000:-1000], atol=2e-3)
    kept = prepare_audio(wave, 44_100, 44_100, duration=None, remove_dc=False)
    np.testing.assert_array_equal(kept, wave)


def _numbered(i: int, w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), 2 * (i % 125), np.uint8)  # frame i has brightness 2i (below 250)


def test_frames_are_taken_at_the_extractors_rate_with_the_short_side_resized(tmp_path):
    path = write_video(tmp_path / "v.mp4", cfr(25, 6.0), (48, 32), "libx264", 25, painter=_numbered)
    frames = decode_frames(path, 0.5, 6.0, short_side=64)
    assert frames.shape == (3, 64, 96, 3)
    np.testing.assert_allclose(frames[:, 32, 48, 0], [0, 100, 200], atol=4)  # frames 0, 50, 100
    sync = decode_frames(path, 25.0, 4.8, short_side=224)
    assert sync.shape == (120, 224, 336, 3)
    np.testing.assert_allclose(sync[::30, 100, 100, 1], [0, 60, 120, 180], atol=4)
    short = decode_frames(path, 25.0, 10.0, short_side=32)
    assert len(short) == 150  # the video ends at 6 s


def test_a_video_with_a_late_start_time_is_sampled_from_its_first_frame(tmp_path):
    times = [Fraction(1) + t for t in cfr(25, 2.0)]  # timestamps 1.00 .. 2.96 s
    path = write_video(tmp_path / "late.mp4", times, (32, 32), "libx264", 25, painter=_numbered)
    frames = decode_frames(path, 25.0, 1.0, short_side=32)
    assert len(frames) == 25 and frames[0, 0, 0, 0] <= 4


def test_folders_prefer_audio_to_a_video_of_the_same_name_and_report_the_other(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(1600, np.float32), 16_000)
    write_mp4(tmp_path / "x.mp4", 1.0, np.zeros(22050, np.float32))
    (tmp_path / "notes.txt").write_text("not media")
    folder = scan_folder(tmp_path, "--generated")
    assert folder.files == {"x": tmp_path / "x.wav"} and folder.duplicates == [tmp_path / "x.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreInputError, match="holds no videos"):
        scan_folder(tmp_path / "empty", "--videos", videos_only=True)


def test_caption_tables_tsv_and_csv(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\tlabel\nv1\tdog barking\nv2\train\n", encoding="utf-8")
    assert read_captions(tsv) == {"v1": "dog barking", "v2": "rain"}
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('name,caption,extra\na,"wind, then thunder",1\n', encoding="utf-8")
    assert read_captions(csv_path) == {"a": "wind, then thunder"}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na,b\n", encoding="utf-8")
    with pytest.raises(ScoreInputError, match="'name' and 'caption'"):
        read_captions(bad)
    no_id = tmp_path / "t.tsv"
    no_id.write_text("name\tcaption\na\tb\n", encoding="utf-8")
    with pytest.raises(ScoreInputError, match="has no 'id' column"):
        read_captions(no_id)


def test_the_cache_keys_on_content_extractor_weights_and_settings_and_survives_a_bad_entry(tmp_path):
    base = cache_key("abc", "panns", "w1", {"rate": 16000})
    assert base == cache_key("abc", "panns", "w1", {"rate": 16000})
    variants = [
        cache_key("abd", "panns", "w1", {"rate": 16000}),
        cache_key("abc", "passt", "w1", {"rate": 16000}),
        cache_key("abc", "panns", "w2", {"rate": 16000}),
        cache_key("abc", "panns", "w1", {"rate": 32000}),
    ]
    assert len({base, *variants}) == 5
    cache = EmbeddingCache(tmp_path)
    cache.put("panns", base, {"embedding": np.arange(3.0)})
    np.testing.assert_array_equal(cache.get("panns", base)["embedding"], np.arange(3.0))
    entry = next(tmp_path.rglob("*.npz"))
    entry.write_bytes(b"truncated")
    assert cache.get("panns", base) is None and (cache.hits, cache.misses) == (1, 1)
    assert EmbeddingCache(None).get("panns", base) is None
