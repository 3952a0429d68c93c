"""Spec tests for mfmjt.media: frame selection at 8/25 fps, resizing, durations, audio I/O, muxing.

Every video is made here with PyAV. Frame ``i`` is painted one flat colour that encodes ``i``
(3 channels x 8 levels, 32 apart), so the source frame behind any output frame can be read back
from its mean colour: lossy codecs move flat colours by a few levels, far below the 16 needed to
misread an index.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import helpers
import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import cfr
from torchvision.transforms import v2

from mfmjt.config import MIN_DURATION
from mfmjt.media import (
    MediaError,
    decode_video,
    mux_audio_into_video,
    read_audio,
    write_audio,
)

FAST_X264 = {"crf": "12", "preset": "ultrafast"}
FAST_VP9 = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
Painter = Callable[[int, int, int], np.ndarray]  # (index, width, height) -> [H, W, 3] uint8


def index_colour(i: int) -> np.ndarray:
    return np.array([(i % 8) * 32 + 16, (i // 8 % 8) * 32 + 16, (i // 64) * 32 + 16], dtype=np.uint8)


def colour_index(frame: torch.Tensor | np.ndarray) -> int:
    """Inverse of ``index_colour`` from the mean colour of a [3, H, W] or [H, W, 3] frame."""
    arr = np.asarray(frame)
    arr = arr[:, ::4, ::4] if arr.shape[0] == 3 else arr[::4, ::4].transpose(2, 0, 1)  # flat: subsample
    mean = arr.reshape(3, -1).mean(axis=1)
    digits = [int(round((c - 16) / 32)) for c in mean]
    return digits[0] + 8 * digits[1] + 64 * digits[2]


def flat_painter(i: int, w: int, h: int) -> np.ndarray:
    return np.broadcast_to(index_colour(i), (h, w, 3)).copy()


def write_video(
    path: Path,
    times: Sequence[Fraction],
    size: tuple[int, int],
    codec: str,
    rate: Fraction | int,
    options: dict[str, str] | None = None,
    painter: Painter = flat_painter,
    tone_hz: float | None = None,
) -> Path:
    """:func:`helpers.write_video` with each frame painted its index's colour (unless told otherwise)."""
    return helpers.write_video(path, times, size, codec, rate, options, painter=painter, tone_hz=tone_hz)


def texture_painter(i: int, w: int, h: int) -> np.ndarray:
    """8-px random blocks: detail for the resize comparison."""
    blocks = np.random.default_rng(i).integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]


def quadrant_painter(i: int, w: int, h: int) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 255)
    return img


def vfr_times() -> list[Fraction]:
    """Gaps alternating 20 ms, 20 ms, 140 ms over ~2.5 s."""
    times, t = [], Fraction(0)
    for i in range(40):
        times.append(t)
        t += Fraction(7, 50) if i % 3 == 2 else Fraction(1, 50)
    return times


@dataclass(frozen=True)
class Source:
    suffix: str
    codec: str
    size: tuple[int, int]
    rate: Fraction | int
    times: tuple[Fraction, ...]
    options: dict[str, str] | None = None


SOURCES: dict[str, Source] = {
    "h264_23.976fps_3s": Source(
        ".mp4",
        "libx264",
        (320, 180),
        Fraction(24000, 1001),
        tuple(cfr(Fraction(24000, 1001), 3.0)),
        FAST_X264,
    ),
    "h264_25fps_1.28s": Source(".mp4", "libx264", (320, 180), 25, tuple(cfr(25, 1.28)), FAST_X264),
    "h264_30fps_portrait_mov": Source(".mov", "libx264", (180, 320), 30, tuple(cfr(30, 3.0)), FAST_X264),
    "h264_60fps_mkv": Source(".mkv", "libx264", (320, 180), 60, tuple(cfr(60, 3.0)), FAST_X264),
    "h264_5fps": Source(".mp4", "libx264", (320, 180), 5, tuple(cfr(5, 3.0)), FAST_X264),
    "h264_vfr": Source(".mp4", "libx264", (320, 180), 1000, tuple(vfr_times()), FAST_X264),
    "vp9_30fps_130x97_webm": Source(".webm", "libvpx-vp9", (130, 97), 30, tuple(cfr(30, 1.3)), FAST_VP9),
    "mpeg4_25fps_avi": Source(".avi", "mpeg4", (160, 120), 25, tuple(cfr(25, 3.0)), {"qscale": "2"}),
}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``video(name)``: the file of ``SOURCES[name]``, encoded once per module."""
    folder = tmp_path_factory.mktemp("videos")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            s = SOURCES[name]
            path = folder / f"{name}{s.suffix}"
            made[name] = write_video(path, s.times, s.size, s.codec, s.rate, s.options)
        return made[name]

    return get


def source_frames(path: Path) -> list[tuple[Fraction, int]]:
    """(exact time, painted index) of every frame, by a plain PyAV decode: the oracle."""
    with av.open(str(path)) as container:
        return [
            (frame.pts * frame.time_base, colour_index(frame.to_ndarray(format="rgb24")))
            for frame in container.decode(video=0)
        ]


def last_frame_shown_for(path: Path) -> Fraction:
    """How long the last frame is on screen: its own duration, else one nominal frame interval."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = list(container.decode(video=0))[-1]
        if frame.duration:
            return frame.duration * frame.time_base
        return 1 / Fraction(stream.guessed_rate)


def expected_duration(frames: list[tuple[Fraction, int]], window: float, shown_for: Fraction) -> float:
    """min(window, n_clip / 8, n_sync / 25), counting the targets k / fps <= window that have a frame.

    A last frame shown for 80 ms or more (under 12.5 fps) counts until it ends (the next frame's time
    had there been one): the clip then lasts its whole length.
    """
    times = sorted(t for t, _ in frames)
    last = min(times[-1], Fraction(window))
    reference = min(window, (math.floor(last * 8) + 1) / 8, (math.floor(last * 25) + 1) / 25)
    interval = shown_for
    if interval < Fraction(2, 25) or times[-1] >= window:
        return reference
    end = min(times[-1] + interval, Fraction(window))
    return float(
        min(Fraction(window), Fraction(math.ceil(end * 8), 8), Fraction(math.ceil(end * 25), 25), end)
    )


def expected_picks(frames: list[tuple[Fraction, int]], fps: int, count: int) -> list[int]:
    """Index of the first frame whose time is >= k / fps, for k < count (the last frame past the end)."""
    return [next((i for t, i in frames if t >= Fraction(k, fps)), frames[-1][1]) for k in range(count)]


def probe_streams(path: Path) -> dict[str, list[dict]]:
    """Per stream type: codec, pixel format, size and duration (s) of an output file."""
    result: dict[str, list[dict]] = {"video": [], "audio": [], "other": []}
    with av.open(str(path)) as container:
        for s in container.streams:
            ctx = s.codec_context
            entry = {
                "codec": ctx.name,
                "duration": float(s.duration * s.time_base),
                "pix_fmt": getattr(ctx, "pix_fmt", None),
                "size": (getattr(ctx, "width", None), getattr(ctx, "height", None)),
            }
            result[s.type if s.type in ("video", "audio") else "other"].append(entry)
    return result


def video_packets(path: Path, n: int) -> list[bytes]:
    with av.open(str(path)) as container:
        packets = (bytes(p) for p in container.demux(video=0) if p.size)
        return [next(packets) for _ in range(n)]


def dominant_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[spectrum.argmax()])


def tone(seconds: float, sample_rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# decoding: counts, shapes, frame selection


@pytest.mark.parametrize("name", list(SOURCES))
def test_frame_counts_and_duration_follow_the_reference_rule(video: Callable[[str], Path], name: str) -> None:
    path = video(name)
    d = decode_video(path)
    duration = expected_duration(source_frames(path), 30.0, last_frame_shown_for(path))
    assert d.duration == pytest.approx(duration, abs=1e-12)
    assert d.clip_frames.shape == (int(8 * duration), 3, 384, 384)
    assert d.sync_frames.shape == (int(25 * duration), 3, 224, 224)
    assert d.clip_frames.dtype == d.sync_frames.dtype == torch.uint8
    assert (d.width, d.height) == SOURCES[name].size
    assert not d.truncated and not d.has_audio
    assert d.sequence_lengths().clip == len(d.clip_frames)


@pytest.mark.parametrize("name", list(SOURCES))
def test_each_target_time_gets_the_first_frame_at_or_after_it(
    video: Callable[[str], Path], name: str
) -> None:
    path = video(name)
    frames = source_frames(path)
    assert [i for _, i in frames] == list(range(len(SOURCES[name].times)))  # colours survived the codec
    d = decode_video(path)
    assert [colour_index(f) for f in d.clip_frames] == expected_picks(frames, 8, len(d.clip_frames))
    assert [colour_index(f) for f in d.sync_frames] == expected_picks(frames, 25, len(d.sync_frames))


def test_low_fps_source_duplicates_frames(video: Callable[[str], Path]) -> None:
    d = decode_video(video("h264_5fps"))
    picks = [colour_index(f) for f in d.sync_frames[:11]]
    assert picks == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]  # target k/25 -> frame ceil(k/5) at t = 0.2 * index


def test_last_frame_time_bounds_the_duration(video: Callable[[str], Path]) -> None:
    # 32 frames at 25 fps, the last at 1.24 s: 8 fps targets <= 1.24 s are 0 .. 9/8, i.e. 10 frames
    # = 1.25 s, so a request for the container's 1.28 s becomes 1.25 s (31 sync frames).
    d = decode_video(video("h264_25fps_1.28s"), 1.28)
    assert d.duration == 1.25
    assert (len(d.clip_frames), len(d.sync_frames)) == (10, 31)
    assert d.truncated and "shorter than the requested 1.28 s" in d.message


def test_requested_duration_shorter_than_the_video_stops_decoding_early(video: Callable[[str], Path]) -> None:
    d = decode_video(video("h264_60fps_mkv"), 1.0)
    assert d.duration == 1.0 and not d.truncated and d.message == ""
    assert (len(d.clip_frames), len(d.sync_frames)) == (8, 25)
    assert d.decoded_frames <= 62  # frames up to 1.0 s plus the one that ends the window, not all 180


def test_requested_duration_longer_than_the_video_is_truncated(video: Callable[[str], Path]) -> None:
    d = decode_video(video("h264_60fps_mkv"), 5.0)
    assert d.duration == 3.0 and d.truncated
    assert "shorter than the requested 5.00 s" in d.message
    assert d.source_duration == pytest.approx(3.0, abs=1 / 60)


def test_max_duration_caps_a_long_video(video: Callable[[str], Path]) -> None:
    d = decode_video(video("h264_23.976fps_3s"), max_duration=1.0)
    assert d.duration == 1.0 and d.truncated and "longer than the 1.00 s limit" in d.message
    assert (len(d.clip_frames), len(d.sync_frames)) == (8, 25)
    d = decode_video(video("h264_23.976fps_3s"), 2.0, max_duration=1.0)
    assert d.duration == 1.0 and d.truncated and "exceeds the 1.00 s limit" in d.message


def test_times_count_from_the_stream_start(tmp_path: Path) -> None:
    times = [1 + t for t in cfr(25, 2.0)]  # first frame at 1 s, as in MPEG-TS captures
    path = write_video(tmp_path / "late.mkv", times, (64, 48), "libx264", 25, FAST_X264)
    d = decode_video(path)
    assert d.duration == 2.0
    assert [colour_index(f) for f in d.clip_frames] == [math.ceil(k * 25 / 8) for k in range(16)]


@pytest.mark.parametrize("size", [(320, 180), (180, 320)], ids=["landscape", "portrait"])
def test_resizes_equal_mmaudio_transforms_on_the_same_frames(tmp_path: Path, size: tuple[int, int]) -> None:
    path = write_video(
        tmp_path / "texture.mp4", cfr(25, 1.0), size, "libx264", 25, FAST_X264, texture_painter
    )
    with av.open(str(path)) as container:
        raw = torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    raw = raw.permute(0, 3, 1, 2)  # as MMAudio: [T, 3, H, W] uint8; 25 fps source -> frame k at 25 fps
    clip_tf = v2.Compose([v2.Resize((384, 384), interpolation=v2.InterpolationMode.BICUBIC)])
    sync_tf = v2.Compose([v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(224)])
    d = decode_video(path)
    assert torch.equal(d.sync_frames, sync_tf(raw[: len(d.sync_frames)]))
    picks = [math.ceil(k * 25 / 8) for k in range(len(d.clip_frames))]  # first frame at or after k/8 s
    assert torch.equal(d.clip_frames, clip_tf(raw[picks]))


def test_rotated_video_is_turned_upright_like_ffmpeg_does(tmp_path: Path) -> None:
    plain = write_video(
        tmp_path / "plain.mp4", cfr(25, 1.0), (320, 180), "libx264", 25, FAST_X264, quadrant_painter
    )
    rotated = tmp_path / "rotated.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run(
        [ffmpeg, "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated)],
        check=True,
    )
    upright = subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-i",
            str(rotated),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    reference = np.frombuffer(upright, np.uint8).reshape(320, 180, 3)  # ffmpeg autorotates: 180 wide

    d = decode_video(rotated)
    assert (d.width, d.height) == (180, 320)
    ours = d.clip_frames[0].permute(1, 2, 0).numpy()

    def quadrants(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[0] // 4, img.shape[1] // 4  # sample the quadrant centres
        return np.array([img[h, w], img[h, 3 * w], img[3 * h, w], img[3 * h, 3 * w]], dtype=float)

    assert np.abs(quadrants(ours) - quadrants(reference)).max() < 24  # codec error only


# ---------------------------------------------------------------------------------------------
# decoding: bad input


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="file not found"):
        decode_video(tmp_path / "nope.mp4")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not a file"):
        decode_video(tmp_path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(MediaError, match="empty"):
        decode_video(tmp_path / "empty.mp4")


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="corrupt or not a supported media format"):
        decode_video(path)


def test_truncated_mp4_is_refused(video: Callable[[str], Path], tmp_path: Path) -> None:
    data = video("h264_23.976fps_3s").read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is written last, so it is gone
    with pytest.raises(MediaError, match="corrupt"):
        decode_video(path)


def test_audio_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sound.wav"
    sf.write(path, tone(1.0, 16_000), 16_000)
    with pytest.raises(MediaError, match="no video stream"):
        decode_video(path)


def test_music_file_with_cover_art_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-f",
            "lavfi",
            "-i",
            "color=red:s=64x64:d=1",
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-frames:v",
            "1",
            "-c:a",
            "aac",
            "-c:v",
            "png",
            "-disposition:v",
            "attached_pic",
            str(path),
        ],
        check=True,
    )
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1  # the picture, flagged as cover art
    with pytest.raises(MediaError, match="no video stream"):
        decode_video(path)
    assert read_audio(path, 16_000).size > 0


def test_video_shorter_than_the_minimum_is_refused(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", cfr(25, 0.4), (64, 48), "libx264", 25, FAST_X264)
    with pytest.raises(MediaError, match=f"too short.*at least {MIN_DURATION:.2f} s"):
        decode_video(path)


def test_requested_duration_below_the_minimum_is_refused(video: Callable[[str], Path]) -> None:
    with pytest.raises(MediaError, match="duration must be at least 0.64 s"):
        decode_video(video("h264_25fps_1.28s"), 0.5)


def test_absurd_resolution_is_refused(tmp_path: Path) -> None:
    path = write_video(tmp_path / "wide.mkv", cfr(25, 0.12), (8200, 16), "ffv1", 25)
    with pytest.raises(MediaError, match="8200x16 pixels.*8192"):
        decode_video(path)


# ---------------------------------------------------------------------------------------------
# audio


def test_video_with_sound_reports_it_and_its_audio_can_be_read(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "sound.mp4", cfr(25, 2.0), (64, 48), "libx264", 25, FAST_X264, tone_hz=440.0
    )
    assert decode_video(path).has_audio
    audio = read_audio(path, 16_000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2.0 * 16_000) <= 2 * 1024 * 16_000 / 44_100  # AAC works in 1024-sample frames
    assert dominant_frequency(audio, 16_000) == pytest.approx(440.0, abs=2.0)
    assert len(read_audio(path, 16_000, duration=1.0)) == 16_000


def test_reading_audio_from_a_silent_video_is_refused(video: Callable[[str], Path]) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(video("h264_25fps_1.28s"), 16_000)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_round_trips_within_16_bit_quantisation(tmp_path: Path, suffix: str) -> None:
    wave = tone(1.0, 16_000)
    path = write_audio(tmp_path / f"out{suffix}", wave, 16_000)
    back = read_audio(path, 16_000)
    assert back.shape == wave.shape
    np.testing.assert_allclose(back, wave, atol=1.01 / 32768)  # one 16-bit step


def test_stereo_audio_is_averaged_to_mono(tmp_path: Path) -> None:
    left, right = tone(0.5, 16_000), np.full(8000, 0.25, dtype=np.float32)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right]), 16_000)
    assert sf.info(path).channels == 2
    np.testing.assert_allclose(read_audio(path, 16_000), (left + right) / 2, atol=1.01 / 32768)


def test_audio_is_resampled_to_the_requested_rate(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "hi.flac", tone(1.0, 48_000, hz=1000.0), 48_000)
    audio = read_audio(path, 16_000)
    assert abs(len(audio) - 16_000) <= 32  # resampler delay
    assert dominant_frequency(audio, 16_000) == pytest.approx(1000.0, abs=2.0)


def test_written_audio_is_clipped_to_full_scale(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], dtype=np.float32), 16_000)
    np.testing.assert_allclose(read_audio(path, 16_000), [32767 / 32768, -1.0, 0.5], atol=1e-6)


def test_write_audio_refuses_other_formats_and_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported audio file type '.mp3'"):
        write_audio(tmp_path / "x.mp3", np.zeros(10, dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "x.wav", np.array([0.0, np.nan], dtype=np.float32), 16_000)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# muxing


def assert_browser_mp4(path: Path, duration: float, fps: float, sample_rate: int) -> dict[str, list[dict]]:
    """One H.264 yuv420p and one AAC stream, each within a frame of ``duration``, index up front."""
    streams = probe_streams(path)
    assert (len(streams["video"]), len(streams["audio"]), len(streams["other"])) == (1, 1, 0)
    v, a = streams["video"][0], streams["audio"][0]
    assert (v["codec"], v["pix_fmt"], a["codec"]) == ("h264", "yuv420p", "aac")
    assert abs(v["duration"] - duration) <= 1 / fps + 1e-3
    assert abs(a["duration"] - duration) <= 1024 / sample_rate
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: playable while downloading
    return streams


def test_mux_copies_h264_video_without_re_encoding(video: Callable[[str], Path], tmp_path: Path) -> None:
    src = video("h264_23.976fps_3s")
    length = probe_streams(src)["video"][0]["duration"]
    out = mux_audio_into_video(src, tone(3.3, 16_000), 16_000, tmp_path / "out.mp4", length)
    assert out == tmp_path / "out.mp4"
    streams = assert_browser_mp4(out, length, 24000 / 1001, 16_000)
    assert streams["video"][0]["size"] == (320, 180)
    assert video_packets(out, 10) == video_packets(src, 10)  # bit-identical: stream copy


def test_mux_cuts_h264_with_b_frames_at_the_requested_time(tmp_path: Path) -> None:
    # a copied stream with B-frames would keep two frames past the cut (3.2 s instead of 3.0 s)
    src = write_video(tmp_path / "b.mp4", cfr(10, 4.0), (64, 48), "libx264", 10, {"preset": "medium"})
    out = mux_audio_into_video(src, tone(4.0, 16_000), 16_000, tmp_path / "out.mp4", 3.0)
    streams = assert_browser_mp4(out, 3.0, 10, 16_000)
    assert streams["video"][0]["duration"] == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "out_size"),
    [("vp9_30fps_130x97_webm", (130, 96)), ("mpeg4_25fps_avi", (160, 120))],
    ids=["webm_vp9_odd_size", "avi_mpeg4"],
)
def test_mux_re_encodes_other_codecs_to_h264(
    video: Callable[[str], Path], tmp_path: Path, name: str, out_size: tuple[int, int]
) -> None:
    out = mux_audio_into_video(video(name), tone(2.0, 16_000), 16_000, tmp_path / "out.mp4", 1.28)
    streams = assert_browser_mp4(out, 1.28, float(SOURCES[name].rate), 16_000)
    assert streams["video"][0]["size"] == out_size


def test_mux_replaces_the_original_sound(tmp_path: Path) -> None:
    src = write_video(tmp_path / "loud.mp4", cfr(25, 2.0), (64, 48), "libx264", 25, FAST_X264, tone_hz=440.0)
    out = mux_audio_into_video(src, tone(2.0, 16_000, hz=1000.0), 16_000, tmp_path / "out.mp4", 1.5)
    assert_browser_mp4(out, 1.5, 25, 16_000)
    assert dominant_frequency(read_audio(out, 16_000), 16_000) == pytest.approx(1000.0, abs=2.0)


def test_mux_pads_a_short_waveform_with_silence(video: Callable[[str], Path], tmp_path: Path) -> None:
    out = mux_audio_into_video(video("h264_60fps_mkv"), tone(0.5, 16_000), 16_000, tmp_path / "o.mp4", 2.0)
    assert_browser_mp4(out, 2.0, 60, 16_000)
    audio = read_audio(out, 16_000)
    assert np.abs(audio[8000 + 1024 : 30000]).max() < 1e-3  # silence after the tone (AAC tail excepted)


def test_mux_failure_leaves_no_file_behind(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = src / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    outdir = tmp_path / "out"
    with pytest.raises(MediaError):
        mux_audio_into_video(bad, tone(1.0, 16_000), 16_000, outdir / "x.mp4", 1.0)
    sound = src / "sound.wav"
    sf.write(sound, tone(1.0, 16_000), 16_000)
    with pytest.raises(MediaError, match="no video stream"):
        mux_audio_into_video(sound, tone(1.0, 16_000), 16_000, outdir / "x.mp4", 1.0)
    assert not outdir.exists() or list(outdir.iterdir()) == []


def test_a_request_beyond_the_work_budget_is_refused_before_decoding(
    video: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfmjt.media import check_work, container

    check_work("x.mp4", 3840, 2160, 30.0, 30.0)  # 4K at 30 fps for 30 s fits
    with pytest.raises(MediaError, match=r"3840x2160 pixels at 30 fps: 40.0 s .* at most 34.1 s"):
        check_work("x.mp4", 3840, 2160, 30.0, 40.0)
    path = video("h264_25fps_1.28s")  # 320 x 180 at 25 fps
    monkeypatch.setattr(container, "MAX_REQUEST_PIXELS", 320 * 180 * 25 * 1.0)  # one second of it
    with pytest.raises(MediaError, match="more than one request may decode; ask for at most 1.0 s"):
        decode_video(path)
    assert decode_video(path, 0.64).duration == 0.64
