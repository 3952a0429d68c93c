"""Rotary positions on interleaved channel pairs, computed per call for any sequence length.

The clip stream's frequencies are scaled by ``latent_len / clip_len`` so that a clip frame and the
latent frame at the same moment share a rotation: the two streams are aligned in time, whatever the
duration.
"""

from __future__ import annotations

import torch

ROPE_THETA = 10_000.0


def rope_rotations(
    length: int, head_dim: int, *, freq_scaling: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Rotation matrices ``[1, length, head_dim/2, 2, 2]`` (float32) for positions ``0..length-1``."""
    pos = torch.arange(length, dtype=torch.float32, device=device)
    freqs = 1.0 / (
        ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim)
    )
    angles = pos[:, None] * (freqs * freq_scaling)[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1)
    return rot.view(1, length, head_dim // 2, 2, 2)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, N, head_dim]`` pairwise: ``(x0, x1) -> (cos x0 - sin x1, sin x0 + cos x1)``."""
    pairs = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(*x.shape[:-1], -1, 1, 2)
    out = rot[..., 0] * pairs[..., 0] + rot[..., 1] * pairs[..., 1]
    return out.reshape(x.shape).to(x.dtype)
