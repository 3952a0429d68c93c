"""Lightweight encoders of the embedded default model: no pretrained weights, deterministic by seed.

They implement the interfaces of :mod:`mfmjt.features.base` with MMAudio's token counts, so the
same network, sampler and pipeline run on them:

- :class:`OfflineClipEncoder`: per-frame colour/shape statistics of the 8 fps frames (where each hue
  is, how large, how it fills its box), a fixed seeded random projection, L2-normalised like CLIP.
- :class:`OfflineSyncEncoder`: the acceleration of each hue's centroid in the 25 fps frames, with
  Synchformer's token count (segments of 16 frames, stride 8, 8 tokens of 2 frames each). A bounce
  or a collision shows as a spike in the bouncing colour's channels. (The first default models used
  a fixed random projection of more motion statistics; ``sync_features="projected"`` keeps it.)
- :class:`OfflineTextEncoder`: open_clip's tokenizer, a fixed seeded embedding table plus
  sinusoidal positions, 77 tokens, L2-normalised per token.
- :class:`OfflineAudioCodec`: 16 kHz audio <-> 20-dim latents at 31.25 fps. Each latent frame
  holds four 8 ms sub-frames of an 80-band log-mel spectrogram: their mean levels (the temporal
  envelope, 4 dims) and a PCA of the level-free spectral shapes (16 dims) fitted on training audio.
  Decoding inverts the PCA, maps mel to linear magnitudes (non-negative least squares) and recovers
  phase with fast Griffin-Lim from a seeded initial phase.

The encoders are ``torch.nn.Module`` objects with non-persistent buffers (re-created from the seed);
only the codec has fitted state, saved to safetensors with its config in the metadata.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mfmjt.config import SYNC_SEGMENT_FRAMES, SYNC_SEGMENT_STEP, SYNC_TOKENS_PER_SEGMENT, TEXT_SEQ_LEN
from mfmjt.features.base import FeatureStack
from mfmjt.features.mel import slaney_mel_filterbank

logger = logging.getLogger(__name__)

__all__ = [
    "CodecConfig",
    "OfflineAudioCodec",
    "OfflineClipEncoder",
    "OfflineEncoderConfig",
    "OfflineSyncEncoder",
    "OfflineTextEncoder",
    "make_offline_stack",
]

_TOKENIZER_NAME = "ViT-H-14-378-quickgelu"
_FRAME_CHUNK = 32  # frames converted to float at a time (bounds memory for long clips)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


# --------------------------------------------------------------------------------------------------
# Video and text encoders
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineEncoderConfig:
    """Sizes and seed of the offline visual and text encoders (defaults: the embedded default model's)."""

    clip_dim: int = 32
    sync_dim: int = 48  # with sync_features="acceleration" it must be 4 * hue_bins
    text_dim: int = 32
    seed: int = 0
    hue_bins: int = 12
    clip_analysis_size: int = 64  # 384x384 CLIP frames are area-pooled to this size
    sync_analysis_size: int = 56  # 224x224 sync frames are area-pooled to this size
    clip_grid: int = 4  # global colour layout: mean RGB on a grid x grid raster
    motion_scale: float = 3.0  # velocity/acceleration gain (positions span [-1, 1])
    sync_gain: float = 7.0  # "projected" output gain: entries of a typical scene's tokens get std ~1
    # "acceleration": each token is the per-hue acceleration (x, y) of its two frames, times
    # acceleration_gain; "projected" (the first default models): all per-frame motion statistics
    # of the two frames through a fixed random projection
    sync_features: str = "acceleration"
    acceleration_gain: float = 5.0
    text_vocab_size: int = 49408
    text_position_weight: float = 0.5  # norm of the positional code relative to a token's

    def __post_init__(self) -> None:
        for name in (
            "clip_dim",
            "sync_dim",
            "text_dim",
            "hue_bins",
            "clip_analysis_size",
            "sync_analysis_size",
            "clip_grid",
            "text_vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.sync_features not in ("acceleration", "projected"):
            raise ValueError(f"sync_features is 'acceleration' or 'projected', not {self.sync_features!r}")
        if self.sync_features == "acceleration" and self.sync_dim != 4 * self.hue_bins:
            raise ValueError(
                f"acceleration tokens have 4 * hue_bins = {4 * self.hue_bins} dims, not {self.sync_dim}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OfflineEncoderConfig:
        if "sync_features" not in data:  # saved before the field existed: the projected tokens
            data = {**data, "sync_features": "projected"}
        return _from_dict(cls, data)


# layout of each hue bin's per-frame statistics in OfflineSyncEncoder.frame_features:
# sqrt(mass), position (x, y), velocity (x, y), acceleration (x, y), changed fraction
_HUE_STATS = 8


def _seeded_normal(seed: int, salt: int, *shape: int) -> torch.Tensor:
    """A fixed standard-normal tensor; ``salt`` separates the streams of different encoders."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + salt)
    return torch.randn(*shape, generator=gen)


def _check_frames(frames: torch.Tensor, who: str) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"{who} expects frames as a tensor [B, T, 3, H, W], got {shape}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"{who} expects uint8 frames (as mfmjt.media delivers them), got {frames.dtype}")


def _pooled_frames(frames: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """uint8 ``[B, T, 3, H, W]`` -> float ``[B*T, 3, size, size]`` in [0, 1], area-pooled in chunks."""
    flat = frames.reshape(-1, *frames.shape[2:])
    out = [
        F.adaptive_avg_pool2d(flat[i : i + _FRAME_CHUNK].to(device=device, dtype=torch.float32) / 255.0, size)
        for i in range(0, flat.shape[0], _FRAME_CHUNK)
    ]
    return torch.cat(out) if out else torch.zeros(0, 3, size, size, device=device)


def _hue_weights(img: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft membership of each pixel in ``bins`` hue bins, zero for grey/dark pixels: ``[N, bins, h, w]``."""
    r, g, b = img.unbind(1)
    mx, mn = img.amax(1), img.amin(1)
    chroma = (mx - mn).clamp_min(1e-6)
    hue = (
        torch.where(
            mx == r,
            torch.remainder((g - b) / chroma, 6.0),
            torch.where(mx == g, (b - r) / chroma + 2.0, (r - g) / chroma + 4.0),
        )
        / 6.0
    )
    sat = (mx - mn) / mx.clamp_min(1e-6)
    gate = ((sat - 0.35) / 0.2).clamp(0, 1) * ((mx - 0.25) / 0.15).clamp(0, 1)
    centres = torch.arange(bins, device=img.device, dtype=img.dtype).view(1, bins, 1, 1)
    dist = torch.remainder(hue.unsqueeze(1) * bins - centres + bins / 2, bins) - bins / 2
    return gate.unsqueeze(1) * (1.0 - dist.abs()).clamp_min(0.0)


def _extent(present: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Span ``max - min`` of ``coords`` where ``present`` (``[..., n]`` bool), 0 where none is."""
    big = torch.full_like(coords, 2.0)
    hi = torch.where(present, coords, -big).amax(-1)
    lo = torch.where(present, coords, big).amin(-1)
    return (hi - lo).clamp_min(0.0)


def _hue_moments(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-bin mass, presence, centroid, extent, box fill and vertical skew, each ``[N, bins]``."""
    h, w = weights.shape[-2:]
    ys = (torch.arange(h, device=weights.device, dtype=weights.dtype) + 0.5) / h
    xs = (torch.arange(w, device=weights.device, dtype=weights.dtype) + 0.5) / w
    total = weights.sum((2, 3))
    safe = total.clamp_min(1e-6)
    col, row = weights.sum(2), weights.sum(3)  # [N, K, w], [N, K, h]
    cx, cy = (col * xs).sum(-1) / safe, (row * ys).sum(-1) / safe
    var_x = (col * (xs - cx.unsqueeze(-1)) ** 2).sum(-1) / safe
    var_y = (row * (ys - cy.unsqueeze(-1)) ** 2).sum(-1) / safe
    skew = (row * (ys - cy.unsqueeze(-1)) ** 3).sum(-1) / safe / var_y.clamp_min(1e-8) ** 1.5
    mask = weights > 0.5
    width = _extent(mask.any(2), xs) + 1.0 / w  # bounding box of the confident pixels
    height = _extent(mask.any(3), ys) + 1.0 / h
    count = mask.sum((2, 3))
    fill = torch.where(count > 0, count / (width * height * h * w), torch.zeros_like(total))
    return {
        "mass": total / (h * w),
        "presence": (total / 4.0).clamp(0, 1),  # a shape counts once it covers ~4 analysis pixels
        "cx": cx,
        "cy": cy,
        "spread": torch.sqrt(var_x + var_y),
        "fill": fill.clamp(0, 1.5),
        "skew": skew.clamp(-3, 3),
    }


class OfflineClipEncoder(torch.nn.Module):
    """Per-frame visual features from 8 fps frames: ``[B, T, 3, H, W]`` uint8 -> ``[B, T, clip_dim]``."""

    def __init__(self, config: OfflineEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or OfflineEncoderConfig()
        self.dim = self.config.clip_dim
        raw = 6 * self.config.hue_bins + 3 * self.config.clip_grid**2
        proj = _seeded_normal(self.config.seed, 1, raw, self.dim) / math.sqrt(raw)
        self.register_buffer("projection", proj, persistent=False)

    def raw_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The unprojected statistics ``[B, T, 6*hue_bins + 3*clip_grid**2]``."""
        _check_frames(frames, type(self).__name__)
        B, T = frames.shape[:2]
        cfg = self.config
        img = _pooled_frames(frames, cfg.clip_analysis_size, self.projection.device)
        m = _hue_moments(_hue_weights(img, cfg.hue_bins))
        p = m["presence"]
        per_hue = torch.stack(
            [
                5.0 * m["mass"].sqrt(),
                2.0 * p * (m["cx"] - 0.5),
                2.0 * p * (m["cy"] - 0.5),
                15.0 * p * m["spread"],
                3.0 * p * (m["fill"] - 0.7),
                p * m["skew"],
            ],
            dim=-1,
        ).flatten(1)  # [N, 6K]
        layout = 0.5 * (F.adaptive_avg_pool2d(img, cfg.clip_grid) - 0.5).flatten(1)  # [N, 3*grid^2]
        return torch.cat([per_hue, layout], dim=1).reshape(B, T, -1)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        feats = self.raw_features(frames) @ self.projection
        return F.normalize(feats, dim=-1, eps=1e-6)


@dataclass(frozen=True)
class _HueMotion:
    """Per-hue motion of a frame stream ``[B, T, ...]``: K hue bins, positions in [-1, 1]."""

    image: torch.Tensor  # the pooled frames the statistics come from
    weights: torch.Tensor  # per-pixel hue-bin weights
    mass: torch.Tensor  # [B, T, K]
    presence: torch.Tensor  # [B, T, K]
    pos: torch.Tensor  # [B, T, K, 2]
    vel: torch.Tensor  # [B, T, K, 2], over (f-1, f]
    acc: torch.Tensor  # [B, T, K, 2], around f-1


class OfflineSyncEncoder(torch.nn.Module):
    """Motion tokens from 25 fps frames: ``[B, T, 3, H, W]`` uint8 -> ``[B, 8*S, sync_dim]``.

    The token count is Synchformer's (``S = (T - 16) // 8 + 1`` segments of 8 tokens), but the
    tokens are not Synchformer's overlapping segments: token ``i`` describes the two frames around
    time ``(i + 1/2)·T / (8S)``, a uniform grid over the clip. The network's nearest-exact
    upsampling of the sync stream onto the latent frames then hands every latent frame the motion
    of its own moment (to within half a token, ~23 ms), instead of Synchformer's saw-tooth
    (segment tokens overlap in time and map up to 0.4 s away), which a small model trained on a CPU
    budget cannot learn to undo.
    """

    def __init__(self, config: OfflineEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or OfflineEncoderConfig()
        self.dim = self.config.sync_dim
        raw = 2 * self.frame_feature_dim
        proj = self.config.sync_gain * _seeded_normal(self.config.seed, 2, raw, self.dim) / math.sqrt(raw)
        self.register_buffer("projection", proj, persistent=False)

    @property
    def frame_feature_dim(self) -> int:
        return _HUE_STATS * self.config.hue_bins + 16

    def _hue_motion(self, frames: torch.Tensor) -> _HueMotion:
        _check_frames(frames, type(self).__name__)
        B, T = frames.shape[:2]
        cfg = self.config
        K = cfg.hue_bins
        img = _pooled_frames(frames, cfg.sync_analysis_size, self.projection.device)
        weights = _hue_weights(img, K)
        m = _hue_moments(weights)
        p = m["presence"].reshape(B, T, K)
        pos = 2.0 * torch.stack([m["cx"], m["cy"]], -1).reshape(B, T, K, 2) - 1.0
        both = (p[:, 1:] * p[:, :-1]).unsqueeze(-1)
        vel = F.pad(cfg.motion_scale * both * (pos[:, 1:] - pos[:, :-1]), (0, 0, 0, 0, 1, 0))
        acc = F.pad(vel[:, 1:] - vel[:, :-1], (0, 0, 0, 0, 1, 0))
        return _HueMotion(img, weights, m["mass"].reshape(B, T, K), p, pos, vel, acc)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame motion statistics ``[B, T, frame_feature_dim]``.

        Per hue bin: sqrt(mass), position (x, y), velocity (x, y), acceleration (x, y) and the
        fraction of pixels that changed; plus the luminance change on a 4x4 raster.
        """
        motion = self._hue_motion(frames)
        B, T, K = motion.presence.shape
        w = motion.weights.reshape(B, T, K, -1)
        change = F.pad(20.0 * (w[:, 1:] - w[:, :-1]).abs().mean(-1), (0, 0, 1, 0))
        lum = F.adaptive_avg_pool2d(motion.image.mean(1, keepdim=True), 4).reshape(B, T, 16)
        lum_change = F.pad(10.0 * (lum[:, 1:] - lum[:, :-1]).abs(), (0, 0, 1, 0))
        per_hue = torch.cat(
            [
                5.0 * motion.mass.sqrt().unsqueeze(-1),
                motion.presence.unsqueeze(-1) * motion.pos,
                motion.vel,
                motion.acc,
                change.unsqueeze(-1),
            ],
            dim=-1,
        ).flatten(2)  # [B, T, _HUE_STATS * K]
        return torch.cat([per_hue, lum_change], dim=-1)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        T = frames.shape[1] if isinstance(frames, torch.Tensor) and frames.ndim == 5 else 0
        if T < SYNC_SEGMENT_FRAMES:
            raise ValueError(
                f"the sync stream needs at least {SYNC_SEGMENT_FRAMES} frames (0.64 s at 25 fps), got {T}"
            )
        # acceleration tokens need only the hue motion, not the other per-frame statistics
        if self.config.sync_features == "acceleration":
            feats = self._hue_motion(frames).acc.flatten(2)  # [B, T, 2K]
        else:
            feats = self.frame_features(frames)  # [B, T, D]
        B, _, D = feats.shape
        S = (T - SYNC_SEGMENT_FRAMES) // SYNC_SEGMENT_STEP + 1
        M = S * SYNC_TOKENS_PER_SEGMENT
        centre = (torch.arange(M, device=feats.device, dtype=torch.float64) + 0.5) * T / M  # in frames
        # frame f's features hold the velocity over (f-1, f] and the acceleration around f-1, so the
        # pair (f, f+1) with f = round(centre) describes the motion at the token's centre
        first = centre.round().long().clamp(0, T - 2)
        index = torch.stack([first, first + 1], dim=1).reshape(-1)
        tokens = feats[:, index].reshape(B, M, 2 * D)
        if self.config.sync_features == "acceleration":
            return self.config.acceleration_gain * tokens
        return tokens @ self.projection


@functools.lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    import open_clip

    return open_clip.get_tokenizer(_TOKENIZER_NAME)


def _sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freqs)
    table[:, 1::2] = torch.cos(pos * freqs)[:, : dim // 2]
    return F.normalize(table, dim=-1).float()


class OfflineTextEncoder(torch.nn.Module):
    """Token features: ``B`` prompts -> ``[B, 77, text_dim]`` (CLIP tokenizer, seeded embeddings)."""

    def __init__(self, config: OfflineEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or OfflineEncoderConfig()
        self.dim = self.config.text_dim
        table = F.normalize(
            _seeded_normal(self.config.seed, 3, self.config.text_vocab_size, self.dim), dim=-1
        )
        positions = self.config.text_position_weight * _sinusoidal_positions(TEXT_SEQ_LEN, self.dim)
        self.register_buffer("embedding", table, persistent=False)
        self.register_buffer("positions", positions, persistent=False)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[B, 77]`` (start and end tokens, zero padding, truncated)."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("the text encoder expects a list of strings, one prompt per batch item")
        return _clip_tokenizer()(list(prompts))

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.embedding.device)
        if int(ids.max()) >= self.embedding.shape[0]:
            raise ValueError(
                f"token id {int(ids.max())} is outside the embedding table ({self.embedding.shape[0]})"
            )
        return F.normalize(self.embedding[ids] + self.positions, dim=-1)


# --------------------------------------------------------------------------------------------------
# Audio codec
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecConfig:
    """Analysis/synthesis settings of :class:`OfflineAudioCodec` (16 kHz, 31.25 latents per second)."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 128  # 8 ms sub-frames
    n_mels: int = 80
    samples_per_latent: int = 512  # 4 sub-frames per latent frame
    latent_dim: int = 20  # sub_frames envelope dims + (latent_dim - sub_frames) PCA dims
    log_floor: float = 1e-5
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    nnls_iters: int = 10
    posterior_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_latent % self.hop_length:
            raise ValueError("samples_per_latent must be a multiple of hop_length")
        if self.n_fft < self.hop_length or self.n_fft % 2:
            raise ValueError("n_fft must be even and at least hop_length")
        if not self.sub_frames < self.latent_dim <= self.sub_frames * self.n_mels:
            raise ValueError(f"latent_dim must lie in ({self.sub_frames}, {self.sub_frames * self.n_mels}]")
        if self.griffin_lim_iters < 0 or self.nnls_iters < 0 or self.posterior_std < 0:
            raise ValueError("iteration counts and posterior_std must be non-negative")

    @property
    def sub_frames(self) -> int:
        return self.samples_per_latent // self.hop_length

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.samples_per_latent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        return _from_dict(cls, data)


class OfflineAudioCodec(torch.nn.Module):
    """Deterministic waveform <-> latent codec: ``[B, samples]`` <-> ``[B, ceil(samples/512), 20]``.

    Latent channels ``0..3`` are the mean log-mel levels of the four 8 ms sub-frames (the envelope),
    the rest are PCA coefficients of the stacked level-free log-mel shapes. Fit with :meth:`fit`.
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CodecConfig()
        self.sample_rate = cfg.sample_rate
        self.latent_dim = cfg.latent_dim
        width = cfg.sub_frames * cfg.n_mels
        self.register_buffer("pca_mean", torch.zeros(width))
        self.register_buffer("pca_components", torch.zeros(cfg.latent_dim - cfg.sub_frames, width))
        mel = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, 0.0, cfg.sample_rate / 2).float()
        self.register_buffer("mel_basis", mel, persistent=False)
        self.register_buffer("mel_pinv", torch.linalg.pinv(mel), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    # -- properties ------------------------------------------------------------------------------

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (31.25)."""
        return self.config.latent_rate

    @property
    def is_fitted(self) -> bool:
        return bool(self.pca_components.abs().sum() > 0)

    def latent_length(self, num_samples: int) -> int:
        """Latent frames covering ``num_samples`` samples (MMAudio: ceil(duration * 31.25))."""
        return math.ceil(num_samples / self.config.samples_per_latent)

    # -- analysis --------------------------------------------------------------------------------

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> complex ``[B, L // hop + 1, n_freq]``, frame ``m`` centred at sample ``m * hop``."""
        spec = torch.stft(
            x,
            self.config.n_fft,
            self.config.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.transpose(1, 2)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(
            spec.transpose(1, 2),
            self.config.n_fft,
            self.config.hop_length,
            window=self.window,
            center=True,
            length=length,
        )

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, sub_frames * N, n_mels]`` of ``[B, samples]``, zero-padded to whole latent frames."""
        if not isinstance(waveform, torch.Tensor) or waveform.ndim != 2:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"expected a waveform tensor [B, samples], got {shape}")
        cfg = self.config
        n = self.latent_length(waveform.shape[1])
        if n == 0:
            raise ValueError("the waveform is empty")
        x = F.pad(
            waveform.to(self.window.device, torch.float32),
            (0, n * cfg.samples_per_latent - waveform.shape[1]),
        )
        mag = self._stft(x)[:, :-1].abs() * (2.0 / self.window.sum())  # a sine of amplitude a peaks near a
        return torch.log((mag @ self.mel_basis.T).clamp_min(cfg.log_floor))

    def _split(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel -> (envelope ``[B, N, sub]``, level-free shapes ``[B, N, sub * n_mels]``)."""
        cfg = self.config
        B = log_mel.shape[0]
        frames = log_mel.reshape(B, -1, cfg.sub_frames, cfg.n_mels)
        envelope = frames.mean(-1)
        return envelope, (frames - envelope.unsqueeze(-1)).flatten(2)

    # -- codec -----------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        waveforms: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
        config: CodecConfig | None = None,
        *,
        max_frames: int = 200_000,
    ) -> OfflineAudioCodec:
        """Fit the PCA on training audio: 1-D waveforms at the config's sample rate, or ``[B, samples]``."""
        codec = cls(config)
        items = (
            list(waveforms)
            if not isinstance(waveforms, torch.Tensor)
            else list(waveforms.reshape(-1, waveforms.shape[-1]))
        )
        if not items:
            raise ValueError("fit needs at least one waveform")
        rows = []
        with torch.no_grad():
            for w in items:
                w = torch.as_tensor(np.asarray(w, dtype=np.float32) if not isinstance(w, torch.Tensor) else w)
                rows.append(codec._split(codec.log_mel(w.reshape(1, -1).float()))[1][0])
        data = torch.cat(rows).double()
        if data.shape[0] > max_frames:  # deterministic subsample
            data = data[torch.linspace(0, data.shape[0] - 1, max_frames).long()]
        k = codec.config.latent_dim - codec.config.sub_frames
        if data.shape[0] < k:
            raise ValueError(f"fit needs at least {k} latent frames of audio, got {data.shape[0]}")
        mean = data.mean(0)
        centred = data - mean
        evals, evecs = torch.linalg.eigh(centred.T @ centred / data.shape[0])
        comps = evecs[:, -k:].flip(1).T  # [k, width], largest variance first
        sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * sign  # deterministic sign: largest entry positive
        codec.pca_mean.copy_(mean.float())
        codec.pca_components.copy_(comps.float())
        explained = float(evals[-k:].sum() / evals.sum().clamp_min(1e-12))
        logger.info(
            "fitted offline codec on %d frames; PCA keeps %.1f%% of shape variance",
            data.shape[0],
            100 * explained,
        )
        return codec

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "the codec is not fitted: use OfflineAudioCodec.fit(waveforms) or OfflineAudioCodec.load"
            )

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, samples]`` -> (mean, std), each ``[B, ceil(samples / 512), latent_dim]``; std is constant."""
        self._require_fitted()
        envelope, shapes = self._split(self.log_mel(waveform))
        mean = torch.cat([envelope, (shapes - self.pca_mean) @ self.pca_components.T], dim=-1)
        return mean, torch.full_like(mean, self.config.posterior_std)

    @torch.no_grad()
    def decode_log_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, N, latent_dim]`` -> log-mel ``[B, sub_frames * N, n_mels]``."""
        self._require_fitted()
        cfg = self.config
        if latent.ndim != 3 or latent.shape[-1] != cfg.latent_dim:
            raise ValueError(f"expected a latent [B, N, {cfg.latent_dim}], got {tuple(latent.shape)}")
        latent = latent.to(self.pca_mean.device, torch.float32)
        B, N, _ = latent.shape
        envelope = latent[..., : cfg.sub_frames]
        shapes = (latent[..., cfg.sub_frames :] @ self.pca_components + self.pca_mean).reshape(
            B, N, cfg.sub_frames, -1
        )
        return (shapes + envelope.unsqueeze(-1)).reshape(B, N * cfg.sub_frames, cfg.n_mels)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, N, latent_dim]`` -> waveform ``[B, N * 512]`` (fast Griffin-Lim, seeded phase)."""
        cfg = self.config
        mel = self.decode_log_mel(latent).clamp(max=10.0).exp()
        linear = (mel @ self.mel_pinv.T).clamp_min(0.0)
        for _ in range(cfg.nnls_iters):  # multiplicative non-negative least squares
            linear = linear * (mel @ self.mel_basis) / ((linear @ self.mel_basis.T) @ self.mel_basis + 1e-12)
        mag = linear * (self.window.sum() / 2.0)
        mag = torch.cat([mag, mag[:, -1:]], dim=1)  # the STFT of L samples has L // hop + 1 frames
        length = latent.shape[1] * cfg.samples_per_latent
        gen = torch.Generator().manual_seed(cfg.seed)  # same initial phase for every batch item
        phase = (2 * math.pi) * torch.rand(mag.shape[1:], generator=gen).to(mag.device)
        spec = torch.polar(mag, phase)
        previous = None
        for _ in range(cfg.griffin_lim_iters):
            consistent = self._stft(self._istft(spec, length))
            target = (
                consistent
                if previous is None
                else consistent + cfg.griffin_lim_momentum * (consistent - previous)
            )
            previous = consistent
            spec = mag * target / (target.abs() + 1e-9)
        return self._istft(spec, length).clamp(-1.0, 1.0)

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to safetensors, with the config as JSON metadata."""
        from safetensors.torch import save_file

        self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(
            tensors,
            str(path),
            metadata={"format": "mfmjt-offline-codec", "config": json.dumps(self.config.to_dict())},
        )
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> OfflineAudioCodec:
        """Read a codec written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no codec file at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "mfmjt-offline-codec" or "config" not in meta:
            raise ValueError(f"{path} is not an mfmjt offline codec (missing metadata)")
        codec = cls(CodecConfig.from_dict(json.loads(meta["config"])))
        codec.load_state_dict(load_file(str(path)), strict=True)
        return codec.to(device)


def make_offline_stack(codec: OfflineAudioCodec, config: OfflineEncoderConfig | None = None) -> FeatureStack:
    """The embedded default model's feature stack: offline clip, sync and text encoders plus ``codec``."""
    config = config or OfflineEncoderConfig()
    return FeatureStack(
        clip=OfflineClipEncoder(config),
        sync=OfflineSyncEncoder(config),
        text=OfflineTextEncoder(config),
        codec=codec,
    )
