"""Audio files: reading the first audio stream of any media file, writing .wav/.flac."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from mfmjt.media.container import MediaError, check_file, open_container

logger = logging.getLogger("mfmjt.media")

AUDIO_SUFFIXES = {".wav": "WAV", ".flac": "FLAC"}


def read_audio(
    path: str | os.PathLike[str], sample_rate: int, *, duration: float | None = None
) -> np.ndarray:
    """First audio stream of an audio or video file as float32 mono at ``sample_rate``.

    Channels are averaged; ``duration`` (seconds) keeps only the beginning.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = check_file(path)
    limit = None if duration is None else max(round(duration * sample_rate), 0)
    chunks: list[np.ndarray] = []
    total = 0
    with open_container(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path.name} has no audio stream")
        stream = container.streams.audio[0]
        resampler: av.AudioResampler | None = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if resampler is None:
                        resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
                        total += out.samples
                if limit is not None and total >= limit:
                    break
            if resampler is not None:
                chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"cannot decode the audio of {path.name} ({exc})") from exc
            logger.warning("%s: stopping at an audio read error: %s", path.name, exc)
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    return audio[:limit] if limit is not None else audio


def as_mono(waveform: np.ndarray) -> np.ndarray:
    audio = np.asarray(waveform, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape [samples], got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("waveform contains NaN or infinite values")
    return audio


def write_audio(path: str | os.PathLike[str], waveform: np.ndarray, sample_rate: int) -> Path:
    """Write a waveform (``[samples]`` or ``[channels, samples]``, float in [-1, 1]) as 16-bit .wav/.flac.

    Values are clipped to [-1, 1]; the file appears complete or not at all.
    """
    path = Path(path)
    fmt = AUDIO_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported audio file type {path.suffix!r}; use one of {sorted(AUDIO_SUFFIXES)}")
    audio = np.asarray(waveform, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.T  # soundfile wants [samples, channels]
    elif audio.ndim != 1:
        raise ValueError(f"expected a waveform of shape [samples] or [channels, samples], got {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("waveform contains NaN or infinite values")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
