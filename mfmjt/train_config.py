"""Training options, declared once: :class:`TrainConfig`'s fields are the ``mfmjt train`` flags.

Defaults depend on the variant where the paper gives a recipe. For the paper-size variants
(``small_16k`` and the 44.1 kHz ones) they are the paper's (§3.2): AdamW β 0.9/0.95, lr 2e-4,
weight decay 1e-6, 1,000 warm-up steps, ×0.1 at 250k and 350k of 400k steps, batch 64 per GPU,
bfloat16 autocast, and an EMA of the weights (the paper gives no EMA details; MMAudio's post-hoc EMA
uses σ_rel 0.05, an averaging profile about 5 % of the run wide, which a constant decay of
1 - 1/(0.05·steps) matches: 0.99995 at 400k steps). The toy variant (``tiny``) keeps 10,000 steps,
float32 and EMA decay 0.999.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mfmjt.config import NetworkConfig
from mfmjt.data.mix import StoreSpec
from mfmjt.dataclass_args import add_dataclass_arguments, values_from_args
from mfmjt.meanflow import MeanFlowConfig

PAPER_VARIANTS = frozenset({"small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2"})
EMA_SIGMA_REL = 0.05  # MMAudio's post-hoc EMA width, as a fraction of the run
PAPER_STEPS = 400_000
TOY_STEPS = 10_000
TOY_EMA_DECAY = 0.999


EMA_RUN_FRACTION = 1 / 3  # short runs from a trained model (fine-tuning, distillation): EMA horizon


def short_run_ema_decay(steps: int) -> float:
    """The EMA decay of a short run from a trained model: a horizon of a third of the run,
    1 - 1 / (steps / 3), as MMAudio's post-hoc EMA width is a fixed fraction of its run."""
    return max(0.0, 1.0 - 1.0 / max(1.0, EMA_RUN_FRACTION * steps))


# ``mfmjt train --init-from`` a flow-matching model (MMAudio's networks, the lab's teacher): MeanFlow
# fine-tuning, MeanAudio's route to one step, with the settings the distillation lab chose it with
# (benchmarks/distill_lab.py, recipe mf_finetune; docs/distillation.md). Every key is an option of
# ``mfmjt train``; what is given on the command line wins. The EMA decay follows --steps
# (:func:`short_run_ema_decay`); the network gains a guidance embedding (guidance_embed=true).
FINETUNE_DEFAULTS: dict[str, Any] = dict(
    mean_flow_ratio=0.5,
    one_step_share=0.25,
    guidance_max=3.0,
    guidance_unguided_share=0.25,
    adaptive_loss_power=1.0,
    all_dropout=0.1,
    lr=1e-4,
    warmup_steps=20,
    lr_decay_at=(),
)


def recipe_defaults(variant: str, steps: int | None = None) -> dict[str, Any]:
    """The variant-dependent defaults: ``steps``, ``bf16`` and ``ema_decay`` (for ``steps``, or
    the recipe's own step count when None)."""
    if variant in PAPER_VARIANTS:
        n = PAPER_STEPS if steps is None else steps
        return {"steps": n, "bf16": True, "ema_decay": max(0.0, 1.0 - 1.0 / (EMA_SIGMA_REL * n))}
    return {"steps": TOY_STEPS if steps is None else steps, "bf16": False, "ema_decay": TOY_EMA_DECAY}


def _parse_overrides(items: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"network overrides are KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _opt(help_text: str, **more: Any) -> dict[str, Any]:
    return {"help": help_text, **more}


# Help of the MeanFlowConfig fields (that dataclass lives with the loss; its flags are generated here).
MEANFLOW_HELP = {
    "time_mu": "logit-normal location of both time samples",
    "time_sigma": "logit-normal scale of both time samples",
    "mean_flow_ratio": "expected share of pairs with r≠t (0 = flow-matching baseline)",
    "one_step_share": "share of r≠t pairs trained at (r, t) = (0, 1), the one-step sampler's pair (paper: 0)",
    "video_dropout": "P(replace clip + sync features by 'no video')",
    "text_dropout": "P(replace text features by the empty string)",
    "all_dropout": "P(drop all conditions at once)",
    "adaptive_loss_power": (
        "p of the per-sample loss weight 1/(err+c)^p (0 = plain L2, the paper; MeanFlow uses 1)"
    ),
    "adaptive_loss_eps": "c of that weight",
    "guidance_max": (
        "train CFG into the network for ω in [1, this] (needs --network guidance_embed=true; 1 = off)"
    ),
    "guidance_unguided_share": "share of samples trained at ω = 1 when --guidance-max > 1",
    "guidance_min": "lower end of the trained ω range U[this, --guidance-max] (= --guidance-max: one ω)",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. ``batch_size`` is per process (the paper: 64 per GPU).

    ``steps``, ``bf16`` and ``ema_decay`` left at None take the variant's recipe
    (:func:`recipe_defaults`); the resolved values are what the config holds afterwards.
    """

    store: tuple[str, ...] = field(
        metadata=_opt(
            "feature store: mfmjt's (mfmjt extract) or MMAudio's extracted features (a memmap directory "
            "with its .tsv beside it); repeat for a mix, WEIGHT = the store's relative share of every "
            "batch (default: shares proportional to store sizes; DIR:xK counts a store K times)",
            append=True,
            required=True,
            metavar="DIR[:WEIGHT]",
            parse=tuple,
        )
    )
    out_dir: Path = field(
        metadata=_opt(
            "run directory: checkpoints, log, exported model", flag="--out", required=True, metavar="DIR"
        )
    )
    variant: str = field(default="tiny", metadata=_opt("network variant name (tiny, small_16k, ...)"))
    network_overrides: dict[str, Any] = field(
        default_factory=dict,
        metadata=_opt(
            "override a NetworkConfig field (repeatable)",
            flag="--network",
            append=True,
            metavar="KEY=VALUE",
            parse=_parse_overrides,
        ),
    )
    init_from: str | None = field(
        default=None,
        metadata=_opt(
            "initial weights: a registry name (mmaudio-small-16k, mmaudio-small-44k, ...: downloaded and "
            "md5-checked), an MMAudio .pth, a .safetensors state dict or a saved model directory"
        ),
    )
    empty_text: str | None = field(
        default=None,
        metadata=_opt(
            "features of the empty string, the 'no text' condition: MMAudio's ext_weights/empty_string.pth, "
            "or a .pt/.npy array [text_seq_len, text_dim] (default: the store's own, else the init model's)"
        ),
    )
    steps: int | None = field(
        default=None,
        metadata=_opt(f"training steps (default: {PAPER_STEPS} for paper sizes, {TOY_STEPS} else)"),
    )
    batch_size: int = field(default=64, metadata=_opt("per process"))
    lr: float = field(default=2e-4, metadata=_opt("peak learning rate"))
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata=_opt("AdamW betas"))
    weight_decay: float = field(default=1e-6, metadata=_opt("AdamW weight decay"))
    eps: float = field(default=1e-8, metadata=_opt("AdamW epsilon"))
    warmup_steps: int = field(default=1000, metadata=_opt("linear learning-rate warm-up"))
    lr_decay_at: tuple[float, ...] = field(
        default=(0.625, 0.875), metadata=_opt("learning-rate decays, as fractions of --steps")
    )
    lr_decay_factor: float = field(default=0.1, metadata=_opt("factor applied at each decay"))
    grad_clip: float = field(default=1.0, metadata=_opt("gradient-norm clipping"))
    ema_decay: float | None = field(
        default=None, metadata=_opt("EMA decay (default: 1 - 1/(0.05·steps) for paper sizes, 0.999 else)")
    )
    ema_warmup: bool = field(
        default=True,
        metadata=_opt("EMA decay min(decay, (1+n)/(10+n)): short runs still average recent weights"),
    )
    bf16: bool | None = field(
        default=None, metadata=_opt("bfloat16 autocast of the forwards (default: on for paper sizes)")
    )
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)
    seed: int = field(default=0, metadata=_opt("seed of initialisation, data order and noise"))
    val_items: int = field(
        default=0, metadata=_opt("hold this many items of the first store out of training, for validation")
    )
    val_every: int = field(
        default=0,
        metadata=_opt("validate every N steps (and at the end) on the held-out items; 0: at the end"),
    )
    checkpoint_every: int = field(
        default=1000, metadata=_opt("steps between checkpoints (0: only at the end)")
    )
    stop_after: int | None = field(
        default=None, metadata=_opt("stop (with a checkpoint) after this step, e.g. for time-limited jobs")
    )
    resume: bool = field(
        default=True, metadata=_opt("continue from out_dir/checkpoint_last.pt when it exists")
    )
    device: str | None = field(
        default=None, metadata=_opt("default: cuda:<local rank> when available, else cpu")
    )
    num_workers: int = field(default=0, metadata=_opt("DataLoader worker processes"))
    log_every: int = field(default=1, metadata=_opt("steps between log lines"))
    progress: bool = field(default=True, metadata=_opt("progress bar"))

    def __post_init__(self) -> None:
        store = self.store
        specs = (store,) if isinstance(store, (str, Path)) else tuple(store)
        if not specs:
            raise ValueError("give at least one feature store")
        object.__setattr__(self, "store", tuple(str(s) for s in specs))
        self.store_specs  # noqa: B018 (parses and checks the weights)
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        for name in ("init_from", "empty_text"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lr_decay_at", tuple(float(f) for f in self.lr_decay_at))
        object.__setattr__(self, "network_overrides", dict(self.network_overrides))
        if isinstance(self.meanflow, Mapping):
            object.__setattr__(self, "meanflow", MeanFlowConfig(**self.meanflow))
        recipe = recipe_defaults(self.variant, self.steps)
        for name in ("steps", "bf16", "ema_decay"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, recipe[name])
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}"),
            (self.weight_decay >= 0 and self.eps > 0, "weight_decay must be >= 0 and eps > 0"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (
                all(0 < f < 1 for f in self.lr_decay_at),
                f"lr_decay_at must be in (0, 1), got {self.lr_decay_at}",
            ),
            (0 < self.lr_decay_factor <= 1, f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}"),
            (self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
            (
                self.stop_after is None or self.stop_after >= 1,
                f"stop_after must be >= 1, got {self.stop_after}",
            ),
            (self.num_workers >= 0 and self.log_every >= 1, "num_workers must be >= 0 and log_every >= 1"),
            (self.val_items >= 0 and self.val_every >= 0, "val_items and val_every must be >= 0"),
            (
                self.val_every == 0 or self.val_items > 0,
                f"val_every {self.val_every} needs held-out items: give val_items (--val-items K) > 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        network = self.network_config()  # unknown variant or bad overrides fail here, before any work
        if self.meanflow.guidance_max > 1 and not network.guidance_embed:
            raise ValueError(
                f"guidance_max {self.meanflow.guidance_max:g} trains guidance into the network, which needs "
                "a guidance embedding: add the network override guidance_embed=true"
            )

    @property
    def store_specs(self) -> list[StoreSpec]:
        return [StoreSpec.parse(s) for s in self.store]

    @property
    def objective(self) -> str:
        return "meanflow" if self.meanflow.mean_flow_ratio > 0 else "flow_matching"

    def network_config(self) -> NetworkConfig:
        try:
            return NetworkConfig.variant(self.variant, **self.network_overrides)
        except TypeError as err:  # an unknown override name
            raise ValueError(f"bad network_overrides {self.network_overrides}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings)."""
        out = asdict(self)
        out["store"] = list(self.store)
        out["out_dir"] = str(self.out_dir)
        out["betas"], out["lr_decay_at"] = list(self.betas), list(self.lr_decay_at)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**data)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """Build from the namespace of a parser set up by :func:`add_train_arguments`."""
        values = values_from_args(cls, args)
        meanflow = MeanFlowConfig(**values_from_args(MeanFlowConfig, args))
        return cls(**values, meanflow=meanflow)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (for ``mfmjt train``): one flag per TrainConfig
    field and per MeanFlowConfig field; see :meth:`TrainConfig.from_args`."""
    add_dataclass_arguments(parser, TrainConfig)
    group = parser.add_argument_group("MeanFlow objective")
    add_dataclass_arguments(group, MeanFlowConfig, help_overrides=MEANFLOW_HELP)
    return parser


__all__ = ["PAPER_VARIANTS", "TrainConfig", "add_train_arguments", "recipe_defaults"]
