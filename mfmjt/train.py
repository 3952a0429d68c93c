"""Training loop: MeanFlow (or flow-matching) training of the MF-MJT network on feature stores.

Single process or ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment; gloo on CPU, nccl on
GPU). The recipe follows the paper (§3.2) on top of MMAudio's (reference §7):

- x = normalize(mean + std·ε) with fresh ε every step; per-modality condition dropout with the
  network's learned "no video" features and the stored empty-string features;
- AdamW (betas 0.9/0.95, weight decay 1e-6, eps 1e-8), linear warm-up, then ×0.1 steps at 62.5 %
  and 87.5 % of the run (the paper's 250k and 350k of 400k); gradient-norm clipping at 1.0;
- an exponential moving average of the weights, which is what gets exported;
- every random draw from one ``torch.Generator`` seeded with ``seed + rank``; the data order is
  a function of (seed, step), so a resumed run continues bit-identically on CPU.

Data: one or several stores, mfmjt's own layout or MMAudio's extracted features (detected per
directory), mixed at per-store shares of every batch (:mod:`mfmjt.data.mix`); all are checked
against the network before the first step (:mod:`mfmjt.data.compat`). ``val_items`` items of the
first store are held out and scored every ``val_every`` steps (:mod:`mfmjt.validation`).
Options: :mod:`mfmjt.train_config`; the checkpointed state: :mod:`mfmjt.train_state`.

Data parallelism averages gradients with one all-reduce per step instead of wrapping the model in
``DistributedDataParallel``: the MeanFlow loss runs the network twice per step (a plain forward
for the r = t rows and a ``torch.func.jvp`` for the r ≠ t rows), which DDP's backward hooks do
not expect. Every rank then applies the same update, so the weights stay identical.

Outputs in ``out_dir``: ``checkpoint_last.pt`` (full state), ``train_log.jsonl`` (one line per
logged step, with the validation metrics on validation steps), ``train_config.json`` and the
exported EMA network in ``final/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mfmjt.config import NetworkConfig
from mfmjt.data.compat import check_stores, fill_audio_only
from mfmjt.data.mix import BatchSampler, MixedIndexStream, StoreMix, held_out_items
from mfmjt.data.stores import (
    TrainingStore,
    open_feature_store,
    store_has_audio,
    store_has_video,
    store_latent_stats,
)
from mfmjt.dataclass_args import values_from_args
from mfmjt.meanflow import (
    MeanFlowConfig,
    MeanFlowLoss,
    TrainingGuidance,
    drop_conditions,
    meanflow_loss,
    sample_guidance,
)
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import flat_metadata, save_network
from mfmjt.resolve import ModelSource, resolve_model
from mfmjt.train_config import FINETUNE_DEFAULTS, TrainConfig, add_train_arguments, short_run_ema_decay
from mfmjt.train_state import CHECKPOINT_FORMAT, ExponentialMovingAverage, TrainingState, read_checkpoint
from mfmjt.validation import validate

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
LOG_NAME = "train_log.jsonl"
CONFIG_NAME = "train_config.json"
EXPORT_NAME = "final"


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
@dataclass
class RunData:
    """The stores of a run, mixed, and the global indices held out for validation."""

    mix: StoreMix
    val_indices: np.ndarray
    held_out: dict[int, np.ndarray]

    @property
    def first(self) -> TrainingStore:
        return self.mix.stores[0]


def open_stores(config: TrainConfig, network_config: Any = None) -> RunData:
    """Open every store of ``config`` (either layout), check them against the network and each
    other (one ValueError listing every problem) and hold out the validation items."""
    cfg = network_config or config.network_config()
    specs = config.store_specs
    stores = [open_feature_store(spec.path) for spec in specs]
    fill_audio_only(stores, cfg)
    overrides = f" with overrides {config.network_overrides}" if config.network_overrides else ""
    check_stores(stores, cfg, f"{config.variant}{overrides}")
    mix = StoreMix(stores, [spec.weight for spec in specs], [spec.repeat for spec in specs])
    held = held_out_items(len(stores[0]), config.val_items) if config.val_items else np.zeros(0, np.int64)
    return RunData(mix=mix, val_indices=held + mix.offsets[0], held_out={0: held})


def _collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # StoreMix.__getitems__ already stacks the batch


# -------------------------------------------------------------------------- model pieces
def _as_stores(stores: RunData | StoreMix | TrainingStore | Sequence[TrainingStore]) -> list[TrainingStore]:
    if isinstance(stores, RunData):
        return stores.mix.stores
    if isinstance(stores, StoreMix):
        return stores.stores
    if isinstance(stores, Sequence):
        return list(stores)
    return [stores]


def build_network(
    config: TrainConfig,
    stores: RunData | StoreMix | TrainingStore | Sequence[TrainingStore],
    *,
    compute_stats: bool = True,
) -> MFMJTNetwork:
    """The network as training starts: seeded init (or ``init_from``), latent statistics and
    empty-string features from the stores (an ``init_from`` checkpoint keeps its own statistics).

    The statistics come from the first store with video (MMAudio: its first video dataset), else
    the first store (skipped with ``compute_stats=False``, when a checkpoint will replace them);
    the empty-string features from ``config.empty_text``, else the first store that has them."""
    store_list = _as_stores(stores)
    net_cfg = config.network_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MFMJTNetwork(net_cfg)
    if config.init_from is not None:
        _load_initial_weights(net, config.init_from, config.variant)
        logger.info("initialised from %s (keeping its latent statistics)", config.init_from)
    elif compute_stats:
        source = next((s for s in store_list if store_has_video(s).any()), store_list[0])
        mean, std = store_latent_stats(source)
        if not torch.all(std > 0):
            raise ValueError(
                f"latent channels {torch.nonzero(std <= 0).flatten().tolist()} of {source.path} "
                "have zero variance; the store's latents cannot be normalised"
            )
        net.set_latent_stats(mean, std)
    if config.empty_text is not None:
        empty_text = read_empty_text(config.empty_text, net_cfg.text_seq_len, net_cfg.text_dim)
    else:
        empty_text = next((e for e in (s.empty_text_features() for s in store_list) if e is not None), None)
    if empty_text is not None:
        with torch.no_grad():
            net.empty_string_feat.copy_(empty_text)
    elif config.init_from is None:
        logger.warning(
            "no empty-string features (none in the store, no --empty-text): the 'no text' condition is "
            "the network's default (zeros)"
        )
    return net


def read_empty_text(path: str | Path, length: int, dim: int) -> torch.Tensor:
    """Features of the empty string ``[length, dim]`` from MMAudio's ``empty_string.pth`` (a tensor
    ``[1, length, dim]``), a ``.pt`` tensor or a ``.npy`` array."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"empty_text {path} does not exist")
    if path.suffix == ".npy":
        value = torch.from_numpy(np.load(path))
    else:
        value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"empty_text {path} holds a {type(value).__name__}, not a tensor")
    if value.dim() == 3 and value.shape[0] == 1:
        value = value[0]  # MMAudio's empty_string.pth; its runner takes [0]
    if tuple(value.shape) != (length, dim):
        raise ValueError(f"empty_text {path} has shape {list(value.shape)}, expected [{length}, {dim}]")
    return value.float()


def _init_source(name: str | Path, variant: str | None, network: NetworkConfig | None) -> ModelSource:
    """``init_from`` resolved; a bare state dict whose shapes fit no registered variant takes the
    architecture the options give (``variant`` + ``network``), since the file cannot tell it."""
    try:
        return resolve_model(name)
    except ValueError:
        if network is None or variant is None:
            raise
        return resolve_model(name, variant=variant, network=network)


def _load_initial_weights(net: MFMJTNetwork, source: str | Path, variant: str | None = None) -> None:
    """Load ``init_from``: any model name :func:`mfmjt.resolve.resolve_model` takes (``default``, an
    MMAudio name: downloaded and md5-checked, a model directory, a .pth/.safetensors state dict, a Hub
    repo id)."""
    found = _init_source(source, variant, net.config if variant is not None else None)
    if found.kind == "mmaudio" and variant is not None and found.variant != variant:
        raise ValueError(
            f"init_from {source} is MMAudio's {found.variant} network; train it with "
            f"--variant {found.variant} (not {variant})"
        )
    state = found.load_network().state_dict() if found.directory is not None else found.state_dict()
    try:
        net.load_mmaudio_state_dict(state)
    except ValueError as err:
        arch, overrides = found.architecture()
        flags = "".join(f" --network {k}={json.dumps(v)}" for k, v in overrides.items())
        raise ValueError(
            f"init_from {source} does not fit variant {variant!r} (it is a {arch} network: drop --variant "
            f"and --network to take its architecture, or use --variant {arch}{flags}): {err}"
        ) from None


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """``mfmjt train``'s options as a :class:`TrainConfig`. With ``--init-from``, the architecture
    (variant and network overrides) and the MeanFlow settings the source was trained with (if it
    records them) are the source's; from a flow-matching model, MeanFlow fine-tuning instead
    (:data:`FINETUNE_DEFAULTS`, unless ``--continue-flow-matching``). Flags given on the command line
    override all of these."""
    values = values_from_args(TrainConfig, args)
    meanflow = values_from_args(MeanFlowConfig, args)
    if values.get("init_from") is not None:
        given = None  # the architecture flags, for a bare state dict that cannot tell its own
        if "variant" in values:
            given = NetworkConfig.variant(values["variant"], **values.get("network_overrides", {}))
        source = _init_source(values["init_from"], values.get("variant"), given)
        variant, overrides = source.architecture()
        if "variant" not in values:
            values["variant"] = variant
            values["network_overrides"] = {**overrides, **values.get("network_overrides", {})}
        recorded = (source.config.provenance.training or {}).get("meanflow") or {}
        known = {f.name for f in fields(MeanFlowConfig)}
        if source.objective == "flow_matching" and not getattr(args, "continue_flow_matching", False):
            # MeanFlow fine-tuning (the lab's choice), not more flow matching: see FINETUNE_DEFAULTS
            recorded = {k: v for k, v in FINETUNE_DEFAULTS.items() if k in known}
            for key, value in FINETUNE_DEFAULTS.items():
                if key not in known:
                    values.setdefault(key, value)
            if "guidance_embed" not in values.get("network_overrides", {}):
                values["network_overrides"] = {**values.get("network_overrides", {}), "guidance_embed": True}
            if "ema_decay" not in values and "steps" in values:
                values["ema_decay"] = short_run_ema_decay(values["steps"])
            logger.info("init_from a flow-matching model: MeanFlow fine-tuning, %s", FINETUNE_DEFAULTS)
        meanflow = {**{k: v for k, v in recorded.items() if k in known}, **meanflow}
        logger.info("init_from %s: %s", values["init_from"], source.describe())
    return TrainConfig(**values, meanflow=MeanFlowConfig(**meanflow))


def init_features(config: TrainConfig) -> tuple[dict[str, Any] | None, dict[str, Path]]:
    """The feature stack of ``init_from`` (its ``features`` section and files), for a store that records
    none; (None, {}) without ``init_from``."""
    if config.init_from is None:
        return None, {}
    source = _init_source(config.init_from, config.variant, config.network_config())
    return flat_metadata(source.config)["features"], source.feature_files()


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at (0-based) ``step``: linear warm-up then step decays."""
    warm = min(1.0, (step + 1) / (config.warmup_steps + 1)) if config.warmup_steps else 1.0
    decays = sum(step >= math.floor(f * config.steps) for f in config.lr_decay_at)
    return warm * config.lr_decay_factor**decays


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

    ``build_network(config, data, compute_stats=...)`` makes the starting network (default
    :func:`build_network`), ``wrap_store(store)`` may replace the run's first store (the dataset its
    batches come from), ``loss`` is called like :func:`mfmjt.meanflow.meanflow_loss` plus ``batch=``
    (the raw batch on the device: item ``index``, undropped conditions), and
    ``export_metadata`` adds (or overrides) fields of the exported model's ``config.json``.
    """

    build_network: Callable[..., MFMJTNetwork] | None = None
    wrap_store: Callable[[TrainingStore], TrainingStore] | None = None
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


def _new_state(
    config: TrainConfig,
    data: RunData,
    info: _Dist,
    resuming: bool = False,
    build: Callable[..., MFMJTNetwork] = build_network,
) -> TrainingState:
    device = info.device
    net = build(config, data, compute_stats=not resuming).to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    if info.world_size > 1:
        with torch.no_grad():
            for p in net.parameters():
                dist.broadcast(p.data, src=0)
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        eps=config.eps,
        fused=device.type == "cuda",
    )
    return TrainingState(
        config=config,
        network=net,
        ema=ExponentialMovingAverage(net, config.ema_decay, config.ema_warmup),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config)),
        generator=torch.Generator(device).manual_seed(config.seed + info.rank),
    )


def _fit(config: TrainConfig, info: _Dist, hooks: TrainHooks) -> TrainResult:
    data = open_stores(config)
    if hooks.wrap_store is not None:
        data.mix.stores[0] = hooks.wrap_store(data.mix.stores[0])
    for store in data.mix.stores:
        if not store_has_audio(store):
            raise ValueError(
                f"feature store {store.path} has no audio latents: "
                "use mfmjt distill, whose teacher makes them"
            )
    device, main = info.device, info.is_main
    out_dir = config.out_dir
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ckpt_path.exists() and not config.resume:
        raise ValueError(f"{out_dir} already holds a checkpoint; resume it or choose another out_dir")

    state = _new_state(config, data, info, ckpt_path.exists(), hooks.build_network or build_network)
    net = state.network
    params = [p for p in net.parameters() if p.requires_grad]
    start = 0
    if ckpt_path.exists():
        start = state.load(ckpt_path, info.rank, info.world_size, device)
    stop = min(config.steps, config.stop_after or config.steps)

    log_file = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        log_file = _open_log(out_dir / LOG_NAME, start)
    shares = ", ".join(f"{s.path} {w:.0%}" for s, w in zip(data.mix.stores, data.mix.shares, strict=True))
    (logger.info if main else logger.debug)(
        "training %s (%s, %.2fM parameters) on %d items (%s; %d held out), steps %d..%d of %d, "
        "world size %d, device %s",
        config.variant, config.objective, sum(p.numel() for p in params) / 1e6, len(data.mix), shares,
        len(data.val_indices), start, stop, config.steps, info.world_size, device,
    )  # fmt: skip

    stream = MixedIndexStream(
        data.mix, config.batch_size, info.rank, info.world_size, config.seed, held_out=data.held_out
    )
    loader = DataLoader(
        data.mix,
        batch_sampler=BatchSampler(stream, start, stop),
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
            lr = state.optimizer.param_groups[0]["lr"]
            stats = _train_step(net, params, batch, config, state.generator, autocast, info, hooks.loss)
            state.optimizer.step()
            state.scheduler.step()
            state.ema.update(net)
            step = state.step = step + 1
            validating = len(data.val_indices) > 0 and (
                step == config.steps or (config.val_every and step % config.val_every == 0)
            )
            if step % config.log_every == 0 or step == stop or validating:
                record = _reduce_stats(stats, info)
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"loss became {record['loss']} at step {step}")
                now = time.perf_counter()
                record = {"step": step, **record, "lr": lr, "seconds": now - t_last, "elapsed": now - t_start}
                if validating and main:
                    metrics = validate(
                        state.ema.model,
                        data.mix,
                        data.val_indices,
                        batch_size=config.batch_size,
                        device=device,
                    )
                    record.update(metrics)
                    logger.info(
                        "step %d validation (EMA, %d held-out items): one-step latent MSE %.4f, cosine %.4f, "
                        "flow-matching loss %.4f",
                        step, len(data.val_indices), metrics["val_one_step_mse"], metrics["val_one_step_cos"],
                        metrics["val_fm_loss"],
                    )  # fmt: skip
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
                checkpoint = state.save(ckpt_path, info.rank, info.world_size)
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
            _export(state.ema.model, config, data.first, step, export_dir, metadata=hooks.export_metadata)
        if info.world_size > 1:
            dist.barrier()
    return TrainResult(
        network=net, ema_network=state.ema.model, step=step, checkpoint=checkpoint, export_dir=export_dir
    )


def _lineage(config: TrainConfig, step: int) -> list[str]:
    """The stages that made a model: its parent's lineage (an ``init_from`` model directory may carry
    one) and this run, in a line."""
    parent: list[str] = []
    if config.init_from is not None:
        source = _init_source(config.init_from, config.variant, config.network_config())
        parent = list(flat_metadata(source.config).get("lineage", []))
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
    store: TrainingStore,
    step: int,
    out: Path,
    weights_dtype: torch.dtype | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``network`` as a model directory; ``metadata`` adds or overrides config.json fields."""
    features = store.extra.get("features")
    files = {name: Path(store.path) / name for name in (features or {}).get("files", [])}
    if not features:  # a store that records no feature stack: the init_from model's
        features, files = init_features(config)
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
    save_network(network, out, weights_dtype=weights_dtype, **{**fields_, **(metadata or {})})
    # A store (or the init_from model) may carry the feature stack's files (e.g. the offline codec): the
    # exported model directory then holds everything the pipeline needs.
    for name, path in files.items():
        shutil.copy2(path, out / name)
    logger.info("exported the EMA network (step %d) to %s", step, out)
    return out


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, weights_dtype: torch.dtype | None = None
) -> Path:
    """Export the EMA network of a training checkpoint (e.g. one left by ``--stop-after``) as a model
    directory like the one a finished run writes; its feature store must still be where it was.
    ``weights_dtype`` (e.g. ``torch.float16``) stores the weights rounded to that type."""
    state = read_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["train_config"])
    net_cfg = NetworkConfig.from_dict(state["network_config"])
    data = open_stores(config, net_cfg)
    network = MFMJTNetwork(net_cfg)
    network.load_state_dict(state["ema"]["model"])
    return _export(network.eval(), config, data.first, int(state["step"]), Path(out), weights_dtype)


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
    extra = {} if loss_fn is None else {"batch": b}  # a swapped-in loss may use the raw batch
    with autocast:
        out = (loss_fn or meanflow_loss)(
            net, x, (clip_f, sync_f, text_f), config=config.meanflow, generator=generator, guidance=guidance,
            **extra,
        )  # fmt: skip
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


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mfmjt.train`` / ``torchrun -m mfmjt.train`` entry point."""
    parser = add_train_arguments(argparse.ArgumentParser(description="Train an MF-MJT network"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(TrainConfig.from_args(args))


if __name__ == "__main__":
    main()


__all__ = [
    "CHECKPOINT_FORMAT",
    "ExponentialMovingAverage",
    "RunData",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "TrainingState",
    "add_train_arguments",
    "build_network",
    "export_checkpoint",
    "fit",
    "lr_factor",
    "open_stores",
    "train",
]
