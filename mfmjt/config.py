"""Frozen configuration dataclasses: network variants, audio modes and sequence-length math.

Sequence lengths follow MMAudio's formulas for any duration; they are computed per request and
passed to calls as arguments, never stored in module-level state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

CLIP_FPS = 8.0
SYNC_FPS = 25.0
SYNC_SEGMENT_FRAMES = 16
SYNC_SEGMENT_STEP = 8
SYNC_TOKENS_PER_SEGMENT = 8
TEXT_SEQ_LEN = 77
#: The CLIP model of MMAudio's feature stack (open_clip's name; the HF repo was later renamed
#: ``apple/DFN5B-CLIP-ViT-H-14-378``). Here, not in :mod:`mfmjt.features.clip`, so that the weight
#: registry reads it without importing torch.
DEFAULT_CLIP_MODEL = "hf-hub:apple/DFN5B-CLIP-ViT-H-14-384"


@dataclass(frozen=True)
class AudioMode:
    """Audio representation of a model family (MMAudio's "16k" or "44k")."""

    name: str
    sample_rate: int
    hop_length: int  # STFT hop; one latent frame covers 2 hops
    latent_dim: int
    latent_downsample: int = 2

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (31.25 for 16k)."""
        return self.sample_rate / self.hop_length / self.latent_downsample

    @property
    def samples_per_latent(self) -> int:
        return self.hop_length * self.latent_downsample


AUDIO_MODES: dict[str, AudioMode] = {
    "16k": AudioMode("16k", sample_rate=16_000, hop_length=256, latent_dim=20),
    "44k": AudioMode("44k", sample_rate=44_100, hop_length=512, latent_dim=40),
}

# The built-in feature stacks (mfmjt.features.registry) and the sample rate each runs at: a model
# directory's config.json may leave its sample rate to its feature kind.
FEATURE_KIND_RATES: dict[str, int] = {"offline": 16_000, "mmaudio_16k": 16_000, "mmaudio_44k": 44_100}

MIN_DURATION = SYNC_SEGMENT_FRAMES / SYNC_FPS  # shortest clip with one Synchformer segment


@dataclass(frozen=True)
class SequenceLengths:
    """Token counts of every stream for one clip duration."""

    duration: float
    latent: int
    clip: int
    sync: int
    audio_samples: int

    @classmethod
    def for_duration(cls, duration: float, mode: str | AudioMode = "16k") -> SequenceLengths:
        """MMAudio's sequence lengths for ``duration`` seconds (8 s, 16k: 250 / 64 / 192)."""
        audio = AUDIO_MODES[mode] if isinstance(mode, str) else mode
        if not math.isfinite(duration) or duration < MIN_DURATION:
            raise ValueError(
                f"duration must be at least {MIN_DURATION:.2f} s (one 16-frame sync segment), got {duration}"
            )
        latent = math.ceil(duration * audio.sample_rate / audio.hop_length / audio.latent_downsample)
        clip = int(duration * CLIP_FPS)
        segments = int((duration * SYNC_FPS - SYNC_SEGMENT_FRAMES) // SYNC_SEGMENT_STEP) + 1
        return cls(
            duration=float(duration),
            latent=latent,
            clip=clip,
            sync=segments * SYNC_TOKENS_PER_SEGMENT,
            audio_samples=latent * audio.samples_per_latent,
        )


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the MF-MJT network, with MMAudio's constructor names.

    The ``*_seq_len`` fields are the lengths the variant was trained at (8 s); the network accepts
    any lengths at call time and only uses these for defaults such as empty conditions.
    """

    latent_dim: int
    clip_dim: int
    sync_dim: int
    text_dim: int
    hidden_dim: int
    depth: int
    fused_depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    latent_seq_len: int = 250
    clip_seq_len: int = 64
    sync_seq_len: int = 192
    text_seq_len: int = TEXT_SEQ_LEN
    v2: bool = False
    # MF-MJT extension, off in the paper: embed the CFG setting (ω, standard/scaled) so guidance learnt
    # in training (``--guidance-max``) costs one forward per step instead of two
    guidance_embed: bool = False

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if (self.hidden_dim // self.num_heads) % 2:
            raise ValueError("head dimension must be even for rotary positions")
        if not 0 <= self.fused_depth < self.depth:
            raise ValueError(
                f"need 0 <= fused_depth < depth, got fused_depth={self.fused_depth}, depth={self.depth}"
            )
        if self.sync_seq_len % SYNC_TOKENS_PER_SEGMENT:
            raise ValueError(f"sync_seq_len must be a multiple of {SYNC_TOKENS_PER_SEGMENT}")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def joint_depth(self) -> int:
        """Number of joint (audio + video + text) blocks, N1 in the paper."""
        return self.depth - self.fused_depth

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> NetworkConfig:
        """A named preset (``small_16k`` is the paper's 157M model), optionally with overrides."""
        try:
            base = VARIANTS[name]
        except KeyError:
            raise ValueError(f"unknown network variant {name!r}; choose one of {sorted(VARIANTS)}") from None
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown NetworkConfig fields: {sorted(unknown)}")
        return cls(**data)


_MM16 = dict(latent_dim=20, clip_dim=1024, sync_dim=768, text_dim=1024, latent_seq_len=250)
_MM44 = dict(latent_dim=40, clip_dim=1024, sync_dim=768, text_dim=1024, latent_seq_len=345)

VARIANTS: dict[str, NetworkConfig] = {
    "small_16k": NetworkConfig(**_MM16, hidden_dim=448, depth=12, fused_depth=8, num_heads=7),
    "small_44k": NetworkConfig(**_MM44, hidden_dim=448, depth=12, fused_depth=8, num_heads=7),
    "medium_44k": NetworkConfig(**_MM44, hidden_dim=896, depth=12, fused_depth=8, num_heads=14),
    "large_44k": NetworkConfig(**_MM44, hidden_dim=896, depth=21, fused_depth=14, num_heads=14),
    "large_44k_v2": NetworkConfig(**_MM44, hidden_dim=896, depth=21, fused_depth=14, num_heads=14, v2=True),
    # The reference goldens' shape: 2 joint + 2 audio-only blocks, hidden 64. The embedded default is this
    # variant with hidden 96, 48-dim sync tokens and 6 audio-only blocks (its config.json).
    "tiny": NetworkConfig(
        latent_dim=20,
        clip_dim=32,
        sync_dim=24,
        text_dim=32,
        hidden_dim=64,
        depth=4,
        fused_depth=2,
        num_heads=2,
        latent_seq_len=50,
        clip_seq_len=16,
        sync_seq_len=48,
    ),
}
