"""The state of a training run as one object: network, EMA, optimiser, scheduler, step, random
streams and config, saved to and loaded from ``checkpoint_last.pt``.

The checkpoint is a plain dict of tensors and built-in types (``torch.load(weights_only=True)``
reads it): ``format``, ``step``, ``world_size``, ``train_config``, ``network_config``, ``model``,
``ema``, ``optimizer``, ``scheduler`` and ``rng`` (per rank: the training generator, torch's CPU
generator and the CUDA generators).
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mfmjt.model import MFMJTNetwork
from mfmjt.train_config import TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mfmjt-train-checkpoint"
# Fields that may change between a run and its resumption without breaking exactness.
RESUME_FREE_FIELDS = {
    "store", "out_dir", "stop_after", "resume", "device", "num_workers", "log_every", "progress",
    "checkpoint_every", "val_every",
}  # fmt: skip


class ExponentialMovingAverage:
    """A copy of the network whose trainable weights track ``decay``-weighted averages."""

    def __init__(self, network: nn.Module, decay: float, warmup: bool = True) -> None:
        self.model = copy.deepcopy(network).requires_grad_(False).eval()
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for ema_p, p in zip(self.model.parameters(), network.parameters(), strict=True):
            if p.requires_grad:
                ema_p.lerp_(p.detach(), weight)
            else:
                ema_p.copy_(p)
        for ema_b, b in zip(self.model.buffers(), network.buffers(), strict=True):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint's dict; ValueError if ``path`` is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training checkpoint {path} not found (a run writes checkpoint_last.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a training checkpoint ({first[:120]})") from None
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint (format {found!r})")
    return state


@dataclass
class TrainingState:
    """Everything that changes while training; :meth:`save` / :meth:`load` round-trip it exactly."""

    config: TrainConfig
    network: MFMJTNetwork
    ema: ExponentialMovingAverage
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # this rank's stream of every random draw of training
    step: int = 0

    def _gather_rng(self, world_size: int) -> list[dict[str, Any]]:
        state = _rng_state(self.generator)
        if world_size == 1:
            return [state]
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def save(self, path: Path, rank: int = 0, world_size: int = 1) -> Path:
        """Write the checkpoint (rank 0; every rank must call: the random states are gathered)."""
        rng = self._gather_rng(world_size)
        if rank == 0:
            _save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    "step": self.step,
                    "world_size": world_size,
                    "train_config": self.config.to_dict(),
                    "network_config": self.network.config.to_dict(),
                    "model": self.network.state_dict(),
                    "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": rng,
                },
                path,
            )
            logger.info("saved checkpoint at step %d to %s", self.step, path)
        if world_size > 1:
            dist.barrier()
        return path

    def load(self, path: Path, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> int:
        """Restore from a checkpoint written by :meth:`save`; returns (and sets) its step."""
        ckpt = read_checkpoint(path, map_location=device)
        if ckpt["network_config"] != self.network.config.to_dict():
            raise ValueError(
                f"{path} was trained with network {ckpt['network_config']}, "
                f"not {self.network.config.to_dict()}"
            )
        old, new = ckpt["train_config"], self.config.to_dict()
        changed = sorted(k for k in new if k not in RESUME_FREE_FIELDS and old.get(k) != new[k])
        if changed:
            logger.warning(
                "resuming with changed settings %s: the run is no longer an exact continuation", changed
            )
        self.network.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        rng = ckpt["rng"]
        if ckpt["world_size"] != world_size or rank >= len(rng):
            logger.warning(
                "checkpoint has %d ranks, running %d: random streams restart", len(rng), world_size
            )
            self.generator.manual_seed(self.config.seed + rank + 1_000_003 * int(ckpt["step"]))
        else:
            state = rng[rank]
            self.generator.set_state(state["generator"].cpu())
            torch.set_rng_state(state["torch"].cpu())
            if state["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        self.step = int(ckpt["step"])
        logger.info("resumed from %s at step %d", path, self.step)
        return self.step


__all__ = ["CHECKPOINT_FORMAT", "ExponentialMovingAverage", "TrainingState", "read_checkpoint"]
