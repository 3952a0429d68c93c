"""``mfmjt extract --videos/--audios/--prompts``: real media + caption table -> training feature store.

Stores without audio, for distillation (:mod:`mfmjt.distill`): ``--videos --no-audio`` keeps the
frames and captions of videos (their sound is not read: silent videos are fine) and ``--prompts``
a caption table alone (text-only items); neither stores latents. Native layout only.

Flow: read and check the table, find each row's file, decode rows in DataLoader worker processes
(:mod:`mfmjt.data.sources`), encode clips in batches on the device (CLIP, Synchformer, text, VAE),
commit the results in chunks (:mod:`mfmjt.data.parts`), and finally merge the chunks into one store
in table order, with ``failed.tsv`` listing the rows that gave nothing and why.

Work in progress lives in ``<out>/.partial/``; running the same command again resumes (rows in
committed chunks, including recorded failures, are not read again). Under ``torchrun`` every rank
extracts rows ``rank, rank + world_size, ...`` into its own chunk folder and rank 0 merges.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mfmjt.config import AUDIO_MODES, MIN_DURATION, SYNC_FPS, AudioMode, SequenceLengths
from mfmjt.data.feature_stacks import ResolvedStack
from mfmjt.data.parts import (
    ChunkWriter,
    Failure,
    PartsIndex,
    merge_parts,
    ordered_items,
    scan_parts,
)
from mfmjt.data.sources import (
    AUDIO_FILE_SUFFIXES,
    MAX_CLIPS_PER_FILE,
    Clip,
    ClipSpec,
    UnitDataset,
    UnitResult,
    find_media,
)
from mfmjt.data.tsv import CaptionRow, read_caption_tsv
from mfmjt.features.base import FeatureStack
from mfmjt.media import VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
SETTINGS_FILE = "settings.json"
FAILED_FILE = "failed.tsv"
LAYOUTS = ("native", "mmaudio")
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class ExtractMediaConfig:
    """One extraction run. Give exactly one of ``videos`` (audio-video-text; video-text with
    ``no_audio``), ``audios`` (audio-text) and ``prompts`` (text only: ``tsv`` is all there is)."""

    # The flags of mfmjt extract (mfmjt.data.extract_cli.add_media_arguments) are generated from the
    # fields below, except those marked "cli": False: the sources (--videos | --audios | --prompts, a
    # mutually exclusive group whose --prompts FILE is both ``tsv`` and ``prompts``), --tsv, and --out,
    # --duration and --workers, which the parser shares with toy scenes (whose defaults differ); those
    # stay explicit in extract_cli.
    out: Path = field(metadata={"cli": False})
    tsv: Path = field(metadata={"cli": False})
    videos: Path | None = field(default=None, metadata={"cli": False})
    audios: Path | None = field(default=None, metadata={"cli": False})
    # no media: one text-only item per row of ``tsv``, without audio
    prompts: bool = field(default=False, metadata={"cli": False})
    # videos: frames only, the audio track is not read, no latents stored
    no_audio: bool = field(
        default=False,
        metadata={
            "store_true": True,
            "help": (
                "with --videos: keep frames and captions only (no audio read, no latents), for mfmjt distill"
            ),
        },
    )
    duration: float = field(default=8.0, metadata={"cli": False})
    batch_size: int = field(default=16, metadata={"help": "clips per encoder batch"})
    workers: int = field(default=4, metadata={"cli": False})  # decoding processes (0: in this process)
    device: str | None = field(
        default=None, metadata={"help": "e.g. cuda, cuda:1, cpu (default: cuda if present)"}
    )
    layout: str = field(
        default="native",
        metadata={
            "choices": LAYOUTS,
            "help": (
                "store format: native (mfmjt feature store) or mmaudio (MMAudio's training memmap; not for "
                "stores without audio)"
            ),
        },
    )
    precision: str = field(
        default="tf32",
        metadata={
            "choices": PRECISIONS,
            "help": (
                "encoder arithmetic on CUDA: tf32 (as MMAudio: float32 weights, TF32 matmuls), fp32, or bf16 "
                "autocast for CLIP/Synchformer/text (the VAE stays float32)"
            ),
        },
    )
    # --no-peak-normalize (and --peak-normalize)
    peak_normalize: bool = field(
        default=True,
        metadata={"help": "peak-normalise the audio (MMAudio normalises training sets only, not val/test)"},
    )
    max_clips_per_file: int = field(
        default=MAX_CLIPS_PER_FILE, metadata={"help": "audio files: clips per file"}
    )
    chunk_items: int = field(default=256, metadata={"help": "items per committed chunk (resume unit)"})
    retry_failed: bool = field(
        default=False,
        metadata={
            "store_true": True,
            "help": (
                "read rows recorded as failed again (needs the chunks: an interrupted run or --keep-parts)"
            ),
        },
    )
    keep_parts: bool = field(
        default=False, metadata={"store_true": True, "help": "keep <out>/.partial after the merge"}
    )
    progress: bool = field(default=True, metadata={"cli": False})  # progress bars (the API's switch)

    def __post_init__(self) -> None:
        if (self.videos is not None) + (self.audios is not None) + bool(self.prompts) != 1:
            raise ValueError(
                "give exactly one of videos (a folder of videos), audios (a folder of audio) and prompts "
                "(a caption table alone)"
            )
        if self.no_audio and self.videos is None:
            raise ValueError("no_audio (--no-audio) goes with videos (--videos): audio files are all audio")
        if not (np.isfinite(self.duration) and self.duration >= MIN_DURATION):
            raise ValueError(f"duration must be at least {MIN_DURATION:.2f} s, got {self.duration}")
        for name in ("batch_size", "chunk_items", "max_clips_per_file"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.layout == "mmaudio" and not self.has_audio:
            raise ValueError(
                "stores without audio (--no-audio, --prompts) are written in the native layout only: "
                "MMAudio's layout needs audio latents"
            )

    @property
    def has_video(self) -> bool:
        return self.videos is not None

    @property
    def has_audio(self) -> bool:
        return self.audios is not None or (self.videos is not None and not self.no_audio)

    @property
    def media(self) -> str:
        """What the items are made of: videos, videos-no-audio, audios or prompts."""
        if self.prompts:
            return "prompts"
        return "audios" if self.audios is not None else ("videos" if self.has_audio else "videos-no-audio")

    @property
    def media_dir(self) -> Path | None:
        media = self.videos if self.videos is not None else self.audios
        return None if media is None else Path(media)

    @property
    def work_dir(self) -> Path:
        """Work in progress: inside a native store, beside an MMAudio one (whose folder its writer owns)."""
        out = Path(self.out)
        return out / PARTIAL_DIR if self.layout == "native" else out.parent / f"{out.name}{PARTIAL_DIR}"


@dataclass
class ExtractSummary:
    """What a run (or a rank's share of it) did."""

    items: int = 0  # clips written (this run)
    rows_ok: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> rows
    seconds: float = 0.0
    skipped: int = 0  # rows already done by an earlier run
    store: Path | None = None

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        failed = ", ".join(f"{n} {reason}" for reason, n in sorted(self.failed.items())) or "none"
        return [
            f"{self.items} items from {self.rows_ok} rows in {self.seconds:.1f} s "
            f"({self.items_per_s:.3g} items/s); {self.skipped} rows done earlier",
            f"failed rows: {sum(self.failed.values())} ({failed})",
        ]


# ----------------------------------------------------------------------------------- setup
def audio_mode_of(stack: FeatureStack) -> AudioMode:
    """The audio mode whose sample rate the stack's codec uses."""
    for mode in AUDIO_MODES.values():
        if mode.sample_rate == stack.codec.sample_rate:
            return mode
    raise ValueError(f"no audio mode for the codec's sample rate {stack.codec.sample_rate} Hz")


def clip_spec(config: ExtractMediaConfig, stack: FeatureStack) -> ClipSpec:
    mode = audio_mode_of(stack)
    lengths = SequenceLengths.for_duration(config.duration, mode)
    return ClipSpec(
        duration=config.duration,
        sample_rate=mode.sample_rate,
        audio_samples=lengths.audio_samples,
        clip_frames=lengths.clip,
        sync_frames=int(config.duration * SYNC_FPS),  # what decode_video gives for the duration
        peak_normalize=config.peak_normalize,
        max_clips_per_file=config.max_clips_per_file,
        audio=config.has_audio,
    )


def _settings(config: ExtractMediaConfig, resolved: ResolvedStack) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    return {
        "media": config.media,
        "duration": config.duration,
        "features": resolved.name,
        "sample_rate": resolved.stack.codec.sample_rate,
        "dims": [int(m.dim) for m in (resolved.stack.clip, resolved.stack.sync, resolved.stack.text)]
        + [int(resolved.stack.codec.latent_dim)],
        "peak_normalize": config.peak_normalize,
        "max_clips_per_file": config.max_clips_per_file,
    }


def _check_settings(config: ExtractMediaConfig, resolved: ResolvedStack) -> None:
    work, out = config.work_dir, Path(config.out)
    # (another rank may just have created the work folder inside ``out``)
    if not work.exists() and out.exists() and any(p != work for p in out.iterdir()):
        raise ValueError(
            f"{out} exists and is not empty; give a new --out (or the folder of an unfinished extraction "
            "to resume it)"
        )
    work.mkdir(parents=True, exist_ok=True)
    path = work / SETTINGS_FILE
    wanted = _settings(config, resolved)
    if path.is_file():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in wanted.items() if before.get(k) != v}
        if changed:
            what = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
            raise ValueError(
                f"{config.out} holds an unfinished extraction with other settings ({what}); "
                "run it again with the same settings, or use a new --out"
            )
        return
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(wanted, indent=2) + "\n")
    os.replace(tmp, path)


def _as_resolved(stack: FeatureStack | ResolvedStack) -> ResolvedStack:
    if isinstance(stack, ResolvedStack):
        return stack
    return ResolvedStack("custom stack", stack, {})


def _store_is_complete(out: Path, layout: str) -> bool:
    if layout == "mmaudio":
        from mfmjt.data.mmaudio_store import WRITTEN_NAME, is_mmaudio_store, tsv_path

        return is_mmaudio_store(out) and tsv_path(out).is_file() and not (out / WRITTEN_NAME).exists()
    meta = out / "meta.json"
    return meta.is_file() and bool(json.loads(meta.read_text()).get("complete"))


# --------------------------------------------------------------------------------- encoding
class BatchEncoder:
    """Runs a batch of clips through the stack; returns float32 numpy arrays ``[B, ...]``."""

    def __init__(self, stack: FeatureStack, device: torch.device, precision: str, lengths: SequenceLengths):
        self.stack = stack
        self.device = device
        self.precision = precision
        self.lengths = lengths
        for module in (stack.clip, stack.sync, stack.text, stack.codec):
            if isinstance(module, torch.nn.Module):
                module.eval().to(device)
        if device.type == "cuda":
            tf32 = precision != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    def _autocast(self) -> Any:
        enabled = self.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.inference_mode()
    def __call__(self, clips: Sequence[Clip]) -> dict[str, np.ndarray]:
        b = len(clips)
        out = {}
        if clips[0].audio is not None:  # (none for a store without audio)
            audio = torch.stack([c.audio for c in clips]).to(self.device)
            mean, std = self.stack.codec.encode(audio)  # the VAE stays in float32, as in MMAudio
            out = {"latent_mean": mean, "latent_std": std}
        with self._autocast():
            out["text_f"] = self.stack.text([c.caption for c in clips])
            if clips[0].clip_frames is not None:
                out["clip_f"] = self.stack.clip(torch.stack([c.clip_frames for c in clips]).to(self.device))
                out["sync_f"] = self.stack.sync(torch.stack([c.sync_frames for c in clips]).to(self.device))
        arrays = {k: v.float().cpu().numpy() for k, v in out.items()}
        if "clip_f" not in arrays:  # audio-text and text-only items: no video (has_video false)
            arrays["clip_f"] = np.zeros((b, self.lengths.clip, self.stack.clip.dim), np.float32)
            arrays["sync_f"] = np.zeros((b, self.lengths.sync, self.stack.sync.dim), np.float32)
        return arrays

    @torch.inference_mode()
    def empty_text(self) -> np.ndarray:
        with self._autocast():
            return self.stack.text([""])[0].float().cpu().numpy()


def pick_device(device: str | None, rank: int = 0) -> torch.device:
    """``device`` (default cuda if present); a bare ``cuda`` under torchrun means this rank's GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", rank)) % max(torch.cuda.device_count(), 1)
        )
    return dev


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _unit_batches(results: Iterator[UnitResult], batch_size: int) -> Iterator[list[UnitResult]]:
    """Whole rows grouped until they hold ``batch_size`` clips.

    A row without clips (a failure) is passed on at once, so that it is committed with the next chunk.
    """
    group: list[UnitResult] = []
    clips = 0
    for result in results:
        if not result.clips:
            yield [result]
            continue
        group.append(result)
        clips += len(result.clips)
        if clips >= batch_size:
            yield group
            group, clips = [], 0
    if group:
        yield group


# ------------------------------------------------------------------------------- the shards
def shard_rows(rows: Sequence[CaptionRow], rank: int, world_size: int) -> list[CaptionRow]:
    """Rows ``rank, rank + world_size, ...`` of the table (fixed by table order, not by progress)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(rows[rank::world_size])


def _load_inputs(
    config: ExtractMediaConfig, announce: bool = True
) -> tuple[list[CaptionRow], dict[str, Path]]:
    rows = read_caption_tsv(config.tsv)
    if config.media_dir is None:  # prompts: the table is everything
        (logger.info if announce else logger.debug)("%s: %d prompts", config.tsv, len(rows))
        return rows, {}
    suffixes = VIDEO_SUFFIXES if config.has_video else AUDIO_FILE_SUFFIXES
    files = find_media(config.media_dir, tuple(suffixes))
    missing = sum(r.id not in files for r in rows)
    (logger.info if announce else logger.debug)(
        "%s: %d rows; %s: %d files, %d rows without a file",
        config.tsv,
        len(rows),
        config.media_dir,
        len(files),
        missing,
    )
    return rows, files


def check_inputs(config: ExtractMediaConfig) -> None:
    """Raise ``TsvError``/``ValueError`` for a bad caption table or media folder (cheap, no encoders)."""
    _load_inputs(config, announce=False)


def _done_units(index: PartsIndex, retry_failed: bool) -> set[str]:
    return set(index.items) if retry_failed else index.done_units


def extract_shard(
    config: ExtractMediaConfig,
    stack: FeatureStack | ResolvedStack,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> ExtractSummary:
    """Extract this rank's rows that no committed chunk holds yet into ``<out>/.partial/parts/r<rank>``."""
    resolved = _as_resolved(stack)
    _check_settings(config, resolved)
    rows, files = _load_inputs(config)
    spec = clip_spec(config, resolved.stack)
    lengths = SequenceLengths.for_duration(config.duration, audio_mode_of(resolved.stack))
    parts = config.work_dir / "parts"
    done = _done_units(scan_parts(parts), config.retry_failed)
    mine = shard_rows(rows, rank, world_size)
    todo = [r for r in mine if r.id not in done]
    summary = ExtractSummary(skipped=len(mine) - len(todo))
    if summary.skipped:
        logger.info("rank %d: %d of %d rows were done by an earlier run", rank, summary.skipped, len(mine))
    if not todo:
        return summary

    writer = ChunkWriter(parts, rank)
    encoder = BatchEncoder(resolved.stack, pick_device(config.device, rank), config.precision, lengths)
    workers = 0 if config.prompts else config.workers  # nothing to decode
    loader = DataLoader(
        UnitDataset(todo, files, spec, video=config.has_video),
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        # about two encoder batches decoded ahead, so decoding overlaps the encoders
        prefetch_factor=max(2, -(-2 * config.batch_size // workers)) if workers else None,
        persistent_workers=False,
    )
    pending_arrays: list[dict[str, np.ndarray]] = []
    pending_items: list[dict[str, Any]] = []
    pending_failures: list[Failure] = []

    def commit() -> None:
        arrays = (
            {n: np.concatenate([a[n] for a in pending_arrays]) for n in pending_arrays[0]}
            if pending_items
            else None
        )
        try:
            writer.commit(arrays, pending_items, pending_failures)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                logger.error(
                    "the disk is full (%s); the chunks committed so far are kept: free some space and run "
                    "the same command again to resume",
                    err,
                )
            raise
        pending_arrays.clear()
        pending_items.clear()
        pending_failures.clear()

    start = time.perf_counter()
    bar = tqdm(
        total=len(todo),
        desc=f"extracting{f' (rank {rank})' if world_size > 1 else ''}",
        unit="row",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    try:
        for group in _unit_batches(iter(loader), config.batch_size):
            clips = [c for result in group for c in result.clips]
            if clips:
                pending_arrays.append(encoder(clips))
            for result in group:
                if result.failure is not None:
                    pending_failures.append(result.failure)
                    summary.failed[result.failure.reason] += 1
                    logger.debug("%s: %s (%s)", result.unit, result.failure.reason, result.failure.detail)
                else:
                    summary.rows_ok += 1
                for c in result.clips:
                    pending_items.append(
                        {"id": c.id, "caption": c.caption, "unit": result.unit, "has_video": config.has_video}
                    )
            summary.items += len(clips)
            bar.update(len(group))
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                items=summary.items, items_s=f"{summary.items / max(elapsed, 1e-9):.3g}", refresh=False
            )
            if len(pending_items) + len(pending_failures) >= config.chunk_items:
                commit()
        commit()
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


# -------------------------------------------------------------------------------- the merge
def _write_failed(path: Path, failures: dict[str, Failure], order: Sequence[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("id\treason\tdetail\n")
        for unit in order:
            if unit in failures:
                fail = failures[unit]
                detail = " ".join(fail.detail.split())
                f.write(f"{unit}\t{fail.reason}\t{detail}\n")
    os.replace(tmp, path)


def _native_finalize(
    config: ExtractMediaConfig,
    index: PartsIndex,
    order: Sequence[str],
    extra: dict[str, Any],
    empty_text: np.ndarray | None,
) -> Path:
    """Build the store in ``.partial/store`` then move its files into ``out`` (meta.json last)."""
    from mfmjt.feature_store import META_NAME, FeatureStoreWriter

    staging = config.work_dir / "store"
    if staging.exists():
        shutil.rmtree(staging)  # an earlier merge that did not finish

    def make_writer(n: int, shapes: dict[str, tuple[int, ...]]) -> FeatureStoreWriter:
        return FeatureStoreWriter(staging, n, shapes, duration=config.duration, extra=extra)

    merge_parts(index, order, make_writer, empty_text=empty_text)
    out = Path(config.out)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == META_NAME):
        os.replace(path, out / path.name)
    return out


class _MMAudioWriter:
    """:class:`~mfmjt.data.parts.StoreWriter` over :class:`~mfmjt.data.mmaudio_store.MMAudioStoreWriter`
    (which resumes a merge that stopped half-way: the items it holds are skipped)."""

    def __init__(self, out: Path, ids: list[str], captions: list[str], shapes: dict, video: bool) -> None:
        from mfmjt.data.mmaudio_store import MMAudioStoreWriter

        names = ("latent_mean", "latent_std", "text_f", *(("clip_f", "sync_f") if video else ()))
        self.names = names
        self.writer = MMAudioStoreWriter.create(out, ids, captions, {n: shapes[n] for n in names})
        self.todo = set(self.writer.pending)

    def write_batch(self, start: int, **arrays: Any) -> None:
        rows = [i for i in range(len(arrays["latent_mean"])) if start + i in self.todo]
        if rows:
            self.writer.write_batch([start + i for i in rows], **{n: arrays[n][rows] for n in self.names})

    def set_empty_text(self, text_f: np.ndarray) -> None:
        pass  # MMAudio's layout has no place for it (MMAudio reads ext_weights/empty_string.pth)

    def close(self) -> Path:
        return self.writer.close()


def _mmaudio_finalize(config: ExtractMediaConfig, index: PartsIndex, order: Sequence[str]) -> Path:
    records = ordered_items(index, order)
    ids, captions = [r.id for r in records], [r.caption for r in records]

    def make_writer(n: int, shapes: dict[str, tuple[int, ...]]) -> _MMAudioWriter:
        return _MMAudioWriter(Path(config.out), ids, captions, shapes, config.has_video)

    return merge_parts(index, order, make_writer)


def finalize_store(config: ExtractMediaConfig, stack: FeatureStack | ResolvedStack) -> ExtractSummary:
    """Merge every rank's chunks into the store at ``config.out`` and write ``failed.tsv``.

    Refuses while rows of the table are neither extracted nor recorded as failed.
    """
    resolved = _as_resolved(stack)
    rows = read_caption_tsv(config.tsv)
    order = [r.id for r in rows]
    index = scan_parts(config.work_dir / "parts")
    left = [u for u in order if u not in index.done_units]
    if left:
        raise RuntimeError(
            f"{len(left)} rows are not extracted yet (first: {left[:3]}); run the extraction again"
        )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    features = dict(resolved.spec)
    if resolved.files and config.layout == "native":
        features["files"] = sorted(resolved.files)
        for name, source in resolved.files.items():
            shutil.copy2(source, out / name)
    failed = {u: f for u, f in index.failures.items() if u not in index.items}
    extra: dict[str, Any] = {
        "source": "mfmjt.data.extract_media",
        "media": config.media,
        "tsv": str(config.tsv),
        "feature_stack": resolved.name,
        "peak_normalize": config.peak_normalize,
        "rows": len(rows),
        "failed_rows": len(failed),
        **({"features": features} if features else {}),
    }
    if index.n_items == 0:  # every row failed: say why, in failed.tsv and in the error
        _write_failed(out / FAILED_FILE, failed, order)
        reasons = Counter(f.reason for f in failed.values())
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        raise ValueError(
            f"no item was extracted: all {len(rows)} rows failed ({why}); the rows and reasons are in "
            f"{out / FAILED_FILE}"
        )
    if not config.has_audio:  # the latents the stack's codec would give (what a teacher must make)
        extra["latent_shape"] = [_lengths(config, resolved).latent, int(resolved.stack.codec.latent_dim)]
    if config.layout == "native":
        lengths = _lengths(config, resolved)
        encoder = BatchEncoder(resolved.stack, pick_device(config.device), config.precision, lengths)
        empty = encoder.empty_text()  # computed like the items' text features
        _native_finalize(config, index, order, extra, empty)
    else:
        _mmaudio_finalize(config, index, order)
    _write_failed(out / FAILED_FILE, failed, order)
    if not config.keep_parts:
        shutil.rmtree(config.work_dir, ignore_errors=True)
    summary = ExtractSummary(
        items=index.n_items, rows_ok=len(index.items), failed=Counter(f.reason for f in failed.values())
    )
    summary.store = out
    logger.info(
        "wrote %d items to %s (%d rows failed, listed in %s)", index.n_items, out, len(failed), FAILED_FILE
    )
    return summary


def _lengths(config: ExtractMediaConfig, resolved: ResolvedStack) -> SequenceLengths:
    return SequenceLengths.for_duration(config.duration, audio_mode_of(resolved.stack))


# --------------------------------------------------------------------------------- together
def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun (a gloo group for the final barrier), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size()


def extract_media(config: ExtractMediaConfig, stack: FeatureStack | ResolvedStack) -> ExtractSummary:
    """Extract (or resume) the whole table into ``config.out``; under torchrun, one shard per rank."""
    out = Path(config.out)
    if _store_is_complete(out, config.layout) and not config.work_dir.exists():
        logger.info("%s is already a complete store; nothing to do", out)
        return ExtractSummary(store=out)
    rank, world = _distributed()
    summary = extract_shard(config, stack, rank=rank, world_size=world)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank == 0:
        final = finalize_store(config, stack)
        summary.store = final.store
        for line in summary.lines():
            logger.info("%s", line)
        logger.info("store: %d items in total, %d rows failed", final.items, sum(final.failed.values()))
    return summary
