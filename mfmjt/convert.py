"""Network checkpoints in MMAudio's layout: which variant a state dict is, and conversion into a model
directory (``model.safetensors`` + ``config.json``, written by :mod:`mfmjt.model_dir`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache
from os import PathLike
from pathlib import Path

import torch

from mfmjt.config import VARIANTS, NetworkConfig
from mfmjt.features.audio import read_state_dict
from mfmjt.model.network import DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX, LEGACY_BUFFER_KEYS, MFMJTNetwork
from mfmjt.model_dir import save_network

logger = logging.getLogger(__name__)


def plain_network_state(state_dict: Mapping[str, object], origin: str) -> dict[str, torch.Tensor]:
    """A network state dict without legacy buffers and without an ``ema_model.`` prefix."""
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        keys = sorted(state_dict)[:8]
        raise ValueError(f"{origin} is not a plain network state dict of tensors (keys: {keys})")
    sd = {k: v for k, v in state_dict.items() if k not in LEGACY_BUFFER_KEYS}
    if all(k.startswith("ema_model.") for k in sd):
        sd = {k.removeprefix("ema_model."): v for k, v in sd.items()}
    return sd  # type: ignore[return-value]


@cache
def _variant_shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = MFMJTNetwork(NetworkConfig.variant(name))
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith(DT_EMBED_PREFIX)}


def infer_variant(state_dict: Mapping[str, torch.Tensor], origin: str = "state dict") -> str:
    """The registered variant whose keys and shapes equal those of a network state dict (Δt part ignored)."""
    sd = plain_network_state(state_dict, origin)
    shapes = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith(DT_EMBED_PREFIX)}
    matches = [name for name in VARIANTS if _variant_shapes(name) == shapes]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{origin} fits several variants {matches}; pass variant= explicitly")
    hints = {k: shapes[k] for k in ("latent_mean", "clip_cond_proj.weight", "sync_pos_emb") if k in shapes}
    raise ValueError(
        f"{origin} matches no known network variant ({sorted(VARIANTS)}); {len(shapes)} tensors, e.g. {hints}"
    )


def network_config_of(
    state_dict: Mapping[str, torch.Tensor], origin: str = "state dict"
) -> tuple[str, NetworkConfig]:
    """(variant, network config) of a network state dict: the registered variant its shapes match, with a
    guidance embedding when the dict has one (the Δt embedder is part of every network)."""
    sd = plain_network_state(state_dict, origin)
    guided = any(k.startswith(GUIDANCE_EMBED_PREFIX) for k in sd)
    variant = infer_variant({k: v for k, v in sd.items() if not k.startswith(GUIDANCE_EMBED_PREFIX)}, origin)
    return variant, NetworkConfig.variant(variant, guidance_embed=guided)


def convert_mmaudio_checkpoint(
    pth_path: str | PathLike[str], out_dir: str | PathLike[str], variant: str | None = None
) -> Path:
    """Convert an MMAudio network ``.pth`` into ``out_dir/model.safetensors`` + ``config.json``.

    The variant is inferred from key shapes when not given. The result is the flow-matching model
    with the Δt embedder initialised to have no effect (``objective: flow_matching``).
    """
    pth_path = Path(pth_path)
    sd = plain_network_state(read_state_dict(pth_path), str(pth_path))
    if any(k.startswith(DT_EMBED_PREFIX) for k in sd):
        raise ValueError(
            f"{pth_path} already has a Δt embedder ({DT_EMBED_PREFIX}*): it is an MF-MJT state dict, not "
            "MMAudio's; load it with mfmjt.resolve.resolve_model and convert it with `mfmjt convert`"
        )
    if variant is None:
        variant = infer_variant(sd, str(pth_path))
        logger.info("%s: inferred network variant %s", pth_path.name, variant)
    net = MFMJTNetwork(NetworkConfig.variant(variant))
    try:
        net.load_mmaudio_state_dict(sd)
    except ValueError as err:
        raise ValueError(f"{pth_path} does not fit variant {variant!r}: {err}") from err
    out = save_network(net, out_dir, objective="flow_matching", source=pth_path.name, variant=variant)
    logger.info("converted %s (%s) -> %s", pth_path.name, variant, out)
    return out
