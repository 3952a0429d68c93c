"""The demo's mp4 outputs: the video track is prepared once per clip, then each audio is muxed onto it.

:func:`prepare_track` gives a browser-playable H.264 track of a clip's first ``duration`` seconds: the
source itself when it already is one of that length in an MP4/MOV file, otherwise one ffmpeg re-encode
(cut, other codecs, odd sizes). :func:`mux_audio` then copies that track's packets and encodes the
waveform to AAC at its own sample rate, in-process with PyAV: no ffmpeg process, no video re-encode,
so a second guidance mode or a live remix costs only the audio encode.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import av
import numpy as np

from mfmjt import media
from mfmjt.pipeline import file_digest

logger = logging.getLogger(__name__)

_COPYABLE_FORMATS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}  # demuxer names: H.264 stored as avcC
AAC_BITRATE = 128_000


def needs_encode(video: str | Path, duration: float) -> bool:
    """True when ``video`` cannot serve as the track for ``duration`` seconds as it is."""
    info = media._probe_video(Path(video))
    with av.open(str(video)) as container:
        formats = set(container.format.name.split(","))
    # no cut when every frame starts inside ``duration`` (the last one may show up to one interval longer)
    slack = info.frame_interval or 0.0
    needs_cut = info.duration is None or info.duration > duration + slack + 1e-3
    return needs_cut or info.codec != "h264" or info.pix_fmt != "yuv420p" or not formats & _COPYABLE_FORMATS


def track_name(digest: str, duration: float) -> str:
    """The file name of the track of the clip with content digest ``digest`` cut to ``duration`` s.

    Everything that shapes a track is in it: the clip's content and the cut (the encoder settings are
    constants of this module), so two clips never share a track file, whoever uploaded them.
    """
    if not digest or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError("a track is named by the hexadecimal content digest of its clip")
    return f"track_{digest}_{round(duration * 1e6)}us.mp4"


def prepare_track(video: str | Path, duration: float, out_dir: str | Path, digest: str | None = None) -> Path:
    """A video-only H.264 yuv420p track of the first ``duration`` s of ``video`` (maybe ``video`` itself).

    A re-encoded track is written to ``out_dir`` under :func:`track_name` (``digest`` is the clip's
    :func:`mfmjt.pipeline.file_digest`, computed when not given).
    """
    video = Path(video)
    if not needs_encode(video, duration):
        return video
    digest = digest or file_digest(video)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".track.", suffix=".mp4", dir=out_dir)
    os.close(fd)
    out = out_dir / track_name(digest, duration)
    try:
        media._run_ffmpeg(
            [
                "-i",
                str(video),
                "-map",
                "0:V:0",
                "-an",
                "-sn",
                "-map_chapters",
                "-1",
                "-t",
                f"{duration:.6f}",
                *media.H264_ENCODE_ARGS,
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                tmp,
            ]
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("re-encoded %s to an H.264 track of %.3f s", video.name, duration)
    return out


def mux_audio(
    track: str | Path, waveform: np.ndarray, sample_rate: int, out_path: str | Path, duration: float
) -> Path:
    """Write ``out_path`` (mp4): the track's video packets copied, ``waveform`` (mono) as AAC.

    The audio is cut or padded with silence to ``duration`` seconds; the file appears complete or not at all.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    n = round(duration * sample_rate)
    audio = np.clip(np.pad(audio[:n], (0, max(n - len(audio), 0))), -1.0, 1.0)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".mp4", dir=out_path.parent)
    os.close(fd)
    try:
        with (
            av.open(str(track)) as src,
            av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as dst,
        ):
            video_in = media._video_stream(src)
            if video_in is None:
                raise media.MediaError(f"{Path(track).name} has no video stream to put the audio into")
            video_out = dst.add_stream_from_template(video_in)
            # the fast coder: 2-3x quicker than the default two-loop search, plenty at 128 kb/s
            audio_out = dst.add_stream("aac", rate=sample_rate, layout="mono", options={"aac_coder": "fast"})
            audio_out.bit_rate = AAC_BITRATE
            for packet in src.demux(video_in):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = video_out
                dst.mux(packet)
            frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = 0
            for packet in audio_out.encode(frame):
                dst.mux(packet)
            for packet in audio_out.encode(None):
                dst.mux(packet)
        os.replace(tmp, out_path)
    except av.error.FFmpegError as exc:
        logger.warning("muxing %s failed: %s", out_path.name, exc)
        raise media.MediaError("the video could not be written with the new audio") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path
