"""Heavy inputs: the time to answer a request for a 4K 30 fps clip against ffmpeg alone decoding and
scaling the same clip, side by side in one run.

Makes the clip with the ffmpeg shipped by ``imageio-ffmpeg`` (``testsrc2``, H.264 yuv420p), then
times, alternating, ``--repeats`` times each:

- ``ffmpeg``: ``ffmpeg -i clip -vf scale=384:384 -f null -`` (decode every frame and scale it);
- ``decode``: ``Pipeline.decode_video`` (the one decoding pass the request needs, frames for both
  encoders at 8 and 25 fps, in the model's windows when the clip is longer than one);
- ``request``: ``Pipeline.generate`` with the embedded default model (one step), decoding included.

and reports each as a ratio to ``ffmpeg``.

    nice -n 15 python benchmarks/heavy_input.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_clip(path: Path, seconds: float, fps: int, size: str = "3840x2160") -> None:
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate={fps}", "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip


def time_ffmpeg(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
         "-vf", "scale=384:384", "-f", "null", "-"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    from mfmjt.pipeline import load_pipeline

    pipe = load_pipeline("default", device="cpu", max_duration=max(30.0, args.seconds))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "4k.mp4"
        start = time.perf_counter()
        make_clip(clip, args.seconds, args.fps)
        made = time.perf_counter() - start
        print(f"made {clip.name}: 3840x2160, {args.fps} fps, {args.seconds:g} s in {made:.1f} s")
        times: dict[str, list[float]] = {"ffmpeg": [], "decode": [], "request": []}
        for _ in range(args.repeats):
            times["ffmpeg"].append(time_ffmpeg(clip))
            start = time.perf_counter()
            decoded = pipe.decode_video(clip)
            times["decode"].append(time.perf_counter() - start)
            del decoded
            pipe._video_cache.clear()
            start = time.perf_counter()
            result = pipe.generate(video=clip, seed=0)
            times["request"].append(time.perf_counter() - start)
    base = statistics.median(times["ffmpeg"])
    numbers = {
        "clip": f"3840x2160 {args.fps} fps {args.seconds:g} s",
        "audio_seconds": result.duration,
        "median_seconds": {k: statistics.median(v) for k, v in times.items()},
        "ratio_to_ffmpeg": {k: statistics.median(v) / base for k, v in times.items()},
        "all_seconds": times,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(numbers, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
