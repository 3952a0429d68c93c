"""The MF-MJT network: MMAudio's MM-DiT with a second time input for the MeanFlow interval Δt.

Reading order: conditions dataclass, input checks, the network (constructor, conditions, the
inner velocity in MMAudio's time convention, the public average velocity, checkpoints).

Time conventions. Outside this package t=1 is noise and t=0 is data, and the network predicts the
average velocity u(z_t, r, t) with Δt = t - r (the paper's convention). MMAudio checkpoints were
trained the other way round (noise at τ=0, velocity = data - noise), and the layers keep that
convention so those checkpoints load unchanged. :meth:`MFMJTNetwork.predict` is the one adapter:
τ = 1 - t and the output is negated. Pass t as float64 to make the round trip τ -> 1-τ -> τ exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.config import SYNC_TOKENS_PER_SEGMENT, NetworkConfig
from mfmjt.model.blocks import FinalBlock, JointBlock, SingleStreamBlock
from mfmjt.model.embedders import GuidanceEmbedder, TimestepEmbedder
from mfmjt.model.layers import MLP, ChannelLastConv1d, ConvMLP
from mfmjt.model.rotary import rope_rotations

logger = logging.getLogger(__name__)

# Non-persistent buffers that older MMAudio checkpoints stored; dropped on load.
LEGACY_BUFFER_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")
DT_EMBED_PREFIX = "dt_embed."
GUIDANCE_EMBED_PREFIX = "guidance_embed."

TimeLike = torch.Tensor | float


@dataclass
class Conditions:
    """Projected conditions of one request, computed once and reused at every sampling step."""

    clip_f: torch.Tensor  # [B, Nc, D]
    sync_f: torch.Tensor  # [B, N, D], upsampled to the latent length
    text_f: torch.Tensor  # [B, Nt, D]
    clip_f_c: torch.Tensor  # [B, D] pooled clip
    text_f_c: torch.Tensor  # [B, D] pooled text
    latent_rot: torch.Tensor  # [1, N, head_dim/2, 2, 2]
    clip_rot: torch.Tensor  # [1, Nc, head_dim/2, 2, 2]

    @property
    def batch_size(self) -> int:
        return self.clip_f.shape[0]

    @property
    def latent_seq_len(self) -> int:
        return self.sync_f.shape[1]

    def cat(self, other: Conditions) -> Conditions:
        """Stack two requests of equal lengths along the batch (conditional + unconditional)."""
        if other.latent_seq_len != self.latent_seq_len or other.clip_f.shape[1] != self.clip_f.shape[1]:
            raise ValueError("cannot batch conditions with different sequence lengths")
        return Conditions(
            *(torch.cat([a, b]) for a, b in zip(self._batched(), other._batched(), strict=True)),
            latent_rot=self.latent_rot,
            clip_rot=self.clip_rot,
        )

    def repeat(self, times: int) -> Conditions:
        """Repeat the batch ``times`` times (``[c0, c1, c0, c1, ...]``)."""
        return Conditions(
            *(x.repeat(times, *([1] * (x.dim() - 1))) for x in self._batched()),
            latent_rot=self.latent_rot,
            clip_rot=self.clip_rot,
        )

    def _batched(self) -> tuple[torch.Tensor, ...]:
        return self.clip_f, self.sync_f, self.text_f, self.clip_f_c, self.text_f_c


def _check_sequence(
    name: str, x: torch.Tensor, dim: int, batch: int | None = None, length: int | None = None
) -> None:
    """Raise ValueError naming ``x`` unless it is a float ``[B, N, dim]`` tensor."""
    expected = f"[{batch if batch is not None else 'B'}, {length if length is not None else 'N'}, {dim}]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {expected}, got dtype {x.dtype}")
    if (
        x.dim() != 3
        or x.shape[2] != dim
        or x.shape[1] < 1
        or (batch is not None and x.shape[0] != batch)
        or (length is not None and x.shape[1] != length)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {list(x.shape)}")


class MFMJTNetwork(nn.Module):
    """Joint MM-DiT blocks (audio + CLIP video + text), audio-only blocks, final layer.

    State-dict keys and shapes equal MMAudio's for every variant, plus ``dt_embed.*`` (and
    ``guidance_embed.*`` for networks configured with ``guidance_embed``).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_dim
        act = nn.SiLU if cfg.v2 else nn.SELU

        # Registration order reproduces MMAudio's state-dict order.
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_TOKENS_PER_SEGMENT, cfg.sync_dim))
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, cfg.latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, cfg.latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(
            torch.zeros(cfg.text_seq_len, cfg.text_dim), requires_grad=False
        )
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, cfg.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, cfg.sync_dim))

        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(cfg.latent_dim, d, kernel_size=7, padding=3),
            act(),
            ConvMLP(d, d * 4, kernel_size=7),
        )
        clip_proj: list[nn.Module] = [nn.Linear(cfg.clip_dim, d), ConvMLP(d, d * 4, kernel_size=3)]
        text_proj: list[nn.Module] = [nn.Linear(cfg.text_dim, d), MLP(d, d * 4)]
        if cfg.v2:
            clip_proj.insert(1, nn.SiLU())
            text_proj.insert(1, nn.SiLU())
        self.clip_input_proj = nn.Sequential(*clip_proj)
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(cfg.sync_dim, d, kernel_size=7, padding=3),
            act(),
            ConvMLP(d, d * 4, kernel_size=3),
        )
        self.text_input_proj = nn.Sequential(*text_proj)
        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(d, d)
        self.global_cond_mlp = MLP(d, d * 4)
        self.final_layer = FinalBlock(d, cfg.latent_dim)
        freq_size, max_period = (d, 1.0) if cfg.v2 else (256, 10_000.0)
        self.t_embed = TimestepEmbedder(d, freq_size, max_period)
        self.joint_blocks = nn.ModuleList(
            JointBlock(d, cfg.num_heads, cfg.mlp_ratio, pre_only=i == cfg.joint_depth - 1)
            for i in range(cfg.joint_depth)
        )
        self.fused_blocks = nn.ModuleList(
            SingleStreamBlock(d, cfg.num_heads, cfg.mlp_ratio, kernel_size=3) for _ in range(cfg.fused_depth)
        )
        # MF-MJT's addition: the interval Δt = t - r, embedded like t and summed with it.
        self.dt_embed = TimestepEmbedder(d, freq_size, max_period)
        # Optional extension: the CFG setting, for guidance learnt in training.
        self.guidance_embed = GuidanceEmbedder(d, freq_size, max_period) if cfg.guidance_embed else None
        self.initialize_weights()

    # ----------------------------------------------------------------------------------- init
    def initialize_weights(self) -> None:
        """DiT/MMAudio init: xavier linears, adaLN and output zeroed (each block starts as identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        embedders = [self.t_embed, self.dt_embed]
        if self.guidance_embed is not None:
            embedders += [self.guidance_embed.standard, self.guidance_embed.scaled]
        for embedder in embedders:
            nn.init.normal_(embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(embedder.mlp[2].weight, std=0.02)
        blocks = [b for j in self.joint_blocks for b in (j.latent_block, j.clip_block, j.text_block)]
        for block in [*blocks, *self.fused_blocks, self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.conv.weight)
        nn.init.zeros_(self.final_layer.conv.bias)
        for p in (self.sync_pos_emb, self.empty_clip_feat, self.empty_sync_feat):
            nn.init.zeros_(p)
        self.zero_dt_embed_output()
        if self.guidance_embed is not None:
            self.guidance_embed.zero_output()

    def zero_dt_embed_output(self) -> None:
        """Zero the Δt embedder's last layer: the network then ignores Δt (a flow-matching model)."""
        nn.init.zeros_(self.dt_embed.mlp[2].weight)
        nn.init.zeros_(self.dt_embed.mlp[2].bias)

    # ----------------------------------------------------------------------------- conditions
    @property
    def dtype(self) -> torch.dtype:
        return self.latent_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.latent_mean.device

    def preprocess_conditions(
        self, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor, latent_seq_len: int
    ) -> Conditions:
        """Project raw features once per request; lengths are taken from the tensors.

        clip_f ``[B, Nc, clip_dim]``, sync_f ``[B, 8*S, sync_dim]``, text_f ``[B, Nt, text_dim]``.
        """
        cfg = self.config
        _check_sequence("clip_f", clip_f, cfg.clip_dim)
        b = clip_f.shape[0]
        _check_sequence("sync_f", sync_f, cfg.sync_dim, batch=b)
        _check_sequence("text_f", text_f, cfg.text_dim, batch=b, length=cfg.text_seq_len)
        if sync_f.shape[1] % SYNC_TOKENS_PER_SEGMENT:
            raise ValueError(
                f"sync_f length must be a multiple of {SYNC_TOKENS_PER_SEGMENT} (8 tokens per Synchformer "
                f"segment), got {sync_f.shape[1]}"
            )
        if int(latent_seq_len) < 1:
            raise ValueError(f"latent_seq_len must be positive, got {latent_seq_len}")
        dtype = self.dtype
        segments = sync_f.shape[1] // SYNC_TOKENS_PER_SEGMENT
        sync_f = sync_f.to(dtype).view(b, segments, SYNC_TOKENS_PER_SEGMENT, -1) + self.sync_pos_emb
        clip_f = self.clip_input_proj(clip_f.to(dtype))  # [B, Nc, D]
        sync_f = self.sync_input_proj(sync_f.flatten(1, 2))  # [B, 8S, D]
        text_f = self.text_input_proj(text_f.to(dtype))  # [B, Nt, D]
        # Frame-aligned conditioning: sync tokens resampled onto the latent frames.
        sync_f = F.interpolate(sync_f.transpose(1, 2), size=int(latent_seq_len), mode="nearest-exact")
        sync_f = sync_f.transpose(1, 2)  # [B, N, D]
        n, nc = int(latent_seq_len), clip_f.shape[1]
        return Conditions(
            clip_f=clip_f,
            sync_f=sync_f,
            text_f=text_f,
            clip_f_c=self.clip_cond_proj(clip_f.mean(dim=1)),
            text_f_c=self.text_cond_proj(text_f.mean(dim=1)),
            latent_rot=rope_rotations(n, cfg.head_dim, device=clip_f.device),
            clip_rot=rope_rotations(nc, cfg.head_dim, freq_scaling=n / nc, device=clip_f.device),
        )

    def empty_features(
        self, batch_size: int, clip_seq_len: int, sync_seq_len: int, *, video: bool = True, text: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Raw "no video" (learned) and "no text" (stored empty-string) features, expanded to a batch."""
        clip = sync = txt = None
        if video:
            clip = self.empty_clip_feat.expand(batch_size, clip_seq_len, -1)
            sync = self.empty_sync_feat.expand(batch_size, sync_seq_len, -1)
        if text:
            txt = self.empty_string_feat.expand(batch_size, -1, -1)
        return clip, sync, txt

    def empty_conditions(
        self,
        batch_size: int,
        latent_seq_len: int,
        clip_seq_len: int,
        sync_seq_len: int,
        negative_text_f: torch.Tensor | None = None,
    ) -> Conditions:
        """The unconditional branch: no video, and the empty string (or a negative prompt's features)."""
        clip, sync, text = self.empty_features(1, clip_seq_len, sync_seq_len)
        if negative_text_f is not None:
            if negative_text_f.dim() == 2:
                negative_text_f = negative_text_f.unsqueeze(0)
            _check_sequence(
                "negative_text_f", negative_text_f, self.config.text_dim, length=self.config.text_seq_len
            )
            if negative_text_f.shape[0] not in (1, batch_size):
                raise ValueError(
                    f"negative_text_f batch must be 1 or {batch_size}, got {negative_text_f.shape[0]}"
                )
            text = negative_text_f
        per_item = text.shape[0]
        cond = self.preprocess_conditions(
            clip.expand(per_item, -1, -1), sync.expand(per_item, -1, -1), text, latent_seq_len
        )
        if per_item == batch_size:
            return cond
        return Conditions(
            *(x.expand(batch_size, *x.shape[1:]) for x in cond._batched()),
            latent_rot=cond.latent_rot,
            clip_rot=cond.clip_rot,
        )

    # ------------------------------------------------------------------------------- velocity
    def _time_vector(self, name: str, value: TimeLike, batch: int) -> torch.Tensor:
        tensor = torch.as_tensor(value, device=self.device)
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        if tensor.dim() > 1 or (tensor.dim() == 1 and tensor.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be a scalar or have shape [{batch}], got {list(tensor.shape)}")
        return tensor.reshape(-1).expand(batch)

    def _guidance_embedding(
        self, cfg_strength: TimeLike | None, scaled: bool | torch.Tensor, batch: int
    ) -> torch.Tensor | None:
        if cfg_strength is None:
            return None
        if self.guidance_embed is None:
            raise ValueError(
                "this network has no guidance embedding (NetworkConfig.guidance_embed is False): "
                "guide it with two forwards (mfmjt.guidance.guide) instead of passing cfg_strength"
            )
        strength = self._time_vector("cfg_strength", cfg_strength, batch)
        scaled_mask = torch.as_tensor(scaled, dtype=torch.bool, device=self.device)
        if scaled_mask.dim() > 1 or (scaled_mask.dim() == 1 and scaled_mask.shape[0] not in (1, batch)):
            raise ValueError(f"scaled must be a bool or have shape [{batch}], got {list(scaled_mask.shape)}")
        return self.guidance_embed(strength, scaled_mask.reshape(-1).expand(batch))

    def inner_velocity(
        self,
        latent: torch.Tensor,
        tau: TimeLike,
        conditions: Conditions,
        dt: TimeLike | None = None,
        cfg_strength: TimeLike | None = None,
        scaled: bool | torch.Tensor = False,
    ) -> torch.Tensor:
        """Velocity in MMAudio's convention (τ=0 noise, τ=1 data, output data - noise direction).

        ``latent [B, N, latent_dim]`` -> ``[B, N, latent_dim]``. ``dt`` is Δt (0 or None: flow matching).
        ``cfg_strength`` (ω) and ``scaled`` select the guidance a guidance-embedded network imitates
        (None: unguided, the same as ω = 1).
        """
        b, n = conditions.batch_size, conditions.latent_seq_len
        _check_sequence("latent", latent, self.config.latent_dim, batch=b, length=n)
        t_emb = self.t_embed(self._time_vector("t", tau, b))
        if dt is not None:
            t_emb = t_emb + self.dt_embed(self._time_vector("dt", dt, b))
        g_emb = self._guidance_embedding(cfg_strength, scaled, b)
        if g_emb is not None:
            t_emb = t_emb + g_emb.to(t_emb.dtype)
        latent = self.audio_input_proj(latent.to(self.dtype))  # [B, N, D]
        global_c = self.global_cond_mlp(conditions.clip_f_c + conditions.text_f_c)  # [B, D]
        global_c = (t_emb + global_c).unsqueeze(1)  # [B, 1, D]
        extended_c = global_c + conditions.sync_f  # [B, N, D], per-frame adaLN condition
        clip_f, text_f = conditions.clip_f, conditions.text_f
        for block in self.joint_blocks:
            latent, clip_f, text_f = block(
                latent, clip_f, text_f, global_c, extended_c, conditions.latent_rot, conditions.clip_rot
            )
        for block in self.fused_blocks:
            latent = block(latent, extended_c, conditions.latent_rot)
        # The final layer takes global_c, not extended_c, as MMAudio's checkpoints were trained.
        return self.final_layer(latent, global_c)  # [B, N, latent_dim]

    def predict(
        self,
        latent: torch.Tensor,
        t: TimeLike,
        dt: TimeLike | None,
        conditions: Conditions,
        cfg_strength: TimeLike | None = None,
        scaled: bool | torch.Tensor = False,
    ) -> torch.Tensor:
        """Average velocity u(z_t, r=t-Δt, t) in the public convention (t=1 noise, t=0 data);
        guided at ω = ``cfg_strength`` in one forward when the network has a guidance embedding."""
        t_tensor = self._time_vector("t", t, conditions.batch_size)
        return -self.inner_velocity(latent, 1 - t_tensor, conditions, dt, cfg_strength, scaled)

    def forward(
        self,
        latent: torch.Tensor,
        clip_f: torch.Tensor,
        sync_f: torch.Tensor,
        text_f: torch.Tensor,
        t: TimeLike,
        dt: TimeLike | None = None,
        cfg_strength: TimeLike | None = None,
        scaled: bool | torch.Tensor = False,
    ) -> torch.Tensor:
        """u(z_t, r, t) for raw features; sequence lengths are taken from the tensors."""
        _check_sequence("latent", latent, self.config.latent_dim)
        conditions = self.preprocess_conditions(clip_f, sync_f, text_f, latent.shape[1])
        return self.predict(latent, t, dt, conditions, cfg_strength, scaled)

    # ------------------------------------------------------------------------ latent scaling
    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> the network's standardised space (returns a new tensor)."""
        return (latent - self.latent_mean) / self.latent_std

    def unnormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Standardised latent -> VAE latent (returns a new tensor)."""
        return latent * self.latent_std + self.latent_mean

    @torch.no_grad()
    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.latent_mean.copy_(mean.reshape(self.latent_mean.shape))
        self.latent_std.copy_(std.reshape(self.latent_std.shape))

    # --------------------------------------------------------------------------- checkpoints
    def load_mmaudio_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strictly load an MMAudio network state dict (or our own, which adds ``dt_embed.*``).

        When the Δt embedder is absent it is initialised from ``t_embed`` with its output layer
        zeroed, so the loaded network is exactly MMAudio's flow-matching model at every Δt. A
        guidance embedding missing from the dict keeps this network's initialisation (zero output:
        the loaded model, unguided, at every ω), so guidance training can start from any checkpoint.
        The caller's dict is not modified.
        """
        sd = {k: v for k, v in state_dict.items() if k not in LEGACY_BUFFER_KEYS}
        if sd and all(k.startswith("ema_model.") for k in sd):
            sd = {k.removeprefix("ema_model."): v for k, v in sd.items()}
        expected = self.state_dict()
        unexpected = sorted(set(sd) - set(expected))
        optional = (DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX)
        missing = sorted(k for k in set(expected) - set(sd) if not k.startswith(optional))
        mismatched = [
            f"{k}: checkpoint {list(v.shape)} vs network {list(expected[k].shape)}"
            for k, v in sd.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if unexpected or missing or mismatched:
            raise ValueError(
                "state dict does not match this network variant"
                + (f"; unexpected keys: {unexpected[:8]}" if unexpected else "")
                + (f"; missing keys: {missing[:8]}" if missing else "")
                + (f"; shape mismatches: {mismatched[:8]}" if mismatched else "")
            )
        if self.guidance_embed is not None and not any(k.startswith(GUIDANCE_EMBED_PREFIX) for k in sd):
            with torch.no_grad():
                self.guidance_embed.zero_output()
            sd.update({GUIDANCE_EMBED_PREFIX + k: v for k, v in self.guidance_embed.state_dict().items()})
            logger.info("state dict has no guidance embedding: it starts with a zero output layer")
        has_dt = any(k.startswith(DT_EMBED_PREFIX) for k in sd)
        if has_dt:
            self.load_state_dict(sd, strict=True)
            return
        self.load_state_dict(sd, strict=False)
        with torch.no_grad():
            self.dt_embed.mlp[0].weight.copy_(self.t_embed.mlp[0].weight)
            self.dt_embed.mlp[0].bias.copy_(self.t_embed.mlp[0].bias)
        self.zero_dt_embed_output()
        logger.info("loaded an MMAudio state dict; Δt embedder initialised with a zero output layer")
