"""Command-line options of ``mfmjt extract`` for real media (``--videos`` / ``--audios``) and for
stores without audio (``--videos --no-audio``, ``--prompts``)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MEDIA_DURATION = 8.0
DEFAULT_MEDIA_WORKERS = 4

MEDIA_HELP = """\
real media (instead of synthetic scenes): --videos DIR or --audios DIR, with --tsv FILE.
The table is tab-separated with a header: 'id' (file name without extension) and 'label' (or
'caption'). Videos: the first --duration seconds, frames at 8 fps 384 px (CLIP) and 25 fps 224 px
(Synchformer), audio from the video's own track. Audio files: files of at least duration + 0.1 s are
cut into min(--max-clips-per-file, length // window) windows of duration + 0.1 s spread evenly from
the start to the end of the file (MMAudio's partition); each clip keeps the first --duration seconds
of its window and gets the id <id>_<k>; shorter files are listed as 'too short'. Audio is mono,
peak-normalised to 0.95 (not with --no-peak-normalize). Unusable rows go to <out>/failed.tsv.
Stores without audio, for mfmjt distill (whose teacher makes the audio): --videos DIR --no-audio
(frames and captions; the sound track is not read, silent videos are fine) or --prompts FILE (a
caption table alone: text-only items). Native layout only. Running the same command again resumes an
interrupted run. Several GPUs: torchrun --nproc_per_node=N
-m mfmjt extract ... (each rank a share of the rows; rank 0 writes the store)."""


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    """The real-media options of the ``extract`` subparser."""
    from mfmjt.data.extract_media import ExtractMediaConfig
    from mfmjt.dataclass_args import add_dataclass_arguments

    group = parser.add_argument_group("real media", MEDIA_HELP)
    src = group.add_mutually_exclusive_group()
    src.add_argument("--videos", type=Path, default=None, help="folder of videos (audio-video-text set)")
    src.add_argument("--audios", type=Path, default=None, help="folder of audio files (audio-text set)")
    src.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="caption table alone (id, label|caption): text-only items without audio, for mfmjt distill",
    )
    group.add_argument("--tsv", type=Path, default=None, help="caption table (id, label|caption)")
    group.add_argument(
        "--features",
        default="mmaudio-16k",
        help="feature stack: mmaudio-16k (default), mmaudio-44k, 'default' (the embedded model's offline "
        "stack) or a model directory whose stack is used",
    )
    # the rest: one flag per field of ExtractMediaConfig (the fields above are marked cli: False there)
    add_dataclass_arguments(group, ExtractMediaConfig, with_defaults=True)


def wants_media(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) is not None for name in ("videos", "audios", "prompts"))


def run_media_extract(args: argparse.Namespace) -> int:
    """``mfmjt extract --videos/--audios/--prompts``; returns the exit code."""
    import torch

    from mfmjt.data.extract_media import ExtractMediaConfig, check_inputs, extract_media, pick_device
    from mfmjt.data.feature_stacks import resolve_feature_stack
    from mfmjt.dataclass_args import values_from_args

    if args.prompts is not None and args.tsv is not None:
        raise ValueError("--prompts FILE is the caption table itself: leave out --tsv")
    if args.prompts is None and args.tsv is None:
        raise ValueError("--videos/--audios need --tsv FILE (columns id and label/caption)")
    torch.set_num_threads(args.threads)
    # errors a user can cause (a bad table, folder, stack name or option) are ValueErrors, reported in
    # one line by mfmjt.cli.main; a failing disk stops the run, which the same command resumes
    try:
        config = ExtractMediaConfig(
            out=Path(args.out),
            tsv=args.prompts if args.prompts is not None else args.tsv,
            videos=args.videos,
            audios=args.audios,
            prompts=args.prompts is not None,
            duration=DEFAULT_MEDIA_DURATION if args.duration is None else args.duration,
            workers=DEFAULT_MEDIA_WORKERS if args.workers is None else args.workers,
            **values_from_args(ExtractMediaConfig, args),
        )
        check_inputs(config)  # a bad table or folder is reported before the encoders load
        device = pick_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
        stack = resolve_feature_stack(args.features, device)
        extract_media(config, stack)
    except NotImplementedError as err:
        raise ValueError(str(err)) from err
    except OSError as err:
        raise OSError(f"extraction stopped: {err} (run the same command again to resume)") from err
    return 0
