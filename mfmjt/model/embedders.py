"""Sinusoidal embedders: time t, the MeanFlow interval Δt, and (guidance-trained networks) the CFG setting."""

from __future__ import annotations

import torch
from torch import nn


def _frequencies(half: int, max_period: float, device: torch.device | None = None) -> torch.Tensor:
    """The ``half`` sinusoid frequencies in float32 (highest 10^4 / max_period rad per unit time)."""
    freqs = 1.0 / (10_000 ** (torch.arange(0, half, dtype=torch.float32, device=device) / half))
    return freqs * (10_000 / max_period)


class TimestepEmbedder(nn.Module):
    """``[cos | sin]`` features of a scalar time in [0, 1] (no x1000), then Linear-SiLU-Linear.

    v1 networks use 256 frequencies with max period 10^4 (highest frequency 1 rad per unit time);
    v2 networks use ``hidden_dim`` frequencies with max period 1 (everything 10^4 times faster).
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, dim), nn.SiLU(), nn.Linear(dim, dim))
        half = frequency_embedding_size // 2
        self.register_buffer("freqs", _frequencies(half, max_period), persistent=False)
        self.max_period = max_period

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        # float32 at least (float64 networks stay float64), as MMAudio computes it
        dtype = torch.promote_types(self.freqs.dtype, torch.float32)
        freqs = self.freqs
        if freqs.dtype in (torch.bfloat16, torch.float16):  # a cast network: bf16 would round args ~1e4
            freqs = _frequencies(freqs.numel(), self.max_period, freqs.device)
        args = t[:, None].to(dtype) * freqs[None].to(dtype)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B]`` -> ``[B, dim]``."""
        return self.mlp(self.timestep_embedding(t).to(self.mlp[0].weight.dtype))


class GuidanceEmbedder(nn.Module):
    """The classifier-free-guidance setting a guidance-trained network imitates in one forward.

    One :class:`TimestepEmbedder` per mode (standard, scaled) reads ω - 1; the embedding at ω = 1 is
    subtracted, so ω = 1 adds exactly nothing and the network is then its plain conditional self.
    """

    def __init__(self, dim: int, frequency_embedding_size: int = 256, max_period: float = 10_000.0) -> None:
        super().__init__()
        self.standard = TimestepEmbedder(dim, frequency_embedding_size, max_period)
        self.scaled = TimestepEmbedder(dim, frequency_embedding_size, max_period)

    def forward(self, strength: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
        """``strength [B]`` (ω), ``scaled [B]`` bool -> ``[B, dim]``, zero where ω = 1."""
        offset = strength - 1
        zero = torch.zeros_like(offset[:1])
        standard = self.standard(offset) - self.standard(zero)
        scaled_emb = self.scaled(offset) - self.scaled(zero)
        embedding = torch.where(scaled.view(-1, 1), scaled_emb, standard)
        return embedding.masked_fill((offset == 0).view(-1, 1), 0.0)  # exact, whatever the batch

    def zero_output(self) -> None:
        """Zero both output layers: the network then ignores the guidance setting."""
        for embedder in (self.standard, self.scaled):
            nn.init.zeros_(embedder.mlp[2].weight)
            nn.init.zeros_(embedder.mlp[2].bias)
