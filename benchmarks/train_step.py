"""Time of one MF-MJT training step (forward, backward, AdamW, EMA) and its peak memory.

Random features of the stores' shapes (8 s at 16 kHz by default), the training recipe of the variant
(MeanFlow objective, adaptive loss, condition dropout, the same step function as ``mfmjt train``),
no data loading. Divide the 400k steps of the recipe by what it prints to get the training time
(see docs/TRAINING.md, "How long training takes").

    python benchmarks/train_step.py --variant small_16k --batch-size 64 --device cuda --bf16
    python benchmarks/train_step.py --variant small_16k --batch-size 2 --steps 3   # CPU check
    python benchmarks/train_step.py --objective train distill ...   # both, side by side

``--objective distill`` times a step of ``mfmjt distill``'s default recipe instead: the frozen teacher's
guided velocity (two teacher forwards on the guided rows), the student's MeanFlow loss with its JVP
and the one-step regression onto (random stand-ins for) the teacher's ODE endpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from mfmjt.config import SequenceLengths
from mfmjt.train import _Dist, _new_state, _train_step
from mfmjt.train_config import TrainConfig

logger = logging.getLogger("train_step")


def random_batch(config: TrainConfig, duration: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One batch of random features with the shapes a store of ``duration``-second clips holds."""
    net = config.network_config()
    lengths = SequenceLengths.for_duration(duration)
    b = config.batch_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(b, *shape, generator=generator)

    return {
        "latent_mean": rand(lengths.latent, net.latent_dim),
        "latent_std": rand(lengths.latent, net.latent_dim).abs() * 0.1,
        "clip_f": rand(lengths.clip, net.clip_dim),
        "sync_f": rand(lengths.sync, net.sync_dim),
        "text_f": rand(net.text_seq_len, net.text_dim),
        "has_video": torch.ones(b, dtype=torch.bool),
    }


def _distill_setup(config: TrainConfig, batch: dict[str, torch.Tensor], device: torch.device) -> tuple:
    """(config, build, loss) of a distillation step: mfmjt distill's default recipe, a random
    frozen teacher of the variant and random endpoints of the batch's shape."""
    import argparse as _argparse

    import numpy as np

    from mfmjt.distill import (
        DistillationLoss,
        EndpointConfig,
        add_distill_arguments,
        config_from_args,
        fold_dt_embedding,
        student_from_teacher,
    )
    from mfmjt.model import MFMJTNetwork

    parser = add_distill_arguments(_argparse.ArgumentParser())
    defaults = config_from_args(parser.parse_args(["--teacher", "-", "--store", "-", "--out", "-"]))
    config = replace(config, meanflow=defaults.train.meanflow, network_overrides={"guidance_embed": True})
    teacher = fold_dt_embedding(MFMJTNetwork(replace(config.network_config(), guidance_embed=False)))
    teacher = teacher.to(device).eval().requires_grad_(False)
    b, (length, dim) = batch["latent_mean"].shape[0], batch["latent_mean"].shape[1:]
    endpoints = np.random.default_rng(0).standard_normal((b, 1, 2, length, dim)).astype(np.float32)
    batch["index"] = torch.arange(b)
    ec = replace(defaults.endpoints, noises=1) if defaults.endpoints.weight > 0 else EndpointConfig(1.0, 1)
    loss = DistillationLoss(
        teacher, meanflow_weight=defaults.meanflow_weight, endpoints=endpoints, endpoint_config=ec
    )
    return config, lambda *a, **k: student_from_teacher(teacher), loss


def measure(args: argparse.Namespace, objective: str = "train") -> dict[str, object]:
    device = torch.device(args.device)
    config = TrainConfig(
        store=("(random)",),
        out_dir=Path("(unused)"),
        variant=args.variant,
        batch_size=args.batch_size,
        bf16=args.bf16,
        steps=400_000 if args.variant != "tiny" else 10_000,
        device=args.device,
    )
    info = _Dist(rank=0, world_size=1, local_rank=0, device=device)
    batch = random_batch(config, args.duration, torch.Generator().manual_seed(0))
    build, loss = None, None
    if objective == "distill":
        config, build, loss = _distill_setup(config, batch, device)
    # build_network wants stores only for latent statistics / empty text; init_from-free, stats off
    if build is None:
        state = _new_state(config, [], info, resuming=True)  # type: ignore[arg-type]
    else:
        state = _new_state(config, [], info, resuming=True, build=build)  # type: ignore[arg-type]
    net = state.network
    params = [p for p in net.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for step in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        _train_step(net, params, batch, config, state.generator, autocast, info, loss)
        state.optimizer.step()
        state.scheduler.step()
        state.ema.update(net)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        logger.info("step %d: %.3f s", step, time.perf_counter() - start)
    result: dict[str, object] = {
        "objective": objective,
        "variant": args.variant,
        "batch_size": args.batch_size,
        "duration": args.duration,
        "device": str(device),
        "bf16": config.bf16,
        "parameters_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "step_s_median": round(statistics.median(times), 4),
        "step_s_mean": round(statistics.fmean(times), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result["hours_per_400k_steps"] = round(400_000 * float(result["step_s_median"]) / 3600, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="small_16k")
    parser.add_argument("--batch-size", type=int, default=64, help="per GPU (the paper: 64)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per clip (MMAudio: 8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--objective", nargs="+", choices=["train", "distill"], default=["train"],
        help="MeanFlow training (mfmjt train's defaults) and/or mfmjt distill's default step",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure(args, objective) for objective in args.objective]
    for result in results:
        logger.info("%s", json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n")


if __name__ == "__main__":
    main()
