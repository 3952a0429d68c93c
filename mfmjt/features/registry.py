"""Feature stacks by kind: how a model directory's ``features`` section becomes a :class:`FeatureStack`.

Each kind names its sample rate, a loader ``(directory, params, device) -> FeatureStack`` and,
when a stack of that kind can be written into a model directory, a saver ``(stack, directory) ->
(params, files)`` with a test ``owns(stack)``. A new stack (e.g. ``mmaudio_44k``) is one more
:func:`register` call; the loaders import their modules only when used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mfmjt.config import FEATURE_KIND_RATES
from mfmjt.features.base import FeatureStack

Loader = Callable[[Path, Mapping[str, Any], "torch.device | str"], FeatureStack]
Saver = Callable[[FeatureStack, Path], "tuple[dict[str, Any], list[str]]"]


@dataclass(frozen=True)
class FeatureKind:
    """One registered feature stack."""

    name: str
    sample_rate: int
    load: Loader
    save: Saver | None = None  # None: nothing to write (e.g. pretrained weights fetched from the Hub)
    owns: Callable[[FeatureStack], bool] | None = None  # does a stack belong to this kind?


_KINDS: dict[str, FeatureKind] = {}


def register(kind: FeatureKind) -> FeatureKind:
    """Add (or replace) a feature kind."""
    _KINDS[kind.name] = kind
    return kind


def feature_kind(name: str) -> FeatureKind:
    """The registered kind ``name`` (ValueError naming the known kinds otherwise)."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown feature stack {name!r}; known: {sorted(_KINDS)}") from None


def kind_of(stack: FeatureStack) -> FeatureKind:
    """The registered kind a stack belongs to (for writing it into a model directory)."""
    for kind in _KINDS.values():
        if kind.owns is not None and kind.owns(stack):
            return kind
    raise ValueError(
        f"no registered feature kind recognises this stack (codec {type(stack.codec).__name__}); "
        f"known: {sorted(_KINDS)}"
    )


# ------------------------------------------------------------------------------ built-in kinds
def _load_offline(directory: Path, params: Mapping[str, Any], device: torch.device | str) -> FeatureStack:
    from mfmjt.toy.stack import load_offline_stack

    return load_offline_stack(directory, params)


def _save_offline(stack: FeatureStack, directory: Path) -> tuple[dict[str, Any], list[str]]:
    from mfmjt.toy.stack import save_offline_stack

    return save_offline_stack(stack, directory)


def _owns_offline(stack: FeatureStack) -> bool:
    from mfmjt.toy.stack import is_offline_stack

    return is_offline_stack(stack)


def _mmaudio_loader(name: str) -> Loader:
    def load(directory: Path, params: Mapping[str, Any], device: torch.device | str) -> FeatureStack:
        from mfmjt.features.mmaudio import load_mmaudio_features

        return load_mmaudio_features(name, device or "cpu")

    return load


def _mmaudio_owner(sample_rate: int) -> Callable[[FeatureStack], bool]:
    def owns(stack: FeatureStack) -> bool:
        from mfmjt.features.audio import MMAudioCodec

        return isinstance(stack.codec, MMAudioCodec) and stack.codec.sample_rate == sample_rate

    return owns


def _nothing_to_write(stack: FeatureStack, directory: Path) -> tuple[dict[str, Any], list[str]]:
    return {}, []


register(FeatureKind("offline", FEATURE_KIND_RATES["offline"], _load_offline, _save_offline, _owns_offline))
# MMAudio's CLIP, Synchformer, VAE and vocoder: public weights, resolved through mfmjt.hub
# (mfmjt.features.mmaudio)
for _name in ("mmaudio_16k", "mmaudio_44k"):
    _rate = FEATURE_KIND_RATES[_name]
    register(
        FeatureKind(
            _name, _rate, _mmaudio_loader(_name.replace("_", "-")), _nothing_to_write, _mmaudio_owner(_rate)
        )
    )
