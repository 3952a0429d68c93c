"""Log-mel spectrogram exactly as MMAudio computes it (Make-An-Audio 2 settings).

Waveform ``[B, samples]`` in [-1, 1] -> log-mel ``[B, n_mels, samples // hop]`` (channel-first, the
layout the VAE consumes). Steps: clamp to [-1, 1]; reflect-pad ``(n_fft - hop) / 2`` each side;
STFT (periodic Hann, ``center=False``); magnitude ``sqrt(re² + im² + 1e-9)``; Slaney mel filterbank
(librosa's default); ``log10`` (16k) or natural ``log`` (44k) of ``max(·, 1e-5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from mfmjt.features._checks import check_float_tensor

LogFn = Literal["log10", "log"]


@dataclass(frozen=True)
class MelConfig:
    """STFT and mel settings; ``preset('16k')`` / ``preset('44k')`` are MMAudio's."""

    sample_rate: int
    n_fft: int
    hop_size: int
    win_size: int
    n_mels: int
    fmin: float
    fmax: float
    log: LogFn

    def __post_init__(self) -> None:
        if self.n_fft < self.win_size or (self.n_fft - self.hop_size) % 2:
            raise ValueError(f"need n_fft >= win_size and n_fft - hop_size even, got {self}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}"
            )

    @property
    def pad(self) -> int:
        """Reflect padding on each side of the waveform (384 for 16k)."""
        return (self.n_fft - self.hop_size) // 2

    @property
    def frame_rate(self) -> float:
        """Mel frames per second (62.5 for 16k)."""
        return self.sample_rate / self.hop_size

    @classmethod
    def preset(cls, name: str) -> MelConfig:
        if name not in MEL_PRESETS:
            raise ValueError(f"unknown mel preset {name!r}; choose one of {sorted(MEL_PRESETS)}")
        return MEL_PRESETS[name]


MEL_PRESETS: dict[str, MelConfig] = {
    "16k": MelConfig(
        16_000, n_fft=1024, hop_size=256, win_size=1024, n_mels=80, fmin=0, fmax=8_000, log="log10"
    ),
    "44k": MelConfig(
        44_100, n_fft=2048, hop_size=512, win_size=2048, n_mels=128, fmin=0, fmax=22_050, log="log"
    ),
}


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (math.log(6.4) / 27.0), mel)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log_region = mel >= 15.0
    return np.where(log_region, 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0)), hz)


def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> torch.Tensor:
    """Triangular Slaney-scale, Slaney-area-normalised filterbank ``[n_mels, n_fft // 2 + 1]``.

    Same numbers as ``librosa.filters.mel`` with its defaults (``htk=False``, ``norm='slaney'``,
    float32 output), including where it rounds to float32; computed without librosa.
    """
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_hz = _slaney_mel_to_hz(
        np.linspace(_hz_to_slaney_mel(np.float64(fmin)), _hz_to_slaney_mel(np.float64(fmax)), n_mels + 2)
    )
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, n_freqs]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    weights = (weights.astype(np.float64) * area_norm[:, None]).astype(np.float32)
    return torch.from_numpy(weights)


class MelConverter(nn.Module):
    """Waveform ``[B, samples]`` -> log-mel ``[B, n_mels, samples // hop_size]``.

    ``mel_basis`` and ``hann_window`` are persistent buffers, as in MMAudio's module.
    """

    def __init__(self, config: MelConfig | str = "16k") -> None:
        super().__init__()
        self.config = MelConfig.preset(config) if isinstance(config, str) else config
        c = self.config
        basis = slaney_mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        self.register_buffer("mel_basis", basis)
        self.register_buffer("hann_window", torch.hann_window(c.win_size))

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.config.hop_size

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        check_float_tensor("waveform", waveform, "[B, samples]", ndim=2)
        if waveform.shape[1] <= c.pad or waveform.shape[1] < c.hop_size:
            raise ValueError(
                f"waveform must have shape [B, samples] with samples > "
                f"{max(c.pad, c.hop_size - 1)}, got {list(waveform.shape)}"
            )
        # always float32, even when the module was cast to a lower precision
        x = waveform.to(self.mel_basis.device, torch.float32).clamp(-1.0, 1.0)
        x = nn.functional.pad(x.unsqueeze(1), (c.pad, c.pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x,
            c.n_fft,
            hop_length=c.hop_size,
            win_length=c.win_size,
            window=self.hann_window.float(),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec)
        magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)  # [B, n_freqs, frames]
        mel = torch.matmul(self.mel_basis.float(), magnitude).clamp(min=1e-5)
        return torch.log10(mel) if c.log == "log10" else torch.log(mel)
