"""Deepening a trained network without changing what it computes.

New audio-only blocks are appended after the existing ones with their adaLN modulation zeroed, as a
fresh block is initialised: both residual gates are then 0, so each new block passes its input
through and the deeper network's output equals the original's until training moves the gates.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from mfmjt.model.network import MFMJTNetwork
from mfmjt.model_dir import CONFIG_NAME, WEIGHTS_NAME, load_network, read_model_config, write_model_dir

logger = logging.getLogger(__name__)


def deepen_audio_blocks(network: MFMJTNetwork, extra_blocks: int, *, seed: int = 0) -> MFMJTNetwork:
    """A copy of ``network`` with ``extra_blocks`` more audio-only (fused) blocks at the end of the
    audio-only stack; their other weights get the usual seeded initialisation."""
    if extra_blocks < 1:
        raise ValueError(f"extra_blocks must be positive, got {extra_blocks}")
    cfg = network.config
    deeper_cfg = replace(cfg, depth=cfg.depth + extra_blocks, fused_depth=cfg.fused_depth + extra_blocks)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        deeper = MFMJTNetwork(deeper_cfg)
    missing, unexpected = deeper.load_state_dict(network.state_dict(), strict=False)
    new_prefixes = tuple(f"fused_blocks.{i}." for i in range(cfg.fused_depth, deeper_cfg.fused_depth))
    wrong = [k for k in missing if not k.startswith(new_prefixes)] + list(unexpected)
    if wrong:
        raise RuntimeError(f"state dict does not fit the deeper network: {wrong[:5]}")
    return deeper.to(device=network.device, dtype=network.dtype)


def deepen_model_dir(source: str | Path, out: str | Path, extra_blocks: int, *, seed: int = 0) -> Path:
    """``mfmjt deepen``: write ``source`` (a model directory) with ``extra_blocks`` more audio-only
    blocks to ``out``, keeping its metadata and companion files (e.g. the codec)."""
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    network = load_network(source)
    deeper = deepen_audio_blocks(network, extra_blocks, seed=seed)
    config = read_model_config(source)
    stage = (
        f"{source}: deepened by {extra_blocks} zero-gated audio-only blocks "
        f"(fused depth {network.config.fused_depth} -> {deeper.config.fused_depth}, same outputs)"
    )
    config = replace(
        config, provenance=replace(config.provenance, lineage=(*config.provenance.lineage, stage))
    )
    companions = {
        path.name: path
        for path in source.iterdir()
        if path.is_file() and path.name not in (CONFIG_NAME, WEIGHTS_NAME)
    }
    write_model_dir(out, deeper, config, files=companions)
    logger.info(
        "wrote %s: %.2fM -> %.2fM parameters",
        out,
        sum(p.numel() for p in network.parameters()) / 1e6,
        sum(p.numel() for p in deeper.parameters()) / 1e6,
    )
    return out


__all__ = ["deepen_audio_blocks", "deepen_model_dir"]
