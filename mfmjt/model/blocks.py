"""Transformer blocks: adaLN single-stream block, joint (audio + video + text) block, final layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.model.layers import MLP, ChannelLastConv1d, ConvMLP, modulate
from mfmjt.model.rotary import apply_rope

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked SDPA over ``[B, H, N, d]`` heads -> ``[B, N, H*d]``."""
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


class SelfAttentionProjection(nn.Module):
    """q, k, v projection with per-head RMSNorm on q and k, then rotary positions.

    The fused qkv output is read as ``(head, head_dim, 3)`` with the q/k/v selector varying
    fastest, the channel layout of MMAudio checkpoints.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.RMSNorm(dim // num_heads)
        self.k_norm = nn.RMSNorm(dim // num_heads)

    def forward(self, x: torch.Tensor, rot: torch.Tensor | None) -> QKV:
        b, n, dim = x.shape
        qkv = self.qkv(x).view(b, n, self.num_heads, dim // self.num_heads, 3).permute(4, 0, 2, 1, 3)
        q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]
        if rot is not None:
            q, k = apply_rope(q, rot), apply_rope(k, rot)
        return q, k, v


@dataclass
class _PostAttentionModulation:
    gate_msa: torch.Tensor
    shift_mlp: torch.Tensor
    scale_mlp: torch.Tensor
    gate_mlp: torch.Tensor


class SingleStreamBlock(nn.Module):
    """adaLN-zero transformer block over one stream; attention is done by the caller.

    ``pre_only`` blocks (clip/text in the last joint block) only supply keys and values.
    ``kernel_size`` > 1 makes the post-attention projection and the FFN convolutional.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, *, pre_only: bool = False, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = SelfAttentionProjection(dim, num_heads)
        if not pre_only:
            if kernel_size == 1:
                self.linear1: nn.Module = nn.Linear(dim, dim)
                self.ffn: nn.Module = MLP(dim, int(dim * mlp_ratio))
            else:
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size, padding=kernel_size // 2)
                self.ffn = ConvMLP(dim, int(dim * mlp_ratio), kernel_size=kernel_size)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, (2 if pre_only else 6) * dim))

    def pre_attention(
        self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None
    ) -> tuple[QKV, _PostAttentionModulation | None]:
        """``x [B, N, D]``, condition ``c [B, 1 or N, D]`` -> heads and the modulation kept for later."""
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        qkv = self.attn(modulate(self.norm1(x), mods[0], mods[1]), rot)
        return qkv, None if self.pre_only else _PostAttentionModulation(*mods[2:])

    def post_attention(
        self, x: torch.Tensor, attn_out: torch.Tensor, mod: _PostAttentionModulation | None
    ) -> torch.Tensor:
        if mod is None:
            return x
        x = x + self.linear1(attn_out) * mod.gate_msa
        return x + self.ffn(modulate(self.norm2(x), mod.shift_mlp, mod.scale_mlp)) * mod.gate_mlp

    def forward(self, x: torch.Tensor, c: torch.Tensor, rot: torch.Tensor | None) -> torch.Tensor:
        qkv, mod = self.pre_attention(x, c, rot)
        return self.post_attention(x, attention(*qkv), mod)


class JointBlock(nn.Module):
    """MM-DiT block: latent, clip and text streams attend together in one attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, pre_only: bool) -> None:
        super().__init__()
        self.latent_block = SingleStreamBlock(dim, num_heads, mlp_ratio, kernel_size=3)
        self.clip_block = SingleStreamBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=3)
        self.text_block = SingleStreamBlock(dim, num_heads, mlp_ratio, pre_only=pre_only, kernel_size=1)

    def forward(
        self,
        latent: torch.Tensor,  # [B, N, D]
        clip_f: torch.Tensor,  # [B, Nc, D]
        text_f: torch.Tensor,  # [B, Nt, D]
        global_c: torch.Tensor,  # [B, 1, D]
        extended_c: torch.Tensor,  # [B, N, D]
        latent_rot: torch.Tensor,
        clip_rot: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_qkv, x_mod = self.latent_block.pre_attention(latent, extended_c, latent_rot)
        c_qkv, c_mod = self.clip_block.pre_attention(clip_f, global_c, clip_rot)
        t_qkv, t_mod = self.text_block.pre_attention(text_f, global_c, None)
        joint = attention(*(torch.cat(parts, dim=2) for parts in zip(x_qkv, c_qkv, t_qkv, strict=True)))
        n, nc = latent.shape[1], clip_f.shape[1]
        latent = self.latent_block.post_attention(latent, joint[:, :n], x_mod)
        clip_f = self.clip_block.post_attention(clip_f, joint[:, n : n + nc], c_mod)
        text_f = self.text_block.post_attention(text_f, joint[:, n + nc :], t_mod)
        return latent, clip_f, text_f


class FinalBlock(nn.Module):
    """adaLN (shift, scale) -> LayerNorm -> kernel-7 conv to the latent channels."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7, padding=3)

    def forward(self, latent: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(self.norm(latent), shift, scale))
