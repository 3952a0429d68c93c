"""Media: video decoding at the model's frame rates, audio file I/O, and muxing audio back into video.

- :mod:`mfmjt.media.container`: opening files, the video stream, size and work limits, frame times,
  and the one measure of a video's length (:func:`usable_length`, :func:`probe_video`);
- :mod:`mfmjt.media.frames`: the one decoding loop (:func:`decode_video`, :func:`decode_video_windows`);
- :mod:`mfmjt.media.audio`: :func:`read_audio`, :func:`write_audio`;
- :mod:`mfmjt.media.mux`: :func:`mux_audio_into_video`, :func:`write_video`.

Everything is importable from ``mfmjt.media`` as before the split.
"""

from mfmjt.media.audio import AUDIO_SUFFIXES, as_mono, read_audio, write_audio
from mfmjt.media.container import (
    LONG_FRAME,
    MAX_FRAME_PIXELS,
    MAX_PIXEL_RATE,
    MAX_REQUEST_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    VIDEO_SUFFIXES,
    MediaError,
    VideoProbe,
    check_file,
    check_size,
    check_work,
    open_container,
    probe_video,
    probe_video_duration,
    usable_length,
    video_stream,
)
from mfmjt.media.frames import CLIP_SIZE, SYNC_SIZE, DecodedVideo, decode_video, decode_video_windows
from mfmjt.media.mux import H264_ENCODE_ARGS, _probe_video, _run_ffmpeg, mux_audio_into_video, write_video

# the names earlier releases had (the demo's video tracks use some of them)
_video_stream = video_stream
_check_file = check_file
_open = open_container
_as_mono = as_mono

__all__ = [
    "AUDIO_SUFFIXES",
    "CLIP_SIZE",
    "H264_ENCODE_ARGS",
    "LONG_FRAME",
    "MAX_FRAME_PIXELS",
    "MAX_PIXEL_RATE",
    "MAX_REQUEST_PIXELS",
    "MAX_SIDE",
    "MIN_SIDE",
    "SYNC_SIZE",
    "VIDEO_SUFFIXES",
    "DecodedVideo",
    "MediaError",
    "VideoProbe",
    "check_file",
    "check_size",
    "check_work",
    "decode_video",
    "decode_video_windows",
    "mux_audio_into_video",
    "open_container",
    "probe_video",
    "probe_video_duration",
    "read_audio",
    "usable_length",
    "video_stream",
    "write_audio",
    "write_video",
    "_probe_video",
    "_run_ffmpeg",
]
