"""Command line: ``mfmjt generate | convert | extract | train | distill | export | deepen | score | toy``.

``mfmjt score`` scores generated audio in the paper's metrics (:mod:`mfmjt.scoring`, the ``eval``
extra). ``mfmjt evaluate`` and ``mfmjt extract`` without ``--videos``/``--audios``/``--prompts`` are
the toy domain's, kept as deprecated spellings of ``mfmjt toy evaluate`` and ``mfmjt toy extract``.
Every command that takes a model takes any name :func:`mfmjt.resolve.resolve_model` does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mfmjt.hub import WeightsUnavailableError
from mfmjt.media import VIDEO_SUFFIXES
from mfmjt.model_dir import SamplingSettings
from mfmjt.resolve import accepted_names
from mfmjt.toy.cli import add_evaluate_arguments, add_extract_arguments, add_toy_commands

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
        elif not path.exists():  # before the model loads: a typo costs nothing
            raise ValueError(f"{path}: no such video file or folder")
        else:
            paths.append(path)
    return paths


def _safe_stem(text: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in text.strip())[:60].strip("_")
    return stem or "audio"


class _StepBar:
    """A progress callback ``(done, total)`` drawn as a tqdm bar (shown when there are two steps or more:
    several sampling steps, or the windows of a long clip)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.name, unit="step", leave=False, disable=total < 2)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def sampling_settings(args: argparse.Namespace, recommended: SamplingSettings) -> tuple[int, float, str]:
    """(steps, ω, guidance) of ``mfmjt generate``: what the user gave, else the loaded model's
    recommendation (:meth:`mfmjt.request.Sampling.resolve`)."""
    from mfmjt.request import Sampling

    resolved = Sampling(args.steps, args.cfg, args.guidance).resolve(recommended)
    return resolved.steps, resolved.cfg_strength, resolved.guidance


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mfmjt.pipeline import load_pipeline

    videos = _video_inputs(args.video)
    if not videos and not args.prompt:
        raise ValueError("give --video (files or folders) and/or --prompt")
    pipe = load_pipeline(
        args.model,
        device=args.device,
        max_duration=args.max_duration,
        precision=args.precision,
        compile=args.compile,
    )
    logger.info("model: %s", pipe.info())
    out = Path(args.out)
    steps, cfg, guidance = sampling_settings(args, pipe.recommended)
    logger.info("sampling: %d step%s, ω %g, %s guidance", steps, "s" * (steps > 1), cfg, guidance)
    settings = dict(
        prompt=args.prompt or "",
        negative_prompt=args.negative_prompt,
        duration=args.duration,
        steps=steps,
        cfg_strength=cfg,
        guidance=guidance,
        seed=args.seed,
    )
    from mfmjt.pipeline import MAX_STEPS
    from mfmjt.request import GenerationRequest, Limits

    # the settings once, before any video: the same check as the pipeline and the demo
    GenerationRequest(**{**settings, "prompt": settings["prompt"] or "-"}).validate(
        Limits(max_steps=MAX_STEPS), pipe.recommended
    )
    failures = 0
    jobs: list[Path | None] = list(videos) if videos else [None]
    for video in tqdm(jobs, desc="generating", unit="clip", disable=len(jobs) < 2):
        name = video.name if video else repr(args.prompt)
        try:
            result = pipe.generate(video=video, progress=_StepBar(name), **settings)
        except ValueError as err:
            if len(jobs) == 1:  # the one input: main reports it in one line
                raise
            failures += 1  # one of several: report, skip, go on
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
    from mfmjt.resolve import convert_model

    out = convert_model(args.checkpoint, args.out, variant=args.variant)
    logger.info("wrote %s", out)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """``mfmjt extract``: media + caption tables (``--videos``/``--audios``), else toy scenes."""
    from mfmjt.data.extract_cli import run_media_extract, wants_media

    if wants_media(args):
        return run_media_extract(args)
    from mfmjt.toy.cli import run_extract

    logger.warning(
        "mfmjt extract without --videos/--audios/--prompts makes toy scenes: this spelling is deprecated, "
        "use mfmjt toy extract"
    )
    return run_extract(args)


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from mfmjt.train import export_checkpoint

    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    export_checkpoint(args.checkpoint, args.out, weights_dtype=dtype)
    return 0


def cmd_deepen(args: argparse.Namespace) -> int:
    from mfmjt.growth import deepen_model_dir

    deepen_model_dir(args.model, args.out, args.extra_blocks, seed=args.seed)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mfmjt.train import train, train_config_from_args

    out = train(train_config_from_args(args))
    logger.info("training output: %s", out)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from mfmjt.distill import config_from_args, distill

    out = distill(config_from_args(args))
    logger.info("distillation output: %s", out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``mfmjt evaluate``: the toy domain's held-out evaluation, same as ``mfmjt toy evaluate``."""
    from mfmjt.toy.cli import run_evaluate

    logger.warning(
        "mfmjt evaluate is the toy domain's evaluation: this spelling is deprecated, use mfmjt toy evaluate"
    )
    return run_evaluate(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfmjt", description="MF-MJT video-to-audio and text-to-audio")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level log messages")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of errors too (also {DEBUG_ENV}=1); without it an error is one line",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate audio for videos (or a prompt)")
    gen.add_argument("--video", nargs="*", default=[], help="video files and/or folders of videos")
    gen.add_argument("--prompt", default="", help="text prompt (alone: text-to-audio)")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument(
        "--duration", type=float, default=None, help="seconds (default: the video's length, capped)"
    )
    gen.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the model's, 1 for MeanFlow)"
    )
    gen.add_argument(
        "--cfg",
        type=float,
        default=None,
        help="guidance strength ω (default: the model's at its steps, else 1.5 at one step, 4.5 above)",
    )
    gen.add_argument(
        "--guidance", choices=["standard", "scaled", "both"], default=None, help="default: the model's"
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--model",
        default="default",
        help=accepted_names(),
    )
    gen.add_argument("--device", default=None)
    gen.add_argument(
        "--max-duration",
        type=float,
        default=300.0,
        help="seconds generated at most per input; clips longer than the model's training length are "
        "generated in overlapping windows (default 300)",
    )
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

    conv = sub.add_parser(
        "convert",
        help="any model (an MMAudio .pth or name, ...) -> a model directory (config.json + weights)",
    )
    conv.add_argument("checkpoint", help=f"the model: {accepted_names()}")
    conv.add_argument("out")
    conv.add_argument(
        "--variant", default=None, help="network variant of a checkpoint file (default: inferred from shapes)"
    )
    conv.set_defaults(func=cmd_convert)

    ext = sub.add_parser(
        "extract",
        help="media + captions -> feature store (without --videos/--audios/--prompts: toy scenes, deprecated "
        "spelling of mfmjt toy extract)",
    )
    add_extract_arguments(ext)
    ext.set_defaults(duration=None, workers=None)  # 4 s / 1 process for scenes, 8 s / 4 for media
    from mfmjt.data.extract_cli import add_media_arguments

    add_media_arguments(ext)
    ext.set_defaults(func=cmd_extract)

    from mfmjt.train import add_train_arguments

    tr = sub.add_parser("train", help="train (or fine-tune) a network on a feature store (see mfmjt extract)")
    add_train_arguments(tr)
    tr.add_argument(
        "--continue-flow-matching",
        action="store_true",
        help="with --init-from a flow-matching model: keep training it with its own objective instead of "
        "the default MeanFlow fine-tuning (docs/TRAINING.md)",
    )
    tr.set_defaults(func=cmd_train)

    from mfmjt.distill import add_distill_arguments

    dis = sub.add_parser(
        "distill", help="MeanFlow distillation of a flow-matching teacher into a one-step, guided student"
    )
    add_distill_arguments(dis)
    dis.set_defaults(func=cmd_distill)

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
    deep.add_argument("model", type=Path, help="model directory, e.g. mfmjt/assets/default")
    deep.add_argument("--extra-blocks", type=int, required=True, help="audio-only blocks to append")
    deep.add_argument("--out", type=Path, required=True, help="model directory to write")
    deep.add_argument("--seed", type=int, default=0, help="initialisation of the new blocks' other weights")
    deep.set_defaults(func=cmd_deepen)

    ev = sub.add_parser(
        "evaluate", help="deprecated spelling of mfmjt toy evaluate (the toy domain's metrics)"
    )
    add_evaluate_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    add_toy_commands(sub)
    from mfmjt.scoring.cli import add_score_command

    add_score_command(sub)
    return parser


# Errors a user can cause (a missing or unusable file, a bad name, flag or value, weights that cannot be
# fetched, too little memory): reported in one line on stderr with a non-zero exit. Anything else is a
# bug and keeps its traceback; --debug (or MFMJT_DEBUG=1) shows the traceback of user errors too.
DEBUG_ENV = "MFMJT_DEBUG"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MemoryError, WeightsUnavailableError)


def error_text(err: BaseException) -> str:
    """What went wrong, for a person: the message (a bare OSError names its file and reason)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    text = str(err).strip()
    if isinstance(err, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"mfmjt {args.command}: error: {error_text(err)}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1  # 2: a bad input or option, as argparse's
    except KeyboardInterrupt:
        print(f"mfmjt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
