"""Memory and time of long clips: whole-clip decoding vs one-pass window decoding, and generation.

Writes a synthetic scene (6 s, looped) of ``--seconds`` as an H.264 mp4, then runs each case in a
fresh process and reports its wall time and peak resident memory (ru_maxrss):

- ``whole``: ``media.decode_video`` of the whole clip (uint8 frames at 8 fps 384 px and 25 fps 224 px);
- ``windows``: ``media.decode_video_windows`` over the long-form plan (frames of live windows only);
- ``generate``: the whole request with the embedded default model (4 s windows), one step.

    python benchmarks/long_form.py --seconds 300
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.long_form")


def write_video(path: Path, seconds: float, size: int, fps: int = 24) -> None:
    import av

    from mfmjt.synthetic import SceneConfig, make_scene

    scene = make_scene(3, SceneConfig(duration=6.0, fps=fps, width=size, height=size))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(scene.frames[i % len(scene.frames)], format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def run_case(case: str, video: Path, seconds: float) -> dict[str, float]:
    """One case in this process; returns its numbers."""
    import torch

    from mfmjt import long_form, media
    from mfmjt.pipeline import load_pipeline

    torch.set_num_threads(1)
    pipe = load_pipeline("default", device="cpu", max_duration=seconds) if case != "whole" else None
    start = time.perf_counter()
    result: dict[str, float] = {}
    if case == "whole":
        decoded = media.decode_video(video, max_duration=seconds)
        result["frame_bytes"] = decoded.clip_frames.nbytes + decoded.sync_frames.nbytes
    elif case == "windows":
        plan = long_form.plan_request(pipe, video, None, 8.0).plan
        rate = pipe.audio_mode.latent_rate
        spans = [(w.start / rate, w.length / rate) for w in plan.windows]
        largest = 0
        for decoded in media.decode_video_windows(video, spans):
            largest = max(largest, decoded.clip_frames.nbytes + decoded.sync_frames.nbytes)
        result["frame_bytes"] = largest
        result["windows"] = len(spans)
    else:
        res = pipe.generate(video=video, seed=0)
        result.update({f"t_{k}": v for k, v in res.timings.items()})
        result["audio_seconds"] = len(res.audio["scaled"]) / res.sample_rate
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--size", type=int, default=128, help="frame side of the test video (pixels)")
    parser.add_argument("--cases", default="windows,whole,generate")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--video", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.video), args.seconds)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        write_video(video, args.seconds, args.size)
        rows = []
        for case in args.cases.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--case",
                case,
                "--video",
                str(video),
                "--seconds",
                str(args.seconds),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            numbers = json.loads(proc.stdout.strip().splitlines()[-1])
            logger.info("%s: %s", case, numbers)
            rows.append((case, numbers))
    print(f"\n{args.seconds:g} s, {args.size} px video, CPU, 1 thread\n")
    print("| case | wall s | peak RSS MB | frames held MB | notes |")
    print("|---|---|---|---|---|")
    for case, n in rows:
        held = f"{n['frame_bytes'] / 2**20:.0f}" if "frame_bytes" in n else ""
        notes = f"{n['windows']:.0f} windows" if "windows" in n else ""
        if case == "generate":
            parts = ("decode_video", "clip_features", "sync_features", "network", "audio_decode")
            notes = ", ".join(f"{p} {n.get('t_' + p, 0):.1f}" for p in parts)
            notes += f"; RTF {n['seconds'] / n['audio_seconds']:.3f}"
        print(f"| {case} | {n['seconds']:.1f} | {n['peak_rss_mb']:.0f} | {held} | {notes} |")


if __name__ == "__main__":
    main()
