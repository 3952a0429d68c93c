"""Sampler speed of the paper-size network (small_16k, random weights) on an 8 s clip.

Times 1 vs 25 steps with guidance off (ω=1), standard, and both (standard + scaled from shared
forwards), in float32 and bfloat16, all in one run, and prints a markdown table with the real-time
factor (RTF = seconds / 8 s of audio) and each row's time relative to one unguided fp32 step.

    python benchmarks/sampler.py                       # CPU
    python benchmarks/sampler.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import torch

from mfmjt.config import SequenceLengths
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.sampler import sample

logger = logging.getLogger("benchmarks.sampler")


@dataclass(frozen=True)
class Case:
    steps: int
    guidance: str  # "off" | "standard" | "both"
    dtype: torch.dtype


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(
    net: MFMJTNetwork, case: Case, lengths: SequenceLengths, device: torch.device, repeats: int
) -> float:
    cfg = net.config
    g = torch.Generator(device=device).manual_seed(0)
    clip_f = torch.randn(1, lengths.clip, cfg.clip_dim, generator=g, device=device)
    sync_f = torch.randn(1, lengths.sync, cfg.sync_dim, generator=g, device=device)
    text_f = torch.randn(1, cfg.text_seq_len, cfg.text_dim, generator=g, device=device)
    noise = torch.randn(1, lengths.latent, cfg.latent_dim, generator=g, device=device)
    w = 1.0 if case.guidance == "off" else 4.5
    mode = "standard" if case.guidance == "off" else case.guidance
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            cond = net.preprocess_conditions(clip_f, sync_f, text_f, lengths.latent)
            uncond = net.empty_conditions(1, lengths.latent, lengths.clip, lengths.sync) if w != 1 else None
            sample(net, noise, cond, uncond, steps=case.steps, cfg_strength=w, guidance=mode)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)  # best of N: least disturbed by other load on the machine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--variant", default="small_16k")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per case (best of N); 25-step cases run once on CPU"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (GPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device(args.device)
    lengths = SequenceLengths.for_duration(args.duration)
    dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    base = MFMJTNetwork(NetworkConfig.variant(args.variant)).eval()
    params = sum(p.numel() for p in base.parameters()) / 1e6
    cases = [Case(s, g, d) for d in dtypes for s in (1, 25) for g in ("off", "standard", "both")]
    results: dict[Case, float] = {}
    for dtype in dtypes:
        net = MFMJTNetwork(base.config).eval().to(device=device, dtype=dtype)
        net.load_state_dict(base.state_dict())
        if args.compile:
            net.inner_velocity = torch.compile(net.inner_velocity, dynamic=False)
        time_case(net, Case(1, "both", dtype), lengths, device, 1)  # warm-up (and compilation)
        for case in (c for c in cases if c.dtype == dtype):
            repeats = args.repeats if (case.steps == 1 or device.type == "cuda") else 1
            results[case] = time_case(net, case, lengths, device, repeats)
            logger.info("%s", f"{case}: {results[case]:.3f} s")

    ref = results[Case(1, "off", dtypes[0])]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"\n{args.variant} ({params:.1f}M parameters), {args.duration:g} s clip, {name}, "
        f"torch {torch.__version__}"
        f"{', torch.compile' if args.compile else ''}\n"
    )
    print("| dtype | steps | guidance | forwards | seconds | RTF | × 1-step fp32 no-CFG |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        n = case.steps
        if case.guidance == "off":
            batch_note = f"{n} × batch 1"
        elif case.guidance == "standard":
            batch_note = f"{n} × batch 2"
        else:
            batch_note = "1 × batch 2" + (f" + {n - 1} × batch 4" if n > 1 else "")
        secs = results[case]
        print(
            f"| {str(case.dtype).removeprefix('torch.')} | {case.steps} | {case.guidance} | {batch_note} | "
            f"{secs:.3f} | {secs / args.duration:.4f} | {secs / ref:.2f} |"
        )


if __name__ == "__main__":
    main()
