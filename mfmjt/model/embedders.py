"""Sinusoidal timestep embedders for t and for the MeanFlow interval length Δt."""

from __future__ import annotations

import torch
from torch import nn


class TimestepEmbedder(nn.Module):
    """``[cos | sin]`` features of a scalar time in [0, 1] (no x1000), then Linear-SiLU-Linear.

    v1 networks use 256 frequencies with max period 10^4 (highest frequency 1 rad per unit time);
    v2 networks use ``hidden_dim`` frequencies with max period 1 (everything 10^4 times faster).
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        half = frequency_embedding_size // 2
        freqs = 1.0 / (10_000 ** (torch.arange(0, half, dtype=torch.float32) / half))
        self.register_buffer("freqs", freqs * (10_000 / max_period), persistent=False)

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        # float32 at least (float64 networks stay float64), as MMAudio computes it
        dtype = torch.promote_types(self.freqs.dtype, torch.float32)
        args = t[:, None].to(dtype) * self.freqs[None].to(dtype)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B]`` -> ``[B, dim]``."""
        return self.mlp(self.timestep_embedding(t).to(self.mlp[0].weight.dtype))
