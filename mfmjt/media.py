"""Video decoding at the model's frame rates, audio file I/O, and muxing audio back into video.

Decoding follows MMAudio's inference path (PyAV, RGB24 frames, torchvision v2 bicubic resizes on
uint8 tensors; target time k/fps takes the first frame whose timestamp is >= k/fps) with these
deliberate differences:
- target times are compared with frame timestamps in exact rational arithmetic (MMAudio accumulates
  ``1/fps`` in floats, which picks the next frame for some targets of a 25 fps source);
- the first frame past the requested window still serves the targets inside it, so asking for 1 s
  of a 23.976 fps video gives 1 s (MMAudio drops that frame and shortens the clip to 0.96 s);
- decoding stops at that frame instead of demuxing the whole file;
- a positive stream start time is subtracted (MPEG-TS), and frames are turned upright when the
  stream carries a display rotation (phone videos).

Muxing uses the ffmpeg executable shipped with ``imageio-ffmpeg``: H.264 yuv420p video that needs no
cut is copied, anything else (other codecs, or a clip cut short) is re-encoded to H.264 yuv420p;
the audio is encoded to AAC.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mfmjt.config import CLIP_FPS, MIN_DURATION, SYNC_FPS, AudioMode, SequenceLengths

logger = logging.getLogger(__name__)

CLIP_SIZE = 384  # CLIP frames: squashed to 384 x 384
SYNC_SIZE = 224  # Synchformer frames: short side 224, centre crop 224 x 224
MAX_SIDE = 8192  # larger frames are refused: decoding them at 25 fps would take minutes and gigabytes
MIN_SIDE = 2  # H.264 4:2:0 output needs at least 2 x 2 pixels
MAX_FRAME_PIXELS = 4096 * 2304  # per frame (a little over 4K UHD)
MAX_PIXEL_RATE = 4096 * 2304 * 30  # pixels decoded per second of video: 4K at 30 fps, ~1-2 s CPU per s
AUDIO_SUFFIXES = {".wav": "WAV", ".flac": "FLAC"}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")  # what folders are scanned for
# ffmpeg's video encoding for browsers: H.264 yuv420p, whose 4:2:0 needs even sizes (an odd last
# row/column is dropped)
H264_ENCODE_ARGS = (
    "-vf",
    "crop=trunc(iw/2)*2:trunc(ih/2)*2",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-crf",
    "18",
    "-pix_fmt",
    "yuv420p",
)
_LONG_FRAME = Fraction(2, round(SYNC_FPS))  # a last frame shown this long or longer counts to its end
_RESIZE_BATCH = 16  # source frames resized per torchvision call ...
_RESIZE_BYTES = 1 << 26  # ... or fewer when they are large (1080p: 10 frames)


class MediaError(ValueError):
    """A media file cannot be used; the message says why in terms a user can act on."""


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """Frames of one video at the model's two frame rates, plus what was learnt about the file."""

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

    def sequence_lengths(self, mode: str | AudioMode = "16k") -> SequenceLengths:
        """Sequence lengths for this clip's duration."""
        return SequenceLengths.for_duration(self.duration, mode)


# ---------------------------------------------------------------------------------------------
# decoding


def _clip_transform(frames: torch.Tensor) -> torch.Tensor:
    return TF.resize(frames, [CLIP_SIZE, CLIP_SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)


def _sync_transform(frames: torch.Tensor) -> torch.Tensor:
    frames = TF.resize(frames, [SYNC_SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(frames, [SYNC_SIZE, SYNC_SIZE])


class _FrameSampler:
    """Resamples a decoded stream to ``fps``: target ``k/fps`` takes the first frame at or after it.

    Each source frame is resized once, however many targets it serves.
    """

    def __init__(self, fps: float, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fps = Fraction(fps)
        self.transform = transform
        self.count = 0  # targets filled so far
        self._pending: list[np.ndarray] = []  # source frames [H, W, 3] uint8 awaiting the resize
        self._pending_bytes = 0
        self._repeats: list[int] = []  # targets served by each source frame
        self._done: list[torch.Tensor] = []

    def wanted(self, time: Fraction) -> int:
        """Number of still unfilled targets at or before ``time``."""
        return max(math.floor(time * self.fps) + 1 - self.count, 0)

    def add(self, image: np.ndarray, repeats: int) -> None:
        if self._pending and self._pending[0].shape != image.shape:
            self._flush()  # frames of another size (the stream changed resolution): a batch of their own
        self._pending.append(image)
        self._pending_bytes += image.size
        self._repeats.append(repeats)
        self.count += repeats
        if len(self._pending) >= _RESIZE_BATCH or self._pending_bytes >= _RESIZE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            # [T, 3, H, W] with channels-last strides, as MMAudio builds it (and fast for uint8 resizes)
            batch = torch.from_numpy(np.stack(self._pending)).permute(0, 3, 1, 2)
            self._done.append(self.transform(batch))
            self._pending, self._pending_bytes = [], 0

    def frames(self, count: int, size: int) -> torch.Tensor:
        """The first ``count`` targets as a contiguous uint8 tensor [count, 3, size, size]."""
        self._flush()
        if not self._done or count <= 0:
            return torch.zeros((0, 3, size, size), dtype=torch.uint8)
        unique = torch.cat(self._done).permute(0, 2, 3, 1)  # [N, size, size, 3]
        index = torch.arange(len(self._repeats)).repeat_interleave(torch.tensor(self._repeats))[:count]
        return unique[index].permute(0, 3, 1, 2).contiguous()


def _check_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"file is empty (0 bytes): {path}")
    return path


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:  # the decoder's words go to the log, not to the user
        logger.info("cannot open %s: %s", path.name, exc)
        raise MediaError(
            f"cannot read {path.name}: the file is corrupt or not a supported media format"
        ) from exc


def _rotation_turns(frame: av.VideoFrame) -> int:
    """Quarter turns (counter-clockwise) that display the frame upright."""
    try:
        angle = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return round(angle / 90) % 4 if angle else 0


def _video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first video stream that is not cover art (an attached picture)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _check_size(name: str, width: int, height: int, fps: float | None = None) -> None:
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


def _frame_times(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """Decoded frames with their exact time in seconds from the stream start.

    A packet that fails to decode is skipped with a warning; a read error after some frames ends
    the stream (a truncated download still yields its beginning).
    """
    time_base = stream.time_base or Fraction(1, 90_000)
    start = stream.start_time if stream.start_time is not None and stream.start_time > 0 else 0
    rate = stream.guessed_rate or stream.average_rate or Fraction(25)
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
                time = Fraction(0) if last is None else last + 1 / Fraction(rate)
            last = time
            yield frame, time


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
    path = _check_file(path)
    window = max_duration if duration is None else min(duration, max_duration)
    window_q = Fraction(window)

    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            kind = "an audio file" if container.streams.audio else "a file without video"
            raise MediaError(f"{path.name} has no video stream ({kind}); please provide a video")
        width, height = stream.codec_context.width, stream.codec_context.height
        has_audio = bool(container.streams.audio)
        rate = stream.guessed_rate or stream.average_rate
        source_fps = float(rate) if rate else None
        if width and height:  # before decoding a single huge frame
            _check_size(path.name, width, height, source_fps)
        source_duration = _source_duration(container, stream)
        stream.thread_type = "AUTO"

        clip = _FrameSampler(CLIP_FPS, _clip_transform)
        sync = _FrameSampler(SYNC_FPS, _sync_transform)
        decoded, beyond_window, turns = 0, False, 0
        last_image, last_time, last_end = None, Fraction(0), Fraction(0)  # newest frame: shown from, until
        for frame, time in _frame_times(container, stream):
            decoded += 1
            if time < 0:
                continue
            shown = frame.duration * frame.time_base if frame.duration and frame.time_base else None
            last_time, last_end = time, time + (shown or (1 / Fraction(rate) if rate else Fraction(0)))
            # The first frame past the window still serves targets inside it, then decoding stops.
            beyond_window = time > window_q
            n_clip, n_sync = clip.wanted(min(time, window_q)), sync.wanted(min(time, window_q))
            if not (n_clip or n_sync):
                if beyond_window:
                    break
                continue
            if (frame.width, frame.height) != (width, height):
                width, height = frame.width, frame.height  # the stream may change size mid-way
                _check_size(path.name, width, height, source_fps)
            image = frame.to_ndarray(format="rgb24")
            turns = _rotation_turns(frame)
            if turns:
                image = np.rot90(image, turns)
            if n_clip:
                clip.add(image, n_clip)
            if n_sync:
                sync.add(image, n_sync)
            last_image = image
            if beyond_window:
                break
        stream_end: Fraction | None = None
        if last_image is not None and not beyond_window and last_end - last_time >= _LONG_FRAME:
            # a long last frame (1 fps clips, gifs) stays on screen until the stream ends: targets before
            # that end use it too, so the audio covers the whole clip. Ordinary frame rates keep
            # MMAudio's rule (the clip ends at its last frame's time).
            end = stream_end = min(last_end, window_q)
            for sampler in (clip, sync):
                extra = math.ceil(end * sampler.fps) - sampler.count
                if extra > 0:
                    sampler.add(last_image, extra)
    if turns % 2:
        width, height = height, width

    if clip.count == 0 or sync.count == 0:
        raise MediaError(f"{path.name}: no video frames could be decoded")
    used = min(window, clip.count / CLIP_FPS, sync.count / SYNC_FPS)
    if stream_end is not None:
        used = min(used, float(stream_end))
    if used < MIN_DURATION:
        raise MediaError(
            f"{path.name} is too short: it gives {used:.2f} s of video, "
            f"at least {MIN_DURATION:.2f} s is needed"
        )
    truncated, message = False, ""
    if duration is not None and used < duration:
        truncated = True
        if beyond_window and max_duration < duration:
            message = (
                f"requested {duration:.2f} s exceeds the {max_duration:.2f} s limit; "
                f"using the first {used:.2f} s"
            )
        else:
            message = f"the video is shorter than the requested {duration:.2f} s; using {used:.2f} s"
    elif duration is None and beyond_window:
        truncated = True
        message = f"the video is longer than the {max_duration:.2f} s limit; using the first {used:.2f} s"
    if truncated:
        logger.warning("%s: %s", path.name, message)

    clip_frames = clip.frames(int(used * CLIP_FPS), CLIP_SIZE)
    sync_frames = sync.frames(int(used * SYNC_FPS), SYNC_SIZE)
    logger.debug(
        "%s: %d frames decoded -> %d clip / %d sync frames, %.3f s",
        path.name,
        decoded,
        len(clip_frames),
        len(sync_frames),
        used,
    )
    return DecodedVideo(
        clip_frames=clip_frames,
        sync_frames=sync_frames,
        duration=used,
        source_duration=source_duration,
        source_fps=source_fps,
        width=width,
        height=height,
        has_audio=has_audio,
        decoded_frames=decoded,
        truncated=truncated,
        message=message,
    )


def _source_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


# ---------------------------------------------------------------------------------------------
# audio files


def read_audio(
    path: str | os.PathLike[str], sample_rate: int, *, duration: float | None = None
) -> np.ndarray:
    """First audio stream of an audio or video file as float32 mono at ``sample_rate``.

    Channels are averaged; ``duration`` (seconds) keeps only the beginning.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = _check_file(path)
    limit = None if duration is None else max(round(duration * sample_rate), 0)
    chunks: list[np.ndarray] = []
    total = 0
    with _open(path) as container:
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


def _as_mono(waveform: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# muxing


@dataclass(frozen=True)
class _VideoInfo:
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    duration: float | None  # seconds, when the container or stream says
    frame_interval: float | None  # seconds per frame, when the stream has a rate


def _probe_video(path: Path) -> _VideoInfo:
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{path.name} has no video stream to put the audio into")
        ctx = stream.codec_context
        pix_fmt = ctx.pix_fmt if isinstance(ctx.pix_fmt, str) or ctx.pix_fmt is None else ctx.pix_fmt.name
        rate = stream.average_rate or stream.guessed_rate
        return _VideoInfo(
            codec=ctx.name,
            pix_fmt=pix_fmt,
            width=ctx.width,
            height=ctx.height,
            duration=_source_duration(container, stream),
            frame_interval=float(1 / rate) if rate else None,
        )


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: list[str]) -> None:
    proc = subprocess.run(
        [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:  # ffmpeg's own words go to the log, not to the user
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        logger.warning("ffmpeg failed (exit code %d): %s", proc.returncode, tail)
        raise MediaError("the video could not be written with the new audio (its video stream is unusual)")


def mux_audio_into_video(
    video_path: str | os.PathLike[str],
    waveform: np.ndarray,
    sample_rate: int,
    out_path: str | os.PathLike[str],
    duration: float,
) -> Path:
    """Write an mp4 (H.264 yuv420p + AAC) with the video's first ``duration`` seconds and ``waveform``.

    H.264 yuv420p video that needs no cut (it ends within a frame of ``duration``) is copied without
    re-encoding. A cut is re-encoded: a copied stream can only stop at packet boundaries in decoding
    order, so B-frames would keep frames past the cut. Other codecs are re-encoded too (odd frame
    sizes lose their last row/column). The waveform is padded with silence or cut to ``duration``. The
    output has exactly one video and one audio stream and is written to a temporary file first.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    video_path = _check_file(video_path)
    out_path = Path(out_path)
    audio = _as_mono(waveform)
    n_samples = round(duration * sample_rate)
    audio = np.pad(audio[:n_samples], (0, max(n_samples - len(audio), 0)))
    info = _probe_video(video_path)
    slack = info.frame_interval or 0.0
    needs_cut = info.duration is None or info.duration > duration + 0.5 * slack + 1e-3
    copy = info.codec == "h264" and info.pix_fmt == "yuv420p" and not needs_cut

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.stem}.", dir=out_path.parent) as tmp:
        wav = Path(tmp) / "audio.wav"
        sf.write(wav, audio, sample_rate, subtype="FLOAT", format="WAV")
        tmp_out = Path(tmp) / "out.mp4"

        def mux(copy_video: bool) -> None:
            video_args = ["-c:v", "copy"] if copy_video else list(H264_ENCODE_ARGS)
            _run_ffmpeg(
                [
                    "-i",
                    str(video_path),
                    "-i",
                    str(wav),
                    "-map",
                    "0:V:0",
                    "-map",
                    "1:a:0",
                    "-map_chapters",
                    "-1",  # V: not cover art
                    "-t",
                    f"{duration:.6f}",
                    *video_args,
                    "-c:a",
                    "aac",
                    "-b:a",
                    "128k",
                    "-movflags",
                    "+faststart",
                    "-f",
                    "mp4",
                    str(tmp_out),
                ]
            )

        if copy:
            try:
                mux(copy_video=True)
            except MediaError as exc:
                logger.warning("copying the H.264 stream failed, re-encoding instead: %s", exc)
                mux(copy_video=False)
        else:
            logger.info(
                "re-encoding %s video (%s) to H.264%s",
                info.codec,
                info.pix_fmt,
                f", cut at {duration:.3f} s" if needs_cut else "",
            )
            mux(copy_video=False)
        os.replace(tmp_out, out_path)
    return out_path


# ---------------------------------------------------------------------------------------------
# long videos: the usable length without decoding, and overlapping windows in one decoding pass


def probe_video_duration(path: str | os.PathLike[str]) -> float:
    """Seconds of video :func:`decode_video` would use for the whole file, from packet timestamps.

    Demuxes without decoding (fast); the result is the length of the 8 fps and 25 fps frame grids
    whose targets the last frame serves. Raises ``MediaError`` for files without a usable video stream.
    """
    path = _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{path.name} has no video stream; please provide a video")
        time_base = stream.time_base or Fraction(1, 90_000)
        start = stream.start_time if stream.start_time is not None and stream.start_time > 0 else 0
        last_pts, packets = None, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.pts is not None and (last_pts is None or packet.pts > last_pts):
                    last_pts = packet.pts
        except av.error.FFmpegError as exc:
            if not packets:
                raise MediaError(f"cannot read the video stream of {path.name} ({exc})") from exc
        rate = stream.guessed_rate or stream.average_rate or Fraction(25)
    if last_pts is not None:
        last = (last_pts - start) * time_base
    elif packets:
        last = (packets - 1) / Fraction(rate)
    else:
        raise MediaError(f"{path.name}: the video stream holds no frames")
    if last < 0:
        raise MediaError(f"{path.name}: no video frames at or after the stream start")
    return min((math.floor(last * CLIP_FPS) + 1) / CLIP_FPS, (math.floor(last * SYNC_FPS) + 1) / SYNC_FPS)


@dataclass
class _Span:
    index: int
    start: Fraction
    length: Fraction
    clip: _FrameSampler
    sync: _FrameSampler
    complete: bool = False


def decode_video_windows(
    path: str | os.PathLike[str], spans: list[tuple[float, float]]
) -> Iterator[DecodedVideo]:
    """Decode overlapping windows ``(start, length)`` (seconds, sorted by start) in one pass.

    Each window is sampled exactly as :func:`decode_video` samples a clip that begins at ``start``
    (target ``start + k/fps`` takes the first frame at or after it) and is yielded as soon as it is
    complete, so memory holds only the windows that overlap the current frame. A window the video
    ends inside comes back shorter (``truncated``, with a message).
    """
    if not spans:
        return
    starts = [s for s, _ in spans]
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)) or starts[0] < 0:
        raise ValueError("window starts must be non-negative and sorted")
    for start, length in spans:
        if not (math.isfinite(length) and length >= MIN_DURATION and math.isfinite(start)):
            raise ValueError(f"window ({start}, {length}) must last at least {MIN_DURATION:.2f} s")
    path = _check_file(path)
    pending = [
        _Span(
            i,
            Fraction(s),
            Fraction(n),
            _FrameSampler(CLIP_FPS, _clip_transform),
            _FrameSampler(SYNC_FPS, _sync_transform),
        )
        for i, (s, n) in enumerate(spans)
    ]
    pending.reverse()  # pop() takes the earliest
    active: list[_Span] = []
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise MediaError(f"{path.name} has no video stream; please provide a video")
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_size(path.name, width, height)
        info = dict(
            source_duration=_source_duration(container, stream),
            source_fps=float(stream.guessed_rate or stream.average_rate or 0) or None,
            has_audio=bool(container.streams.audio),
        )
        stream.thread_type = "AUTO"
        decoded, turns = 0, 0
        for frame, time in _frame_times(container, stream):
            decoded += 1
            while pending and pending[-1].start <= time:
                active.append(pending.pop())
            image = None
            for span in active:
                rel = time - span.start
                span.complete = rel > span.length
                n_clip = span.clip.wanted(min(rel, span.length))
                n_sync = span.sync.wanted(min(rel, span.length))
                if not (n_clip or n_sync):
                    continue
                if image is None:
                    if not (width and height):
                        width, height = frame.width, frame.height
                        _check_size(path.name, width, height)
                    image = frame.to_ndarray(format="rgb24")
                    turns = _rotation_turns(frame)
                    if turns:
                        image = np.rot90(image, turns)
                if n_clip:
                    span.clip.add(image, n_clip)
                if n_sync:
                    span.sync.add(image, n_sync)
            while active and active[0].complete:
                size = (height, width) if turns % 2 else (width, height)
                yield _window_result(path.name, active.pop(0), decoded, *size, **info)
            if not (active or pending):
                return
    size = (height, width) if turns % 2 else (width, height)
    for span in active:  # the video ended inside these windows
        yield _window_result(path.name, span, decoded, *size, **info)
    if pending:
        raise MediaError(
            f"{path.name} ends before {float(pending[-1].start):.2f} s, where window "
            f"{pending[-1].index + 1} of {len(spans)} starts"
        )


def _window_result(
    name: str, span: _Span, decoded: int, width: int, height: int, **info: Any
) -> DecodedVideo:
    length = float(span.length)
    used = min(length, span.clip.count / CLIP_FPS, span.sync.count / SYNC_FPS)
    if used < MIN_DURATION:
        raise MediaError(
            f"{name}: the window at {float(span.start):.2f} s gives {used:.2f} s of video, "
            f"at least {MIN_DURATION:.2f} s is needed"
        )
    message = ""
    if used < length:
        message = f"the video ends {used:.2f} s into the window at {float(span.start):.2f} s"
    return DecodedVideo(
        clip_frames=span.clip.frames(int(used * CLIP_FPS), CLIP_SIZE),
        sync_frames=span.sync.frames(int(used * SYNC_FPS), SYNC_SIZE),
        duration=used,
        width=width,
        height=height,
        decoded_frames=decoded,
        truncated=used < length,
        message=message,
        **info,
    )


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray,
    sample_rate: int,
    *,
    crf: int = 18,
) -> Path:
    """Encode uint8 RGB ``frames [T, H, W, 3]`` and mono ``audio`` as a browser-playable mp4
    (H.264 yuv420p, AAC), interleaved frame by frame; odd sizes repeat the last row/column."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    pad_h, pad_w = H % 2, W % 2  # yuv420p needs even sizes: repeat the last row/column
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = W + pad_w, H + pad_h
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "medium"}
        astream = container.add_stream("aac", rate=sample_rate, layout="mono")
        chunk = astream.codec_context.frame_size or 1024
        audio = _as_mono(audio).astype(np.float32)
        samples_per_frame = sample_rate / float(rate)
        a_pos = 0
        for i in range(T):  # interleave: audio up to the end of each video frame
            vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            vframe.pts = i
            container.mux(vstream.encode(vframe))
            a_end = min(audio.size, round((i + 1) * samples_per_frame))
            while a_pos + chunk <= a_end or (i == T - 1 and a_pos < audio.size):
                block = audio[a_pos : a_pos + chunk]
                aframe = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = a_pos
                container.mux(astream.encode(aframe))
                a_pos += block.size
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
    return path
