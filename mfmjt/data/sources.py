"""Turning one table row (a video or an audio file) into training clips, ready for the encoders.

Follows MMAudio's training extraction (``training/extract_*_training_latents.py``):

- videos: the first ``duration`` seconds; frames at 8 fps 384 px (CLIP) and 25 fps 224 px
  (Synchformer) through :func:`mfmjt.media.decode_video` (the frames the demo sees); the video's own
  audio track, mono, resampled, peak-normalised to 0.95 over the whole track (training sets) and cut
  to the stack's sample count. Rows whose video or audio is shorter than that are refused.
- audio files: files of at least ``duration + 0.1`` s are cut into ``min(5, length // window)``
  windows of ``duration + 0.1`` s spread evenly from the start to the end (the first starts at 0, the
  last ends at the file's end; MMAudio's ``partition_clips.py``); each clip keeps the first
  ``duration`` seconds of its window. Clip ``k`` of file ``id`` is item ``<id>_<k>``. Files shorter
  than one window are refused. Peak normalisation uses the whole file, as MMAudio does.

Without audio (``ClipSpec.audio`` false) a video row gives its frames only (the audio track is not
read, so a video without sound is fine) and a row of a prompts-only table gives its caption only.

Silent audio (peak below 1e-6) is refused where audio is read. Resampling uses the media module's decoder
(libswresample) rather than MMAudio's torchaudio Kaiser filter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mfmjt import media
from mfmjt.data.parts import Failure
from mfmjt.data.tsv import CaptionRow

logger = logging.getLogger(__name__)

PEAK_TARGET = 0.95  # MMAudio's peak normalisation of training audio
SILENCE_PEAK = 1e-6  # peak below which audio counts as silent
WINDOW_MARGIN = 0.1  # MMAudio partitions audio files into 8.1 s windows for 8 s clips
MAX_CLIPS_PER_FILE = 5
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")

# failure reasons written to failed.tsv
MISSING = "missing file"
UNREADABLE = "unreadable"
TOO_SHORT = "too short"
SILENT = "silent"
NO_AUDIO = "no audio track"


class SkipUnit(Exception):
    """A row that gives no clip; ``reason`` is one of the categories above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ClipSpec:
    """What one clip must hold: seconds, samples at the stack's rate, and frame counts."""

    duration: float
    sample_rate: int
    audio_samples: int
    clip_frames: int
    sync_frames: int
    peak_normalize: bool = True
    max_clips_per_file: int = MAX_CLIPS_PER_FILE
    audio: bool = True  # False: no waveform is read (a store without audio)


@dataclass
class Clip:
    """One item: its id, caption, waveform (unless without audio) and (for videos) the two frame streams."""

    id: str
    caption: str
    audio: torch.Tensor | None = None  # float32 [samples]
    clip_frames: torch.Tensor | None = None  # uint8 [Tc, 3, 384, 384]
    sync_frames: torch.Tensor | None = None  # uint8 [Ts, 3, 224, 224]


@dataclass
class UnitResult:
    """The clips of one table row, or why it has none."""

    unit: str
    clips: list[Clip]
    failure: Failure | None = None


def find_media(folder: str | Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``folder`` by id (name without extension), whatever their extension: the decoder
    decides whether a file is usable. When several files share an id, one with a suffix earlier in
    ``suffixes`` wins, then any other (by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"media folder {folder} does not exist or is not a folder")
    rank = {s: i for i, s in enumerate(suffixes)}

    def preference(p: Path) -> tuple[int, str]:
        return rank.get(p.suffix.lower(), len(rank)), p.name

    found: dict[str, Path] = {}
    for path in folder.iterdir():
        if not path.is_file() or path.name.startswith("."):
            continue
        other = found.get(path.stem)
        if other is not None:
            keep = min(other, path, key=preference)
            logger.warning("%s and %s share an id; using %s", other.name, path.name, keep.name)
            path = keep
        found[path.stem] = path
    return found


class _DropTruncationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "shorter than the requested" not in record.getMessage()


@contextmanager
def _quiet_truncation() -> Iterator[None]:
    """Silence the decoder's 'shorter than requested; using N s' notice: extraction does not use a
    shorter clip but lists it as too short, and the log should say what is done."""
    media_logger, notice = logging.getLogger(media.__name__), _DropTruncationNotice()
    media_logger.addFilter(notice)
    try:
        yield
    finally:
        media_logger.removeFilter(notice)


def _read_audio(path: Path, spec: ClipSpec) -> np.ndarray:
    """The whole audio track, mono at the spec's rate, peak-normalised when asked; silent refused."""
    try:
        audio = media.read_audio(path, spec.sample_rate)
    except media.MediaError as err:
        reason = NO_AUDIO if "no audio stream" in str(err) else UNREADABLE
        raise SkipUnit(reason, str(err)) from None
    peak = np.abs(audio).max() if audio.size else np.float32(0.0)
    if peak < SILENCE_PEAK:
        raise SkipUnit(SILENT, f"{path.name}: the audio is silent (peak {float(peak):.2g})")
    if spec.peak_normalize:
        audio = audio / peak * np.float32(PEAK_TARGET)  # MMAudio's order of operations, in float32
    return audio.astype(np.float32, copy=False)


def video_clips(row: CaptionRow, path: Path, spec: ClipSpec) -> list[Clip]:
    """The single clip of a video row (first ``spec.duration`` seconds; frames only without audio)."""
    audio = _read_audio(path, spec) if spec.audio else None
    if audio is not None and len(audio) < spec.audio_samples:
        raise SkipUnit(
            TOO_SHORT,
            f"{path.name}: {len(audio) / spec.sample_rate:.2f} s of audio, {spec.duration:g} s needed",
        )
    try:
        with _quiet_truncation():  # a shorter clip is refused below, not used shorter
            decoded = media.decode_video(path, spec.duration, max_duration=spec.duration)
    except media.MediaError as err:
        raise SkipUnit(TOO_SHORT if "too short" in str(err) else UNREADABLE, str(err)) from None
    if len(decoded.clip_frames) < spec.clip_frames or len(decoded.sync_frames) < spec.sync_frames:
        raise SkipUnit(
            TOO_SHORT, f"{path.name}: {decoded.duration:.2f} s of video, {spec.duration:g} s needed"
        )
    return [
        Clip(
            row.id,
            row.caption,
            None if audio is None else torch.from_numpy(audio[: spec.audio_samples].copy()),
            decoded.clip_frames[: spec.clip_frames],
            decoded.sync_frames[: spec.sync_frames],
        )
    ]


def window_starts(n_samples: int, window: int, max_clips: int = MAX_CLIPS_PER_FILE) -> list[int]:
    """Start samples of MMAudio's evenly spread windows (none when the file is shorter than one)."""
    count = min(max_clips, n_samples // window)
    if count <= 0:
        return []
    step = (n_samples - window) // (count - 1) if count > 1 else 0
    return [k * step for k in range(count)]


def audio_clips(row: CaptionRow, path: Path, spec: ClipSpec) -> list[Clip]:
    """Clips ``<id>_0 .. <id>_{k-1}`` of an audio file (see the module docstring)."""
    audio = _read_audio(path, spec)
    window = max(round((spec.duration + WINDOW_MARGIN) * spec.sample_rate), spec.audio_samples)
    starts = window_starts(len(audio), window, spec.max_clips_per_file)
    if not starts:
        raise SkipUnit(
            TOO_SHORT,
            f"{path.name}: {len(audio) / spec.sample_rate:.2f} s, at least "
            f"{window / spec.sample_rate:.2f} s needed",
        )
    return [
        Clip(f"{row.id}_{k}", row.caption, torch.from_numpy(audio[s : s + spec.audio_samples].copy()))
        for k, s in enumerate(starts)
    ]


class UnitDataset(Dataset):
    """Rows -> :class:`UnitResult`; runs in DataLoader worker processes (decoding only, no model).

    Neither video nor audio (``video`` false, ``spec.audio`` false): every row is one text-only item.
    """

    def __init__(
        self, rows: list[CaptionRow], files: dict[str, Path], spec: ClipSpec, *, video: bool
    ) -> None:
        self.rows = rows
        self.files = files
        self.spec = spec
        self.video = video

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> UnitResult:
        row = self.rows[i]
        if not self.video and not self.spec.audio:
            return UnitResult(row.id, [Clip(row.id, row.caption)])
        path = self.files.get(row.id)
        try:
            if path is None:
                raise SkipUnit(MISSING, f"no media file named {row.id}.* (table line {row.line})")
            clips = (video_clips if self.video else audio_clips)(row, path, self.spec)
        except SkipUnit as skip:
            return UnitResult(row.id, [], Failure(row.id, skip.reason, skip.detail))
        except Exception as err:  # anything else a broken file can raise: record it, go on
            logger.debug("reading %s failed", path, exc_info=True)
            return UnitResult(row.id, [], Failure(row.id, UNREADABLE, f"{type(err).__name__}: {err}"))
        return UnitResult(row.id, clips)
