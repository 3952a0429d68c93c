"""The MeanFlow training objective (paper Eq. 4-5) and per-modality condition dropout.

Public time convention: z_t = (1 - t)·x + t·ε, v = ε - x, r <= t, Δt = t - r. The network learns
the average velocity u(z_t, r, t); its target

    u_tgt = v - (t - r)·(v·∂z u + ∂t u)

is a Jacobian-vector product along (v, 1), detached. For r = t the target is v, so those pairs
are plain flow matching and get a plain forward; only the r ≠ t part of the batch pays for the
JVP. ``mean_flow_ratio=0`` is exactly flow-matching training.

Guidance in training (an extension; off by default). A network with a guidance embedding can learn
the guided field itself: each sample draws a CFG setting (ω, standard or scaled) and its velocity
becomes v + (ω - 1)·(u_c - s·u_∅), the guidance offset measured by the network's own detached
instantaneous predictions at (z_t, t) (s = 1 for standard CFG, the projection scale for scaled). Its
expectation is the guided velocity ω·v_c + (1 - ω)·s·v_∅, while the sample's noise stays that of v.
The r ≠ t pairs then follow the guided field in the JVP as well, so one forward at ω replaces the
two forwards of CFG at sampling time.

The paper's loss is plain L2 (``adaptive_loss_power=0``). With ``p > 0`` each sample's squared
error e is weighted by the detached 1 / (e + c)^p (MeanFlow's adaptive loss; p = 1 gives every
sample about the same gradient scale), which keeps rare, huge JVP targets from dominating a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mfmjt.guidance import projection_scale

# model(z, *conditions, t, dt, **guidance) -> u, all batch-first; conditions are sliced with the batch,
# guidance (cfg_strength=[B], scaled=[B]) only passed to guidance-embedded networks.
AverageVelocityModel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MeanFlowConfig:
    """Time sampling and dropout settings (paper defaults)."""

    time_mu: float = -2.0  # logit-normal location of both time samples
    time_sigma: float = 2.0  # logit-normal scale
    mean_flow_ratio: float = 0.1  # expected fraction of pairs with r != t (0: flow matching)
    # share of the r != t pairs moved to (r, t) = (0, 1), the pair the one-step sampler evaluates;
    # the logit-normal draws reach it rarely (t > 0.9 in ~4 % of draws at the paper's mu, sigma)
    one_step_share: float = 0.0
    video_dropout: float = 0.1  # probability of replacing clip + sync features by "no video"
    text_dropout: float = 0.1  # probability of replacing text features by the empty string
    # probability of dropping every condition at once (on top of the independent drops above): the
    # unconditional branch of CFG then trains on ~this share of samples instead of ~1 %
    all_dropout: float = 0.0
    adaptive_loss_power: float = 0.0  # p of the per-sample weight 1 / (err + c)^p; 0: plain L2 (paper)
    adaptive_loss_eps: float = 1e-3  # c of that weight
    # guidance in training (needs NetworkConfig.guidance_embed): ω ~ U[1, guidance_max] per sample,
    # except a share trained unguided (ω = 1); half the guided samples use scaled CFG. 1: off
    guidance_max: float = 1.0
    guidance_unguided_share: float = 0.25
    # lower end of the guided ω draws: ω ~ U[guidance_min, guidance_max]; guidance_min = guidance_max
    # (with unguided share 0) trains one fixed ω, guidance folded into the network at that strength
    guidance_min: float = 1.0

    def __post_init__(self) -> None:
        shares = ("mean_flow_ratio", "one_step_share", "video_dropout", "text_dropout", "all_dropout")
        for name in (*shares, "guidance_unguided_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 1.0 <= self.guidance_max < float("inf"):
            raise ValueError(f"guidance_max must be a finite number >= 1, got {self.guidance_max}")
        if not 1.0 <= self.guidance_min <= self.guidance_max:
            raise ValueError(
                f"guidance_min must be in [1, guidance_max = {self.guidance_max:g}], got {self.guidance_min}"
            )
        if not self.time_sigma > 0:
            raise ValueError(f"time_sigma must be positive, got {self.time_sigma}")
        if not (self.adaptive_loss_power >= 0 and self.adaptive_loss_eps > 0):
            raise ValueError(
                "adaptive_loss_power must be >= 0 and adaptive_loss_eps > 0, got "
                f"{self.adaptive_loss_power} and {self.adaptive_loss_eps}"
            )


@dataclass
class TimePairs:
    r: torch.Tensor  # [B]
    t: torch.Tensor  # [B], r <= t
    mean: torch.Tensor  # [B] bool, True where r != t was chosen


@dataclass
class TrainingGuidance:
    """The CFG setting each sample is trained to imitate, and the "no condition" features."""

    strength: torch.Tensor  # [B] ω >= 1 (1: unguided)
    scaled: torch.Tensor  # [B] bool, scaled CFG instead of standard
    unconditional: Sequence[torch.Tensor]  # like ``conditions``, batch B or broadcastable to it

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model keyword arguments for a subset of the batch."""
        return {"cfg_strength": self.strength[index], "scaled": self.scaled[index]}


@dataclass
class MeanFlowLoss:
    loss: torch.Tensor  # scalar, mean over the batch of the (adaptively weighted) squared error
    per_sample: torch.Tensor  # [B] unweighted squared error averaged over the other dims (detached)
    pairs: TimePairs


def adaptive_weighted(err: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """MeanFlow's adaptive loss: per-sample squared errors ``err`` times the detached 1 / (err + eps)^power
    (``err`` itself for power 0, the plain L2)."""
    if power == 0:
        return err
    return err * (err.detach() + eps).pow(-power)


def sample_time_pairs(
    batch_size: int,
    config: MeanFlowConfig = MeanFlowConfig(),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> TimePairs:
    """Two logit-normal draws per sample, t = max and r = min; then r := t except on
    ``floor(ratio·B + U)`` random samples (stochastic rounding keeps the expected ratio exact).
    With ``one_step_share`` > 0, each r != t pair becomes (0, 1) with that probability."""
    draws = torch.randn(2, batch_size, generator=generator, device=device)
    times = torch.sigmoid(config.time_mu + config.time_sigma * draws)
    t, r = times.max(dim=0).values, times.min(dim=0).values
    jitter = torch.rand((), generator=generator, device=device).item()
    n_mean = min(batch_size, math.floor(config.mean_flow_ratio * batch_size + jitter))
    order = torch.randperm(batch_size, generator=generator, device=device)
    mean = torch.zeros(batch_size, dtype=torch.bool, device=device)
    mean[order[:n_mean]] = True
    r = torch.where(mean, r, t)
    if config.one_step_share > 0:  # the extra draw only then, so other runs keep their random stream
        endpoint = mean & (torch.rand(batch_size, generator=generator, device=device) < config.one_step_share)
        r, t = r.masked_fill(endpoint, 0.0), t.masked_fill(endpoint, 1.0)
    return TimePairs(r=r, t=t, mean=mean)


def sample_guidance(
    batch_size: int,
    config: MeanFlowConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (ω, scaled): ω = 1 with ``guidance_unguided_share``, else
    U[guidance_min, guidance_max]."""
    u = torch.rand(3, batch_size, generator=generator, device=device)
    strength = config.guidance_min + (config.guidance_max - config.guidance_min) * u[0]
    strength = torch.where(u[1] < config.guidance_unguided_share, torch.ones_like(strength), strength)
    return strength, u[2] < 0.5


@torch.no_grad()
def guidance_offset(
    model: AverageVelocityModel,
    z: torch.Tensor,
    t: torch.Tensor,
    conditions: Sequence[torch.Tensor],
    guidance: TrainingGuidance,
) -> torch.Tensor:
    """(ω - 1)·(u_c - s·u_∅) from the model's unguided instantaneous velocities at (z_t, t), detached;
    zero (and not computed) where ω = 1."""
    offset = torch.zeros_like(z)
    rows = (guidance.strength != 1).nonzero().squeeze(1)
    if not rows.numel():
        return offset
    n = rows.numel()
    conds = [
        torch.cat([c[rows], u.expand(c.shape)[rows]])
        for c, u in zip(conditions, guidance.unconditional, strict=True)
    ]
    tt = torch.cat([t[rows], t[rows]])
    both = model(torch.cat([z[rows], z[rows]]), *conds, tt, torch.zeros_like(tt)).float()
    u_c, u_u = both[:n], both[n:]
    scale = torch.where(_expand(guidance.scaled[rows], u_u), projection_scale(u_c, u_u), 1.0)
    weight = _expand(guidance.strength[rows].float() - 1, u_u)
    return offset.index_put((rows,), (weight * (u_c - scale * u_u)).to(z.dtype))


def _expand(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.dim() - 1)))


def average_velocity_and_derivative(
    model: AverageVelocityModel,
    z: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    conditions: Sequence[torch.Tensor] = (),
    **model_kwargs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, du/dt) with du/dt = v·∂z u + ∂t u, one forward-mode pass (``torch.func.jvp``).

    r is held fixed, so Δt = t - r moves with t. Runs under the math attention kernel: the fused
    CPU/GPU kernels have no forward-mode derivative.
    """

    def u_of(z_: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        return model(z_, *conditions, t_, t_ - r, **model_kwargs)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(u_of, (z, t), (v, torch.ones_like(t)))


def meanflow_loss(
    model: AverageVelocityModel,
    x: torch.Tensor,
    conditions: Sequence[torch.Tensor] = (),
    *,
    config: MeanFlowConfig = MeanFlowConfig(),
    generator: torch.Generator | None = None,
    pairs: TimePairs | None = None,
    noise: torch.Tensor | None = None,
    guidance: TrainingGuidance | None = None,
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> MeanFlowLoss:
    """MeanFlow L2 loss on clean samples ``x [B, ...]`` (flow matching where r = t).

    ``pairs`` and ``noise`` may be given to make a call reproducible outside the generator.
    ``guidance`` trains a guidance-embedded network on the guided field (see the module docstring).
    ``velocity(z_t, t)`` replaces the instantaneous velocity ε - x (and the guidance offset) by
    another field, e.g. a teacher's guided velocity in distillation (:mod:`mfmjt.distill`); it is
    used detached.
    """
    b = x.shape[0]
    for i, c in enumerate(conditions):
        if c.shape[0] != b:
            raise ValueError(f"conditions[{i}] has batch {c.shape[0]}, expected {b} like x")
    if pairs is None:
        pairs = sample_time_pairs(b, config, generator, x.device)
    eps = (
        torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if noise is None else noise
    )
    t = pairs.t.to(x.dtype)
    r = pairs.r.to(x.dtype)
    z = (1 - _expand(t, x)) * x + _expand(t, x) * eps
    if velocity is not None:
        v = velocity(z, t).detach().to(x.dtype)
    else:
        v = eps - x
        if guidance is not None:
            v = v + guidance_offset(model, z, t, conditions, guidance)

    def extra(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {} if guidance is None else guidance.rows(rows)

    per_sample = x.new_zeros(b)
    sq_err_sum = x.new_zeros(())
    reduce_dims = tuple(range(1, x.dim()))

    def weighted_sum(err: torch.Tensor) -> torch.Tensor:
        return adaptive_weighted(err, config.adaptive_loss_power, config.adaptive_loss_eps).sum()

    fm_rows = (~pairs.mean).nonzero().squeeze(1)
    if fm_rows.numel():
        u = model(
            z[fm_rows],
            *(c[fm_rows] for c in conditions),
            t[fm_rows],
            torch.zeros_like(t[fm_rows]),
            **extra(fm_rows),
        )
        err = (u.float() - v[fm_rows].float()).square().mean(dim=reduce_dims)
        per_sample = per_sample.index_put((fm_rows,), err.detach().to(per_sample.dtype))
        sq_err_sum = sq_err_sum + weighted_sum(err)

    mf_rows = pairs.mean.nonzero().squeeze(1)
    if mf_rows.numel():
        conds = [c[mf_rows] for c in conditions]
        u, dudt = average_velocity_and_derivative(
            model, z[mf_rows], v[mf_rows], r[mf_rows], t[mf_rows], conds, **extra(mf_rows)
        )
        gap = _expand(t[mf_rows] - r[mf_rows], x)
        target = (v[mf_rows] - gap * dudt).detach()
        err = (u.float() - target.float()).square().mean(dim=reduce_dims)
        per_sample = per_sample.index_put((mf_rows,), err.detach().to(per_sample.dtype))
        sq_err_sum = sq_err_sum + weighted_sum(err)

    return MeanFlowLoss(loss=sq_err_sum / b, per_sample=per_sample, pairs=pairs)


def drop_conditions(
    clip_f: torch.Tensor,
    sync_f: torch.Tensor,
    text_f: torch.Tensor,
    empty_clip: torch.Tensor,
    empty_sync: torch.Tensor,
    empty_text: torch.Tensor,
    *,
    config: MeanFlowConfig = MeanFlowConfig(),
    generator: torch.Generator | None = None,
    has_video: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classifier-free-guidance dropout, returning new tensors (the inputs are not modified).

    Video (clip and sync together) and text are dropped independently per sample with the
    configured probabilities, and both at once with ``all_dropout``; samples with ``has_video``
    False always get the "no video" features. Empty features broadcast against ``[B, N, C]``
    (e.g. ``[1, C]`` learned tokens, so their gradients flow during training).
    """
    b = clip_f.shape[0]
    # a third draw only when all_dropout is used, so runs without it keep their random stream
    u = torch.rand(3 if config.all_dropout > 0 else 2, b, generator=generator, device=clip_f.device)
    no_video = u[0] < config.video_dropout
    no_text = u[1] < config.text_dropout
    if config.all_dropout > 0:
        no_all = u[2] < config.all_dropout
        no_video, no_text = no_video | no_all, no_text | no_all
    if has_video is not None:
        no_video = no_video | ~has_video.to(device=clip_f.device, dtype=torch.bool)

    def pick(mask: torch.Tensor, empty: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, 1, 1), empty.to(feat.dtype).expand_as(feat), feat)

    return (
        pick(no_video, empty_clip, clip_f),
        pick(no_video, empty_sync, sync_f),
        pick(no_text, empty_text, text_f),
    )
