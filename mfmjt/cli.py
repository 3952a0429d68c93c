"""Command line: ``mfmjt generate | convert | extract | train | export | evaluate``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mfmjt.media import VIDEO_SUFFIXES

logger = logging.getLogger("mfmjt")


def _video_inputs(items: Sequence[str]) -> list[Path]:
    """Files as given; folders expand to the videos they hold (sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                logger.warning("no videos (%s) in %s", ", ".join(sorted(VIDEO_SUFFIXES)), path)
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _safe_stem(text: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in text.strip())[:60].strip("_")
    return stem or "audio"


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mfmjt.pipeline import load_pipeline

    videos = _video_inputs(args.video)
    if not videos and not args.prompt:
        logger.error("give --video (files or folders) and/or --prompt")
        return 2
    pipe = load_pipeline(
        args.model,
        device=args.device,
        max_duration=args.max_duration,
        precision=args.precision,
        compile=args.compile,
    )
    logger.info("model: %s", pipe.info())
    out = Path(args.out)
    settings = dict(
        prompt=args.prompt or "",
        negative_prompt=args.negative_prompt,
        duration=args.duration,
        steps=args.steps,
        cfg_strength=args.cfg,
        guidance=args.guidance,
        seed=args.seed,
    )
    failures = 0
    jobs: list[Path | None] = list(videos) if videos else [None]
    for video in tqdm(jobs, desc="generating", unit="clip", disable=len(jobs) < 2):
        name = video.name if video else repr(args.prompt)
        try:
            result = pipe.generate(video=video, **settings)
        except ValueError as err:  # unusable input: report, skip, go on
            failures += 1
            logger.error("skipped %s: %s", name, err)
            continue
        stem = video.stem if video else _safe_stem(args.prompt)
        written = pipe.save_audio(result, out, stem)
        if video is not None and not args.audio_only:
            written += pipe.mux(result, video, out, stem)
        if result.message:
            logger.warning("%s: %s", name, result.message)
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        logger.info("%s -> %s (%s; RTF %.3f)", name, ", ".join(str(p) for p in written), timing, result.rtf)
    if failures:
        logger.error("%d of %d inputs failed", failures, len(jobs))
    return 1 if failures else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mfmjt.hub import convert_command

    out = convert_command(args.checkpoint, args.out, variant=args.variant)
    logger.info("wrote %s", out)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from mfmjt.extract import ExtractConfig, extract_synthetic, fit_offline_stack, offline_stack_with_codec

    torch.set_num_threads(args.threads)
    config = ExtractConfig(
        out=Path(args.out),
        n_items=args.n_items,
        duration=args.duration,
        first_seed=args.first_seed,
        text_only_fraction=args.text_only_fraction,
    )
    if args.codec is not None:
        stack = offline_stack_with_codec(args.codec)
    else:
        stack = fit_offline_stack(config, n_fit=args.fit_items)
    extract_synthetic(config, stack, workers=args.workers)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from mfmjt.train import export_checkpoint

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    export_checkpoint(args.checkpoint, args.out, weights_dtype=dtype)
    return 0


def cmd_deepen(args: argparse.Namespace) -> int:
    from mfmjt.model.growth import deepen_model_dir

    deepen_model_dir(args.model, args.out, args.extra_blocks, seed=args.seed)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mfmjt.train import TrainConfig, train

    out = train(TrainConfig.from_args(args))
    logger.info("training output: %s", out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import torch

    from mfmjt.evaluate import EvalSettings, run_evaluation, summary_lines

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfmjt", description="MF-MJT video-to-audio and text-to-audio")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate audio for videos (or a prompt)")
    gen.add_argument("--video", nargs="*", default=[], help="video files and/or folders of videos")
    gen.add_argument("--prompt", default="", help="text prompt (alone: text-to-audio)")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument(
        "--duration", type=float, default=None, help="seconds (default: the video's length, capped)"
    )
    gen.add_argument("--steps", type=int, default=1)
    gen.add_argument(
        "--cfg", type=float, default=None, help="guidance strength ω (default 1.5 at one step, else 4.5)"
    )
    gen.add_argument("--guidance", choices=["standard", "scaled", "both"], default="scaled")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--model", default="default", help="'default', a registry name, a directory or a HF repo id"
    )
    gen.add_argument("--device", default=None)
    gen.add_argument("--max-duration", type=float, default=30.0)
    gen.add_argument("--audio-only", action="store_true", help="write audio files only, no mp4")
    gen.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default=None,
        help="network and encoders' precision (default auto: bf16 on CUDA, fp32 on CPU)",
    )
    gen.add_argument(
        "--compile", action="store_true", help="torch.compile the network (CUDA graphs), VAE and vocoder"
    )
    gen.add_argument("--out", default="outputs")
    gen.set_defaults(func=cmd_generate)

    conv = sub.add_parser("convert", help="MMAudio .pth network -> model.safetensors + config.json")
    conv.add_argument("checkpoint", help="MMAudio network .pth, or a registry name (mmaudio_small_16k)")
    conv.add_argument("out")
    conv.add_argument("--variant", default=None, help="network variant (default: inferred from shapes)")
    conv.set_defaults(func=cmd_convert)

    ext = sub.add_parser("extract", help="synthetic scenes -> feature store (with the fitted offline codec)")
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
    ext.set_defaults(func=cmd_extract)

    from mfmjt.train import add_train_arguments

    tr = sub.add_parser("train", help="train (or fine-tune) a network on a feature store (see mfmjt extract)")
    add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)

    exp = sub.add_parser("export", help="a training checkpoint's EMA network -> model directory")
    exp.add_argument("checkpoint", type=Path, help="e.g. runs/mf/checkpoint_last.pt")
    exp.add_argument("--out", type=Path, required=True, help="model directory to write")
    exp.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="storage type of the weights (float16 halves the file; they load as float32)",
    )
    exp.set_defaults(func=cmd_export)

    deep = sub.add_parser(
        "deepen", help="a model directory with more audio-only blocks, zero-gated (same outputs)"
    )
    deep.add_argument("model", type=Path, help="model directory, e.g. assets/default")
    deep.add_argument("--extra-blocks", type=int, required=True, help="audio-only blocks to append")
    deep.add_argument("--out", type=Path, required=True, help="model directory to write")
    deep.add_argument("--seed", type=int, default=0, help="initialisation of the new blocks' other weights")
    deep.set_defaults(func=cmd_deepen)

    ev = sub.add_parser("evaluate", help="onset F1, pitch, Fréchet distance, RTF on held-out scenes")
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
    ev.add_argument("--steps", type=int, default=1)
    ev.add_argument("--cfg", type=float, default=None, help="ω (default 1.5 at one step, else 4.5)")
    ev.add_argument("--guidance", choices=["standard", "scaled", "both"], default="scaled")
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
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if getattr(args, "cfg", 0) is None:
        args.cfg = 1.5 if args.steps == 1 else 4.5
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
