"""What the scorer reads: folders of audio (or videos' audio) matched by name, caption tables, and
video frames for the audio-visual metrics.

Audio is decoded at its own sample rate (channels averaged), then resampled to each extractor's rate
with ``scipy.signal.resample_poly``; av-benchmark resamples with torchaudio's windowed-sinc
resampler, a difference below the resolution of the metrics (docs/EVALUATION.md).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mfmjt import media

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_SUFFIXES = media.VIDEO_SUFFIXES
MAX_READ_SECONDS = 600.0  # a longer file is read up to here (its DC offset is measured over this part)


class ScoreInputError(ValueError):
    """A folder, table or option the user gave cannot be used; the message is one sentence."""


@dataclass
class Folder:
    """The media of one folder by name (file name without extension); an audio file is preferred to a
    video of the same name."""

    path: Path
    files: dict[str, Path] = field(default_factory=dict)
    duplicates: list[Path] = field(default_factory=list)  # same name, not used


def scan_folder(path: str | Path, option: str, *, videos_only: bool = False) -> Folder:
    """Audio files (wav, flac, mp3, ...) and videos with sound in ``path`` (not recursive)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ScoreInputError(f"{option} folder {folder} does not exist")
    suffixes = VIDEO_SUFFIXES if videos_only else AUDIO_SUFFIXES + VIDEO_SUFFIXES
    found = Folder(folder)
    for file in sorted(folder.iterdir(), key=lambda p: (p.name.lower().endswith(VIDEO_SUFFIXES), p.name)):
        if not file.is_file() or file.suffix.lower() not in suffixes:
            continue
        if file.stem in found.files:
            found.duplicates.append(file)
        else:
            found.files[file.stem] = file
    if not found.files:
        kinds = "videos" if videos_only else "audio files or videos"
        raise ScoreInputError(f"{option} folder {folder} holds no {kinds} ({', '.join(suffixes)})")
    return found


def read_captions(path: str | Path) -> dict[str, str]:
    """Captions by file name from a table: tab-separated with ``id`` and ``caption`` (or ``label``)
    columns (the project's caption tables), or comma-separated with ``name`` and ``caption``
    (av-benchmark's ``extract_text.py`` input)."""
    from mfmjt.data.tsv import TsvError, read_caption_tsv

    table = Path(path).expanduser()
    if not table.is_file():
        raise ScoreInputError(f"--captions table {table} does not exist")
    if table.suffix.lower() == ".csv":
        text = table.read_bytes().decode("utf-8-sig", errors="replace")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"name", "caption"} <= {f.strip() for f in reader.fieldnames}:
            raise ScoreInputError(f"{table}: a .csv caption table needs a header with 'name' and 'caption'")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
        captions = {row["name"]: row["caption"] for row in rows if row.get("name")}
    else:
        try:
            captions = {row.id: row.caption for row in read_caption_tsv(table)}
        except TsvError as err:
            raise ScoreInputError(str(err)) from None
    if not captions:
        raise ScoreInputError(f"--captions table {table} has no rows")
    return captions


# ------------------------------------------------------------------------------------------ audio
def read_waveform(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a file as float32 mono at its own sample rate.

    Raises ``media.MediaError`` (a ValueError) when there is none or it cannot be decoded.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise media.MediaError(f"{path.name} has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            seconds = (
                float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            )
    except av.error.FFmpegError as exc:
        raise media.MediaError(f"cannot read {path.name}: the file is corrupt or not a media file") from exc
    if not rate:
        raise media.MediaError(f"{path.name}: its audio stream does not say its sample rate")
    limit = MAX_READ_SECONDS if seconds is None or seconds > MAX_READ_SECONDS else None
    wave = media.read_audio(path, rate, duration=limit)
    if wave.size and not np.isfinite(wave).all():
        raise media.MediaError(f"{path.name}: the audio holds NaN or infinite samples")
    return wave, int(rate)


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, Kaiser-windowed FIR) to ``target_rate``."""
    if source_rate == target_rate:
        return np.asarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(source_rate), int(target_rate))
    return resample_poly(wave.astype(np.float64), target_rate // g, source_rate // g).astype(np.float32)


def prepare_audio(
    wave: np.ndarray, rate: int, target_rate: int, duration: float | None, remove_dc: bool
) -> np.ndarray:
    """av-benchmark's loading: (mean removal,) resampling, then the first ``duration`` seconds."""
    x = wave - wave.mean(dtype=np.float64) if remove_dc and wave.size else wave
    x = resample(np.asarray(x, dtype=np.float32), rate, target_rate)
    if duration is not None:
        x = x[: int(target_rate * duration)]
    return np.ascontiguousarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------------------ video
def decode_frames(path: Path, fps: float, duration: float, short_side: int) -> np.ndarray:
    """RGB frames [T, H, W, 3] uint8 at ``fps`` over the first ``duration`` seconds (T = floor(fps *
    duration)), the short side resized to ``short_side`` (bicubic, aspect kept). Target time k/fps
    takes the first frame whose timestamp is >= k/fps, as MMAudio's decoding; a video that ends
    earlier gives fewer frames (the caller decides whether that is too short)."""
    wanted = math.floor(fps * duration + 1e-9)
    step = Fraction(fps).limit_denominator(1000)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = next(
                (
                    s
                    for s in container.streams.video
                    if not s.disposition & av.stream.Disposition.attached_pic
                ),
                None,
            )
            if stream is None:
                raise media.MediaError(f"{path.name} has no video stream")
            stream.thread_type = "AUTO"
            start = stream.start_time * stream.time_base if stream.start_time and stream.time_base else 0
            size: tuple[int, int] | None = None
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                time = frame.pts * frame.time_base - start
                while len(frames) < wanted and time >= Fraction(len(frames)) / step:
                    if size is None:
                        w, h = frame.width, frame.height
                        scale = short_side / min(w, h)
                        size = (max(round(w * scale), 1), max(round(h * scale), 1))
                    image = frame.reformat(
                        width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC"
                    )
                    frames.append(image.to_ndarray())
                if len(frames) >= wanted:
                    break
    except av.error.FFmpegError as exc:
        raise media.MediaError(f"cannot decode the video of {path.name}") from exc
    if not frames:
        return np.zeros((0, short_side, short_side, 3), np.uint8)
    return np.stack(frames)
