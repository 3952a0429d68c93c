"""Feature stacks by name for extraction: ``mmaudio-16k``, ``mmaudio-44k`` or any model's stack.

A resolved stack carries what a store must record so that training can export a model that loads
the same stack again (``meta.json`` ``extra["features"]``, plus files to copy into the store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from mfmjt.features.base import FeatureStack
from mfmjt.features.registry import feature_kind
from mfmjt.model_dir import flat_metadata, read_model_config
from mfmjt.resolve import ModelNotFoundError, accepted_names, resolve_model


@dataclass
class ResolvedStack:
    """A feature stack, its description for the store, and files the store must carry."""

    name: str
    stack: FeatureStack
    spec: dict[str, Any]  # the store's extra["features"] (the model directory's "features")
    files: dict[str, Path] = field(default_factory=dict)  # store file name -> source path


def mmaudio_stack(name: str, device: torch.device | str = "cpu") -> ResolvedStack:
    """MMAudio's stack by name (``mmaudio-16k``: 16 kHz VAE + BigVGAN; ``mmaudio-44k``: 44.1 kHz VAE +
    BigVGAN v2; both with CLIP DFN5B ViT-H/14-384 and Synchformer), weights resolved via :mod:`mfmjt.hub`."""
    kind = name.replace("-", "_")
    return ResolvedStack(name, feature_kind(kind).load(Path("."), {}, device), {"kind": kind})


FEATURE_STACKS: dict[str, Callable[[torch.device | str], ResolvedStack]] = {
    "mmaudio-16k": partial(mmaudio_stack, "mmaudio-16k"),
    "mmaudio-44k": partial(mmaudio_stack, "mmaudio-44k"),
}


def model_dir_stack(directory: str | Path, device: torch.device | str = "cpu") -> ResolvedStack:
    """The stack a saved model directory uses, loaded through :mod:`mfmjt.features.registry`."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a model directory (no config.json)")
    config = read_model_config(directory)
    stack = feature_kind(config.features.kind).load(directory, config.features.params, device)
    spec = flat_metadata(config)["features"]  # config.json read once
    files = {name: directory / name for name in config.features.files}
    return ResolvedStack(f"{directory} ({config.features.kind})", stack, spec, files)


def resolve_feature_stack(name: str | Path, device: torch.device | str = "cpu") -> ResolvedStack:
    """``mmaudio-16k``, ``mmaudio-44k``, or the stack of any model name :func:`mfmjt.resolve.resolve_model`
    takes (``default``, an MMAudio network, a model directory, a Hub repo id, a network file)."""
    key = str(name)
    if key in FEATURE_STACKS:
        return FEATURE_STACKS[key](device)
    try:
        source = resolve_model(key)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"unknown feature stack {key!r}: use {', '.join(FEATURE_STACKS)} or a model ({accepted_names()})"
        ) from None
    if source.directory is not None:
        return model_dir_stack(source.directory, device)
    kind = source.features.kind
    if kind in ("mmaudio_16k", "mmaudio_44k"):
        return mmaudio_stack(kind.replace("_", "-"), device)
    raise ValueError(f"{key} is a bare network file: the {kind} feature stack needs its model directory")
