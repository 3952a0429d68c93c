"""Distillation in miniature: MeanFlow from data vs MeanFlow distilled from a flow-matching teacher.

All models share one architecture (the embedded default's: hidden 96, 2 joint + 6 audio-only blocks)
and one training store of synthetic scenes (seeds 0..). Stages (each resumable, outputs in --runs):

    python benchmarks/distill_in_miniature.py teacher-init   # default's weights, no guidance embedding
    # then, with the mfmjt CLI (see docs/distillation.md for the exact commands):
    #   teacher: flow matching from teacher-init; (a) MeanFlow from data and (b) distillation, both
    #   from the teacher, the same number of steps
    python benchmarks/distill_in_miniature.py report --n 64   # evaluate and write docs/distillation.md
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.distill_in_miniature")

REPO = Path(__file__).resolve().parents[1]


def teacher_init(out: Path) -> Path:
    """The embedded default's weights without its guidance embedding and with its Δt embedding
    folded away: a flow-matching starting point (it still has to be trained as one)."""
    from mfmjt.distill import fold_dt_embedding
    from mfmjt.model import MFMJTNetwork
    from mfmjt.model.network import GUIDANCE_EMBED_PREFIX, read_metadata

    src = REPO / "assets" / "default"
    default = fold_dt_embedding(MFMJTNetwork.from_pretrained(src))
    cfg = default.config.to_dict() | {"guidance_embed": False}
    from mfmjt.config import NetworkConfig

    net = MFMJTNetwork(NetworkConfig.from_dict(cfg))
    state = {k: v for k, v in default.state_dict().items() if not k.startswith(GUIDANCE_EMBED_PREFIX)}
    net.load_mmaudio_state_dict(state)
    meta = read_metadata(src)
    net.save_pretrained(
        out,
        objective="flow_matching",
        variant="tiny",
        lineage=[*meta.get("lineage", []), f"{out}: guidance embedding dropped, Δt embedding folded"],
        features=meta["features"],
    )
    for name in meta["features"].get("files", []):
        (out / name).write_bytes((src / name).read_bytes())
    logger.info("wrote %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["teacher-init", "fold", "report"])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "dim")
    parser.add_argument("--n", type=int, default=64, help="report scenes")
    parser.add_argument("--first-scene", type=int, default=3_000_000, help="report scenes' first seed")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "distillation.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.stage == "teacher-init":
        teacher_init(args.runs / "teacher_init")


if __name__ == "__main__":
    main()
