"""Distillation in miniature: MeanFlow from data vs MeanFlow distilled from a flow-matching teacher.

All models share one architecture (the embedded default's: hidden 96, 2 joint + 6 audio-only blocks)
and one training store of synthetic scenes (seeds 0..). Stages (outputs under --runs):

    python benchmarks/distill_in_miniature.py teacher-init   # default's weights, no guidance embedding
    # train the teacher with `mfmjt train --mean-flow-ratio 0 --init-from runs/dim/teacher_init`
    python benchmarks/distill_in_miniature.py fold           # teacher/final -> teacher/folded (Δt-free)
    # (a) `mfmjt train --init-from runs/dim/teacher/folded ...`, (b) `mfmjt distill --teacher ...`
    python benchmarks/distill_in_miniature.py report --n 48 --first-scene 3000000   # [--export final100]

``report`` evaluates every case that exists (teacher at 25 and 1 steps, (a) and (b) at one step),
keeps the results in ``runs/dim/report.json`` (cases already there are not run again) and prints the
table behind docs/distillation.md, which gives the exact commands and the measured numbers.
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
    from mfmjt.model.network import GUIDANCE_EMBED_PREFIX
    from mfmjt.model_dir import load_network, read_metadata, save_network
    from mfmjt.pipeline import default_model_dir

    src = default_model_dir()
    default = fold_dt_embedding(load_network(src))
    cfg = default.config.to_dict() | {"guidance_embed": False}
    from mfmjt.config import NetworkConfig

    net = MFMJTNetwork(NetworkConfig.from_dict(cfg))
    state = {k: v for k, v in default.state_dict().items() if not k.startswith(GUIDANCE_EMBED_PREFIX)}
    net.load_mmaudio_state_dict(state)
    meta = read_metadata(src)
    save_network(
        net,
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


def fold(model_dir: Path, out: Path) -> Path:
    """A copy of a flow-matching model with its Δt embedding folded away (exactly its Δt = 0 self at
    every Δt), as distillation sees the teacher; the samplers pass Δt = step size to every model."""
    from mfmjt.distill import fold_dt_embedding
    from mfmjt.model_dir import load_network, read_metadata, save_network

    meta = read_metadata(model_dir)
    meta.pop("network")
    net = fold_dt_embedding(load_network(model_dir))
    save_network(net, out, **meta)
    for name in meta.get("features", {}).get("files", []):
        (out / name).write_bytes((model_dir / name).read_bytes())
    logger.info("wrote %s", out)
    return out


# (label, model directory under --runs, steps, ω, guidance evaluated with)
CASES: list[tuple[str, str, str, int]] = [
    ("(c) flow-matching teacher, 25 steps", "teacher/folded", "teacher", 25),
    ("(c) flow-matching teacher, 1 step", "teacher/folded", "teacher", 1),
    ("(a) MeanFlow from data, 1 step", "meanflow_data/{export}", "meanflow_data", 1),
    ("(b) MeanFlow distilled from (c), 1 step", "distilled/{export}", "distilled", 1),
]


def _training_cost(run: Path, upto: int | None = None) -> dict[str, Any] | None:
    """Steps, batch and wall-clock minutes of a run up to step ``upto`` (resumed sessions summed:
    ``elapsed`` restarts in each)."""
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line]
    records = [r for r in records if upto is None or r["step"] <= upto]
    seconds, last = 0.0, 0.0
    for record in records:
        if record["elapsed"] < last:  # a new session
            seconds += last
        last = record["elapsed"]
    seconds += last
    cfg = json.loads((run / "train_config.json").read_text())
    return {"steps": records[-1]["step"], "batch": cfg["batch_size"], "minutes": seconds / 60}


def report(
    runs: Path, n: int, first_scene: int, cfg: float, out_json: Path, export: str = "final"
) -> dict[str, Any]:
    """Evaluate every case that exists on ``n`` scenes from ``first_scene``; results to ``out_json``
    (cases already there are not evaluated again)."""
    from mfmjt.evaluate import EvalSettings, evaluate_model, held_out_scenes
    from mfmjt.pipeline import load_pipeline

    results: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    scenes = held_out_scenes(n, None, 4.0, first_seed=first_scene)
    for label, model, _run, steps in CASES:
        model = model.format(export=export)
        key = f"{label} | {model} | n={n} | first={first_scene} | ω={cfg:g}"
        done = (label, model, n, first_scene, cfg)
        fields = ("label", "model", "n", "first_scene", "cfg")
        if any(tuple(v[f] for f in fields) == done for v in results.values()):
            continue
        if not (runs / model / "config.json").is_file():
            logger.warning("skipped %s: no model at %s", label, runs / model)
            continue
        start = time.perf_counter()
        pipe = load_pipeline(str(runs / model), device="cpu")
        result = evaluate_model(pipe, scenes, EvalSettings(steps=steps, cfg=cfg, guidance="scaled"))
        results[key] = {
            "label": label,
            "model": model,
            "steps": steps,
            "cfg": cfg,
            "n": n,
            "first_scene": first_scene,
            "seconds": time.perf_counter() - start,
            "rtf_generation": result["rtf_generation"],
            "metrics": result["modes"]["scaled"],
        }
        out_json.write_text(json.dumps(results, indent=2))
        shown = {k: results[key]["metrics"][k] for k in ("onset_f1", "offset_ms", "frechet_distance")}
        logger.info("%s: %s", label, shown)
    return results


def markdown_table(results: dict[str, Any], runs: Path) -> str:
    rows = [
        "| model | steps | onset F1 | offset (ms) | FD | RTF (generation) | training |",
        "|---|---|---|---|---|---|---|",
    ]
    for value in results.values():
        m = value["metrics"]
        step = json.loads((runs / value["model"] / "config.json").read_text()).get("step")
        cost = _training_cost(runs / value["model"].split("/")[0], step)
        train = (
            "–"
            if cost is None
            else f"{cost['steps']} steps of batch {cost['batch']}, {cost['minutes']:.0f} min"
        )
        rows.append(
            f"| {value['label']} | {value['steps']} | {m['onset_f1']:.3f} | {m['offset_ms']:.1f} | "
            f"{m['frechet_distance']:.2f} | {value['rtf_generation']:.4f} | {train} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["teacher-init", "fold", "report"])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "dim")
    parser.add_argument("--n", type=int, default=64, help="report scenes")
    parser.add_argument("--first-scene", type=int, default=3_000_000, help="report scenes' first seed")
    parser.add_argument("--export", default="final", help="student export folder in the run directories")
    parser.add_argument("--cfg", type=float, default=1.5, help="ω of every case (scaled CFG)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.stage == "teacher-init":
        teacher_init(args.runs / "teacher_init")
    elif args.stage == "fold":
        fold(args.runs / "teacher" / "final", args.runs / "teacher" / "folded")
    else:
        out_json = args.runs / "report.json"
        results = report(args.runs, args.n, args.first_scene, args.cfg, out_json, args.export)
        print(markdown_table(results, args.runs))
        print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
