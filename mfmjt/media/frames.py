"""Video decoding at the model's frame rates: one loop for whole clips and overlapping windows.

Decoding follows MMAudio's inference path (PyAV, RGB24 frames, torchvision v2 bicubic resizes on
uint8 tensors; target time k/fps takes the first frame whose timestamp is >= k/fps) with these
deliberate differences:
- target times are compared with frame timestamps in exact rational arithmetic (MMAudio accumulates
  ``1/fps`` in floats, which picks the next frame for some targets of a 25 fps source);
- the first frame past the requested window still serves the targets inside it, so asking for 1 s
  of a 23.976 fps video gives 1 s (MMAudio drops that frame and shortens the clip to 0.96 s);
- decoding stops at that frame instead of demuxing the whole file;
- a long last frame (1 fps clips, gifs) serves the targets up to the end of the stream
  (:func:`mfmjt.media.container.usable_length`);
- a positive stream start time is subtracted (MPEG-TS), and frames are turned upright when the
  stream carries a display rotation (phone videos);
- frames more than twice as large as the encoders need (4K) are shrunk by an integer factor while
  being converted to RGB, and only frames that serve a target are converted at all.

Every decode is a set of frame grids (``start + k/fps`` for k = 0, 1, ... inside a span): one grid from
0 for a clip, one per window for a long clip. One pass over the file serves all of them, and every
source frame is converted and resized once, however many grids use it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import torch

from mfmjt.config import CLIP_FPS, MIN_DURATION, SYNC_FPS, AudioMode, SequenceLengths
from mfmjt.media.container import (
    LONG_FRAME,
    MediaError,
    check_file,
    check_size,
    check_work,
    frame_times,
    nominal_rate,
    open_container,
    rotation_turns,
    shown_for,
    source_duration,
    video_stream,
)

logger = logging.getLogger("mfmjt.media")

CLIP_SIZE = 384  # CLIP frames: squashed to 384 x 384
SYNC_SIZE = 224  # Synchformer frames: short side 224, centre crop 224 x 224
_RESIZE_BATCH = 16  # source frames resized per torchvision call ...
_RESIZE_BYTES = 1 << 26  # ... or fewer when they are large (1080p: 10 frames)
_SHRINK_MIN_SIDE = 2 * CLIP_SIZE  # frames are shrunk while converting only while their short side stays above


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """Frames of one video at the model's two frame rates, plus what was learnt about the file.

    A long clip decoded for a pipeline's windows (:meth:`mfmjt.pipeline.Pipeline.decode_video`) also
    carries ``windows``: each window's frames, sampled from the window's own start.
    """

    clip_frames: torch.Tensor  # uint8 [int(8*duration), 3, 384, 384]
    sync_frames: torch.Tensor  # uint8 [int(25*duration), 3, 224, 224]
    duration: float  # seconds actually used
    source_duration: float | None  # container metadata, None when the file does not say
    source_fps: float | None  # nominal frame rate (PyAV's guessed_rate)
    width: int  # displayed size (after rotation)
    height: int
    has_audio: bool
    decoded_frames: int  # frames pulled from the decoder (decoding stops past the window)
    truncated: bool = False  # True when less than requested was used, or max_duration cut the video
    message: str = ""  # why it was truncated, for the user
    windows: tuple[DecodedVideo, ...] = ()  # per window of a long clip, see above
    spans: tuple[tuple[float, float], ...] = ()  # (start, length) seconds the windows were asked for

    def sequence_lengths(self, mode: str | AudioMode = "16k") -> SequenceLengths:
        """Sequence lengths for this clip's duration."""
        return SequenceLengths.for_duration(self.duration, mode)


# torchvision is imported on the first resize, not with this module: importing it loads torch._dynamo
# (seconds on a small CPU), which the demo's start-up and text-only uses do not need.
def import_resizers() -> None:
    """Import what the first resize needs now (a server calls it in the background once it answers, so
    that its first video request does not wait for the import)."""
    from torchvision.transforms.v2 import functional  # noqa: F401


def _clip_transform(frames: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(frames, [CLIP_SIZE, CLIP_SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)


def _sync_transform(frames: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    frames = TF.resize(frames, [SYNC_SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(frames, [SYNC_SIZE, SYNC_SIZE])


class _Resized:
    """Source frames resized for one encoder, each once; grids refer to them by index."""

    def __init__(self, transform: Any, size: int) -> None:
        self.transform, self.size = transform, size
        self.done: dict[int, torch.Tensor] = {}  # index -> [size, size, 3]
        self._pending: list[tuple[int, np.ndarray]] = []
        self._pending_bytes = 0
        self.last: int | None = None  # index of the newest source frame added

    def add(self, index: int, image: np.ndarray) -> None:
        if self.last == index:
            return
        if self._pending and self._pending[0][1].shape != image.shape:
            self._flush()  # frames of another size (the stream changed resolution): a batch of their own
        self._pending.append((index, image))
        self._pending_bytes += image.size
        self.last = index
        if len(self._pending) >= _RESIZE_BATCH or self._pending_bytes >= _RESIZE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            # [T, 3, H, W] with channels-last strides, as MMAudio builds it (and fast for uint8 resizes)
            batch = torch.from_numpy(np.stack([image for _, image in self._pending])).permute(0, 3, 1, 2)
            resized = self.transform(batch).permute(0, 2, 3, 1).contiguous()  # [T, size, size, 3]
            for (index, _), frame in zip(self._pending, resized, strict=True):
                self.done[index] = frame
            self._pending, self._pending_bytes = [], 0

    def take(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames ``indices`` as one contiguous uint8 tensor [len, 3, size, size]."""
        self._flush()
        if not indices:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        frames = torch.stack([self.done[i] for i in indices])  # [len, size, size, 3]
        return frames.permute(0, 3, 1, 2).contiguous()

    def forget_before(self, index: int) -> None:
        for i in [i for i in self.done if i < index]:
            del self.done[i]


@dataclass
class _Grid:
    """Targets ``start + k/fps`` inside ``[start, start + length]`` at both rates, as source frame indices."""

    index: int
    start: Fraction
    length: Fraction
    clip: list[int] = field(default_factory=list)
    sync: list[int] = field(default_factory=list)
    complete: bool = False  # a frame past the span arrived
    end: Fraction | None = None  # where a long last frame ends, relative to ``start``

    def wanted(self, targets: list[int], fps: float, rel: Fraction) -> int:
        """Still unfilled targets at or before ``rel`` seconds into the span."""
        return max(math.floor(min(rel, self.length) * Fraction(fps)) + 1 - len(targets), 0)

    def first(self) -> int | None:
        firsts = [t[0] for t in (self.clip, self.sync) if t]
        return min(firsts) if firsts else None


@dataclass
class _Stream:
    """What the loop learnt about the file."""

    name: str
    width: int
    height: int
    source_duration: float | None
    source_fps: float | None
    has_audio: bool
    decoded: int = 0
    turns: int = 0

    def size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.turns % 2 else (self.width, self.height)


def _shrink_factor(width: int, height: int) -> int:
    """The integer factor a frame of this size is shrunk by while converting to RGB (1: none)."""
    return max(1, min(width, height) // _SHRINK_MIN_SIDE)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as upright RGB24 [H, W, 3]; frames far larger than the encoders need are shrunk first."""
    factor = _shrink_factor(frame.width, frame.height)
    if factor > 1:
        frame = frame.reformat(
            width=frame.width // factor, height=frame.height // factor, format="rgb24", interpolation="AREA"
        )
    image = frame.to_ndarray(format="rgb24")
    turns = rotation_turns(frame)
    return np.rot90(image, turns) if turns else image


def _decode_grids(
    path: str | os.PathLike[str],
    spans: Sequence[tuple[Fraction, Fraction]],
    work_seconds: float | None = None,
) -> Iterator[tuple[_Grid, _Stream, _Resized, _Resized]]:
    """The one decoding loop: yields each grid of ``spans`` ((start, length), sorted by start) once it is
    complete, or when the stream ends (a long last frame then fills its targets to the stream's end).
    Grids the stream ends before are not yielded. Frames no remaining grid can use are freed.
    ``work_seconds``: seconds checked against the per-request work budget before decoding."""
    path = check_file(path)
    pending = [_Grid(i, s, n) for i, (s, n) in enumerate(spans)]
    pending.reverse()  # pop() takes the earliest
    active: list[_Grid] = []
    clip, sync = _Resized(_clip_transform, CLIP_SIZE), _Resized(_sync_transform, SYNC_SIZE)
    with open_container(path) as container:
        stream = video_stream(container)
        if stream is None:
            kind = "an audio file" if container.streams.audio else "a file without video"
            raise MediaError(f"{path.name} has no video stream ({kind}); please provide a video")
        rate = nominal_rate(stream)
        info = _Stream(
            path.name,
            stream.codec_context.width,
            stream.codec_context.height,
            source_duration(container, stream),
            float(rate) if rate else None,
            bool(container.streams.audio),
        )
        if info.width and info.height:  # before decoding a single huge frame
            check_size(path.name, info.width, info.height, info.source_fps)
            if work_seconds is not None:
                seconds = min(work_seconds, info.source_duration or work_seconds)
                check_work(path.name, info.width, info.height, info.source_fps, seconds)
        stream.thread_type = "AUTO"
        index = -1
        last: tuple[av.VideoFrame, Fraction, Fraction] | None = None  # newest frame, its time and end
        converted = -1
        for frame, time in frame_times(container, stream):
            info.decoded += 1
            if time < 0:
                continue
            index += 1
            last = (frame, time, time + shown_for(frame.duration, frame.time_base, rate))
            while pending and pending[-1].start <= time:
                active.append(pending.pop())
            for grid in active:
                rel = time - grid.start
                grid.complete = rel > grid.length
                n_clip, n_sync = grid.wanted(grid.clip, CLIP_FPS, rel), grid.wanted(grid.sync, SYNC_FPS, rel)
                if not (n_clip or n_sync):
                    continue
                if converted != index:
                    if (frame.width, frame.height) != (info.width, info.height):
                        info.width, info.height = frame.width, frame.height  # the stream may change size
                        check_size(path.name, info.width, info.height, info.source_fps)
                    image = _rgb(frame)
                    info.turns, converted = rotation_turns(frame), index
                if n_clip:
                    clip.add(index, image)
                    grid.clip.extend([index] * n_clip)
                if n_sync:
                    sync.add(index, image)
                    grid.sync.extend([index] * n_sync)
            while active and active[0].complete:
                yield active.pop(0), info, clip, sync
                _forget(active, pending, index, clip, sync)
            if not (active or pending):
                return
        if last is not None and last[2] - last[1] >= LONG_FRAME:
            # a long last frame stays on screen until the stream ends: targets before that end use it too
            frame, time, end = last
            while pending and pending[-1].start < end:
                active.append(pending.pop())
            for grid in active:
                grid.end = min(end - grid.start, grid.length)
                n_clip = max(math.ceil(grid.end * Fraction(CLIP_FPS)) - len(grid.clip), 0)
                n_sync = max(math.ceil(grid.end * Fraction(SYNC_FPS)) - len(grid.sync), 0)
                if (n_clip or n_sync) and converted != index:
                    image, info.turns, converted = _rgb(frame), rotation_turns(frame), index
                if n_clip:
                    clip.add(index, image)
                    grid.clip.extend([index] * n_clip)
                if n_sync:
                    sync.add(index, image)
                    grid.sync.extend([index] * n_sync)
    for grid in active:  # the video ended inside these windows
        yield grid, info, clip, sync


def _forget(active: list[_Grid], pending: list[_Grid], index: int, *stores: _Resized) -> None:
    """Free the frames before the first one a grid still to be yielded can use (never the newest)."""
    if not (active or pending):
        return
    firsts = [f for f in (g.first() for g in active) if f is not None]
    keep = min(firsts, default=index + 1)
    for store in stores:
        store.forget_before(min(keep, store.last if store.last is not None else keep))


def _used(grid: _Grid) -> float:
    """Seconds of a grid's span its frames cover."""
    used = min(float(grid.length), len(grid.clip) / CLIP_FPS, len(grid.sync) / SYNC_FPS)
    return min(used, float(grid.end)) if grid.end is not None else used


def _result(
    grid: _Grid, info: _Stream, clip: _Resized, sync: _Resized, used: float, message: str = "", **extra: Any
) -> DecodedVideo:
    width, height = info.size()
    return DecodedVideo(
        clip_frames=clip.take(grid.clip[: int(used * CLIP_FPS)]),
        sync_frames=sync.take(grid.sync[: int(used * SYNC_FPS)]),
        duration=used,
        source_duration=info.source_duration,
        source_fps=info.source_fps,
        width=width,
        height=height,
        has_audio=info.has_audio,
        decoded_frames=info.decoded,
        truncated=bool(message),
        message=message,
        **extra,
    )


def decode_video(
    path: str | os.PathLike[str], duration: float | None = None, *, max_duration: float = 30.0
) -> DecodedVideo:
    """Decode the first ``duration`` seconds (default: all, capped at ``max_duration``) of a video.

    Returns uint8 frames at 8 fps, 384 x 384 (CLIP) and at 25 fps, 224 x 224 (Synchformer). The
    duration used is min(requested, max_duration, what the video provides), as in MMAudio.
    Raises ``MediaError`` for files that cannot be used.
    """
    for name, value in (("duration", duration), ("max_duration", max_duration)):
        if value is not None and not (math.isfinite(value) and value >= MIN_DURATION):
            raise MediaError(f"{name} must be at least {MIN_DURATION:.2f} s, got {value}")
    window = max_duration if duration is None else min(duration, max_duration)
    name = os.path.basename(os.fspath(path))
    grids = _decode_grids(path, [(Fraction(0), Fraction(window))], work_seconds=window)
    found = next(grids, None)
    grids.close()
    if found is None or not found[0].clip or not found[0].sync:
        raise MediaError(f"{name}: no video frames could be decoded")
    grid, info, clip, sync = found
    used = _used(grid)
    if used < MIN_DURATION:
        raise MediaError(
            f"{name} is too short: it gives {used:.2f} s of video, at least {MIN_DURATION:.2f} s is needed"
        )
    message = ""
    if duration is not None and used < duration:
        if grid.complete and max_duration < duration:
            message = (
                f"requested {duration:.2f} s exceeds the {max_duration:.2f} s limit; "
                f"using the first {used:.2f} s"
            )
        else:
            message = f"the video is shorter than the requested {duration:.2f} s; using {used:.2f} s"
    elif duration is None and grid.complete:
        message = f"the video is longer than the {max_duration:.2f} s limit; using the first {used:.2f} s"
    if message:
        logger.warning("%s: %s", name, message)
    decoded = _result(grid, info, clip, sync, used, message)
    logger.debug(
        "%s: %d frames decoded -> %d clip / %d sync frames, %.3f s",
        name,
        info.decoded,
        len(decoded.clip_frames),
        len(decoded.sync_frames),
        used,
    )
    return decoded


def decode_video_windows(
    path: str | os.PathLike[str], spans: list[tuple[float, float]]
) -> Iterator[DecodedVideo]:
    """Decode overlapping windows ``(start, length)`` (seconds, sorted by start) in one pass.

    Each window is sampled exactly as :func:`decode_video` samples a clip that begins at ``start``
    (target ``start + k/fps`` takes the first frame at or after it) and is yielded as soon as it is
    complete, so memory holds only the frames of windows that overlap the current frame. A window the
    video ends inside comes back shorter (``truncated``, with a message); a window it ends before
    raises ``MediaError`` when it is reached.
    """
    if not spans:
        return
    starts = [s for s, _ in spans]
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)) or starts[0] < 0:
        raise ValueError("window starts must be non-negative and sorted")
    for start, length in spans:
        if not (math.isfinite(length) and length >= MIN_DURATION and math.isfinite(start)):
            raise ValueError(f"window ({start}, {length}) must last at least {MIN_DURATION:.2f} s")
    end = max(s + n for s, n in spans)
    grids = _decode_grids(path, [(Fraction(s), Fraction(n)) for s, n in spans], work_seconds=end)
    name = os.path.basename(os.fspath(path))
    expected = 0
    for grid, info, clip, sync in grids:
        expected = grid.index + 1
        used = _used(grid)
        if used < MIN_DURATION:
            raise MediaError(
                f"{name}: the window at {float(grid.start):.2f} s gives {used:.2f} s of video, "
                f"at least {MIN_DURATION:.2f} s is needed"
            )
        message = ""
        if used < float(grid.length):
            message = f"the video ends {used:.2f} s into the window at {float(grid.start):.2f} s"
        yield _result(grid, info, clip, sync, used, message)
    if expected < len(spans):
        raise MediaError(
            f"{name} ends before {spans[expected][0]:.2f} s, "
            f"where window {expected + 1} of {len(spans)} starts"
        )
