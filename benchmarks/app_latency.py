"""Request-to-result latency of the Gradio demo through its API (gradio_client), on an 8 s clip.

Launches ``app.build_demo`` locally and times ``/video_to_audio`` from the client's call to the
downloaded mp4s: 1 step with both guidances vs 1 step with one, vs 25 steps, plus the live remix
(``/remix_v2a``, what releasing the ω slider calls: no network forward with two-pass CFG, one for a
model with guidance learnt in training; the video track is reused, only the audio is encoded). Each
timed request uses a clip of its own and a new seed, so features and predictions are computed afresh.
Also times the start-up of ``python app.py`` (process start to the page answering), each run next to
``python -c "import gradio"`` (the reference: what any Gradio app pays before its own code runs), so
the start-up is reported also as a multiple of that import on a shared machine. Every request is
also reported as a multiple of an ffmpeg H.264 + AAC transcode of the same clip (the demo's own x264
settings, AAC at 128 kb/s), timed right before it in the same run: a machine-independent yardstick of
what a video tool costs. Prints a markdown table of seconds and ratios, all measured in one run, with the
machine's load average.

    python benchmarks/app_latency.py                          # the embedded default model
    python benchmarks/app_latency.py --model mmaudio-small-16k
    python benchmarks/app_latency.py --random-stack --repeats 2   # quick check, no weights
    python benchmarks/app_latency.py --startup-only --repeats 5   # only the start-up and its reference
    python benchmarks/app_latency.py --startup-only --app /tmp/old/app.py  # also another tree's app.py
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import os  # noqa: E402

os.environ.setdefault("MFMJT_APP_BUILD", "0")  # build_demo below, not the module-level default demo
import app  # noqa: E402
from mfmjt.pipeline import Pipeline, load_pipeline  # noqa: E402

logger = logging.getLogger("benchmarks.app_latency")


@dataclass(frozen=True)
class Case:
    label: str
    steps: int
    guidance: str
    cfg: float
    remix: bool = False  # same request as the previous one but another ω


CASES = [
    Case("1 step, compare both", 1, "both", 1.5),
    Case("1 step, scaled only", 1, "scaled", 1.5),
    Case("1 step, live remix (ω changed, both)", 1, "both", 3.0, remix=True),
    Case("25 steps, scaled only", 25, "scaled", 4.5),
    Case("25 steps, compare both", 25, "both", 4.5),
]
# as multiples of the transcode of the same clip (issue #27), and seconds for the start-up
TARGETS = {
    "1 step, compare both": 8.0,
    "1 step, live remix (ω changed, both)": 4.0,
}
STARTUP_TARGET_S = 5.0


def transcode_seconds(clip: Path, out: Path) -> float:
    """Seconds of ``ffmpeg -i clip`` to H.264 (the demo's x264 settings) + AAC 128 kb/s in an mp4."""
    import subprocess

    from mfmjt.media import H264_ENCODE_ARGS
    from mfmjt.media.mux import _ffmpeg_exe

    command = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip)]
    command += [*H264_ENCODE_ARGS, "-c:a", "aac", "-b:a", "128k", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference_seconds() -> tuple[float, float]:
    """Seconds and CPU seconds of ``python -c "import gradio"``: the start-up's yardstick (the transcode is
    the requests')."""
    import subprocess

    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True, cwd=REPO)
    return time.perf_counter() - start, _children_cpu() - cpu


def startup_seconds(app_file: Path = REPO / "app.py", timeout: float = 120.0) -> tuple[float, float]:
    """Seconds from ``python app.py`` to its page answering HTTP 200 (the embedded default model), and the
    CPU seconds it used until then (on a shared machine the wall time follows the load; the CPU time much
    less)."""
    import subprocess
    import urllib.request

    port = free_port()
    env = {**os.environ, "PORT": str(port), "MFMJT_MODEL": "default", "MFMJT_APP_BUILD": "1"}
    # the app's own folder first, so that another tree's app.py (--app) imports that tree's mfmjt
    env["PYTHONPATH"] = os.pathsep.join([str(app_file.parent), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(app_file)],
        cwd=app_file.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start, _process_cpu(proc.pid)
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"python app.py did not answer within {timeout:g} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def write_clip(path: Path, seconds: float, variant: int, size: int = 256, fps: int = 24) -> Path:
    """A moving square whose colour and speed depend on ``variant`` (so file contents differ), with a
    44.1 kHz stereo AAC tone, as a camera clip has sound."""
    rng = np.random.default_rng(variant)
    colour = rng.integers(64, 256, 3).astype(np.uint8)
    speed = 2 + variant % 5
    rate, hz = 44_100, 220 + 20 * (variant % 7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=rate, layout="stereo")
        for i in range(round(seconds * fps)):
            img = np.zeros((size, size, 3), np.uint8)
            x = (speed * i) % (size - 32)
            img[size // 3 : size // 3 + 32, x : x + 32] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        n = 1024 * round(seconds * rate / 1024)
        wave = (0.3 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = np.ascontiguousarray(np.stack([wave[start : start + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loader(args: argparse.Namespace) -> Callable[[], Pipeline]:
    if args.random_stack:
        sys.path.insert(0, str(REPO / "tests"))
        from stacks import small_random_pipeline

        return partial(small_random_pipeline, max_duration=max(args.duration, 3.0))
    return partial(load_pipeline, args.model, max_duration=max(args.duration, 30.0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="a load_pipeline name, directory or HF repo id")
    parser.add_argument(
        "--random-stack",
        action="store_true",
        help="use the small random-weight stack of tests/stacks.py instead of --model",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per case (median)")
    parser.add_argument("--no-startup", action="store_true", help="skip timing `python app.py`")
    parser.add_argument("--startup-only", action="store_true", help="time only the start-up")
    parser.add_argument(
        "--startup-timeout", type=float, default=120.0, help="seconds one start-up may take (more under load)"
    )
    parser.add_argument(
        "--app",
        type=Path,
        action="append",
        default=[],
        help="another app.py (e.g. an older checkout) whose start-up is timed alongside, in turn",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from gradio_client import Client, handle_file

    load_before = os.getloadavg()
    apps = [REPO / "app.py", *args.app]
    startups = [] if args.no_startup else time_startups(apps, args.repeats, args.startup_timeout)
    if args.startup_only:
        print(
            f"\nstart-up · CPU {platform.machine()} ({os.cpu_count()} cores) · {args.repeats} runs of each, "
            f"in turn · load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n"
        )
        print(STARTUP_HEADER)
        print_startups(startups)
        return
    name = "random" if args.random_stack else args.model
    pipe = loader(args)()
    demo = app.build_demo({name: lambda: pipe})
    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.LAUNCH_KWARGS
    )
    workdir = Path(tempfile.mkdtemp(prefix="mfmjt_app_latency_"))
    client = Client(
        f"http://127.0.0.1:{port}/",
        verbose=False,
        analytics_enabled=False,
        download_files=str(workdir / "downloads"),
    )
    clips = iter(range(10**6))
    seed = 1000

    def request(case: Case, clip: Path, seed: int) -> float:
        start = time.perf_counter()
        outputs = client.predict(
            video=handle_file(str(clip)),
            steps=case.steps,
            cfg_strength=case.cfg,
            guidance=case.guidance,
            seed=seed,
            api_name="/video_to_audio",
        )
        elapsed = time.perf_counter() - start
        assert any(outputs[:2]), "no video came back"
        return elapsed

    try:
        logger.info("writing clips and warming up ...")
        request(CASES[0], write_clip(workdir / "warmup.mp4", args.duration, next(clips)), seed)
        results: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        transcodes: list[float] = []
        for case in CASES:
            times, multiples = [], []
            for _ in range(args.repeats):
                seed += 1
                clip = write_clip(workdir / f"clip{seed}.mp4", args.duration, next(clips))
                transcodes.append(transcode_seconds(clip, workdir / f"transcode{seed}.mp4"))
                if case.remix:  # first the one-step request itself, untimed; then the slider's remix
                    request(Case("", 1, case.guidance, 1.5), clip, seed)
                    start = time.perf_counter()
                    outputs = client.predict(case.cfg, case.guidance, 1, api_name="/remix_v2a")
                    times.append(time.perf_counter() - start)
                    assert "live remix" in outputs[3], outputs[3]
                else:
                    times.append(request(case, clip, seed))
                multiples.append(times[-1] / transcodes[-1])
            results[case.label], ratios[case.label] = times, multiples
            logger.info(
                "%s: %s s; × transcode %s",
                case.label,
                ", ".join(f"{t:.2f}" for t in times),
                ", ".join(f"{r:.2f}" for r in multiples),
            )
    finally:
        demo.close()
        shutil.rmtree(workdir, ignore_errors=True)

    info = pipe.info()
    if pipe.device.type == "cuda":
        device = torch.cuda.get_device_name(pipe.device)
    else:
        device = f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    load_after = os.getloadavg()
    base = statistics.median(results[CASES[0].label])
    print(
        f"\nmodel `{name}` ({info['kind']}, {info['parameters']}) · {device} · {info['dtype']} · "
        f"{args.duration:g} s clip · median of {args.repeats} requests through gradio_client "
        f"(upload → mp4s downloaded) · load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({os.cpu_count()} cores)\n"
    )
    print(
        f"ffmpeg H.264 + AAC transcode of the same {args.duration:g} s clips: median "
        f"{statistics.median(transcodes):.2f} s (min {min(transcodes):.2f}, max {max(transcodes):.2f})\n"
    )
    print("| request | median s | min s | × transcode (median) | × 1 step compare both | RTF | target |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        times = results[case.label]
        med, multiple = statistics.median(times), statistics.median(ratios[case.label])
        target = TARGETS.get(case.label)
        verdict = (
            ""
            if target is None
            else f"≤ {target:g}× " + ("✓" if multiple <= target else f"✗ ({multiple:.1f}×)")
        )
        print(
            f"| {case.label} | {med:.2f} | {min(times):.2f} | {multiple:.2f} | {med / base:.2f} | "
            f"{med / args.duration:.3f} | {verdict} |"
        )
    if startups:
        print("\n" + STARTUP_HEADER)
        print_startups(startups)


Startups = list[tuple[str, dict[str, list[float]]]]


def time_startups(apps: list[Path], repeats: int, timeout: float = 120.0) -> Startups:
    """Per app (and the reference first): its label and its wall and CPU seconds, each also as a multiple
    of the reference's in the same round. Each round runs the reference and then every app, in turn."""
    reference_label = '`python -c "import gradio"` (the reference)'
    rows: dict[str, dict[str, list[float]]] = {}

    def add(label: str, wall: float, cpu: float, reference: tuple[float, float]) -> None:
        row = rows.setdefault(label, {"wall": [], "cpu": [], "wall_x": [], "cpu_x": []})
        row["wall"].append(wall)
        row["cpu"].append(cpu)
        row["wall_x"].append(wall / reference[0])
        row["cpu_x"].append(cpu / reference[1])

    for _ in range(repeats):
        reference = reference_seconds()
        add(reference_label, *reference, reference)
        for app_file in apps:
            label = "python app.py" if app_file == REPO / "app.py" else f"python {app_file}"
            add(
                f"`{label}` (to the page answering)", *startup_seconds(app_file.resolve(), timeout), reference
            )
        logger.info(
            "start-up round: %s",
            ", ".join(f"{k} {v['wall'][-1]:.2f} s ({v['cpu'][-1]:.2f} s CPU)" for k, v in rows.items()),
        )
    return list(rows.items())


STARTUP_HEADER = (
    "| start-up | median s | min s | × `import gradio` | CPU s (median) | CPU × `import gradio` | target |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def print_startups(rows: Startups) -> None:
    for label, row in rows:
        med = statistics.median(row["wall"])
        verdict = ""
        if label.startswith("`python app.py"):
            verdict = f"≤ {STARTUP_TARGET_S:g} s " + (
                "✓" if med <= STARTUP_TARGET_S else f"✗ (+{med - STARTUP_TARGET_S:.2f} s)"
            )
        print(
            f"| {label} | {med:.2f} | {min(row['wall']):.2f} | {statistics.median(row['wall_x']):.2f} | "
            f"{statistics.median(row['cpu']):.2f} | {statistics.median(row['cpu_x']):.2f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
