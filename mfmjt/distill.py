"""MeanFlow distillation from a flow-matching teacher (``mfmjt distill``).

Two terms, each switchable: the regression of the student's one-step output onto the teacher's
multi-step ODE endpoints (:class:`EndpointConfig`, :func:`teacher_endpoints`; on by default, the
recipe benchmarks/distill_lab.py chose) and the MeanFlow identity below (``meanflow_weight``; off by
default, on for students meant for 2-4 steps).

The student starts as an exact copy of the teacher and learns the MeanFlow identity (paper Eq. 4-5)
with the teacher's guided velocity as the instantaneous velocity:

    v_T^ω(z_t, t) = ω·v_c + (1 - ω)·s·v_∅        (s = 1: standard CFG; s = projection scale: scaled)
    u_tgt         = v_T^ω - (t - r)·(v_T^ω·∂z u + ∂t u)

with the public time convention z_t = (1 - t)·x + t·ε (t = 1 noise). The derivative is the JVP of
:func:`mfmjt.meanflow.meanflow_loss` along (v_T^ω, 1), detached; ω and the mode are drawn per sample
(:func:`mfmjt.meanflow.sample_guidance`) and given to the student's guidance embedding, so the
distilled model is guided in one forward. Everything else (optimiser, EMA, checkpoints, resume,
logging, export) is :func:`mfmjt.train.fit` with :class:`mfmjt.train.TrainHooks`.

Initialisation. The teacher is made exactly Δt-independent (:func:`fold_dt_embedding`: its Δt
embedding at Δt = 0, the only Δt a flow-matching model was trained at, moves into the time
embedder's output bias); the student copies it and adds a guidance embedding with a zero output
layer, so at step 0 ``student(z, r, t, ω) == teacher(z, t)`` for every r and ω.

Where x comes from. x is the store's audio latent (a fresh posterior sample each step, as in
training). For stores without audio (``mfmjt extract --videos --no-audio`` or ``--prompts``), or
with ``x_source="teacher"``, x is the teacher's own N-step sample for the item's conditions, made
once and kept in the store directory (``teacher_samples.npy`` + ``teacher_samples.json``),
resumable chunk by chunk.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mfmjt.config import AUDIO_MODES, SequenceLengths
from mfmjt.feature_store import FeatureStore
from mfmjt.guidance import projection_scale
from mfmjt.meanflow import (
    MeanFlowConfig,
    MeanFlowLoss,
    TimePairs,
    TrainingGuidance,
    adaptive_weighted,
    drop_conditions,
    meanflow_loss,
)
from mfmjt.model import MFMJTNetwork
from mfmjt.model.network import GUIDANCE_EMBED_PREFIX
from mfmjt.resolve import ModelSource, resolve_model
from mfmjt.train_config import FINETUNE_DEFAULTS, short_run_ema_decay

logger = logging.getLogger(__name__)

SAMPLES_NAME = "teacher_samples.npy"
SAMPLES_META_NAME = "teacher_samples.json"
X_SOURCES = ("auto", "store", "teacher")


# ------------------------------------------------------------------------------------ teacher
def load_teacher(name: str | Path | ModelSource, device: torch.device | str = "cpu") -> MFMJTNetwork:
    """A flow-matching network from any model name :func:`mfmjt.resolve.resolve_model` takes: a model
    directory, a checkpoint file (.pth/.safetensors), an MMAudio name (``mmaudio-small-16k``: its network
    file only), ``default`` or a Hugging Face repo id. Returned in eval mode, frozen, Δt-independent
    (:func:`fold_dt_embedding`)."""
    source = name if isinstance(name, ModelSource) else resolve_model(name)
    net = source.load_network()
    fold_dt_embedding(net)
    return net.to(device).eval().requires_grad_(False)


@torch.no_grad()
def fold_dt_embedding(net: MFMJTNetwork) -> MFMJTNetwork:
    """Make a flow-matching network exactly Δt-independent without changing it at Δt = 0.

    The time embedding is ``t_embed(t) + dt_embed(Δt)``; a flow-matching model only ever saw Δt = 0,
    so the constant ``dt_embed(0)`` moves into ``t_embed``'s output bias and the Δt embedder's output
    layer is zeroed. In place; returns ``net``.
    """
    zero = torch.zeros(1, dtype=torch.float64, device=net.device)
    offset = net.dt_embed(zero)[0]
    net.t_embed.mlp[2].bias.add_(offset.to(net.t_embed.mlp[2].bias.dtype))
    net.zero_dt_embed_output()
    return net


def student_from_teacher(teacher: MFMJTNetwork) -> MFMJTNetwork:
    """The teacher's architecture plus a guidance embedding, with the (folded) teacher's weights;
    Δt and guidance embedders have zero output layers, so the student starts as the teacher."""
    student = MFMJTNetwork(replace(teacher.config, guidance_embed=True))
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith(GUIDANCE_EMBED_PREFIX)}
    student.load_mmaudio_state_dict(state)  # fills in the guidance embedding with a zero output
    with torch.no_grad():
        student.zero_dt_embed_output()
    # "no video" stays the teacher's: the teacher's unconditional branch and the student's dropped
    # conditions then use the same features throughout
    student.empty_clip_feat.requires_grad_(False)
    student.empty_sync_feat.requires_grad_(False)
    return student.to(teacher.device).train()


# ----------------------------------------------------------------------------------- target
def teacher_velocity(
    teacher: MFMJTNetwork,
    z: torch.Tensor,
    t: torch.Tensor,
    conditions: Sequence[torch.Tensor],
    guidance: TrainingGuidance,
) -> torch.Tensor:
    """v_T^ω(z_t, t) per sample: ω·v_c + (1 - ω)·s·v_∅ (s = 1 standard, the projection scale where
    ``guidance.scaled``); only v_c where ω = 1. One batched teacher forward, no gradient."""
    rows = (guidance.strength != 1).nonzero().squeeze(1)
    n = z.shape[0]
    conds = [
        torch.cat([c, u.expand(c.shape)[rows]])
        for c, u in zip(conditions, guidance.unconditional, strict=True)
    ]
    tt = torch.cat([t, t[rows]])
    with torch.no_grad():
        out = teacher(torch.cat([z, z[rows]]), *conds, tt, torch.zeros_like(tt))
    out = out.to(torch.promote_types(out.dtype, torch.float32))  # the guidance arithmetic in float32+
    v_c, v_u = out[:n], out[n:]
    if not rows.numel():
        return v_c.to(z.dtype)
    shape = (-1, *([1] * (z.dim() - 1)))
    rows_c = v_c[rows]
    scale = torch.where(guidance.scaled[rows].view(shape), projection_scale(rows_c, v_u), 1.0)
    w = guidance.strength[rows].to(out.dtype).view(shape)
    guided = w * rows_c + (1 - w) * scale * v_u
    return v_c.index_put((rows,), guided).to(z.dtype)


# The lab's recommended student (ep_only): endpoint regression alone, one teacher endpoint per item
# (benchmarks/distill_lab.py, docs/distillation.md); the defaults of mfmjt distill and DistillConfig.
DEFAULT_ENDPOINT_WEIGHT = 1.0
DEFAULT_ENDPOINT_NOISES = 1
DEFAULT_MEANFLOW_WEIGHT = 0.0


@dataclass(frozen=True)
class EndpointConfig:
    """Regression of the student's one-step output onto the teacher's multi-step ODE endpoints
    (knowledge distillation of the sampler, Luhman & Luhman 2021, used alongside the MeanFlow loss).

    For ``noises`` fixed noises ε per training item the teacher's ``steps``-step Euler sample x_T(ε) at
    ω ``cfg_strength`` (``guidance`` rule) is made once (:func:`teacher_endpoints`); every training step
    then adds ``weight``·‖ε − u(ε, r=0, t=1, ω) − x_T(ε)‖² (mean over the batch, one random noise per
    item) with the student told that ω; with ``adaptive_power`` p > 0 each sample's squared error e is
    weighted by the detached 1 / (e + c)^p first (MeanFlow's adaptive loss). ``weight`` 0: off."""

    # the flags of mfmjt distill are these fields, prefixed --endpoint- (see add_distill_arguments)
    weight: float = field(default=0.0, metadata={"help": (
        "weight of the regression of the one-step output onto the teacher's multi-step ODE endpoints "
        "(0: off); the endpoints are made once and kept in the store directory")})  # fmt: skip
    noises: int = field(default=2, metadata={"help": "teacher endpoints (noises) per item"})
    steps: int = field(default=25, metadata={"help": "Euler steps of the teacher's endpoints"})
    cfg_strength: float = field(
        default=4.5,
        metadata={
            "name": "cfg",
            "help": "ω of the teacher's endpoints (the student is told this ω on that term)",
        },
    )
    guidance: str = field(default="scaled", metadata={"choices": ("standard", "scaled")})
    seed: int = field(default=0, metadata={"cli": False})  # the run's --seed
    chunk: int = field(default=32, metadata={"help": "items per batch of the teacher's endpoints"})
    adaptive_power: float = field(default=0.0, metadata={"help": (
        "p of the per-sample weight 1 / (err + c)^p on the endpoint term (MeanFlow's adaptive loss; "
        "0: plain L2)")})  # fmt: skip
    adaptive_eps: float = field(default=1e-3, metadata={"help": "c of that weight"})

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"endpoint weight must be >= 0, got {self.weight}")
        if not (self.adaptive_power >= 0 and self.adaptive_eps > 0):
            raise ValueError(
                f"endpoint adaptive power must be >= 0 and its eps > 0, got {self.adaptive_power} and "
                f"{self.adaptive_eps}"
            )
        if self.noises < 1 or self.steps < 1 or self.chunk < 1:
            raise ValueError(
                f"endpoint noises, steps and chunk must be >= 1, got "
                f"{self.noises}, {self.steps}, {self.chunk}"
            )
        if self.guidance not in ("standard", "scaled"):
            raise ValueError(f"endpoint guidance must be standard or scaled, got {self.guidance!r}")


def undropped_conditions(
    net: MFMJTNetwork, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's conditions as the teacher's endpoints were made with: nothing dropped, "no video"
    features where the item has no video."""
    no_drop = MeanFlowConfig(video_dropout=0.0, text_dropout=0.0)
    return drop_conditions(
        batch["clip_f"], batch["sync_f"], batch["text_f"],
        net.empty_clip_feat, net.empty_sync_feat, net.empty_string_feat,
        config=no_drop, has_video=batch["has_video"],
    )  # fmt: skip


def endpoint_error(
    model: Any,
    noise: torch.Tensor,
    target: torch.Tensor,
    conditions: Sequence[torch.Tensor],
    cfg_strength: float,
    scaled: bool,
) -> torch.Tensor:
    """Per-sample ‖ε − u(ε, 0, 1, ω) − x_T‖² (mean over the other dims): the one-step sample's
    squared distance to the teacher's endpoint, in the network's normalised latent space."""
    b = noise.shape[0]
    one = torch.ones(b, dtype=noise.dtype, device=noise.device)
    kwargs = {}
    if getattr(getattr(model, "config", None), "guidance_embed", False):
        kwargs = {
            "cfg_strength": torch.full((b,), float(cfg_strength), device=noise.device),
            "scaled": torch.full((b,), bool(scaled), device=noise.device),
        }
    u = model(noise, *conditions, one, one, **kwargs)
    return (noise.float() - u.float() - target.float()).square().mean(dim=tuple(range(1, noise.dim())))


class DistillationLoss:
    """:func:`mfmjt.meanflow.meanflow_loss` with the teacher's guided velocity as v (a drop-in for
    the training loop's loss: same arguments, same result type), times ``meanflow_weight``, plus
    the endpoint regression of :class:`EndpointConfig` when ``endpoints`` (``[N, K, 2, L, C]``:
    noise and normalised endpoint of every item and noise, :func:`teacher_endpoints`) are given.
    With ``meanflow_weight`` 0 only the endpoint term is trained (no teacher forward, no JVP)."""

    def __init__(
        self,
        teacher: MFMJTNetwork,
        *,
        meanflow_weight: float = 1.0,
        endpoints: np.ndarray | None = None,
        endpoint_config: EndpointConfig = EndpointConfig(),
    ) -> None:
        if meanflow_weight < 0:
            raise ValueError(f"meanflow_weight must be >= 0, got {meanflow_weight}")
        use_endpoints = endpoints is not None and endpoint_config.weight > 0
        if meanflow_weight == 0 and not use_endpoints:
            raise ValueError("with meanflow_weight 0 the endpoint term is the whole loss: give endpoints")
        self.teacher = teacher
        self.meanflow_weight = meanflow_weight
        self.endpoints = endpoints if use_endpoints else None
        self.endpoint_config = endpoint_config

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        conditions: Sequence[torch.Tensor] = (),
        *,
        config: MeanFlowConfig,
        generator: torch.Generator | None = None,
        guidance: TrainingGuidance | None = None,
        batch: Mapping[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> MeanFlowLoss:
        if guidance is None:
            raise ValueError("distillation needs a guidance setting per sample (guidance_max > 1)")
        if self.teacher.device != x.device:
            self.teacher.to(x.device)
        b = x.shape[0]
        if self.meanflow_weight > 0:

            def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return teacher_velocity(self.teacher, z, t, conditions, guidance)

            out = meanflow_loss(
                model, x, conditions, config=config, generator=generator, guidance=guidance,
                velocity=velocity, **kwargs,
            )  # fmt: skip
            out = MeanFlowLoss(out.loss * self.meanflow_weight, out.per_sample, out.pairs)
        else:
            ones = torch.ones(b, device=x.device)
            no_pairs = TimePairs(r=ones, t=ones, mean=torch.zeros(b, dtype=torch.bool, device=x.device))
            out = MeanFlowLoss(x.new_zeros(()), x.new_zeros(b), no_pairs)
        if self.endpoints is None:
            return out
        if batch is None or "index" not in batch:
            raise ValueError("the endpoint term needs the batch's item indices (batch=...)")
        ec = self.endpoint_config
        idx = batch["index"].cpu().numpy()
        k = torch.randint(self.endpoints.shape[1], (b,), generator=generator, device=x.device).cpu().numpy()
        pair = torch.from_numpy(np.asarray(self.endpoints[idx, k], dtype=np.float32)).to(x.device, x.dtype)
        err = endpoint_error(
            model, pair[:, 0], pair[:, 1], undropped_conditions(model, batch), ec.cfg_strength,
            ec.guidance == "scaled",
        )  # fmt: skip
        per_sample = out.per_sample if self.meanflow_weight > 0 else err.detach().to(out.per_sample.dtype)
        weighted = adaptive_weighted(err, ec.adaptive_power, ec.adaptive_eps)
        return MeanFlowLoss(out.loss + ec.weight * weighted.mean(), per_sample, out.pairs)


# ---------------------------------------------------------------------------- teacher samples
@dataclass(frozen=True)
class TeacherSampleConfig:
    """How the teacher's stand-in data are made: ``steps`` Euler steps at ω = ``cfg_strength``
    (``guidance`` mode), noise of item i from ``seed + i``."""

    # the flags of mfmjt distill are these fields, prefixed --teacher-sample- (see add_distill_arguments)
    steps: int = field(default=25, metadata={"help": "Euler steps of the teacher's samples"})
    cfg_strength: float = field(default=1.0, metadata={"name": "cfg", "help": "ω of the teacher's samples"})
    guidance: str = field(default="scaled", metadata={"choices": ("standard", "scaled")})
    seed: int = field(default=0, metadata={"cli": False})  # the run's --seed
    chunk: int = field(default=16, metadata={"help": "items per batch (and per resumable chunk)"})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.chunk < 1:
            raise ValueError(f"teacher sample steps and chunk must be >= 1, got {self.steps}, {self.chunk}")


def _teacher_id(teacher_name: str | Path, teacher: MFMJTNetwork) -> dict[str, Any]:
    """What identifies the teacher in the samples' metadata: its name and a weight checksum."""
    total = sum(float(p.detach().double().abs().sum()) for p in teacher.parameters())
    return {"name": str(teacher_name), "weights_abs_sum": round(total, 6)}


def teacher_samples(
    store: FeatureStore,
    teacher: MFMJTNetwork,
    teacher_name: str | Path,
    config: TeacherSampleConfig = TeacherSampleConfig(),
    progress: bool = True,
) -> np.ndarray:
    """The teacher's N-step samples (VAE latent space, ``[N, L, C]``) for every item of ``store``,
    kept in ``store.path/teacher_samples.npy``: made once, continued where an interrupted run
    stopped, reused afterwards. Samples made with other settings or another teacher are refused."""
    from mfmjt.sampler import sample

    path, meta_path = store.path / SAMPLES_NAME, store.path / SAMPLES_META_NAME
    shape = (len(store), _sample_length(store, teacher), teacher.config.latent_dim)
    length = shape[1]
    settings = {"teacher": _teacher_id(teacher_name, teacher), **asdict(config), "shape": list(shape)}
    settings.pop("chunk")
    array, done = _resumable_array(path, meta_path, settings, shape, "teacher samples")
    if done >= shape[0]:
        return np.load(path, mmap_mode="r")
    logger.info("teacher samples for %s: items %d..%d, %d steps at ω %g", store.path, done, shape[0],
                config.steps, config.cfg_strength)  # fmt: skip
    no_drop = MeanFlowConfig(video_dropout=0.0, text_dropout=0.0)
    device = teacher.device
    bar = tqdm(total=shape[0], initial=done, disable=not progress, desc="teacher samples")
    for start in range(done, shape[0], config.chunk):
        idx = list(range(start, min(start + config.chunk, shape[0])))
        b = store.get_batch(idx)
        clip_f, sync_f, text_f = drop_conditions(
            b["clip_f"].to(device), b["sync_f"].to(device), b["text_f"].to(device),
            teacher.empty_clip_feat, teacher.empty_sync_feat, teacher.empty_string_feat,
            config=no_drop, has_video=b["has_video"],
        )  # fmt: skip
        noise = torch.stack(
            [
                torch.randn(length, shape[2], generator=torch.Generator().manual_seed(config.seed + i))
                for i in idx
            ]
        ).to(device)
        with torch.no_grad():
            cond = teacher.preprocess_conditions(clip_f, sync_f, text_f, length)
            uncond = teacher.empty_conditions(len(idx), length, clip_f.shape[1], sync_f.shape[1])
            z0 = sample(
                teacher, noise, cond, uncond, steps=config.steps, cfg_strength=config.cfg_strength,
                guidance=config.guidance, guidance_in_network=False,
            )[config.guidance if config.guidance != "both" else "scaled"]  # fmt: skip
            array[idx[0] : idx[-1] + 1] = teacher.unnormalize(z0).float().cpu().numpy()
        array.flush()
        _write_json(meta_path, {"settings": settings, "done": idx[-1] + 1})
        bar.update(len(idx))
    bar.close()
    del array
    return np.load(path, mmap_mode="r")


ENDPOINTS_NAME = "teacher_endpoints.npy"
ENDPOINTS_META_NAME = "teacher_endpoints.json"


def teacher_endpoints(
    store: FeatureStore,
    teacher: MFMJTNetwork,
    teacher_name: str | Path,
    config: EndpointConfig = EndpointConfig(),
    progress: bool = True,
) -> np.ndarray:
    """``[N, K, 2, L, C]``: for every item of ``store`` and each of K = ``config.noises`` noises, the
    noise ε (normalised latent space; item i, noise k from seed ``config.seed + k·N + i``) and the
    teacher's ``config.steps``-step Euler sample from it at ω ``config.cfg_strength`` (normalised),
    with the item's conditions undropped. Kept in ``store.path/teacher_endpoints.npy``: made once,
    continued chunk by chunk after an interruption, refused when made with other settings."""
    from mfmjt.sampler import sample

    path, meta_path = store.path / ENDPOINTS_NAME, store.path / ENDPOINTS_META_NAME
    n, k = len(store), config.noises
    length, dim = _sample_length(store, teacher), teacher.config.latent_dim
    shape = (n, k, 2, length, dim)
    settings = {"teacher": _teacher_id(teacher_name, teacher), **asdict(config), "shape": list(shape)}
    for key in ("chunk", "weight", "adaptive_power", "adaptive_eps"):  # training settings, not the endpoints
        settings.pop(key)
    array, done = _resumable_array(path, meta_path, settings, shape, "teacher endpoints")
    if done >= n * k:
        return np.load(path, mmap_mode="r")
    logger.info("teacher endpoints for %s: %d items x %d noises, %d steps at ω %g", store.path, n, k,
                config.steps, config.cfg_strength)  # fmt: skip
    device = teacher.device
    bar = tqdm(total=n * k, initial=done, disable=not progress, desc="teacher endpoints")
    for start in range(done, n * k, config.chunk):  # flat index j = k·N + i
        flat = list(range(start, min(start + config.chunk, n * k)))
        items, noise_ids = [j % n for j in flat], [j // n for j in flat]
        b = {key: v.to(device) for key, v in store.get_batch(items).items()}
        clip_f, sync_f, text_f = undropped_conditions(teacher, b)
        noise = torch.stack(
            [torch.randn(length, dim, generator=torch.Generator().manual_seed(config.seed + j)) for j in flat]
        ).to(device)
        with torch.no_grad():
            cond = teacher.preprocess_conditions(clip_f, sync_f, text_f, length)
            uncond = teacher.empty_conditions(len(flat), length, clip_f.shape[1], sync_f.shape[1])
            z0 = sample(
                teacher, noise, cond, uncond, steps=config.steps, cfg_strength=config.cfg_strength,
                guidance=config.guidance, guidance_in_network=False,
            )[config.guidance]  # fmt: skip
        for row, (i, kk) in enumerate(zip(items, noise_ids, strict=True)):
            array[i, kk, 0] = noise[row].float().cpu().numpy()
            array[i, kk, 1] = z0[row].float().cpu().numpy()
        array.flush()
        _write_json(meta_path, {"settings": settings, "done": flat[-1] + 1})
        bar.update(len(flat))
    bar.close()
    del array
    return np.load(path, mmap_mode="r")


def _resumable_array(
    path: Path, meta_path: Path, settings: dict[str, Any], shape: tuple[int, ...], what: str
) -> tuple[np.ndarray, int]:
    """A float32 memory map of ``shape`` made chunk by chunk: (the array, how many rows are done). One
    made with other ``settings`` is refused; a new one starts with nothing done."""
    if meta_path.is_file() and path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["settings"] != settings:
            raise ValueError(
                f"{path} holds {what} made with {meta['settings']}, not {settings}: "
                f"delete {path.name} and {meta_path.name} to make new ones"
            )
        return np.load(path, mmap_mode="r+"), int(meta["done"])
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    _write_json(meta_path, {"settings": settings, "done": 0})
    return array, 0


def _sample_length(store: FeatureStore, teacher: MFMJTNetwork) -> int:
    """Latent frames of the teacher's samples: the store's latents', else those its extraction
    recorded for its codec (``extra["latent_shape"]``), else the teacher's audio mode's for the
    store's clip duration. A store made for a codec of other latent channels is refused."""
    if "latent_mean" in store.shapes:
        return int(store.shapes["latent_mean"][0])
    recorded = store.extra.get("latent_shape")
    if recorded is not None:
        if int(recorded[1]) != teacher.config.latent_dim:
            raise ValueError(
                f"feature store {store.path} was extracted for a codec of {recorded[1]} latent channels, "
                f"but the teacher makes {teacher.config.latent_dim}: extract it with the teacher's feature "
                "stack (--features)"
            )
        return int(recorded[0])
    mode = next((m for m in AUDIO_MODES.values() if m.latent_dim == teacher.config.latent_dim), "16k")
    return SequenceLengths.for_duration(float(store.duration or 8.0), mode).latent


def _endpoints_complete(store: FeatureStore) -> bool:
    meta_path = store.path / ENDPOINTS_META_NAME
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    return int(meta["done"]) >= int(np.prod(meta["settings"]["shape"][:2]))


def _samples_complete(store: FeatureStore) -> bool:
    meta_path = store.path / SAMPLES_META_NAME
    return meta_path.is_file() and int(json.loads(meta_path.read_text())["done"]) >= len(store)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class TeacherSampleStore:
    """A store whose items carry the teacher's sample as their latent (``latent_std`` zero, so the
    training loop's x is exactly that sample). Everything else is the wrapped store's."""

    def __init__(self, store: FeatureStore, samples: np.ndarray) -> None:
        if samples.shape[0] != len(store):
            raise ValueError(f"{samples.shape[0]} teacher samples for a store of {len(store)} items")
        self.store, self.samples = store, samples
        latent = tuple(int(d) for d in samples.shape[1:])
        self.shapes = {**store.shapes, "latent_mean": latent, "latent_std": latent}

    @property
    def latent_dim(self) -> int:
        return int(self.samples.shape[2])

    def __len__(self) -> int:
        return len(self.store)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = self.store.get_batch(indices)
        idx = batch["index"].numpy()
        latent = torch.from_numpy(np.asarray(self.samples[idx], dtype=np.float32))
        batch["latent_mean"], batch["latent_std"] = latent, torch.zeros_like(latent)
        return batch

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return self.get_batch(indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.get_batch([int(i)]).items()}


# ------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class DistillConfig:
    """A distillation run: the teacher, the training run (store, out_dir, steps, MeanFlow settings;
    its network is the teacher's plus a guidance embedding), where x comes from, the endpoint term
    and the weight of the MeanFlow term (defaults: the lab's recipe, endpoints only)."""

    # the flags of mfmjt distill beyond train's are these fields (see add_distill_arguments)
    teacher: str = field(metadata={"required": True, "help": (
        "flow-matching teacher: model directory, MMAudio checkpoint, registry name (mmaudio-small-16k) "
        "or HF repo id")})  # fmt: skip
    train: Any = field(metadata={"cli": False})  # mfmjt.train.TrainConfig: train's own flags
    # "store": the store's latents; "teacher": teacher samples; auto: store if any
    x_source: str = field(default="auto", metadata={"choices": X_SOURCES, "help": (
        "x for z_t = (1-t)x + tε: the store's audio latents, or the teacher's own samples (made once, "
        "kept in the store directory); auto: the store's when it has audio")})  # fmt: skip
    samples: TeacherSampleConfig = TeacherSampleConfig()  # --teacher-sample-*
    # one-step regression onto the teacher's ODE endpoints (--endpoint-*), and the weight of the MeanFlow term
    endpoints: EndpointConfig = EndpointConfig(weight=DEFAULT_ENDPOINT_WEIGHT, noises=DEFAULT_ENDPOINT_NOISES)
    meanflow_weight: float = field(
        default=DEFAULT_MEANFLOW_WEIGHT,
        metadata={"help": "weight of the MeanFlow distillation term (0: train the endpoint regression only)"},
    )

    def __post_init__(self) -> None:
        if self.x_source not in X_SOURCES:
            raise ValueError(f"x_source must be one of {X_SOURCES}, got {self.x_source!r}")
        if self.meanflow_weight == 0 and self.endpoints.weight == 0:
            raise ValueError(
                "nothing to learn: the MeanFlow term (--meanflow-weight) and the endpoint term "
                "(--endpoint-weight) are both 0"
            )
        if self.train.meanflow.guidance_max <= 1:
            raise ValueError(
                "distillation trains guidance into the student: guidance_max must be > 1 "
                f"(got {self.train.meanflow.guidance_max:g})"
            )


def _student_train_config(config: Any, teacher: MFMJTNetwork, teacher_meta: Mapping[str, Any]) -> Any:
    """The training config with the student's architecture (teacher's + guidance embedding)."""
    from mfmjt.config import VARIANTS

    student = replace(teacher.config, guidance_embed=True).to_dict()
    variant = str(teacher_meta.get("variant", config.variant))
    if variant not in VARIANTS:
        variant = "tiny"
    base = VARIANTS[variant].to_dict()
    overrides = {k: v for k, v in student.items() if base[k] != v}
    asked = {k: v for k, v in config.network_overrides.items() if k != "guidance_embed"}
    if any(overrides.get(k, base.get(k)) != v for k, v in asked.items()):
        logger.warning("network overrides %s ignored: the student has the teacher's architecture",
                       config.network_overrides)  # fmt: skip
    return replace(config, variant=variant, network_overrides=overrides)


def x_source_of(store: FeatureStore, x_source: str) -> str:
    """``auto`` -> ``store`` when the store holds audio latents, else ``teacher``."""
    from mfmjt.data.stores import store_has_audio

    if x_source == "store" and not store_has_audio(store):
        raise ValueError(
            f"feature store {store.path} has no audio latents: distil it with --x-source teacher (or auto), "
            "from the teacher's own samples"
        )
    if x_source != "auto":
        return x_source
    return "store" if store_has_audio(store) else "teacher"


def distill(config: DistillConfig) -> Path:
    """Distil (or resume) and return the exported student directory (or the checkpoint when the run
    stopped early at ``train.stop_after``)."""
    from mfmjt.train import CHECKPOINT_NAME, TrainHooks, _lineage, fit, open_stores

    device = config.train.device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = resolve_model(config.teacher)
    teacher = load_teacher(source, device)
    train_config = _student_train_config(config.train, teacher, {"variant": source.architecture()[0]})
    if source.directory is not None and train_config.init_from is None:
        train_config = replace(train_config, init_from=source.directory)
    data = open_stores(train_config)
    store = data.first
    if config.x_source != "store" and len(data.mix.stores) > 1:
        raise ValueError(
            "distillation from teacher samples takes one --store; give --x-source store to mix stores"
        )
    source = x_source_of(store, config.x_source)
    samples = None
    if source == "teacher":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _samples_complete(store):
            raise ValueError(
                f"the teacher samples of {store.path} are not complete: make them in one process first "
                "(the same mfmjt distill command without torchrun, e.g. with --stop-after 1)"
            )
        samples = teacher_samples(store, teacher, config.teacher, config.samples, train_config.progress)
    endpoints = None
    if config.endpoints.weight > 0:
        if len(data.mix.stores) > 1:
            raise ValueError(
                "the endpoint regression (--endpoint-weight) takes one --store: its teacher endpoints are "
                "kept per store item; give one store or --endpoint-weight 0"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _endpoints_complete(store):
            raise ValueError(
                f"the teacher endpoints of {store.path} are not complete: make them in one process first "
                "(the same mfmjt distill command without torchrun, e.g. with --stop-after 1)"
            )
        endpoints = teacher_endpoints(store, teacher, config.teacher, config.endpoints, train_config.progress)

    lineage = _lineage(train_config, train_config.steps)
    x_text = "the store's audio" if source == "store" else (
        f"the teacher's {config.samples.steps}-step samples at ω {config.samples.cfg_strength:g}"
    )  # fmt: skip
    lineage[-1] += f"; MeanFlow distillation from the flow-matching teacher {config.teacher} (x: {x_text})"
    hooks = TrainHooks(
        build_network=lambda _config, _data, **_: student_from_teacher(teacher),
        wrap_store=None if samples is None else (lambda s: TeacherSampleStore(s, samples)),
        loss=DistillationLoss(
            teacher,
            meanflow_weight=config.meanflow_weight,
            endpoints=endpoints,
            endpoint_config=config.endpoints,
        ),
        export_metadata={
            "lineage": lineage,
            "recommended": _recommended_sampling(config, train_config),
            "distillation": {
                "teacher": str(config.teacher),
                "x_source": source,
                "meanflow_weight": config.meanflow_weight,
                "endpoints": asdict(config.endpoints),
                **({"teacher_samples": asdict(config.samples)} if source == "teacher" else {}),
            },
        },
    )
    result = fit(train_config, hooks)
    return result.export_dir if result.export_dir is not None else train_config.out_dir / CHECKPOINT_NAME


def _recommended_sampling(config: DistillConfig, train_config: Any) -> dict[str, Any]:
    """One step at the ω the student was taught: the endpoints' ω, else the one trained ω, else 1.5."""
    mf = train_config.meanflow
    if config.endpoints.weight > 0:
        return {"steps": 1, "cfg": config.endpoints.cfg_strength, "guidance": config.endpoints.guidance}
    if mf.guidance_min == mf.guidance_max:
        return {"steps": 1, "cfg": mf.guidance_max, "guidance": "scaled"}
    return {"steps": 1, "cfg": 1.5, "guidance": "scaled"}


def distill_ema_decay(steps: int) -> float:
    """The default EMA decay of a distillation run of ``steps`` steps: a horizon of a third of the run
    (:func:`mfmjt.train_config.short_run_ema_decay`, shared with fine-tuning)."""
    return short_run_ema_decay(steps)


# The training options whose defaults differ for distillation: the recipe the lab
# (benchmarks/distill_lab.py, docs/distillation.md) chose, the one-step regression onto the teacher's
# 25-step ω-4.5 endpoints with the MeanFlow term off (``--meanflow-weight 1`` adds it: better at 2
# and 4 steps, worse at one); the MeanFlow options below apply when it is on. The learning rate stays constant
# after warm-up (no step decays: the training default's decays at 62.5 % and 87.5 % of --steps are
# the paper's 400k-step schedule, and left 200-step runs 125 steps at full rate); the EMA decay, when
# not given, follows the run length (:func:`distill_ema_decay`).
# The rest (r≠t ratio, adaptive loss, dropout, learning rate and schedule) is fine-tuning's.
DISTILL_DEFAULTS: dict[str, Any] = dict(
    FINETUNE_DEFAULTS,
    guidance_min=4.5,  # one ω, the teacher's multi-step ω (the endpoints' ω)
    guidance_max=4.5,
    guidance_unguided_share=0.0,
    steps=2000,
)


SAMPLES_PREFIX = "teacher_sample_"
ENDPOINTS_PREFIX = "endpoint_"


def add_distill_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options (``mfmjt train``) plus one flag per field of :class:`DistillConfig`
    (teacher, x source, MeanFlow weight), :class:`TeacherSampleConfig` (``--teacher-sample-*``) and
    :class:`EndpointConfig` (``--endpoint-*``); the seeds are the run's ``--seed``."""
    from mfmjt.dataclass_args import add_dataclass_arguments
    from mfmjt.train import add_train_arguments

    add_train_arguments(parser)
    parser.set_defaults(**DISTILL_DEFAULTS)
    add_dataclass_arguments(parser, DistillConfig)
    defaults = {f.name: f.default for f in fields(DistillConfig)}
    add_dataclass_arguments(parser, TeacherSampleConfig, prefix=SAMPLES_PREFIX,
                            shown_defaults=defaults["samples"])  # fmt: skip
    add_dataclass_arguments(parser, EndpointConfig, prefix=ENDPOINTS_PREFIX,
                            shown_defaults=defaults["endpoints"])  # fmt: skip
    return parser


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    from mfmjt.dataclass_args import values_from_args
    from mfmjt.train import TrainConfig

    # the student's architecture comes from the teacher later; its guidance embedding is known now
    overrides = [*(args.network_overrides or []), "guidance_embed=true"]
    values = {**vars(args), "network_overrides": overrides}
    if values.get("ema_decay") is None:
        values["ema_decay"] = distill_ema_decay(values["steps"])
    args = argparse.Namespace(**values)
    train = TrainConfig.from_args(args)
    defaults = {f.name: f.default for f in fields(DistillConfig)}
    samples = values_from_args(TeacherSampleConfig, args, prefix=SAMPLES_PREFIX)
    endpoints = values_from_args(EndpointConfig, args, prefix=ENDPOINTS_PREFIX)
    return DistillConfig(
        train=train,
        samples=replace(defaults["samples"], **samples, seed=train.seed),
        endpoints=replace(defaults["endpoints"], **endpoints, seed=train.seed),
        **values_from_args(DistillConfig, args),
    )


__all__ = [
    "DistillConfig",
    "DistillationLoss",
    "EndpointConfig",
    "TeacherSampleConfig",
    "TeacherSampleStore",
    "add_distill_arguments",
    "config_from_args",
    "distill",
    "fold_dt_embedding",
    "load_teacher",
    "student_from_teacher",
    "teacher_endpoints",
    "teacher_samples",
    "teacher_velocity",
]
