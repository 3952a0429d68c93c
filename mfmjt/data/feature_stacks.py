"""Feature stacks by name for extraction: ``mmaudio-16k``, ``mmaudio-44k`` or a model directory.

A resolved stack carries what a store must record so that training can export a model that loads
the same stack again (``meta.json`` ``extra["features"]``, plus files to copy into the store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from mfmjt.features.base import FeatureStack

logger = logging.getLogger(__name__)


@dataclass
class ResolvedStack:
    """A feature stack, its description for the store, and files the store must carry."""

    name: str
    stack: FeatureStack
    spec: dict[str, Any]  # the store's extra["features"] (the model directory's "features")
    files: dict[str, Path] = field(default_factory=dict)  # store file name -> source path


def mmaudio_16k_stack(device: torch.device | str = "cpu") -> ResolvedStack:
    """CLIP DFN5B ViT-H/14-384, Synchformer, 16 kHz mel VAE (+ BigVGAN), resolved via :mod:`mfmjt.hub`."""
    from mfmjt.hub import CLIP_WEIGHTS, WEIGHT_FILES, resolve_file
    from mfmjt.pipeline import mmaudio_feature_stack

    files = SimpleNamespace(
        clip_model=CLIP_WEIGHTS.model_name,
        synchformer=resolve_file(WEIGHT_FILES["synchformer"]),
        vae=resolve_file(WEIGHT_FILES["vae_16k"]),
        vocoder=resolve_file(WEIGHT_FILES["bigvgan_16k"]),
    )
    return ResolvedStack("mmaudio-16k", mmaudio_feature_stack(files, device), {"kind": "mmaudio_16k"})


def mmaudio_44k_stack(device: torch.device | str = "cpu") -> ResolvedStack:
    """The 44.1 kHz stack (CLIP, Synchformer, 44k VAE). Plug the 44k codec in here."""
    raise NotImplementedError(
        "the 'mmaudio-44k' feature stack needs the 44.1 kHz VAE codec, which this build does not "
        "include yet; use --features mmaudio-16k or a model directory"
    )


FEATURE_STACKS: dict[str, Callable[[torch.device | str], ResolvedStack]] = {
    "mmaudio-16k": mmaudio_16k_stack,
    "mmaudio-44k": mmaudio_44k_stack,
}


def model_dir_stack(directory: str | Path, device: torch.device | str = "cpu") -> ResolvedStack:
    """The stack a saved model directory uses (offline encoders + codec, or MMAudio 16k)."""
    from mfmjt.model.network import read_metadata

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a model directory (no config.json)")
    spec = dict(read_metadata(directory).get("features") or {"kind": "mmaudio_16k"})
    kind = spec.get("kind")
    if kind == "mmaudio_16k":
        stack = FEATURE_STACKS["mmaudio-16k"](device).stack  # the registered stack, as load_pipeline uses
        return ResolvedStack(f"{directory} (mmaudio-16k)", stack, spec)
    if kind == "offline":
        from mfmjt.features.offline import OfflineAudioCodec, OfflineEncoderConfig, make_offline_stack

        codec = OfflineAudioCodec.load(directory / spec["codec"])
        stack = make_offline_stack(codec, OfflineEncoderConfig.from_dict(spec["encoders"]))
        files = {name: directory / name for name in spec.get("files", [])}
        return ResolvedStack(f"{directory} (offline)", stack, spec, files)
    raise ValueError(f"{directory}/config.json names unknown features {kind!r}")


def resolve_feature_stack(name: str | Path, device: torch.device | str = "cpu") -> ResolvedStack:
    """``mmaudio-16k``, ``mmaudio-44k``, ``default`` (the embedded model's stack) or a model directory."""
    key = str(name)
    if key in FEATURE_STACKS:
        return FEATURE_STACKS[key](device)
    if key == "default":
        from mfmjt.pipeline import default_model_dir

        return model_dir_stack(default_model_dir(), device)
    path = Path(key).expanduser()
    if path.is_dir():
        return model_dir_stack(path, device)
    raise ValueError(
        f"unknown feature stack {key!r}: use {', '.join(FEATURE_STACKS)}, 'default' or a model directory"
    )
