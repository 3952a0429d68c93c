"""``mfmjt score``: the paper's metrics over folders of real audio, or generate-then-score with a model.

    mfmjt score --generated gen/ --reference ref/ [--videos vids/] [--captions caps.tsv] --out report.json
    mfmjt score --model default --videos vids/ --reference ref/ --out report.json

The parser is built here (argparse only); the scorer, the extractors and the pipeline are imported
when the command runs, so ``mfmjt --help`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("mfmjt")


def add_score_command(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mfmjt score`` on the CLI's subcommands."""
    p = sub.add_parser(
        "score",
        help="FAD, FD, KL, IS, IB, DeSync, CLAP (and RTF with --model) of generated audio "
        "(docs/EVALUATION.md)",
        description="Score generated audio in the paper's metrics. Files are matched by name (without the "
        "extension) across --generated, --reference, --videos and the --captions table.",
    )
    p.add_argument(
        "--generated",
        type=Path,
        default=None,
        help="folder of generated audio (wav, flac, mp3, ... or videos with sound); with --model: "
        "where the generated audio is written (default: <out>_audio/)",
    )
    p.add_argument(
        "--reference", type=Path, default=None, help="folder of the real audio (or videos with sound)"
    )
    p.add_argument("--videos", type=Path, default=None, help="folder of the input videos (IB-score, DeSync)")
    p.add_argument(
        "--captions",
        type=Path,
        default=None,
        help="caption table: .tsv with id and caption (or label) columns, or .csv with name and "
        "caption (CLAP score; the prompts with --model)",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        help="fad fd kl is ib desync clap fd_passt kl_passt is_panns laion_clap, or the groups paper, "
        "extra, all (default: the paper's columns the inputs allow, plus fd_passt kl_passt is_panns)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("score.json"), help="report (JSON; the table goes beside it as .md)"
    )
    p.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        default=None,
        metavar="REPORT",
        help="print one table of earlier reports (JSON files of mfmjt score), one row each, and stop",
    )
    p.add_argument(
        "--label", default=None, help="the run's name in the table (default: the generated folder's)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=8.0,
        help="seconds of each clip scored (and generated with --model): 8 for VGGSound, 10 for "
        "AudioCaps as in the paper (default 8)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="files per extractor call (default 16)")
    p.add_argument(
        "--device",
        default=None,
        help="torch device of the extractors and the model (default: cuda if available, else cpu)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="embedding cache folder (default: $MFMJT_CACHE/scores or ~/.cache/mfmjt/scores)",
    )
    p.add_argument("--no-cache", action="store_true", help="compute every embedding, store none")
    p.add_argument(
        "--weights",
        choices=["pretrained", "random"],
        default="pretrained",
        help="'random': random-weight extractors, for testing the plumbing only",
    )
    p.add_argument(
        "--extractor-weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a weight file for one extractor, e.g. panns=/data/Cnn14_16k_mAP=0.438.pth (repeatable)",
    )
    gen = p.add_argument_group("generate first (one-go form)")
    gen.add_argument(
        "--model",
        default=None,
        help="generate with this model first: 'default', an MMAudio network, "
        "a model directory or a HF repo id; the RTF is measured",
    )
    gen.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    gen.add_argument("--cfg", type=float, default=None, help="guidance strength ω (default: the model's)")
    gen.add_argument("--guidance", choices=["standard", "scaled"], default=None, help="default: the model's")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None)
    p.set_defaults(func=run_score)
    return p


def _extractor_weights(items: list[str]) -> dict[str, str]:
    from mfmjt.scoring.scorer import ScoreError

    paths: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ScoreError(f"--extractor-weights takes NAME=PATH, got {item!r}")
        if not Path(path).expanduser().is_file():
            raise ScoreError(f"--extractor-weights {name}: file {path} does not exist")
        paths[name.strip()] = str(Path(path).expanduser())
    return paths


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _generate(args: argparse.Namespace, out: Path, videos, captions, device: str) -> dict:
    from mfmjt.scoring.generate import generate_set
    from mfmjt.scoring.scorer import ScoreError

    try:
        run = generate_set(
            args.model,
            out,
            videos=videos,
            captions=captions,
            duration=args.duration,
            steps=args.steps,
            cfg=args.cfg,
            guidance=args.guidance,
            seed=args.seed,
            device=device,
            precision=args.precision,
        )
    except (ValueError, FileNotFoundError) as err:  # an unknown model or unusable settings
        raise ScoreError(str(err)) from err
    logger.info("RTF %.4f on %s over %d clips", run.rtf, run.device, len(run.rtf_per_clip))
    return run.as_dict()


def _read_report(path: Path) -> dict:
    import json

    from mfmjt.scoring.scorer import ScoreError

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ScoreError(f"cannot read the report {path} ({err})") from err
    if not isinstance(report, dict) or not {"metrics", "settings", "counts", "label"} <= set(report):
        raise ScoreError(f"{path} is not a report of mfmjt score")
    return report


def run_score(args: argparse.Namespace) -> int:
    from mfmjt.hub import WeightsUnavailableError, default_cache_dir
    from mfmjt.request import RequestError
    from mfmjt.scoring import inputs
    from mfmjt.scoring.report import markdown_table, report_dict, write_report
    from mfmjt.scoring.scorer import ScoreError, score

    user_errors = (ScoreError, inputs.ScoreInputError, RequestError, WeightsUnavailableError)
    if args.compare:
        try:
            reports = [_read_report(path) for path in args.compare]
        except ScoreError as err:
            logger.error("%s", err)
            return 2
        sys.stdout.write(markdown_table(reports))
        return 0
    device = args.device or _default_device()
    try:
        extractor_weights = _extractor_weights(args.extractor_weights)
        generation = None
        generated = args.generated
        if args.model is not None:
            if args.videos is None and args.captions is None:
                raise ScoreError("--model needs --videos or --captions to generate from")
            videos = inputs.scan_folder(args.videos, "--videos", videos_only=True) if args.videos else None
            captions = inputs.read_captions(args.captions) if args.captions else None
            generated = generated or args.out.with_name(args.out.stem + "_audio")
            generation = _generate(args, generated, videos, captions, device)
        elif generated is None:
            raise ScoreError("give --generated (a folder of generated audio) or --model (to generate first)")
        cache = None if args.no_cache else (args.cache or default_cache_dir() / "scores")
        result = score(
            generated,
            args.reference,
            videos=args.videos,
            captions=args.captions,
            metric_names=args.metrics,
            duration=args.duration,
            batch_size=args.batch_size,
            device=device,
            weights="random" if args.weights == "random" else None,
            extractor_weights=extractor_weights,
            cache_dir=cache,
        )
    except user_errors as err:
        logger.error("%s", err)
        return 2
    report = report_dict(
        result,
        generated=generated,
        reference=args.reference,
        videos=args.videos,
        captions=args.captions,
        generation=generation,
        label=args.label,
    )
    json_path, md_path = write_report(report, args.out)
    for s in result.skipped:
        logger.warning("skipped %s (%s): %s", s.file, s.role, s.reason)
    sys.stdout.write(markdown_table([report]))
    logger.info("wrote %s and %s", json_path, md_path)
    return 0
