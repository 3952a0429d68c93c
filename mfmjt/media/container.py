"""Opening media files and reading their video stream: errors in plain words, size and work limits,
exact frame times, and the one rule for how long a video lasts (:func:`usable_length`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from mfmjt.config import CLIP_FPS, SYNC_FPS

logger = logging.getLogger("mfmjt.media")

MAX_SIDE = 8192  # larger frames are refused: decoding them at 25 fps would take minutes and gigabytes
MIN_SIDE = 2  # H.264 4:2:0 output needs at least 2 x 2 pixels
MAX_FRAME_PIXELS = 4096 * 2304  # per frame (a little over 4K UHD)
MAX_PIXEL_RATE = 4096 * 2304 * 30  # pixels decoded per second of video: 4K at 30 fps
# pixels decoded per request: 30 s at the largest pixel rate (a 4K 30 fps clip of the demo's 30 s)
MAX_REQUEST_PIXELS = MAX_PIXEL_RATE * 30
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")  # what folders are scanned for
LONG_FRAME = Fraction(2, round(SYNC_FPS))  # a last frame shown this long or longer counts to its end


class MediaError(ValueError):
    """A media file cannot be used; the message says why in terms a user can act on."""


def check_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"file is empty (0 bytes): {path}")
    return path


def open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:  # the decoder's words go to the log, not to the user
        logger.info("cannot open %s: %s", path.name, exc)
        raise MediaError(
            f"cannot read {path.name}: the file is corrupt or not a supported media format"
        ) from exc


def video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first video stream that is not cover art (an attached picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def source_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """Seconds of video the container or stream metadata states (None when neither says)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def nominal_rate(stream: av.VideoStream) -> Fraction | None:
    """The stream's frame rate as PyAV guesses it (None when it does not say)."""
    rate = stream.guessed_rate or stream.average_rate
    return Fraction(rate) if rate else None


def check_size(name: str, width: int, height: int, fps: float | None = None) -> None:
    """Refuse frames too small to encode, or too large to decode in a few seconds per second of video."""
    if max(width, height) > MAX_SIDE or width * height > MAX_FRAME_PIXELS:
        raise MediaError(
            f"{name} is {width}x{height} pixels; videos up to {MAX_FRAME_PIXELS / 1e6:.1f} megapixels "
            f"per frame (e.g. 4096x2304) and {MAX_SIDE} px per side are supported, please downscale it first"
        )
    if min(width, height) < MIN_SIDE:
        raise MediaError(
            f"{name} is {width}x{height} pixels; a video needs at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )
    if fps and width * height * fps > MAX_PIXEL_RATE:
        raise MediaError(
            f"{name} is {width}x{height} pixels at {fps:.4g} fps, too much to decode here "
            f"(at most {MAX_PIXEL_RATE / 1e6:.0f} megapixels per second, e.g. 4K at 30 fps); "
            "please lower its frame rate or size"
        )


def check_work(name: str, width: int, height: int, fps: float | None, seconds: float) -> None:
    """Refuse a request whose decoding would exceed :data:`MAX_REQUEST_PIXELS` (checked before decoding:
    frame size x frame rate x the seconds that will be decoded)."""
    if not (fps and math.isfinite(seconds)):
        return
    pixels = width * height * fps * seconds
    if pixels > MAX_REQUEST_PIXELS:
        most = MAX_REQUEST_PIXELS / (width * height * fps)
        raise MediaError(
            f"{name} is {width}x{height} pixels at {fps:.4g} fps: {seconds:.1f} s of it is more than one "
            f"request may decode; ask for at most {math.floor(most * 10) / 10:.1f} s (duration), "
            "or lower its frame rate or size"
        )


def rotation_turns(frame: av.VideoFrame) -> int:
    """Quarter turns (counter-clockwise) that display the frame upright."""
    try:
        angle = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return round(angle / 90) % 4 if angle else 0


def stream_start(stream: av.VideoStream) -> int:
    """The stream's start timestamp when it is positive (MPEG-TS), else 0: frame times count from it."""
    return stream.start_time if stream.start_time is not None and stream.start_time > 0 else 0


def frame_times(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Decoded frames with their exact time in seconds from the stream start.

    A packet that fails to decode is skipped with a warning; a read error after some frames ends
    the stream (a truncated download still yields its beginning).
    """
    time_base = stream.time_base or Fraction(1, 90_000)
    start = stream_start(stream)
    rate = nominal_rate(stream) or Fraction(25)
    last: Fraction | None = None
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            if last is None:
                logger.info("cannot read the video stream: %s", exc)
                raise MediaError("cannot read the video stream: the file is corrupt") from exc
            logger.warning("stopping at a read error after %.2f s of video: %s", float(last), exc)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            logger.warning("skipping an undecodable video packet: %s", exc)
            continue
        for frame in frames:
            if frame.pts is not None:
                time = (frame.pts - start) * (frame.time_base or time_base)
            else:  # no timestamp (some AVI files): assume the nominal rate
                time = Fraction(0) if last is None else last + 1 / rate
            last = time
            yield frame, time


def shown_for(duration: int | None, time_base: Fraction | None, rate: Fraction | None) -> Fraction:
    """How long a frame (or packet) is on screen: its own duration, else one frame at the nominal rate."""
    if duration and time_base:
        return duration * Fraction(time_base)
    return 1 / rate if rate else Fraction(0)


def usable_length(last: Fraction, shown: Fraction) -> Fraction:
    """Seconds of video a stream provides whose last frame starts at ``last`` (from the stream start)
    and is shown for ``shown`` seconds: the one measure of length for every path.

    A long last frame (``shown`` >= 2/25 s: 1 fps clips, gifs, slide shows) stays on screen until the
    stream ends, so the clip lasts to ``last + shown``. At ordinary frame rates MMAudio's rule holds: the
    clip ends where the 8 fps and 25 fps frame grids run past the last frame.
    """
    if shown >= LONG_FRAME:
        return last + shown
    return min(Fraction(math.floor(last * fps) + 1) / Fraction(fps) for fps in (CLIP_FPS, SYNC_FPS))


@dataclass(frozen=True)
class VideoProbe:
    """What the packet timestamps say about a video, without decoding it."""

    length: float  # seconds :func:`mfmjt.media.decode_video` would use for the whole file
    width: int
    height: int
    fps: float | None
    has_audio: bool


def probe_video(path: str | os.PathLike[str]) -> VideoProbe:
    """Length (by :func:`usable_length`), size and rate of a video from its packets (demuxed, not decoded).
    Raises ``MediaError`` for files without a usable video stream."""
    path = check_file(path)
    with open_container(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise MediaError(f"{path.name} has no video stream; please provide a video")
        time_base = stream.time_base or Fraction(1, 90_000)
        start = stream_start(stream)
        rate = nominal_rate(stream)
        last_pts, last_duration, packets = None, None, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.pts is not None and (last_pts is None or packet.pts > last_pts):
                    last_pts, last_duration = packet.pts, packet.duration
        except av.error.FFmpegError as exc:
            if not packets:
                raise MediaError(f"cannot read the video stream of {path.name} ({exc})") from exc
        width, height = stream.codec_context.width, stream.codec_context.height
        has_audio = bool(container.streams.audio)
    if last_pts is not None:
        last = (last_pts - start) * time_base
    elif packets:
        last, last_duration = (packets - 1) / (rate or Fraction(25)), None
    else:
        raise MediaError(f"{path.name}: the video stream holds no frames")
    if last < 0:
        raise MediaError(f"{path.name}: no video frames at or after the stream start")
    length = usable_length(last, shown_for(last_duration, time_base, rate))
    return VideoProbe(float(length), width, height, float(rate) if rate else None, has_audio)


def probe_video_duration(path: str | os.PathLike[str]) -> float:
    """Seconds of video :func:`mfmjt.media.decode_video` would use for the whole file, from packet
    timestamps (see :func:`probe_video`)."""
    return probe_video(path).length
