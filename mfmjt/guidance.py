"""Classifier-free guidance: standard (paper Eq. 7) and scaled (Eq. 8-9).

Both are arithmetic on the conditional and unconditional predictions, so every guidance strength
and both modes can be computed from one pair of forwards (the demo's live ω slider relies on it).

The rules' names and the checks of a guidance setting are read without torch (request validation and
the demo's page, before torch is imported); torch is imported by the arithmetic that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

GuidanceMode = Literal["standard", "scaled"]
GUIDANCE_MODES: tuple[str, ...] = ("standard", "scaled")
GUIDANCE_CHOICES: tuple[str, ...] = ("standard", "scaled", "both")


def check_guidance(guidance: str) -> tuple[str, ...]:
    """``"standard" | "scaled" | "both"`` -> the modes to compute."""
    if guidance not in GUIDANCE_CHOICES:
        raise ValueError(f"guidance must be one of {GUIDANCE_CHOICES}, got {guidance!r}")
    return GUIDANCE_MODES if guidance == "both" else (guidance,)


def check_cfg_strength(cfg_strength: float) -> float:
    value = float(cfg_strength)
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise ValueError(f"cfg_strength (ω) must be a finite number >= 0, got {cfg_strength}")
    return value


def needs_unconditional(cfg_strength: float) -> bool:
    """ω = 1 is plain conditional prediction: one forward, no unconditional branch."""
    return check_cfg_strength(cfg_strength) != 1.0


def projection_scale(u_cond: torch.Tensor, u_uncond: torch.Tensor) -> torch.Tensor:
    """s = <u_c, u_∅> / ||u_∅||^2 per sample over all other dims, shaped to broadcast (``[B, 1, ...]``).

    Computed in float32 at least; where ||u_∅|| underflows, s·u_∅ is ~0 whatever s is, so the
    denominator is clamped to the smallest normal number instead of dividing by zero.
    """
    import torch  # imported once by whoever made the tensors; here a lookup

    dtype = torch.promote_types(u_cond.dtype, torch.float32)
    c = u_cond.to(dtype).flatten(1)
    u = u_uncond.to(dtype).flatten(1)
    dot = (c * u).sum(dim=1)
    norm_sq = (u * u).sum(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return (dot / norm_sq).view(-1, *([1] * (u_cond.dim() - 1)))


def guide(
    u_cond: torch.Tensor, u_uncond: torch.Tensor | None, cfg_strength: float, mode: GuidanceMode = "scaled"
) -> torch.Tensor:
    """Combine conditional and unconditional predictions.

    standard: ω·u_c + (1-ω)·u_∅;  scaled: ω·u_c + (1-ω)·s·u_∅ with s from :func:`projection_scale`.
    With ω = 1 the conditional prediction is returned and ``u_uncond`` may be None.
    """
    w = check_cfg_strength(cfg_strength)
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    if w == 1.0:
        return u_cond
    if u_uncond is None:
        raise ValueError(f"cfg_strength {w} != 1 needs the unconditional prediction")
    if u_uncond.shape != u_cond.shape:
        raise ValueError(f"u_uncond shape {list(u_uncond.shape)} differs from u_cond {list(u_cond.shape)}")
    if mode == "scaled":
        u_uncond = (projection_scale(u_cond, u_uncond) * u_uncond).to(u_cond.dtype)
    return w * u_cond + (1 - w) * u_uncond
