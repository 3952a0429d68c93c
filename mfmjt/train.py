"""Training loop: MeanFlow (or flow-matching) training of the MF-MJT network on a feature store.

Single process or ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment; gloo on CPU, nccl on
GPU). The recipe follows the paper (§3.2) on top of MMAudio's (reference §7):

- x = normalize(mean + std·ε) with fresh ε every step; per-modality condition dropout with the
  network's learned "no video" features and the stored empty-string features;
- AdamW (betas 0.9/0.95, weight decay 1e-6, eps 1e-8), linear warm-up, then ×0.1 steps at 62.5 %
  and 87.5 % of the run (the paper's 250k and 350k of 400k); gradient-norm clipping at 1.0;
- an exponential moving average of the weights, which is what gets exported;
- every random draw from one ``torch.Generator`` seeded with ``seed + rank``; the data order is
  a function of (seed, step), so a resumed run continues bit-identically on CPU.

Data parallelism averages gradients with one all-reduce per step instead of wrapping the model in
``DistributedDataParallel``: the MeanFlow loss runs the network twice per step (a plain forward
for the r = t rows and a ``torch.func.jvp`` for the r ≠ t rows), which DDP's backward hooks do
not expect. Every rank then applies the same update, so the weights stay identical.

Outputs in ``out_dir``: ``checkpoint_last.pt`` (full state), ``train_log.jsonl`` (one line per
logged step), ``train_config.json`` and the exported EMA network in ``final/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from mfmjt.config import SYNC_TOKENS_PER_SEGMENT, NetworkConfig
from mfmjt.feature_store import FeatureStore, latent_stats
from mfmjt.meanflow import (
    MeanFlowConfig,
    MeanFlowLoss,
    TrainingGuidance,
    drop_conditions,
    meanflow_loss,
    sample_guidance,
)
from mfmjt.model import MFMJTNetwork
from mfmjt.model.network import read_metadata

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
LOG_NAME = "train_log.jsonl"
CONFIG_NAME = "train_config.json"
EXPORT_NAME = "final"
CHECKPOINT_FORMAT = "mfmjt-train-checkpoint"
# Fields that may change between a run and its resumption without breaking exactness.
_RESUME_FREE_FIELDS = {
    "store", "out_dir", "stop_after", "resume", "device", "num_workers", "log_every", "progress",
    "checkpoint_every",
}  # fmt: skip


# ------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. ``batch_size`` is per process (the paper: 64 per GPU)."""

    store: Path
    out_dir: Path
    variant: str = "tiny"
    network_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: Path | None = None  # MMAudio .pth / .safetensors or a save_pretrained directory
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-6
    eps: float = 1e-8
    warmup_steps: int = 1000
    lr_decay_at: tuple[float, ...] = (0.625, 0.875)  # fractions of ``steps``
    lr_decay_factor: float = 0.1  # applied at each of ``lr_decay_at``
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1+n)/(10+n)): short runs still average recent weights
    bf16: bool = False  # bfloat16 autocast of the forward passes (weights and optimiser stay float32)
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)
    seed: int = 0
    checkpoint_every: int = 1000  # 0: only at the end
    stop_after: int | None = None  # stop (with a checkpoint) after this step, e.g. for time-limited jobs
    resume: bool = True  # continue from out_dir/checkpoint_last.pt when it exists
    device: str | None = None  # default: cuda:<local rank> when available, else cpu
    num_workers: int = 0
    log_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lr_decay_at", tuple(float(f) for f in self.lr_decay_at))
        object.__setattr__(self, "network_overrides", dict(self.network_overrides))
        if isinstance(self.meanflow, Mapping):
            object.__setattr__(self, "meanflow", MeanFlowConfig(**self.meanflow))
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
        for key in ("store", "out_dir", "init_from"):
            out[key] = None if out[key] is None else str(out[key])
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
        meanflow = MeanFlowConfig(
            time_mu=args.time_mu,
            time_sigma=args.time_sigma,
            mean_flow_ratio=args.mean_flow_ratio,
            one_step_share=args.one_step_share,
            video_dropout=args.video_dropout,
            text_dropout=args.text_dropout,
            all_dropout=args.all_dropout,
            adaptive_loss_power=args.adaptive_loss_power,
            guidance_max=args.guidance_max,
            guidance_unguided_share=args.guidance_unguided_share,
        )
        return cls(
            store=args.store,
            out_dir=args.out,
            variant=args.variant,
            network_overrides=_parse_overrides(args.network or []),
            init_from=args.init_from,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            lr_decay_at=tuple(args.lr_decay_at),
            ema_decay=args.ema_decay,
            bf16=args.bf16,
            meanflow=meanflow,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            stop_after=args.stop_after,
            resume=not args.no_resume,
            device=args.device,
            num_workers=args.num_workers,
            log_every=args.log_every,
            progress=not args.no_progress,
        )


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
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


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (for ``mfmjt train``); see :meth:`TrainConfig.from_args`."""
    d, m = TrainConfig(store=Path("."), out_dir=Path(".")), MeanFlowConfig()
    a = parser.add_argument
    a("--store", type=Path, required=True, help="feature store directory (FeatureStoreWriter output)")
    a("--out", type=Path, required=True, help="run directory: checkpoints, log, exported model")
    a("--variant", default=d.variant, help="network variant name (tiny, small_16k, ...)")
    a("--network", action="append", metavar="KEY=VALUE", help="override a NetworkConfig field (repeatable)")
    a("--init-from", type=Path, default=None, help="initial weights: MMAudio .pth or a saved model dir")
    a("--steps", type=int, default=d.steps)
    a("--batch-size", type=int, default=d.batch_size, help="per process")
    a("--lr", type=float, default=d.lr)
    a("--warmup-steps", type=int, default=d.warmup_steps)
    a("--lr-decay-at", type=float, nargs="*", default=list(d.lr_decay_at), help="fractions of --steps")
    a("--ema-decay", type=float, default=d.ema_decay)
    a("--bf16", action="store_true", help="bfloat16 autocast")
    a("--mean-flow-ratio", type=float, default=m.mean_flow_ratio, help="0 = flow-matching baseline")
    a(
        "--one-step-share",
        type=float,
        default=m.one_step_share,
        help="share of r≠t pairs trained at (r, t) = (0, 1), the one-step sampler's pair (paper: 0)",
    )
    a("--time-mu", type=float, default=m.time_mu)
    a("--time-sigma", type=float, default=m.time_sigma)
    a("--video-dropout", type=float, default=m.video_dropout)
    a("--text-dropout", type=float, default=m.text_dropout)
    a("--all-dropout", type=float, default=m.all_dropout, help="P(drop all conditions at once)")
    a(
        "--adaptive-loss-power",
        type=float,
        default=m.adaptive_loss_power,
        help="p of the per-sample loss weight 1/(err+c)^p (0 = plain L2, the paper; MeanFlow uses 1)",
    )
    a(
        "--guidance-max",
        type=float,
        default=m.guidance_max,
        help="train CFG into the network for ω in [1, this] (needs --network guidance_embed=true; 1 = off)",
    )
    a(
        "--guidance-unguided-share",
        type=float,
        default=m.guidance_unguided_share,
        help="share of samples trained at ω = 1 when --guidance-max > 1",
    )
    a("--seed", type=int, default=d.seed)
    a("--checkpoint-every", type=int, default=d.checkpoint_every)
    a("--stop-after", type=int, default=None, help="stop after this step (resumable)")
    a("--no-resume", action="store_true", help="refuse to continue an existing checkpoint")
    a("--device", default=None)
    a("--num-workers", type=int, default=d.num_workers)
    a("--log-every", type=int, default=d.log_every)
    a("--no-progress", action="store_true")
    return parser


# ---------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(config: TrainConfig) -> tuple[_Dist, bool]:
    """Read torchrun's environment; initialise the process group if needed. Returns (info, owned)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if config.device is not None:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None:  # "cuda": this process's GPU under torchrun
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owned = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owned = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return _Dist(rank=rank, world_size=world, local_rank=local_rank, device=device), owned


def _average_gradients(params: Sequence[nn.Parameter], world_size: int) -> None:
    """Mean of the gradients over ranks, one flat all-reduce (missing grads count as zeros)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


# ----------------------------------------------------------------------------------- data
class _IndexStream:
    """Item indices of one rank: DistributedSampler epochs back to back; batch k is positions
    ``[k·B, (k+1)·B)``. A pure function of (seed, rank, step), so resuming needs no loader state."""

    def __init__(self, store: FeatureStore, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        self.sampler = DistributedSampler(store, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.per_rank = self.sampler.num_samples
        self.batch_size = batch_size
        self._cache: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            self.sampler.set_epoch(epoch)
            self._cache = {k: v for k, v in self._cache.items() if k >= epoch - 1}
            self._cache[epoch] = list(iter(self.sampler))
        return self._cache[epoch]

    def batch(self, step: int) -> list[int]:
        out: list[int] = []
        pos = step * self.batch_size
        while len(out) < self.batch_size:
            epoch, offset = divmod(pos, self.per_rank)
            take = min(self.batch_size - len(out), self.per_rank - offset)
            out.extend(self._epoch(epoch)[offset : offset + take])
            pos += take
        return out


class _BatchSampler:
    def __init__(self, stream: _IndexStream, start: int, stop: int) -> None:
        self.stream, self.start, self.stop = stream, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        return (self.stream.batch(s) for s in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # FeatureStore.__getitems__ already stacks the batch


def open_store(config: TrainConfig, network_config: NetworkConfig | None = None) -> FeatureStore:
    """Open the store and check it against the network's feature dimensions (ValueError if not)."""
    if not config.store.is_dir():
        raise ValueError(f"feature store {config.store} does not exist: extract features first")
    store = FeatureStore(config.store)
    cfg = network_config or config.network_config()
    expected = {
        "latent_mean": ("latent_dim", cfg.latent_dim),
        "latent_std": ("latent_dim", cfg.latent_dim),
        "clip_f": ("clip_dim", cfg.clip_dim),
        "sync_f": ("sync_dim", cfg.sync_dim),
        "text_f": ("text_dim", cfg.text_dim),
    }
    problems = [
        f"{name} has {store.shapes[name][1]} channels but the network's {field_name} is {dim}"
        for name, (field_name, dim) in expected.items()
        if store.shapes[name][1] != dim
    ]
    if store.shapes["text_f"][0] != cfg.text_seq_len:
        problems.append(
            f"text_f has {store.shapes['text_f'][0]} tokens, the network expects {cfg.text_seq_len}"
        )
    if store.shapes["sync_f"][0] % SYNC_TOKENS_PER_SEGMENT:
        problems.append(
            f"sync_f length {store.shapes['sync_f'][0]} is not a multiple of {SYNC_TOKENS_PER_SEGMENT}"
        )
    if problems:
        raise ValueError(
            f"feature store {config.store} does not match network variant {config.variant!r}"
            f"{' with overrides ' + str(config.network_overrides) if config.network_overrides else ''}: "
            + "; ".join(problems)
            + " (set the network's sizes with --network name=value, e.g. --network sync_dim=48)"
        )
    return store


# -------------------------------------------------------------------------- model pieces
def build_network(config: TrainConfig, store: FeatureStore) -> MFMJTNetwork:
    """The network as training starts: seeded init (or ``init_from``), latent statistics and
    empty-string features from the store (an ``init_from`` checkpoint keeps its own statistics)."""
    net_cfg = config.network_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MFMJTNetwork(net_cfg)
    if config.init_from is not None:
        _load_initial_weights(net, config.init_from)
        logger.info("initialised from %s (keeping its latent statistics)", config.init_from)
    else:
        mean, std = latent_stats(store)
        if not torch.all(std > 0):
            raise ValueError(
                f"latent channels {torch.nonzero(std <= 0).flatten().tolist()} of {config.store} "
                "have zero variance; the store's latents cannot be normalised"
            )
        net.set_latent_stats(mean, std)
    empty_text = store.empty_text_features()
    if empty_text is not None:
        with torch.no_grad():
            net.empty_string_feat.copy_(empty_text)
    else:
        logger.warning("feature store has no empty_text_f: the 'no text' condition is the network's default")
    return net


def _load_initial_weights(net: MFMJTNetwork, source: Path) -> None:
    if source.is_dir():
        state = MFMJTNetwork.from_pretrained(source).state_dict()
    elif source.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(source))
    elif source.is_file():
        state = torch.load(source, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"init_from {source} does not exist")
    net.load_mmaudio_state_dict(state)


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


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at (0-based) ``step``: linear warm-up then step decays."""
    warm = min(1.0, (step + 1) / (config.warmup_steps + 1)) if config.warmup_steps else 1.0
    decays = sum(step >= math.floor(f * config.steps) for f in config.lr_decay_at)
    return warm * config.lr_decay_factor**decays


# --------------------------------------------------------------------------- checkpoints
def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _gather_rng(generator: torch.Generator, info: _Dist) -> list[dict[str, Any]]:
    state = _rng_state(generator)
    if info.world_size == 1:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` leaves behind (on every rank)."""

    network: MFMJTNetwork
    ema_network: MFMJTNetwork
    step: int
    checkpoint: Path | None
    export_dir: Path | None  # None when stopped early by ``stop_after``


@dataclass(frozen=True)
class TrainHooks:
    """Parts of the loop another objective swaps in (e.g. :mod:`mfmjt.distill`); None keeps the default.

    ``build_network(config, store)`` makes the starting network (default :func:`build_network`),
    ``wrap_store(store)`` may replace the dataset the batches come from, ``loss`` is called like
    :func:`mfmjt.meanflow.meanflow_loss`, and ``export_metadata`` adds (or overrides) fields of the
    exported model's ``config.json``.
    """

    build_network: Callable[[TrainConfig, FeatureStore], MFMJTNetwork] | None = None
    wrap_store: Callable[[FeatureStore], FeatureStore] | None = None
    loss: Callable[..., MeanFlowLoss] | None = None
    export_metadata: Mapping[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- training
def train(config: TrainConfig, hooks: TrainHooks | None = None) -> Path:
    """Train (or resume) and return the exported model directory, or the checkpoint file when
    the run stopped early at ``config.stop_after``."""
    result = fit(config, hooks)
    return result.export_dir if result.export_dir is not None else config.out_dir / CHECKPOINT_NAME


def fit(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Run training in this process (one rank under torchrun)."""
    info, owned = _setup_distributed(config)
    try:
        return _fit(config, info, hooks or TrainHooks())
    finally:
        if owned:
            dist.destroy_process_group()


def _fit(config: TrainConfig, info: _Dist, hooks: TrainHooks) -> TrainResult:
    net_cfg = config.network_config()
    store = open_store(config, net_cfg)
    if hooks.wrap_store is not None:
        store = hooks.wrap_store(store)
    device, main = info.device, info.is_main
    out_dir = config.out_dir
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ckpt_path.exists() and not config.resume:
        raise ValueError(f"{out_dir} already holds a checkpoint; resume it or choose another out_dir")

    net = (hooks.build_network or build_network)(config, store).to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    if info.world_size > 1:
        with torch.no_grad():
            for p in net.parameters():
                dist.broadcast(p.data, src=0)
    ema = ExponentialMovingAverage(net, config.ema_decay, config.ema_warmup)
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        eps=config.eps,
        fused=device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    generator = torch.Generator(device).manual_seed(config.seed + info.rank)

    start = 0
    if ckpt_path.exists():
        start = _resume(ckpt_path, config, info, net, ema, optimizer, scheduler, generator)
    stop = min(config.steps, config.stop_after or config.steps)

    log_file = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        log_file = _open_log(out_dir / LOG_NAME, start)
    (logger.info if main else logger.debug)(
        "training %s (%s, %.2fM parameters) on %d items, steps %d..%d of %d, world size %d, device %s",
        config.variant, config.objective, sum(p.numel() for p in params) / 1e6, len(store), start, stop,
        config.steps, info.world_size, device,
    )  # fmt: skip

    stream = _IndexStream(store, config.batch_size, info.rank, info.world_size, config.seed)
    loader = DataLoader(
        store,
        batch_sampler=_BatchSampler(stream, start, stop),
        collate_fn=_collate,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)
    bar = tqdm(total=config.steps, initial=start, disable=not (main and config.progress), desc="train")
    step, checkpoint = start, None
    t_start = t_last = time.perf_counter()
    try:
        for batch in loader:  # "seconds" of a step: data loading + update, checkpointing excluded
            lr = optimizer.param_groups[0]["lr"]
            stats = _train_step(net, params, batch, config, generator, autocast, info, hooks.loss)
            optimizer.step()
            scheduler.step()
            ema.update(net)
            step += 1
            if step % config.log_every == 0 or step == stop:
                record = _reduce_stats(stats, info)
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss became {record['loss']} at step {step}")
                now = time.perf_counter()
                record = {"step": step, **record, "lr": lr, "seconds": now - t_last, "elapsed": now - t_start}
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                # with the adaptive loss, "loss" is the weighted objective (about 1 per sample); the
                # plain flow-matching error shows whether the network is still improving
                fm = record["fm_loss"]
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}", fm=f"{fm:.4f}" if fm is not None else "-", lr=f"{lr:.2e}"
                )
            bar.update(1)
            if step == stop or (config.checkpoint_every and step % config.checkpoint_every == 0):
                checkpoint = _save_checkpoint(
                    ckpt_path, step, config, info, net, ema, optimizer, scheduler, generator
                )
            t_last = time.perf_counter()
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    if step == start and start > 0:
        checkpoint = ckpt_path  # nothing left to do: already trained up to here

    export_dir = None
    if step >= config.steps:
        export_dir = out_dir / EXPORT_NAME
        if main:
            _export(ema.model, config, store, step, export_dir, metadata=hooks.export_metadata)
        if info.world_size > 1:
            dist.barrier()
    return TrainResult(
        network=net, ema_network=ema.model, step=step, checkpoint=checkpoint, export_dir=export_dir
    )


def _lineage(config: TrainConfig, step: int) -> list[str]:
    """The stages that made a model: its parent's lineage (an ``init_from`` model directory may carry
    one) and this run, in a line."""
    parent: list[str] = []
    if config.init_from is not None and (config.init_from / "config.json").is_file():
        parent = list(read_metadata(config.init_from).get("lineage", []))
    mf = config.meanflow
    recipe = (
        f"r≠t ratio {mf.mean_flow_ratio:g}, "
        + (f"one-step share {mf.one_step_share:g}, " if mf.one_step_share else "")
        + (
            f"guidance trained for ω ≤ {mf.guidance_max:g} (unguided share {mf.guidance_unguided_share:g}), "
            if mf.guidance_max > 1
            else ""
        )
        + f"adaptive loss p {mf.adaptive_loss_power:g}, "
        f"all-condition dropout {mf.all_dropout:g}, lr {config.lr:g}, batch {config.batch_size}"
    )
    origin = f"from {config.init_from}" if config.init_from is not None else "from scratch"
    stage = f"{config.out_dir}: {step:,} of {config.steps:,} steps {origin}, {config.objective}, {recipe}"
    return [*parent, stage]


def _export(
    network: MFMJTNetwork,
    config: TrainConfig,
    store: FeatureStore,
    step: int,
    out: Path,
    weights_dtype: torch.dtype | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    features = store.extra.get("features")
    fields_: dict[str, Any] = dict(
        lineage=_lineage(config, step),
        objective=config.objective,
        variant=config.variant,
        step=step,
        duration=store.duration,
        training=config.to_dict(),
        feature_store=store.extra,
        **({"features": features} if features else {}),
    )
    network.save_pretrained(out, weights_dtype=weights_dtype, **{**fields_, **(metadata or {})})
    # A store may carry the feature stack it was made with (e.g. the offline codec): the exported
    # model directory then holds everything the pipeline needs.
    for name in (features or {}).get("files", []):
        shutil.copy2(Path(config.store) / name, out / name)
    logger.info("exported the EMA network (step %d) to %s", step, out)
    return out


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, weights_dtype: torch.dtype | None = None
) -> Path:
    """Export the EMA network of a training checkpoint (e.g. one left by ``--stop-after``) as a model
    directory like the one a finished run writes; its feature store must still be where it was.
    ``weights_dtype`` (e.g. ``torch.float16``) stores the weights rounded to that type."""
    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint} is not a training checkpoint (format {found!r})")
    config = TrainConfig.from_dict(state["train_config"])
    net_cfg = NetworkConfig.from_dict(state["network_config"])
    store = open_store(config, net_cfg)
    network = MFMJTNetwork(net_cfg)
    network.load_state_dict(state["ema"]["model"])
    return _export(network.eval(), config, store, int(state["step"]), Path(out), weights_dtype)


def _train_step(
    net: MFMJTNetwork,
    params: Sequence[nn.Parameter],
    batch: Mapping[str, torch.Tensor],
    config: TrainConfig,
    generator: torch.Generator,
    autocast: torch.autocast,
    info: _Dist,
    loss_fn: Callable[..., MeanFlowLoss] | None = None,
) -> torch.Tensor:
    """Forward, backward, gradient averaging and clipping. Returns per-rank sums
    ``[loss, fm_sum, fm_count, mf_sum, mf_count, grad_norm]`` (not yet synchronised)."""
    device = info.device
    b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with torch.no_grad():
        eps = torch.randn(b["latent_mean"].shape, generator=generator, device=device)
        x = net.normalize(b["latent_mean"] + b["latent_std"] * eps)  # [B, L, C], fresh sample each step
    clip_f, sync_f, text_f = drop_conditions(
        b["clip_f"],
        b["sync_f"],
        b["text_f"],
        net.empty_clip_feat,
        net.empty_sync_feat,
        net.empty_string_feat,
        config=config.meanflow,
        generator=generator,
        has_video=b["has_video"],
    )
    guidance = None
    if config.meanflow.guidance_max > 1:
        strength, scaled = sample_guidance(x.shape[0], config.meanflow, generator, device)
        empty = (net.empty_clip_feat, net.empty_sync_feat, net.empty_string_feat)  # used without grad
        guidance = TrainingGuidance(strength, scaled, empty)
    with autocast:
        out = (loss_fn or meanflow_loss)(
            net, x, (clip_f, sync_f, text_f), config=config.meanflow, generator=generator, guidance=guidance
        )
    for p in params:
        p.grad = None
    out.loss.backward()
    if info.world_size > 1:
        _average_gradients(params, info.world_size)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    mf = out.pairs.mean
    per = out.per_sample.detach().float()
    return torch.stack(
        [
            out.loss.detach().float(),
            per[~mf].sum(),
            (~mf).sum().float(),
            per[mf].sum(),
            mf.sum().float(),
            grad_norm.detach().float(),
        ]
    )


def _reduce_stats(stats: torch.Tensor, info: _Dist) -> dict[str, float | None]:
    stats = stats.clone()
    if info.world_size > 1:
        dist.all_reduce(stats)
        stats[0] /= info.world_size
        stats[5] /= info.world_size
    loss, fm_sum, fm_n, mf_sum, mf_n, grad_norm = stats.tolist()
    return {
        "loss": loss,
        "fm_loss": fm_sum / fm_n if fm_n else None,
        "mf_loss": mf_sum / mf_n if mf_n else None,
        "grad_norm": grad_norm,
    }


def _open_log(path: Path, start: int) -> Any:
    """Open the JSONL log for appending, dropping lines past ``start`` (left by an interrupted run)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
        path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def _save_checkpoint(
    path: Path,
    step: int,
    config: TrainConfig,
    info: _Dist,
    net: MFMJTNetwork,
    ema: ExponentialMovingAverage,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> Path:
    rng = _gather_rng(generator, info)  # collective: every rank takes part
    if info.is_main:
        _save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "world_size": info.world_size,
                "train_config": config.to_dict(),
                "network_config": net.config.to_dict(),
                "model": net.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
            },
            path,
        )
        logger.info("saved checkpoint at step %d to %s", step, path)
    if info.world_size > 1:
        dist.barrier()
    return path


def _resume(
    path: Path,
    config: TrainConfig,
    info: _Dist,
    net: MFMJTNetwork,
    ema: ExponentialMovingAverage,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> int:
    """Load a full checkpoint into the training state; returns its step."""
    ckpt = torch.load(path, map_location=info.device, weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an mfmjt training checkpoint")
    if ckpt["network_config"] != net.config.to_dict():
        raise ValueError(
            f"{path} was trained with network {ckpt['network_config']}, not {net.config.to_dict()}"
        )
    old, new = ckpt["train_config"], config.to_dict()
    changed = sorted(k for k in new if k not in _RESUME_FREE_FIELDS and old.get(k) != new[k])
    if changed:
        logger.warning(
            "resuming with changed settings %s: the run is no longer an exact continuation", changed
        )
    net.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    rng = ckpt["rng"]
    if ckpt["world_size"] != info.world_size or info.rank >= len(rng):
        logger.warning(
            "checkpoint has %d ranks, running %d: random streams restart", len(rng), info.world_size
        )
        generator.manual_seed(config.seed + info.rank + 1_000_003 * int(ckpt["step"]))
    else:
        state = rng[info.rank]
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    logger.info("resumed from %s at step %d", path, ckpt["step"])
    return int(ckpt["step"])


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mfmjt.train`` / ``torchrun -m mfmjt.train`` entry point."""
    parser = add_train_arguments(argparse.ArgumentParser(description="Train an MF-MJT network"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(TrainConfig.from_args(args))


if __name__ == "__main__":
    main()


__all__ = [
    "ExponentialMovingAverage",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "add_train_arguments",
    "build_network",
    "export_checkpoint",
    "fit",
    "lr_factor",
    "open_store",
    "train",
]
