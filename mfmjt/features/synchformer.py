"""Synchformer visual encoder: the MotionFormer ViT that MMAudio uses for its 24 fps sync features.

Only the visual branch (``vfeat_extractor``) is implemented, and only for inference. Reading order:
config, divided space-time attention, block, tubelet embedding, per-frame spatial pooling, the ViT
(:class:`MotionFormer`), checkpoint loading, and the :class:`SynchformerEncoder` that segments a clip.

Shapes for one 16-frame segment at full size (D = 768):

    [N, 3, 16, 224, 224] -> tubelets (2, 16, 16) -> [N, 8*196, D] -> + CLS -> [N, 1 + 1568, D]
    -> 12 x (time attention, space attention, MLP) -> drop CLS -> LayerNorm
    -> per frame: [N*8, 196, D] -> TransformerEncoderLayer with its own CLS -> [N, 8, D]

State-dict keys and shapes are those of MMAudio's ``Synchformer`` (``vfeat_extractor.*``), so the
upstream ``synchformer_state_dict.pth`` loads strictly once its other branches are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "vfeat_extractor."


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynchformerConfig:
    """MotionFormer ("divided_224_16x4") hyper-parameters; the defaults are the released size."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2  # frames per tubelet (PATCH_SIZE_TEMP)
    segment_frames: int = 16  # frames per segment (DATA.NUM_FRAMES)
    norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        """Patches per side (14)."""
        return self.image_size // self.patch_size

    @property
    def patches_per_frame(self) -> int:
        """Spatial tokens per feature frame (196)."""
        return self.grid * self.grid

    @property
    def time_steps(self) -> int:
        """Feature frames per segment (8): the temporal resolution of the positional embedding."""
        return self.segment_frames // self.tubelet_size

    @classmethod
    def full(cls) -> SynchformerConfig:
        """The released Synchformer: ViT-B, 768 wide, 12 heads, depth 12 (122.4 M parameters)."""
        return cls()

    @classmethod
    def golden_small(cls) -> SynchformerConfig:
        """The shrunk config of MMAudio's reference golden (EMBED_DIM 48, NUM_HEADS 4, DEPTH 2)."""
        return cls(embed_dim=48, depth=2, num_heads=4)


# --------------------------------------------------------------------------------------------------
# Divided space-time attention
# --------------------------------------------------------------------------------------------------


class DividedAttention(nn.Module):
    """Attention restricted to tokens sharing a spatial position ("time") or a frame ("space").

    The CLS token is special on both sides: its query attends to every token of the clip, and its
    key/value is prepended to every time or space group.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, over: str, frames: int, patches: int) -> torch.Tensor:
        """``x`` [B, 1 + frames*patches, D] (CLS first, time-major) -> same shape.

        ``over="time"`` groups the tokens of one spatial position across frames; ``over="space"``
        groups the tokens of one frame.
        """
        b, n, d = x.shape
        h = self.num_heads
        # qkv channels are [q | k | v] blocks, each split into heads: [3, B, H, N, hd]
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)

        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [B, H, 1, hd]

        def group(t: torch.Tensor) -> torch.Tensor:  # [B, H, F*P, hd] -> [B, H, G, L, hd]
            t = t.unflatten(2, (frames, patches))
            return t.transpose(2, 3) if over == "time" else t

        q_, k_, v_ = (group(t[:, :, 1:]) for t in (q, k, v))
        groups = q_.shape[2]
        k_ = torch.cat([k[:, :, None, :1].expand(-1, -1, groups, -1, -1), k_], dim=3)
        v_ = torch.cat([v[:, :, None, :1].expand(-1, -1, groups, -1, -1), v_], dim=3)
        # 4-D contiguous inputs let SDPA pick its fused kernels (and avoid a cuDNN stride bug).
        q_, k_, v_ = (t.flatten(1, 2).contiguous() for t in (q_, k_, v_))  # [B, H*G, L, hd]
        out = F.scaled_dot_product_attention(q_, k_, v_).view(b, h, groups, -1, d // h)  # [B, H, G, L, hd]
        if over == "time":
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # [B, H, N, hd]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DividedSpaceTimeBlock(nn.Module):
    """Pre-norm block: time attention (norm3), then space attention (norm1), then MLP (norm2)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        from timm.layers import Mlp  # here, not at import: timm loads torchvision and torch._dynamo

        super().__init__()
        dim = cfg.embed_dim
        # Registration order follows the upstream module, so state_dict() lists keys in its order.
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = DividedAttention(dim, cfg.num_heads)
        self.timeattn = DividedAttention(dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act_layer=nn.GELU)
        self.norm3 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.frames, self.patches = cfg.time_steps, cfg.patches_per_frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), "time", self.frames, self.patches)
        x = x + self.attn(self.norm1(x), "space", self.frames, self.patches)
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------------
# Embedding and pooling
# --------------------------------------------------------------------------------------------------


class PatchEmbed3D(nn.Module):
    """Non-overlapping tubelets (tubelet_size x patch x patch) -> tokens in time-major order."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] -> [N, (T/2)*(H/16)*(W/16), D], token index t*196 + h*14 + w."""
        return self.proj(x).flatten(2).transpose(1, 2)


class SpatialPool(nn.TransformerEncoderLayer):
    """torch's pre-norm encoder layer with a learnable CLS token; returns the CLS output.

    Subclassing keeps torch's key layout (``self_attn.in_proj_weight`` = stacked [q; k; v] rows),
    which is what the checkpoint stores under ``spatial_attn_agg.*``.
    """

    def __init__(self, cfg: SynchformerConfig) -> None:
        dim = cfg.embed_dim
        super().__init__(
            d_model=dim,
            nhead=cfg.num_heads,
            dim_feedforward=int(cfg.mlp_ratio * dim),
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=cfg.norm_eps,
            batch_first=True,
            norm_first=True,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """[N, L, D] -> [N, D]."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return super().forward(x)[:, 0]


# --------------------------------------------------------------------------------------------------
# The ViT
# --------------------------------------------------------------------------------------------------


class MotionFormer(nn.Module):
    """Divided space-time ViT with per-frame spatial pooling: a segment -> ``time_steps`` vectors."""

    def __init__(self, cfg: SynchformerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SynchformerConfig()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        self.cfg = cfg
        dim = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.patches_per_frame + 1, dim))  # spatial, CLS first
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.time_steps, dim))
        # The upstream 2-D patch embedding: stored in every checkpoint, never used in forward.
        self.patch_embed = nn.ModuleDict(
            {"proj": nn.Conv2d(3, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)}
        ).requires_grad_(False)
        self.patch_embed_3d = PatchEmbed3D(cfg)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.spatial_attn_agg = SpatialPool(cfg)
        for p in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def position_embedding(self) -> torch.Tensor:
        """[1, 1 + T*P, D]: CLS entry, then spatial embedding tiled over frames + temporal per frame."""
        cfg = self.cfg
        spatial = self.pos_embed[:, 1:].repeat(1, cfg.time_steps, 1)
        temporal = self.temp_embed.repeat_interleave(cfg.patches_per_frame, dim=1)
        return torch.cat([self.pos_embed[:, :1], spatial + temporal], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] in [-1, 1] -> tokens after the blocks, CLS first, before the final norm."""
        x = self.patch_embed_3d(x)  # [N, T*P, D]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding()  # [N, 1 + T*P, D]
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 16, 224, 224] in [-1, 1] -> [N, 8, D]."""
        n = x.shape[0]
        cfg = self.cfg
        x = self.norm(self.forward_features(x)[:, 1:])  # [N, T*P, D], CLS dropped
        x = x.reshape(n * cfg.time_steps, cfg.patches_per_frame, cfg.embed_dim)  # one row per frame
        return self.spatial_attn_agg(x).view(n, cfg.time_steps, cfg.embed_dim)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def vfeat_extractor_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``vfeat_extractor.*`` entries of an upstream Synchformer checkpoint, prefix stripped.

    A dict without any such key is taken to be a bare :class:`MotionFormer` state dict and is
    returned unchanged (as a new dict).
    """
    if not any(k.startswith(CHECKPOINT_PREFIX) for k in state_dict):
        return dict(state_dict)
    kept = {k[len(CHECKPOINT_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(CHECKPOINT_PREFIX)}
    dropped = len(state_dict) - len(kept)
    if dropped:
        logger.info(
            "Synchformer checkpoint: kept %d vfeat_extractor keys, dropped %d others", len(kept), dropped
        )
    return kept


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a torch pickle (``.pth``/``.pt``, tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return dict(sd)


# --------------------------------------------------------------------------------------------------
# The VideoEncoder
# --------------------------------------------------------------------------------------------------


class SynchformerEncoder(nn.Module):
    """:class:`~mfmjt.features.base.VideoEncoder` for the sync stream.

    uint8 ``[B, T, 3, 224, 224]`` at 25 fps -> [-1, 1] -> S = (T - 16) // 8 + 1 overlapping
    16-frame segments (stride 8) -> ``[B, 8*S, D]`` float32. Frames after the last whole segment
    are ignored, as in MMAudio. Segments run through the ViT ``chunk_size`` at a time.

    Its state dict is exactly MMAudio's ``Synchformer`` one (keys ``vfeat_extractor.*``).
    """

    segment_stride: int = 8

    def __init__(self, cfg: SynchformerConfig | None = None, *, chunk_size: int = 32) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.vfeat_extractor = MotionFormer(cfg)
        self.cfg = self.vfeat_extractor.cfg
        self.dim: int = self.cfg.embed_dim
        self.chunk_size = chunk_size
        self.eval()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | Mapping[str, torch.Tensor],
        cfg: SynchformerConfig | None = None,
        *,
        chunk_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> SynchformerEncoder:
        """Build and load weights from a path or a state dict (upstream or bare); strict."""
        sd = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
        enc = cls(cfg, chunk_size=chunk_size)
        enc.load_checkpoint(sd)
        return enc.to(device)

    def load_checkpoint(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict load of the ``vfeat_extractor`` part of ``state_dict`` (other keys are dropped)."""
        self.vfeat_extractor.load_state_dict(vfeat_extractor_state_dict(state_dict), strict=True)

    def num_segments(self, num_frames: int) -> int:
        """S = (T - 16) // 8 + 1; 200 frames (8 s) give 24 segments, i.e. 192 tokens."""
        return (num_frames - self.cfg.segment_frames) // self.segment_stride + 1

    def _check(self, frames: torch.Tensor) -> None:
        size = self.cfg.image_size
        expected = f"uint8 [B, T >= {self.cfg.segment_frames}, 3, {size}, {size}] (25 fps)"
        if not isinstance(frames, torch.Tensor):
            raise ValueError(f"sync frames: expected a tensor {expected}, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"sync frames: expected {expected}, got dtype {frames.dtype}")
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (3, size, size):
            raise ValueError(f"sync frames: expected {expected}, got shape {tuple(frames.shape)}")
        if frames.shape[1] < self.cfg.segment_frames:
            raise ValueError(
                f"sync frames: expected {expected}, got only {frames.shape[1]} frames "
                f"(at least {self.cfg.segment_frames} frames = 0.64 s of video are needed)"
            )

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, T, 3, 224, 224]`` -> float32 ``[B, 8*S, D]``."""
        self._check(frames)
        b, t = frames.shape[:2]
        seg, s = self.cfg.segment_frames, self.num_segments(t)
        param = self.vfeat_extractor.cls_token
        # Segment i covers frames [8i, 8i + 16): a view [B, S, 3, H, W, 16] (no copy).
        segments = frames.unfold(1, seg, self.segment_stride)
        which_b = torch.arange(b).repeat_interleave(s)  # segment k of the flat (b, s) order
        which_s = torch.arange(s).repeat(b)
        out = []
        for chunk in torch.arange(b * s).split(self.chunk_size):
            u8 = segments[which_b[chunk], which_s[chunk]].permute(0, 1, 4, 2, 3)  # [n, 3, 16, H, W]
            # [-1, 1] as ToDtype(scale=True) + Normalize(0.5, 0.5): (u8 / 255 - 0.5) / 0.5, in float32
            x = (u8.to(param.device, torch.float32) / 255.0 - 0.5) / 0.5
            out.append(self.vfeat_extractor(x.to(param.dtype)).float())  # [n, 8, D]
        return torch.cat(out).view(b, s * self.cfg.time_steps, self.dim)
