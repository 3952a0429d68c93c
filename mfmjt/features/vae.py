"""MMAudio's mel VAE: a 1-D conv autoencoder with EDM2 magnitude-preserving layers.

Log-mel ``[B, data_dim, T]`` -> posterior over latents ``[B, embed_dim, T // 2]`` (channel-first, the
layout of MMAudio's module; :class:`mfmjt.features.audio.MMAudioCodec` is the channel-last surface).

Architecture (state-dict keys and shapes equal MMAudio's ``VAE``):
- every conv is an ``MPConv1d`` (no bias, padding ``k // 2``). A checkpoint stores raw weights; they
  are normalised once after loading, row by row, ``w / (||w_o|| + 1e-4 * sqrt(fan_in))``
  (MMAudio's ``remove_weight_norm``). ``conv_out`` multiplies its weight by ``1 + learnable_gain``;
- ResNet block: pixel-norm over channels, ``mp_silu`` -> conv -> ``mp_silu`` -> conv, 1x1 shortcut when
  widths differ, ``mp_sum(x, h, 0.3)``;
- attention (mid blocks only): 1x1 qkv with interleaved channels ``c * 3 + j``, q/k/v pixel-normed,
  one head, 1x1 projection, ``mp_sum``;
- levels ``ch_mult`` (1, 2, 4) x ``hidden_dim``; one 2x time downsample after level 0 (1x1 conv ->
  avg-pool -> 1x1 conv), the decoder's matching upsample is nearest-exact x2 -> conv k3; activations
  clamped to +-256 after each block;
- the input mel is normalised per bin with ``data_mean`` / ``data_std`` (persistent buffers) and the
  decoder output un-normalised with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.features._checks import check_float_tensor

log = logging.getLogger(__name__)

# Per-bin log-mel statistics of MMAudio's training data (constants of MMAudio's VAE; the checkpoint
# stores them again as the buffers ``data_mean`` / ``data_std``).
# fmt: off
DATA_MEAN_80D = (
    -1.6058, -1.3676, -1.2520, -1.2453, -1.2078, -1.2224, -1.2419, -1.2439, -1.2922, -1.2927,
    -1.3170, -1.3543, -1.3401, -1.3836, -1.3907, -1.3912, -1.4313, -1.4152, -1.4527, -1.4728,
    -1.4568, -1.5101, -1.5051, -1.5172, -1.5623, -1.5373, -1.5746, -1.5687, -1.6032, -1.6131,
    -1.6081, -1.6331, -1.6489, -1.6489, -1.6700, -1.6738, -1.6953, -1.6969, -1.7048, -1.7280,
    -1.7361, -1.7495, -1.7658, -1.7814, -1.7889, -1.8064, -1.8221, -1.8377, -1.8417, -1.8643,
    -1.8857, -1.8929, -1.9173, -1.9379, -1.9531, -1.9673, -1.9824, -2.0042, -2.0215, -2.0436,
    -2.0766, -2.1064, -2.1418, -2.1855, -2.2319, -2.2767, -2.3161, -2.3572, -2.3954, -2.4282,
    -2.4659, -2.5072, -2.5552, -2.6074, -2.6584, -2.7107, -2.7634, -2.8266, -2.8981, -2.9673,
)
DATA_STD_80D = (
    1.0291, 1.0411, 1.0043, 0.9820, 0.9677, 0.9543, 0.9450, 0.9392, 0.9343, 0.9297, 0.9276, 0.9263,
    0.9242, 0.9254, 0.9232, 0.9281, 0.9263, 0.9315, 0.9274, 0.9247, 0.9277, 0.9199, 0.9188, 0.9194,
    0.9160, 0.9161, 0.9146, 0.9161, 0.9100, 0.9095, 0.9145, 0.9076, 0.9066, 0.9095, 0.9032, 0.9043,
    0.9038, 0.9011, 0.9019, 0.9010, 0.8984, 0.8983, 0.8986, 0.8961, 0.8962, 0.8978, 0.8962, 0.8973,
    0.8993, 0.8976, 0.8995, 0.9016, 0.8982, 0.8972, 0.8974, 0.8949, 0.8940, 0.8947, 0.8936, 0.8939,
    0.8951, 0.8956, 0.9017, 0.9167, 0.9436, 0.9690, 1.0003, 1.0225, 1.0381, 1.0491, 1.0545, 1.0604,
    1.0761, 1.0929, 1.1089, 1.1196, 1.1176, 1.1156, 1.1117, 1.1070,
)
DATA_MEAN_128D = (
    -3.3462, -2.6723, -2.4893, -2.3143, -2.2664, -2.3317, -2.1802, -2.4006, -2.2357, -2.4597,
    -2.3717, -2.4690, -2.5142, -2.4919, -2.6610, -2.5047, -2.7483, -2.5926, -2.7462, -2.7033,
    -2.7386, -2.8112, -2.7502, -2.9594, -2.7473, -3.0035, -2.8891, -2.9922, -2.9856, -3.0157,
    -3.1191, -2.9893, -3.1718, -3.0745, -3.1879, -3.2310, -3.1424, -3.2296, -3.2791, -3.2782,
    -3.2756, -3.3134, -3.3509, -3.3750, -3.3951, -3.3698, -3.4505, -3.4509, -3.5089, -3.4647,
    -3.5536, -3.5788, -3.5867, -3.6036, -3.6400, -3.6747, -3.7072, -3.7279, -3.7283, -3.7795,
    -3.8259, -3.8447, -3.8663, -3.9182, -3.9605, -3.9861, -4.0105, -4.0373, -4.0762, -4.1121,
    -4.1488, -4.1874, -4.2461, -4.3170, -4.3639, -4.4452, -4.5282, -4.6297, -4.7019, -4.7960,
    -4.8700, -4.9507, -5.0303, -5.0866, -5.1634, -5.2342, -5.3242, -5.4053, -5.4927, -5.5712,
    -5.6464, -5.7052, -5.7619, -5.8410, -5.9188, -6.0103, -6.0955, -6.1673, -6.2362, -6.3120,
    -6.3926, -6.4797, -6.5565, -6.6511, -6.8130, -6.9961, -7.1275, -7.2457, -7.3576, -7.4663,
    -7.6136, -7.7469, -7.8815, -8.0132, -8.1515, -8.3071, -8.4722, -8.7418, -9.3975, -9.6628,
    -9.7671, -9.8863, -9.9992, -10.0860, -10.1709, -10.5418, -11.2795, -11.3861,
)
DATA_STD_128D = (
    2.3804, 2.4368, 2.3772, 2.3145, 2.2803, 2.2510, 2.2316, 2.2083, 2.1996, 2.1835, 2.1769, 2.1659,
    2.1631, 2.1618, 2.1540, 2.1606, 2.1571, 2.1567, 2.1612, 2.1579, 2.1679, 2.1683, 2.1634, 2.1557,
    2.1668, 2.1518, 2.1415, 2.1449, 2.1406, 2.1350, 2.1313, 2.1415, 2.1281, 2.1352, 2.1219, 2.1182,
    2.1327, 2.1195, 2.1137, 2.1080, 2.1179, 2.1036, 2.1087, 2.1036, 2.1015, 2.1068, 2.0975, 2.0991,
    2.0902, 2.1015, 2.0857, 2.0920, 2.0893, 2.0897, 2.0910, 2.0881, 2.0925, 2.0873, 2.0960, 2.0900,
    2.0957, 2.0958, 2.0978, 2.0936, 2.0886, 2.0905, 2.0845, 2.0855, 2.0796, 2.0840, 2.0813, 2.0817,
    2.0838, 2.0840, 2.0917, 2.1061, 2.1431, 2.1976, 2.2482, 2.3055, 2.3700, 2.4088, 2.4372, 2.4609,
    2.4731, 2.4847, 2.5072, 2.5451, 2.5772, 2.6147, 2.6529, 2.6596, 2.6645, 2.6726, 2.6803, 2.6812,
    2.6899, 2.6916, 2.6931, 2.6998, 2.7062, 2.7262, 2.7222, 2.7158, 2.7041, 2.7485, 2.7491, 2.7451,
    2.7485, 2.7233, 2.7297, 2.7233, 2.7145, 2.6958, 2.6788, 2.6439, 2.6007, 2.4786, 2.2469, 2.1877,
    2.1392, 2.0717, 2.0107, 1.9676, 1.9140, 1.7102, 0.9101, 0.7164,
)
# fmt: on
_DATA_STATS = {80: (DATA_MEAN_80D, DATA_STD_80D), 128: (DATA_MEAN_128D, DATA_STD_128D)}

LOGVAR_RANGE = (-30.0, 20.0)
_EPS = 1e-4  # EDM2 normalisation epsilon


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the mel VAE; ``preset('16k')`` / ``preset('44k')`` are MMAudio's checkpoints."""

    data_dim: int = 80  # mel bins
    embed_dim: int = 20  # latent channels
    hidden_dim: int = 384
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2  # per encoder level; the decoder has one more
    downsample_levels: tuple[int, ...] = (0,)  # encoder levels followed by a 2x time downsample
    kernel_size: int = 3
    clip_act: float = 256.0

    def __post_init__(self) -> None:
        if self.data_dim not in _DATA_STATS:
            raise ValueError(
                f"data_dim must be one of {sorted(_DATA_STATS)} (MMAudio's mel sizes), got {self.data_dim}"
            )

    @property
    def time_downsample(self) -> int:
        """Mel frames per latent frame (2)."""
        return 2 ** len(self.downsample_levels)

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        if name not in VAE_PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; choose one of {sorted(VAE_PRESETS)}")
        return VAE_PRESETS[name]


VAE_PRESETS: dict[str, VAEConfig] = {
    "16k": VAEConfig(data_dim=80, embed_dim=20, hidden_dim=384),
    "44k": VAEConfig(data_dim=128, embed_dim=40, hidden_dim=512),
}


# --------------------------------------------------------------------------------------------------
# Magnitude-preserving primitives (EDM2)


def pixel_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x / (1e-4 + ||x|| / sqrt(n))`` with the norm over ``dim`` (n entries), computed in float32."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = _EPS + norm * math.sqrt(1.0 / x.shape[dim])
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.3) -> torch.Tensor:
    """``((1 - t) a + t b) / sqrt((1 - t)² + t²)``."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def normalize_mp_weight(weight: torch.Tensor) -> torch.Tensor:
    """One-time weight normalisation of a raw MPConv1d weight ``[out, in, k]`` (``remove_weight_norm``)."""
    fan_in = weight[0].numel()
    norm = torch.linalg.vector_norm(weight, dim=(1, 2), keepdim=True, dtype=torch.float32)
    w = weight.float() / (_EPS + norm * math.sqrt(1.0 / fan_in))
    return (w / math.sqrt(fan_in)).to(weight.dtype)


class MPConv1d(nn.Module):
    """Bias-free conv, padding ``k // 2``; its weight is normalised once by ``VAE.remove_weight_norm``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if gain is None else self.weight * gain
        return F.conv1d(x, w.to(x.dtype), padding=w.shape[-1] // 2)


class ResnetBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = MPConv1d(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1d(out_dim, out_dim, kernel_size)
        self.nin_shortcut = MPConv1d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, 0.3)


class AttnBlock(nn.Module):
    """Single-head self-attention over time with pixel-normed q, k, v."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qkv = MPConv1d(channels, channels * 3, 1)
        self.proj_out = MPConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        qkv = pixel_norm(self.qkv(x).reshape(b, c, 3, n), dim=1)  # channel index = c * 3 + j
        q, k, v = (qkv[:, :, j].transpose(1, 2).unsqueeze(1) for j in range(3))  # [B, 1, N, C]
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)  # [B, C, N]
        return mp_sum(x, self.proj_out(h), 0.3)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = MPConv1d(channels, channels, 1)
        self.conv2 = MPConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = MPConv1d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class _Level(nn.Module):
    """ResNet blocks of one resolution level, then an optional resampler (key names as MMAudio)."""

    def __init__(
        self, widths: list[tuple[int, int]], kernel_size: int, resample: nn.Module | None, resample_name: str
    ) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o, kernel_size) for i, o in widths)
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        module = getattr(self, self.resample_name, None)
        return x if module is None else module(x)


class _Mid(nn.Module):
    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, kernel_size)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.clip_act = c.clip_act
        self.learnable_gain = nn.Parameter(torch.zeros(()))
        self.conv_in = MPConv1d(c.data_dim, c.hidden_dim, c.kernel_size)
        self.down = nn.ModuleList()
        width = c.hidden_dim
        for level, mult in enumerate(c.ch_mult):
            out = c.hidden_dim * mult
            widths = [(width if i == 0 else out, out) for i in range(c.num_res_blocks)]
            width = out
            resample = Downsample(width) if level in c.downsample_levels else None
            self.down.append(_Level(widths, c.kernel_size, resample, "downsample"))
        self.mid = _Mid(width, c.kernel_size)
        self.conv_out = MPConv1d(width, 2 * c.embed_dim, c.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            h = level.resample(h)
        h = self.mid(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        self.clip_act = c.clip_act
        self.learnable_gain = nn.Parameter(torch.zeros(()))
        width = c.hidden_dim * c.ch_mult[-1]
        self.conv_in = MPConv1d(c.embed_dim, width, c.kernel_size)
        self.mid = _Mid(width, c.kernel_size)
        levels = []
        for level in reversed(range(len(c.ch_mult))):
            out = c.hidden_dim * c.ch_mult[level]
            widths = [(width if i == 0 else out, out) for i in range(c.num_res_blocks + 1)]
            width = out
            # the encoder downsampled after level l, so the decoder upsamples after level l + 1
            resample = Upsample(width) if level - 1 in c.downsample_levels else None
            levels.append(_Level(widths, c.kernel_size, resample, "upsample"))
        self.up = nn.ModuleList(reversed(levels))  # index = level, as in MMAudio
        self.conv_out = MPConv1d(width, c.data_dim, c.kernel_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z)).clamp(-self.clip_act, self.clip_act)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h).clamp(-self.clip_act, self.clip_act)
            h = level.resample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


# --------------------------------------------------------------------------------------------------
# The VAE


@dataclass(frozen=True)
class DiagonalGaussian:
    """Posterior ``N(mean, std²)``; channel-first ``[B, embed_dim, N]``."""

    mean: torch.Tensor
    logvar: torch.Tensor  # clamped to LOGVAR_RANGE

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean


class VAE(nn.Module):
    """Mel VAE; raw checkpoint weights need :meth:`remove_weight_norm` (:func:`load_vae` does it)."""

    def __init__(self, config: VAEConfig | str = "16k") -> None:
        super().__init__()
        self.config = VAEConfig.preset(config) if isinstance(config, str) else config
        mean, std = _DATA_STATS[self.config.data_dim]
        self.register_buffer("data_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("data_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1))
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.weight_norm_removed = False
        self.register_load_state_dict_post_hook(_mark_weights_raw)

    def mp_convs(self) -> list[MPConv1d]:
        return [m for m in self.modules() if isinstance(m, MPConv1d)]

    @torch.no_grad()
    def remove_weight_norm(self) -> VAE:
        """Normalise every MPConv1d weight once (MMAudio's ``remove_weight_norm``); idempotent."""
        if not self.weight_norm_removed:
            for conv in self.mp_convs():
                conv.weight.copy_(normalize_mp_weight(conv.weight))
            self.weight_norm_removed = True
        return self

    def _require_normalized(self) -> None:
        if not self.weight_norm_removed:
            raise RuntimeError(
                "VAE weights are not normalised yet: call remove_weight_norm() after loading "
                "a raw checkpoint, or load it with mfmjt.features.vae.load_vae"
            )

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """Log-mel ``[B, data_dim, T]`` -> posterior over ``[B, embed_dim, T // 2]``."""
        c = self.config
        check_float_tensor(
            "mel", mel, f"[B, {c.data_dim}, T] with T >= {c.time_downsample}", ndim=3, sizes={1: c.data_dim}
        )
        if mel.shape[2] < c.time_downsample:
            raise ValueError(
                f"mel must have shape [B, {c.data_dim}, T] with T >= {c.time_downsample}, "
                f"got {list(mel.shape)}"
            )
        self._require_normalized()
        x = (mel - self.data_mean) / self.data_std
        return DiagonalGaussian.from_moments(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, embed_dim, N]`` -> log-mel ``[B, data_dim, 2N]`` (un-normalised)."""
        c = self.config
        check_float_tensor("z", z, f"[B, {c.embed_dim}, N]", ndim=3, sizes={1: c.embed_dim})
        self._require_normalized()
        return self.decoder(z) * self.data_std + self.data_mean


def _mark_weights_raw(module: VAE, incompatible_keys: object) -> None:
    """After any state-dict load the weights count as raw until normalised (or declared normalised)."""
    module.weight_norm_removed = False


def _detect_normalized(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when every 3-D conv weight has unit row norms (after ``remove_weight_norm``).

    Normalised rows have norm ``r / (r + 1e-4 sqrt(fan_in))`` in (0.99, 1]; raw checkpoint rows have
    norm about ``sqrt(fan_in)`` (>= 7.7 here), so the two layouts are far apart.
    """
    flags = []
    for key, w in state_dict.items():
        if key.endswith(".weight") and w.dim() == 3:
            norms = torch.linalg.vector_norm(w.float(), dim=(1, 2))
            flags.append(bool(((norms > 0.99) & (norms < 1.0 + 1e-5)).all()))
    if not flags:
        raise ValueError("VAE state dict has no conv weights")
    if any(flags) and not all(flags):
        raise ValueError(
            "VAE state dict mixes normalised and raw conv weights; pass weights_normalized explicitly"
        )
    return flags[0]


def load_vae(
    state_dict: Mapping[str, torch.Tensor],
    config: VAEConfig | str = "16k",
    weights_normalized: bool | None = None,
) -> VAE:
    """Strictly load a VAE state dict (MMAudio's ``v1-16.pth`` layout) and normalise its weights.

    ``weights_normalized``: False for a raw checkpoint (weights normalised here), True for a state dict
    saved after ``remove_weight_norm``; None detects it from the weight norms.
    """
    with torch.device("meta"):  # skip the random init: every tensor comes from the strict load
        vae = VAE(config)
    vae.to_empty(device="cpu")
    try:
        vae.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"state dict does not fit the VAE {vae.config}: {err}") from None
    if weights_normalized is None:
        weights_normalized = _detect_normalized(state_dict)
        log.debug("VAE state dict detected as %s", "normalised" if weights_normalized else "raw")
    if weights_normalized:
        vae.weight_norm_removed = True
    else:
        vae.remove_weight_norm()
    return vae.eval().requires_grad_(False)
