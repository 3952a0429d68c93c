"""Small building blocks: channel-last convolutions, gated (SwiGLU) feed-forwards, adaLN modulation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_dim(hidden_dim: int, multiple_of: int = 256) -> int:
    """MMAudio's SwiGLU width: two thirds of ``hidden_dim`` rounded up to ``multiple_of``."""
    hidden = int(2 * hidden_dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class ChannelLastConv1d(nn.Conv1d):
    """``nn.Conv1d`` over a channel-last ``[B, N, C]`` sequence (same parameters as Conv1d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class MLP(nn.Module):
    """Gated feed-forward ``w2(silu(w1 x) * w3 x)`` without biases."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 256) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ConvMLP(nn.Module):
    """The gated feed-forward with 1-D convolutions along the sequence instead of linears."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3, multiple_of: int = 256) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        padding = kernel_size // 2
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` (shift/scale broadcast over tokens or given per token)."""
    return x * (1 + scale) + shift
