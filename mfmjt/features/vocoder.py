"""BigVGAN vocoders of MMAudio: log-mel ``[B, n_mels, T]`` -> waveform ``[B, 1, hop · T]``.

One generator covers both of MMAudio's vocoders; they differ only in sizes and the output stage:
- 16 kHz: BigVGAN v1 of Make-An-Audio 2 (``best_netG.pt``), 80 mels, hop 256, ``conv_post`` with bias,
  tanh output (``BigVGANConfig.preset('16k')``);
- 44.1 kHz: NVIDIA BigVGAN v2 ``nvidia/bigvgan_v2_44khz_128band_512x`` (``bigvgan_generator.pt`` +
  ``config.json``), 128 mels, hop 512, ``conv_post`` without bias, output clamped to [-1, 1]
  (``use_bias_at_final`` / ``use_tanh_at_final`` false in its config; ``preset('44k')``).

Why our own generator rather than the PyPI ``bigvgan`` package: ``bigvgan`` 2.4.1 reproduces the
reference too, but ``pip install bigvgan`` pulls about 40 extra packages that only its training code
uses (tensorboard with grpcio and protobuf, librosa with numba/llvmlite, matplotlib, which it imports at
import time, auraloss, nnaudio, ninja) plus ``pesq``, which ships only as source and needs a C compiler,
the classic install failure on Windows and macOS. Inference needs none of it: this inference-only
generator is plain torch, loads the checkpoints with their keys unchanged (weight-norm layout, new or
legacy names, or plain weights; no renaming step) and matches the original implementations' golden
waveforms to float32 rounding (``tests/test_audio_features.py``, ``tests/test_audio44k.py``). Keeping it
in-tree also gives it the project's input checks and init-free (meta-device) loading.

Architecture (keys and shapes equal the reference ``BigVGAN`` classes):
- ``conv_pre`` (k7) -> per stage ``i``: ``ups.i.0`` transposed conv (rate ``u``, kernel ``k``,
  padding ``(k - u) // 2``), then the mean of ``len(resblock_kernel_sizes)`` AMP blocks ->
  anti-aliased SnakeBeta -> ``conv_post`` (k7, -> 1 channel) -> tanh or clamp;
- AMP block (type "1"): for each dilation ``d``: act -> conv(k, d) -> act -> conv(k, 1), residual add;
- each act is anti-aliased: 2x upsample (12-tap Kaiser-windowed sinc, replicate padding),
  SnakeBeta ``x + sin²(αx) / (β + 1e-9)`` with log-scale per-channel α, β, 2x low-pass downsample.
  The two 12-tap filters are persistent buffers (they are in the checkpoint too).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as parametrize_weight_norm

from mfmjt.features._checks import check_float_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BigVGANConfig:
    """Generator sizes. ``preset('16k')``: MMAudio's ``bigvgan_vocoder.yml`` (112M parameters);
    ``preset('44k')``: the ``config.json`` of ``nvidia/bigvgan_v2_44khz_128band_512x`` (122M)."""

    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    snake_logscale: bool = True
    use_tanh_at_final: bool = True  # False: clamp to [-1, 1] instead (BigVGAN v2)
    use_bias_at_final: bool = True  # False: conv_post has no bias (BigVGAN v2)

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")

    @property
    def hop_size(self) -> int:
        """Waveform samples per mel frame (256)."""
        return math.prod(self.upsample_rates)

    @classmethod
    def preset(cls, name: str) -> BigVGANConfig:
        if name not in BIGVGAN_PRESETS:
            raise ValueError(f"unknown BigVGAN preset {name!r}; choose one of {sorted(BIGVGAN_PRESETS)}")
        return BIGVGAN_PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BigVGANConfig:
        """From a BigVGAN config (v1 yml or v2 ``config.json`` dict); training-only entries are ignored."""
        if str(d.get("resblock", "1")) != "1" or d.get("activation", "snakebeta") != "snakebeta":
            raise ValueError(
                "only resblock '1' with the 'snakebeta' activation is implemented, got "
                f"resblock={d.get('resblock')!r}, activation={d.get('activation')!r}"
            )
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                kwargs[f.name] = (
                    tuple(tuple(x) for x in v)
                    if f.name == "resblock_dilation_sizes"
                    else (tuple(v) if isinstance(v, list | tuple) else v)
                )
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | PathLike[str]) -> BigVGANConfig:
        """From a ``config.json`` file such as the one of a BigVGAN v2 Hub repository."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read the BigVGAN config {path}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object with the BigVGAN generator settings")
        return cls.from_dict(data)


BIGVGAN_PRESETS: dict[str, BigVGANConfig] = {
    "16k": BigVGANConfig(),
    "44k": BigVGANConfig(
        num_mels=128,
        upsample_rates=(8, 4, 2, 2, 2, 2),
        upsample_kernel_sizes=(16, 8, 4, 4, 4, 4),
        upsample_initial_channel=1536,
        use_tanh_at_final=False,
        use_bias_at_final=False,
    ),
}


# --------------------------------------------------------------------------------------------------
# Anti-aliased SnakeBeta activation


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass ``[1, 1, kernel_size]`` (cutoff and width in cycles per sample)."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95  # dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    offset = 0.5 if kernel_size % 2 == 0 else 0.0
    time = torch.arange(-half, half + (kernel_size % 2)) + offset
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    """2x upsampling by zero-stuffing + low-pass (transposed conv), replicate-padded."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(
            x, self.filter.expand(channels, -1, -1), stride=self.ratio, groups=channels
        )
        return x[..., self.crop_left : -self.crop_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, stride: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.stride = stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / stride, 0.6 / stride, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """``x + sin²(α x) / (β + 1e-9)`` with per-channel α, β stored as logs when ``logscale``."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros if logscale else torch.ones
        self.alpha = nn.Parameter(init(channels))
        self.beta = nn.Parameter(init(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        beta = self.beta[None, :, None]
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """Anti-aliased activation: upsample 2x -> SnakeBeta -> downsample 2x."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.act = SnakeBeta(channels, logscale)
        self.upsample = UpSample1d()
        self.downsample = DownSample1d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


# --------------------------------------------------------------------------------------------------
# Generator


class AMPBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], logscale: bool) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size - 1) * d // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )
        self.activations = nn.ModuleList(Activation1d(channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            h = conv2(self.activations[2 * i + 1](conv1(self.activations[2 * i](x))))
            x = x + h
        return x


class BigVGANVocoder(nn.Module):
    """BigVGAN generator (v1 or v2, by config). ``weight_norm=True`` builds the checkpoint layout
    (weight-norm parametrised convs, keys ``...parametrizations.weight.original0/1``);
    :meth:`remove_weight_norm` folds it."""

    def __init__(self, config: BigVGANConfig | str = "16k", weight_norm: bool = False) -> None:
        super().__init__()
        self.config = c = BigVGANConfig.preset(config) if isinstance(config, str) else config
        width = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.num_mels, width, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(width >> i, width >> (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock1(width >> (i + 1), k, tuple(d), c.snake_logscale)
            for i in range(len(c.upsample_rates))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True)
        )
        out_width = width >> len(c.upsample_rates)
        self.activation_post = Activation1d(out_width, c.snake_logscale)
        self.conv_post = nn.Conv1d(out_width, 1, 7, padding=3, bias=c.use_bias_at_final)
        if weight_norm:
            self.apply_weight_norm()

    def _convs(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)]

    @property
    def has_weight_norm(self) -> bool:
        return any(parametrize.is_parametrized(m, "weight") for m in self._convs())

    def apply_weight_norm(self) -> BigVGANVocoder:
        for conv in self._convs():
            if not parametrize.is_parametrized(conv, "weight"):
                parametrize_weight_norm(conv)
        return self

    def remove_weight_norm(self) -> BigVGANVocoder:
        """Replace each parametrised weight by ``g * v / ||v||`` (plain ``weight`` keys)."""
        for conv in self._convs():
            if parametrize.is_parametrized(conv, "weight"):
                parametrize.remove_parametrizations(conv, "weight")
        return self

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, num_mels, T]`` -> waveform ``[B, 1, T * hop_size]`` in [-1, 1]."""
        c = self.config
        check_float_tensor("mel", mel, f"[B, {c.num_mels}, T]", ndim=3, sizes={1: c.num_mels})
        num_kernels = len(c.resblock_kernel_sizes)
        x = self.conv_pre(mel)
        for i, (up,) in enumerate(self.ups):
            x = up(x)
            blocks = self.resblocks[i * num_kernels : (i + 1) * num_kernels]
            x = sum(block(x) for block in blocks) / num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if c.use_tanh_at_final else x.clamp(-1.0, 1.0)


_WEIGHT_NORM_SUFFIXES = (
    ".parametrizations.weight.original0",
    ".parametrizations.weight.original1",
    ".weight_g",
    ".weight_v",
)


def load_vocoder(state_dict: Mapping[str, Any], config: BigVGANConfig | str = "16k") -> BigVGANVocoder:
    """Strictly load a generator state dict and return it with weight norm removed, in eval mode.

    Accepts the checkpoint layout (``parametrizations.weight.original0/1``, or the legacy
    ``weight_g`` / ``weight_v`` names), the layout after removal (plain ``weight``), or a checkpoint
    dict that holds the generator under ``'generator'`` (``best_netG.pt``, ``bigvgan_generator.pt``).
    """
    if "generator" in state_dict and isinstance(state_dict["generator"], Mapping):
        state_dict = state_dict["generator"]
    parametrised = any(k.endswith(_WEIGHT_NORM_SUFFIXES) for k in state_dict)
    with torch.device("meta"):  # skip the random init: every tensor comes from the strict load
        vocoder = BigVGANVocoder(config, weight_norm=parametrised)
    vocoder.to_empty(device="cpu")
    try:
        vocoder.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"state dict does not fit the BigVGAN generator {vocoder.config}: {err}") from None
    log.debug("loaded BigVGAN generator (%s layout)", "weight-norm" if parametrised else "plain")
    return vocoder.remove_weight_norm().eval().requires_grad_(False)
