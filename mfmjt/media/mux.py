"""Writing video: the source video with new audio (ffmpeg from ``imageio-ffmpeg``), and frames plus
audio as a browser-playable mp4 (PyAV).

Muxing copies H.264 yuv420p video that needs no cut; anything else (other codecs, or a clip cut
short) is re-encoded to H.264 yuv420p; the audio is encoded to AAC.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from mfmjt.media.audio import as_mono
from mfmjt.media.container import MediaError, check_file, open_container, source_duration, video_stream

logger = logging.getLogger("mfmjt.media")

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


@dataclass(frozen=True)
class _VideoInfo:
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    duration: float | None  # seconds, when the container or stream says
    frame_interval: float | None  # seconds per frame, when the stream has a rate


def _probe_video(path: Path) -> _VideoInfo:
    with open_container(path) as container:
        stream = video_stream(container)
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
            duration=source_duration(container, stream),
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
    video_path = check_file(video_path)
    out_path = Path(out_path)
    audio = as_mono(waveform)
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
        audio = as_mono(audio).astype(np.float32)
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
