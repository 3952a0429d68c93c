"""Precompute training features of toy scenes into a memory-mapped feature store.

Every scene goes through the inference path: it is written as an H.264 mp4 and decoded by
:func:`mfmjt.media.decode_video`, so the encoders see during training exactly the frames they
see in the demo. Text-only samples (no video) train the text-to-audio path.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mfmjt import media
from mfmjt.config import SequenceLengths
from mfmjt.feature_store import FeatureStoreWriter
from mfmjt.features.base import FeatureStack
from mfmjt.toy.codec import OfflineAudioCodec
from mfmjt.toy.encoders import OfflineEncoderConfig
from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import Scene, SceneConfig
from mfmjt.toy.stack import CODEC_FILE, make_offline_stack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """Which scenes to extract. Items have one fixed duration so the store has fixed shapes."""

    # the flags of mfmjt toy extract are these fields (mfmjt.toy.cli.add_extract_arguments)
    out: Path = field(
        metadata={"required": True, "help": "feature store directory (must not exist or be empty)"}
    )
    n_items: int = field(default=1500, metadata={"help": "scenes in the store"})
    duration: float = field(default=4.0, metadata={"help": "seconds per item"})
    first_seed: int = field(default=0, metadata={"help": "scene seeds first_seed .. first_seed+n-1"})
    text_only_fraction: float = field(default=0.1, metadata={"help": "share of text-only items"})
    scene: SceneConfig = SceneConfig()

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be positive, got {self.n_items}")
        if not 0.0 <= self.text_only_fraction <= 1.0:
            raise ValueError(f"text_only_fraction must be in [0, 1], got {self.text_only_fraction}")

    def scene_config(self) -> SceneConfig:
        # Slightly longer scenes: the decoder then finds frames past the window and keeps the full duration.
        return replace(self.scene, duration=self.duration + 0.25, text_only_prob=0.0)


def is_text_only(seed: int, fraction: float) -> bool:
    """Deterministic choice of text-only items (independent of the scene's own random draws)."""
    return bool(np.random.default_rng([seed, 7]).random() < fraction)


def scene_frames(scene: Scene, duration: float, workdir: Path) -> media.DecodedVideo:
    """The scene's video as the pipeline sees it: mp4 encode, then decode at 8 and 25 fps."""
    path = write_scene_mp4(scene, workdir / f"scene_{scene.seed}.mp4")
    try:
        return media.decode_video(path, duration)
    finally:
        path.unlink(missing_ok=True)


@torch.inference_mode()
def encode_scene(
    scene: Scene, stack: FeatureStack, lengths: SequenceLengths, workdir: Path, text_only: bool
) -> dict[str, np.ndarray]:
    """Feature arrays of one item (batch dimension dropped)."""
    audio = np.zeros(lengths.audio_samples, np.float32)
    n = min(len(scene.audio), lengths.audio_samples)
    audio[:n] = scene.audio[:n]
    mean, std = stack.codec.encode(torch.from_numpy(audio)[None])
    item = {
        "latent_mean": mean[0].numpy(),
        "latent_std": std[0].numpy(),
        "text_f": stack.text([scene.caption])[0].numpy(),
    }
    if text_only:
        item["clip_f"] = np.zeros((lengths.clip, stack.clip.dim), np.float32)
        item["sync_f"] = np.zeros((lengths.sync, stack.sync.dim), np.float32)
    else:
        decoded = scene_frames(scene, lengths.duration, workdir)
        if decoded.duration != lengths.duration:
            raise RuntimeError(
                f"scene {scene.seed} decoded to {decoded.duration} s, expected {lengths.duration}"
            )
        item["clip_f"] = stack.clip(decoded.clip_frames[None])[0].numpy()
        item["sync_f"] = stack.sync(decoded.sync_frames[None])[0].numpy()
    return item


def fit_offline_stack(
    config: ExtractConfig, n_fit: int = 300, encoders: OfflineEncoderConfig | None = None
) -> FeatureStack:
    """The offline feature stack with its codec fitted on the audio of the first ``n_fit`` scenes."""
    scene_config = config.scene_config()
    n = min(n_fit, config.n_items)
    waves = [make_scene(config.first_seed + i, scene_config).audio for i in range(n)]
    codec = OfflineAudioCodec.fit(waves)
    return make_offline_stack(codec, encoders)


def offline_stack_with_codec(
    codec_path: str | Path, encoders: OfflineEncoderConfig | None = None
) -> FeatureStack:
    """The offline feature stack around an already fitted codec (e.g. another store's
    ``codec.safetensors``), so a new store's latents share that store's latent space."""
    return make_offline_stack(OfflineAudioCodec.load(codec_path), encoders)


def _encode_item(
    seed: int, config: ExtractConfig, stack: FeatureStack, workdir: Path
) -> tuple[int, str, dict[str, np.ndarray], bool]:
    """One item: (seed, caption, feature arrays, has_video)."""
    text_only = is_text_only(seed, config.text_only_fraction)
    scene = make_scene(seed, config.scene_config())
    lengths = SequenceLengths.for_duration(config.duration)
    return seed, scene.caption, encode_scene(scene, stack, lengths, workdir, text_only), not text_only


_worker_args: tuple = ()  # (config, stack, workdir) of a worker process


def _init_worker(config: ExtractConfig, stack: FeatureStack, workdir: Path, threads: int) -> None:
    global _worker_args
    torch.set_num_threads(threads)
    _worker_args = (config, stack, workdir)


def _encode_in_worker(seed: int) -> tuple[int, str, dict[str, np.ndarray], bool]:
    return _encode_item(seed, *_worker_args)


def _encoded_items(
    config: ExtractConfig, stack: FeatureStack, workdir: Path, workers: int
) -> Iterator[tuple[int, str, dict[str, np.ndarray], bool]]:
    """Items in seed order, computed here (``workers <= 1``) or by a pool of processes."""
    seeds = range(config.first_seed, config.first_seed + config.n_items)
    if workers <= 1:
        yield from (_encode_item(seed, config, stack, workdir) for seed in seeds)
        return
    init = (config, stack, workdir, max(1, torch.get_num_threads() // workers))
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init) as pool:
        yield from pool.map(_encode_in_worker, seeds, chunksize=4)


def extract_synthetic(
    config: ExtractConfig, stack: FeatureStack, *, progress: bool = True, workers: int = 1
) -> Path:
    """Generate ``config.n_items`` scenes (seeds ``first_seed...``) and write their features.

    With the offline stack the store also carries the fitted codec and the encoder settings, which
    training copies into the exported model directory. ``workers > 1`` encodes scenes in that many
    processes; the store is the same either way.
    """
    lengths = SequenceLengths.for_duration(config.duration)
    shapes = {
        "latent": (lengths.latent, stack.codec.latent_dim),
        "clip_f": (lengths.clip, stack.clip.dim),
        "sync_f": (lengths.sync, stack.sync.dim),
        "text_f": (77, stack.text.dim),
    }
    extra: dict = {"source": "mfmjt.synthetic", "first_seed": config.first_seed}
    if isinstance(stack.codec, OfflineAudioCodec):
        extra["features"] = {
            "kind": "offline",
            "encoders": stack.clip.config.to_dict(),
            "codec": CODEC_FILE,
            "files": [CODEC_FILE],
        }
    with (
        tempfile.TemporaryDirectory(prefix="mfmjt-extract-") as tmp,
        FeatureStoreWriter(
            config.out, config.n_items, shapes, duration=config.duration, extra=extra
        ) as writer,
    ):
        if "features" in extra:
            stack.codec.save(Path(config.out) / CODEC_FILE)
        with torch.inference_mode():
            writer.set_empty_text(stack.text([""])[0].numpy())
        items = _encoded_items(config, stack, Path(tmp), workers)
        bar = tqdm(items, total=config.n_items, desc="extracting", unit="scene", disable=not progress)
        for i, (seed, caption, item, has_video) in enumerate(bar):
            writer.write(i, **item, has_video=has_video, item_id=f"scene-{seed}", caption=caption)
    logger.info("wrote %d items (%s s each) to %s", config.n_items, config.duration, config.out)
    return Path(config.out)
