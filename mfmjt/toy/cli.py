"""The ``mfmjt toy`` command group: ``extract`` (a feature store of toy scenes), ``evaluate`` (a model
on held-out toy scenes) and ``scene`` (write a few scenes as mp4 files to look at).

``mfmjt extract`` (synthetic form) and ``mfmjt evaluate`` use the same arguments and functions.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger("mfmjt")


def add_extract_arguments(ext: argparse.ArgumentParser) -> None:
    """Arguments of the synthetic store builder (``mfmjt toy extract``)."""
    ext.add_argument("--out", required=True, help="feature store directory (must not exist or be empty)")
    ext.add_argument("--n-items", type=int, default=1500)
    ext.add_argument("--duration", type=float, default=4.0, help="seconds per item")
    ext.add_argument("--first-seed", type=int, default=0, help="scene seeds first_seed .. first_seed+n-1")
    ext.add_argument("--text-only-fraction", type=float, default=0.1)
    ext.add_argument("--fit-items", type=int, default=300, help="scenes whose audio fits the codec")
    ext.add_argument(
        "--codec",
        type=Path,
        default=None,
        help="reuse this fitted codec (e.g. runs/store/codec.safetensors) instead of fitting one, so the "
        "latents share its space (to add scenes for a model trained on that store)",
    )
    ext.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on small CPUs)")
    ext.add_argument("--workers", type=int, default=1, help="processes encoding scenes (one per core)")


def run_extract(args: argparse.Namespace) -> int:
    """Build a feature store of toy scenes from parsed :func:`add_extract_arguments` arguments
    (``duration`` and ``workers`` may be None, as a parser shared with real-media extraction leaves
    them: 4 s and one process)."""
    import torch

    from mfmjt.toy.extract import (
        ExtractConfig,
        extract_synthetic,
        fit_offline_stack,
        offline_stack_with_codec,
    )

    torch.set_num_threads(args.threads)
    config = ExtractConfig(
        out=Path(args.out),
        n_items=args.n_items,
        duration=4.0 if args.duration is None else args.duration,
        first_seed=args.first_seed,
        text_only_fraction=args.text_only_fraction,
    )
    if args.codec is not None:
        stack = offline_stack_with_codec(args.codec)
    else:
        stack = fit_offline_stack(config, n_fit=args.fit_items)
    extract_synthetic(config, stack, workers=1 if args.workers is None else args.workers)
    return 0


def add_evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    """Arguments of the held-out evaluation (``mfmjt toy evaluate``)."""
    ev.add_argument("--model", default="default", help="'default', a model directory or a HF repo id")
    ev.add_argument("--n", type=int, default=32, help="held-out scenes (seeds from --first-scene)")
    ev.add_argument(
        "--first-scene",
        type=int,
        default=1_000_000,
        help="seed of the first scene (default 1000000, the held-out set; e.g. 2000000 for a disjoint "
        "validation set). Training scenes use seeds below 1000000",
    )
    ev.add_argument("--duration", type=float, default=4.0, help="seconds per clip")
    ev.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    ev.add_argument(
        "--cfg",
        type=float,
        default=None,
        help="ω (default: the model's at its steps, else 1.5 at one step, 4.5)",
    )
    ev.add_argument(
        "--guidance", choices=["standard", "scaled", "both"], default=None, help="default: the model's"
    )
    ev.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling noise: scene s is generated with seed + s (not the scenes)",
    )
    ev.add_argument(
        "--two-pass-guidance",
        action="store_true",
        help="CFG's two forwards even for a model with guidance learnt in training",
    )
    ev.add_argument("--no-caption", action="store_true", help="video only (default: caption as prompt)")
    ev.add_argument("--references", action="store_true", help="also score the real audio and its codec copy")
    ev.add_argument("--cache", default=None, help="scene cache (default $MFMJT_CACHE/eval_scenes)")
    ev.add_argument("--device", default=None)
    ev.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on small CPUs)")
    ev.add_argument("--out", default=None, help="write all metrics as JSON here")


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a model on held-out toy scenes from parsed :func:`add_evaluate_arguments` arguments."""
    import torch

    from mfmjt.toy.evaluate import EvalSettings, run_evaluation, summary_lines

    torch.set_num_threads(args.threads)
    settings = EvalSettings(
        args.steps,
        args.cfg,
        args.guidance,
        use_caption=not args.no_caption,
        seed=args.seed,
        guidance_in_network=False if args.two_pass_guidance else None,
    )
    result = run_evaluation(
        args.model,
        args.n,
        settings,
        duration=args.duration,
        cache_dir=args.cache,
        references=args.references,
        device=args.device,
        first_seed=args.first_scene,
    )
    for line in summary_lines(result):
        logger.info("%s", line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        logger.info("wrote %s", args.out)
    return 0


def add_scene_arguments(sc: argparse.ArgumentParser) -> None:
    sc.add_argument("--seed", type=int, nargs="+", default=[0], help="scene seeds")
    sc.add_argument("--duration", type=float, default=4.0, help="seconds per scene")
    sc.add_argument("--out", type=Path, default=Path("outputs"), help="folder for scene_<seed>.mp4")


def run_scene(args: argparse.Namespace) -> int:
    """Write the scenes of ``args.seed`` as mp4 files, logging each caption."""
    from mfmjt.toy.render import write_scene_mp4
    from mfmjt.toy.scene import make_scene
    from mfmjt.toy.specs import SceneConfig

    for seed in args.seed:
        scene = make_scene(seed, SceneConfig(duration=args.duration))
        path = write_scene_mp4(scene, args.out / f"scene_{seed}.mp4")
        logger.info("%s: %s", path, scene.caption)
    return 0


def add_toy_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``mfmjt toy {extract,evaluate,scene}`` to the top-level subcommands."""
    toy = sub.add_parser("toy", help="the synthetic toy domain: extract, evaluate, scene")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True)
    ext = toy_sub.add_parser("extract", help="toy scenes -> feature store (with the fitted offline codec)")
    add_extract_arguments(ext)
    ext.set_defaults(func=run_extract)
    ev = toy_sub.add_parser("evaluate", help="onset F1, pitch, Fréchet distance, RTF on held-out scenes")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=run_evaluate)
    sc = toy_sub.add_parser("scene", help="write toy scenes as mp4 files (video, soundtrack, caption)")
    add_scene_arguments(sc)
    sc.set_defaults(func=run_scene)
