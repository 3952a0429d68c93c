"""Helpers shared by the tests (test modules import these, never each other): the clip writer."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

Painter = Callable[[int, int, int], np.ndarray]  # (index, width, height) -> [H, W, 3] uint8


def moving_square(i: int, w: int, h: int) -> np.ndarray:
    """An orange square moving 2 px per frame to the right on black (wrapping at the edge)."""
    img = np.zeros((h, w, 3), np.uint8)
    x = (2 * i) % max(w - 20, 1)
    img[h // 3 : 2 * h // 3, x : x + 20] = (255, 80, 0)
    return img


def cfr(fps: Fraction | int, seconds: float) -> list[Fraction]:
    """Frame times of a constant-rate stream."""
    n = round(seconds * Fraction(fps))
    return [i / Fraction(fps) for i in range(n)]


def write_video(
    path: Path,
    times: Sequence[Fraction],
    size: tuple[int, int],
    codec: str,
    rate: Fraction | int,
    options: dict[str, str] | None = None,
    painter: Painter | None = None,
    pix_fmt: str = "yuv420p",
    tone_hz: float | None = None,
    audio: tuple[np.ndarray, int] | None = None,
) -> Path:
    """Encode one frame per entry of ``times`` (seconds) painted by ``painter`` (default: a square
    moving right); optionally a stereo 44.1 kHz AAC tone, or ``audio`` = (mono waveform, sample rate)
    as a mono AAC track. The one clip writer of the tests."""
    w, h = size
    painter = painter or moving_square
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        time_base = 1 / Fraction(rate)
        stream.codec_context.time_base = time_base
        tone = None if tone_hz is None else out.add_stream("aac", rate=44_100, layout="stereo")
        mono = None if audio is None else out.add_stream("aac", rate=audio[1], layout="mono")
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(painter(i, w, h), format="rgb24")
            frame.pts, frame.time_base = round(Fraction(t) / time_base), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if tone is not None:
            sr = 44_100
            n = 1024 * round(float(2 * times[-1] - times[-2]) * sr / 1024)  # to the end of the last frame
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(n) / sr)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = np.ascontiguousarray(np.stack([wave[start : start + 1024]] * 2))
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = sr, start, Fraction(1, sr)
                out.mux(tone.encode(aframe))
            out.mux(tone.encode())
        if mono is not None:
            wave, sr = audio
            for start in range(0, len(wave), 1024):
                block = np.ascontiguousarray(wave[None, start : start + 1024].astype(np.float32))
                aframe = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                aframe.sample_rate, aframe.pts = sr, start
                out.mux(mono.encode(aframe))
            out.mux(mono.encode())
    return path


def write_clip(
    path: Path,
    seconds: float,
    width: int = 160,
    height: int = 120,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """A constant-rate clip of :func:`moving_square` (no audio)."""
    return write_video(
        Path(path), cfr(fps, seconds), (width, height), codec, fps, painter=moving_square, pix_fmt=pix_fmt
    )


def noise_painter(seed: int) -> Painter:
    """Frames of seeded uniform noise (a fresh image every frame)."""
    rng = np.random.default_rng(seed)
    return lambda i, w, h: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def tone(seconds: float, sample_rate: int, hz: float, amplitude: float = 0.3) -> np.ndarray:
    """A sine of ``hz`` as float32 samples."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_mp4(
    path: Path, seconds: float, audio: np.ndarray | None, sample_rate: int = 22050, seed: int = 0
) -> Path:
    """An H.264 mp4 (25 fps, 64x48 moving noise) with a mono AAC track of ``audio``, as a camera would."""
    track = None if audio is None else (audio, sample_rate)
    return write_video(
        Path(path), cfr(25, seconds), (64, 48), "libx264", 25, painter=noise_painter(seed), audio=track
    )


def write_tsv(path: Path, header: str, rows: list[tuple[str, str]]) -> Path:
    """A caption table: ``header`` then one tab-separated line per row."""
    path.write_text("\n".join([header, *("\t".join(r) for r in rows)]) + "\n", encoding="utf-8")
    return path


def probe(path: str | Path) -> dict[str, list[float]]:
    """Durations in seconds of the video and audio streams of a media file."""
    with av.open(str(path)) as container:
        result: dict[str, list[float]] = {"video": [], "audio": []}
        for stream in container.streams:
            if stream.type in result:
                result[stream.type].append(float(stream.duration * stream.time_base))
        return result


def video_path(value: object) -> str:
    """gradio_client gives a Video output as a path (or a dict holding one)."""
    return value["video"] if isinstance(value, dict) else value  # type: ignore[return-value]


@contextmanager
def served(demo: Any, **launch_kwargs: Any) -> Iterator[str]:
    """Launch a Gradio ``demo`` on a free loopback port; yields its URL and closes it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch_kwargs = {"prevent_thread_lock": True, "quiet": True, **launch_kwargs}
    demo.launch(server_name="127.0.0.1", server_port=port, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
