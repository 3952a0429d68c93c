"""Offline visual and text encoders of the toy domain: no pretrained weights, deterministic by seed.

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

The encoders are ``torch.nn.Module`` objects with non-persistent buffers (re-created from the seed).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mfmjt.config import SYNC_SEGMENT_FRAMES, SYNC_SEGMENT_STEP, SYNC_TOKENS_PER_SEGMENT, TEXT_SEQ_LEN
from mfmjt.toy._fields import from_dict_strict

_TOKENIZER_NAME = "ViT-H-14-378-quickgelu"
_FRAME_CHUNK = 32  # frames converted to float at a time (bounds memory for long clips)


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
        return from_dict_strict(cls, data)


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
