"""The whole training route at full size, through files only, with random weights: time and peak memory.

Stages (each a separate process, timed; peak resident memory from ``wait4``: the largest of the
process and its child processes):

1. ``weights``: random-weight files of the real layouts and sizes: Synchformer
   (``synchformer_state_dict.pth``), the 16 kHz VAE (``v1-16.pth``), BigVGAN 16k (``best_netG.pt``,
   ``{"generator": ...}`` with weight norm) in a folder read through ``MFMJT_WEIGHTS_DIR``, and CLIP
   DFN5B ViT-H/14-384 (open_clip's ``ViT-H-14-378-quickgelu``, no pretrained weights; stored as
   float16 to halve the file) as a snapshot of ``apple/DFN5B-CLIP-ViT-H-14-384`` in a private Hugging
   Face cache, read offline. The md5s of MMAudio's real files cannot match random files: this script
   records the random files as verified in its own private ``MFMJT_CACHE`` (the memo
   :func:`mfmjt.hub.resolve_file` keeps of checked files), so the unchanged loading path accepts
   them. Nothing else is bypassed, and no user cache is touched. Also an MMAudio-layout ``.pth`` of a
   random ``small_16k`` network (MMAudio's keys: no Δt embedder).
2. ``scenes``: synthetic scenes as mp4 files with their audio track + an ``id``/``label`` table.
3. ``python -m mfmjt extract --videos ... --tsv ... --features mmaudio-16k``.
4. ``python -m mfmjt train --variant small_16k --init-from <the .pth> --steps 3``.
5. ``python -m mfmjt export``.
6. ``load_pipeline(model dir).generate(video)`` (one step).

    python benchmarks/full_size_route.py --work runs/full_size_route --clips 2 --duration 2

CPU only by default (``--device cuda`` moves extraction, training and generation). Writes
``<work>/results.json`` and logs a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("full_size_route")

CLIP_REPO = "apple/DFN5B-CLIP-ViT-H-14-384"
CLIP_ARCH = "ViT-H-14-378-quickgelu"
SNAPSHOT = "0" * 40  # the commit name of the stand-in snapshot


def environment(work: Path, threads: int) -> dict[str, str]:
    """The variables every stage runs with: private weights folder, md5 memo and HF cache, offline."""
    env = dict(os.environ)
    env.update(
        MFMJT_WEIGHTS_DIR=str(work / "weights"),
        MFMJT_CACHE=str(work / "cache"),
        HF_HUB_CACHE=str(work / "hf"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return env


# ------------------------------------------------------------------------------------- stages
def stage_weights(work: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from mfmjt.config import NetworkConfig
    from mfmjt.features.synchformer import SynchformerConfig, SynchformerEncoder
    from mfmjt.features.vae import VAE
    from mfmjt.features.vocoder import BigVGANVocoder
    from mfmjt.hub import WEIGHT_FILES, _remember_verified, default_cache_dir
    from mfmjt.model.network import DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX, MFMJTNetwork

    torch.manual_seed(0)
    folder = work / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "synchformer": lambda: SynchformerEncoder(SynchformerConfig()).state_dict(),
        "vae_16k": lambda: VAE("16k").state_dict(),
        "bigvgan_16k": lambda: {"generator": BigVGANVocoder("16k", weight_norm=True).state_dict()},
    }
    for name, make in files.items():
        entry = WEIGHT_FILES[name]
        path = folder / entry.filename
        torch.save(make(), path)
        _remember_verified(path, entry.md5, default_cache_dir())  # random stand-in, see the docstring
        logger.info("%s: %.0f MiB", path.name, path.stat().st_size / 2**20)

    snapshot = work / "hf" / f"models--{CLIP_REPO.replace('/', '--')}"
    (snapshot / "refs").mkdir(parents=True, exist_ok=True)
    (snapshot / "refs" / "main").write_text(SNAPSHOT)
    snap = snapshot / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    model_cfg = open_clip.get_model_config(CLIP_ARCH)
    preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (snap / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {**preprocess, "image_size": 378}})
    )
    clip = open_clip.create_model(CLIP_ARCH, pretrained=None)
    state = {k: v.detach().half().contiguous() for k, v in clip.state_dict().items()}
    del clip
    save_file(state, str(snap / "open_clip_model.safetensors"))
    logger.info("CLIP %s: %.0f MiB", CLIP_ARCH, (snap / "open_clip_model.safetensors").stat().st_size / 2**20)

    net = MFMJTNetwork(NetworkConfig.variant("small_16k"))
    mmaudio = {
        k: v
        for k, v in net.state_dict().items()
        if not k.startswith((DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX))
    }
    torch.save(mmaudio, work / "mmaudio_small_16k_random.pth")


def stage_scenes(work: Path, clips: int, duration: float) -> None:
    from mfmjt.toy.scene_files import write_scene_files

    written = write_scene_files(work / "scenes", range(clips), duration=duration + 0.2)
    if len(written.ids) < clips:
        raise SystemExit(f"only {len(written.ids)} of {clips} scenes are audible")


def stage_generate(work: Path, duration: float, device: str) -> None:
    import numpy as np

    from mfmjt.pipeline import load_pipeline

    pipe = load_pipeline(str(work / "model"), device=device)
    video = sorted((work / "scenes" / "media").glob("*.mp4"))[0]
    result = pipe.generate(video=video, prompt="a ball bounces", duration=duration)
    audio = next(iter(result.audio.values()))
    if not np.isfinite(audio).all():
        raise SystemExit("the generated audio is not finite")
    timing = {k: round(v, 3) for k, v in result.timings.items()}
    logger.info(
        "generated %.2f s at %d Hz; timings %s",
        audio.shape[0] / result.sample_rate,
        result.sample_rate,
        timing,
    )
    (work / "generate_timings.json").write_text(json.dumps(timing))


# ------------------------------------------------------------------------------------- driver
def run_stage(name: str, command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run one stage: its seconds and peak resident memory (GiB, largest of the process and children)."""
    logger.info("%s: %s", name, " ".join(command))
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n===== {name}: {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"stage {name} failed with exit code {code}; see {log}")
    peak = usage.ru_maxrss / 2**20  # KiB -> GiB
    logger.info("%s: %.1f s, peak %.2f GiB", name, seconds, peak)
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/full_size_route"))
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per clip")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stage", choices=["weights", "scenes", "generate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = args.work.resolve()

    if args.stage == "weights":
        return stage_weights(work)
    if args.stage == "scenes":
        return stage_scenes(work, args.clips, args.duration)
    if args.stage == "generate":
        return stage_generate(work, args.duration, args.device)

    work.mkdir(parents=True, exist_ok=True)
    env = environment(work, args.threads)
    log = work / "stages.log"
    me = [sys.executable, str(Path(__file__).resolve()), "--work", str(work)]
    mfmjt = [sys.executable, "-m", "mfmjt"]
    shape = ["--clips", str(args.clips), "--duration", str(args.duration)]
    stages = {
        "random full-size weights": [*me, "--stage", "weights"],
        "scenes -> mp4 + tsv": [*me, "--stage", "scenes", *shape],
        "extract (mmaudio-16k)": [*mfmjt, "extract", "--videos", str(work / "scenes" / "media"),
                                  "--tsv", str(work / "scenes" / "set.tsv"), "--out", str(work / "store"),
                                  "--features", "mmaudio-16k", "--duration", str(args.duration),
                                  "--device", args.device, "--workers", "1", "--batch-size", str(args.clips)],
        f"train small_16k, {args.steps} steps": [*mfmjt, "train", "--store", str(work / "store"),
                                                 "--out", str(work / "run"), "--variant", "small_16k",
                                                 "--init-from", str(work / "mmaudio_small_16k_random.pth"),
                                                 "--steps", str(args.steps), "--batch-size", str(args.clips),
                                                 "--device", args.device, "--no-progress", "--no-resume",
                                                 *(["--no-bf16"] if args.device == "cpu" else [])],
        "export": [*mfmjt, "export", str(work / "run" / "checkpoint_last.pt"), "--out", str(work / "model")],
        "load_pipeline + generate (1 step)": [*me, "--stage", "generate", *shape, "--device", args.device],
    }  # fmt: skip
    results = {name: run_stage(name, command, env, log) for name, command in stages.items()}
    summary = {"clips": args.clips, "duration": args.duration, "device": args.device, "threads": args.threads}
    (work / "results.json").write_text(json.dumps({**summary, "stages": results}, indent=2))
    lines = ["| stage | seconds | peak memory (GiB) |", "|---|---|---|"]
    lines += [f"| {name} | {r['seconds']} | {r['peak_rss_gib']} |" for name, r in results.items()]
    logger.info("%s\n%s", summary, "\n".join(lines))


if __name__ == "__main__":
    main()
