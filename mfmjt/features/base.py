"""The small interfaces every frozen encoder/decoder implements.

The pipeline composes one object of each kind (a :class:`FeatureStack`); the paper-size stack
(CLIP, Synchformer, VAE + BigVGAN) and the offline stack of the embedded default model both
implement them, so nothing downstream knows which one it runs.

Conventions: video frames arrive as uint8 tensors ``[B, T, 3, H, W]`` already resampled by
:mod:`mfmjt.media` (8 fps 384x384 for the CLIP stream, 25 fps 224x224 for the sync stream);
features leave channel-last ``[B, N, C]`` in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class VideoEncoder(Protocol):
    """Per-frame (CLIP) or per-segment (Synchformer) visual features."""

    dim: int

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, T, 3, H, W]`` -> float ``[B, N, dim]``."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """Token-level text features (77 tokens, CLIP tokenizer)."""

    dim: int

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """``B`` prompts -> float ``[B, 77, dim]``."""
        ...


@runtime_checkable
class AudioCodec(Protocol):
    """Waveform <-> latent sequence at ``latent_rate`` frames per second."""

    sample_rate: int
    latent_dim: int

    def encode(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float ``[B, samples]`` -> posterior (mean, std), each ``[B, N, latent_dim]``."""
        ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Un-normalised latent ``[B, N, latent_dim]`` -> float waveform ``[B, samples]``."""
        ...


@dataclass
class FeatureStack:
    """One encoder of each kind; what the pipeline needs besides the network."""

    clip: VideoEncoder
    sync: VideoEncoder
    text: TextEncoder
    codec: AudioCodec
