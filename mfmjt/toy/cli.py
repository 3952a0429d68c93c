"""The ``mfmjt toy`` command group: ``extract`` (a feature store of toy scenes), ``evaluate`` (a model
on held-out toy scenes) and ``scene`` (write a few scenes as mp4 files to look at).

``mfmjt extract`` (synthetic form) and ``mfmjt evaluate`` use the same arguments and functions.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mfmjt.dataclass_args import add_dataclass_arguments, values_from_args

logger = logging.getLogger("mfmjt")


@dataclass(frozen=True)
class ExtractRunOptions:
    """How ``mfmjt toy extract`` runs, beyond the store's :class:`mfmjt.toy.extract.ExtractConfig`."""

    fit_items: int = field(default=300, metadata={"help": "scenes whose audio fits the codec"})
    codec: Path | None = field(default=None, metadata={"help": (
        "reuse this fitted codec (e.g. runs/store/codec.safetensors) instead of fitting one, so the "
        "latents share its space (to add scenes for a model trained on that store)")})  # fmt: skip
    threads: int = field(default=1, metadata={"help": "torch threads (1 is fastest on small CPUs)"})
    workers: int = field(default=1, metadata={"help": "processes encoding scenes (one per core)"})


def add_extract_arguments(ext: argparse.ArgumentParser) -> None:
    """Arguments of the synthetic store builder (``mfmjt toy extract``): one flag per field of
    :class:`mfmjt.toy.extract.ExtractConfig` and of :class:`ExtractRunOptions`."""
    from mfmjt.toy.extract import ExtractConfig

    add_dataclass_arguments(ext, ExtractConfig, with_defaults=True)
    add_dataclass_arguments(ext, ExtractRunOptions, with_defaults=True)


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

    options = ExtractRunOptions(**values_from_args(ExtractRunOptions, args))
    torch.set_num_threads(options.threads)
    # a flag left None (duration, workers from the parser shared with media) takes the field's default
    config = ExtractConfig(**values_from_args(ExtractConfig, args))
    if options.codec is not None:
        stack = offline_stack_with_codec(options.codec)
    else:
        stack = fit_offline_stack(config, n_fit=options.fit_items)
    extract_synthetic(config, stack, workers=options.workers)
    return 0


@dataclass(frozen=True)
class EvaluateOptions:
    """The options of ``mfmjt toy evaluate`` (and ``mfmjt evaluate``): the model, the held-out scenes and
    the sampling settings (:class:`mfmjt.toy.evaluate.EvalSettings`, whose defaults these are)."""

    model: str = field(default="default", metadata={"help": "'default', a model directory or a HF repo id"})
    n: int = field(default=32, metadata={"help": "held-out scenes (seeds from --first-scene)"})
    first_scene: int = field(default=1_000_000, metadata={"help": (
        "seed of the first scene (the held-out set; e.g. 2000000 for a disjoint validation set). "
        "Training scenes use seeds below 1000000")})  # fmt: skip
    duration: float = field(default=4.0, metadata={"help": "seconds per clip"})
    steps: int | None = field(default=None, metadata={"help": "sampling steps (default: the model's)"})
    cfg: float | None = field(default=None, metadata={
        "help": "ω (default: the model's at its steps, else 1.5 at one step, 4.5)"})  # fmt: skip
    guidance: str | None = field(default=None, metadata={
        "choices": ("standard", "scaled", "both"), "help": "default: the model's"})  # fmt: skip
    seed: int = field(
        default=0, metadata={"help": "sampling noise: scene s is generated with seed + s (not the scenes)"}
    )
    two_pass_guidance: bool = field(default=False, metadata={"store_true": True, "help": (
        "CFG's two forwards even for a model with guidance learnt in training")})  # fmt: skip
    no_caption: bool = field(default=False, metadata={
        "store_true": True, "help": "video only (default: caption as prompt)"})  # fmt: skip
    references: bool = field(default=False, metadata={
        "store_true": True, "help": "also score the real audio and its codec copy"})  # fmt: skip
    cache: str | None = field(
        default=None, metadata={"help": "scene cache (default $MFMJT_CACHE/eval_scenes)"}
    )
    device: str | None = field(default=None, metadata={"help": "e.g. cuda, cpu (default: cuda if present)"})
    threads: int = field(default=1, metadata={"help": "torch threads (1 is fastest on small CPUs)"})
    out: str | None = field(default=None, metadata={"help": "write all metrics as JSON here"})


def add_evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    """Arguments of the held-out evaluation (``mfmjt toy evaluate``): one flag per field of
    :class:`EvaluateOptions`."""
    add_dataclass_arguments(ev, EvaluateOptions, with_defaults=True)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a model on held-out toy scenes from parsed :func:`add_evaluate_arguments` arguments."""
    import torch

    from mfmjt.toy.evaluate import EvalSettings, run_evaluation, summary_lines

    o = EvaluateOptions(**values_from_args(EvaluateOptions, args))
    torch.set_num_threads(o.threads)
    settings = EvalSettings(
        o.steps,
        o.cfg,
        o.guidance,
        use_caption=not o.no_caption,
        seed=o.seed,
        guidance_in_network=False if o.two_pass_guidance else None,
    )
    result = run_evaluation(
        o.model,
        o.n,
        settings,
        duration=o.duration,
        cache_dir=o.cache,
        references=o.references,
        device=o.device,
        first_seed=o.first_scene,
    )
    for line in summary_lines(result):
        logger.info("%s", line)
    if o.out:
        Path(o.out).parent.mkdir(parents=True, exist_ok=True)
        Path(o.out).write_text(json.dumps(result, indent=2))
        logger.info("wrote %s", o.out)
    return 0


@dataclass(frozen=True)
class SceneOptions:
    """The options of ``mfmjt toy scene``."""

    seed: tuple[int, ...] = field(default=(0,), metadata={"nargs": "+", "help": "scene seeds"})
    duration: float = field(default=4.0, metadata={"help": "seconds per scene"})
    out: Path = field(default=Path("outputs"), metadata={"help": "folder for scene_<seed>.mp4"})


def add_scene_arguments(sc: argparse.ArgumentParser) -> None:
    """Arguments of ``mfmjt toy scene``: one flag per field of :class:`SceneOptions`."""
    add_dataclass_arguments(sc, SceneOptions, with_defaults=True)


def run_scene(args: argparse.Namespace) -> int:
    """Write the scenes of ``args.seed`` as mp4 files, logging each caption."""
    from mfmjt.toy.render import write_scene_mp4
    from mfmjt.toy.scene import make_scene
    from mfmjt.toy.specs import SceneConfig

    o = SceneOptions(**values_from_args(SceneOptions, args))
    for seed in o.seed:
        scene = make_scene(seed, SceneConfig(duration=o.duration))
        path = write_scene_mp4(scene, o.out / f"scene_{seed}.mp4")
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
