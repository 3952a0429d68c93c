"""Synchformer (audio-visual synchronisation): the offset classifier behind DeSync.

The whole model: the project's MotionFormer visual branch (:mod:`mfmjt.features.synchformer`, the part
MMAudio generates with), plus the audio branch (an AST over log-mel segments) and the sync head (a
transformer over both streams with a 21-class offset classifier). Facts, from av-benchmark at commit
``050a5cd`` (``av_bench/synchformer/{synchformer,ast,transformer,motionformer}.py``,
``av_bench/synchformer/hf_src/modeling_ast.py``, ``av_bench/extract.py``, ``extract_video.py``,
``av_bench/data/video_dataset.py``, ``av_bench/evaluate.py``), its copy of v-iashin/Synchformer:

* checkpoint: ``synchformer_state_dict.pth``, the file MMAudio downloads (same md5); the state-dict keys
  here are that file's (``vfeat_extractor.*``, ``afeat_extractor.*``, ``vproj``, ``aproj``,
  ``transformer.*``), so it loads strictly, without conversion;
* video: 25 fps, short side 224 (bicubic; the scorer resizes), centre crop 224, ``(x / 255 - 0.5) /
  0.5``; segments of 16 frames every 8; MotionFormer gives 8 vectors per segment (768-d);
* audio: 16 kHz, segments of 10,240 samples every 5,120; torchaudio's ``MelSpectrogram`` (n_fft 1024,
  hann window of 400, hop 160, centred with reflect padding, power 2, 128 HTK mel bands 0-8 kHz, no
  filter normalisation) gives 65 frames; ``log(x + 1e-6)``, zero-padded to 66 frames, then ``(x +
  4.2677393) / (2 * 4.5689974)``;
* AST (HF ``ASTConfig`` defaults: 768 wide, 12 layers and heads, 3072 MLP, exact GELU, LayerNorm eps
  1e-12, 16x16 patches at stride 10 in both axes: 12 frequency x 6 time patches, position embedding
  cut to 2 + 72 entries); after the final LayerNorm the CLS and distillation tokens are dropped and each
  of the 6 time steps pools its 12 frequency tokens with a pre-norm ``TransformerEncoderLayer`` with its
  own CLS token (``freq_attn_agg``): 6 vectors per segment;
* sync head (``compare_v_a``): ``vproj`` / ``aproj`` (768 -> 768), segments flattened (14 x 8 video and
  14 x 6 audio tokens), each stream LayerNormed, ``[OFF, video, MOD, audio]`` (198 tokens) plus a learnt
  position embedding, 3 pre-norm GPT blocks (8 heads, 4x MLP, exact GELU), LayerNorm, a linear layer on
  the OFF token: 21 logits, class k = offset ``-2 + 0.2 k`` seconds (``make_class_grid(-2, 2, 21)``);
* DeSync (``evaluate.py``): the argmax offset of the first 14 segments and of the last 14 (4.8 s each);
  the mean of their absolute values over every clip. The scorer cuts the two windows; ``av_offset``
  classifies one 4.8 s window per item.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.features.synchformer import SpatialPool, SynchformerConfig, SynchformerEncoder
from mfmjt.scoring.extractors._base import to_numpy
from mfmjt.scoring.extractors._weights import ScoringWeights, build_weights, locate
from mfmjt.weights import WEIGHT_FILES

_SHARED = WEIGHT_FILES["synchformer"]
WEIGHTS = ScoringWeights(
    name="synchformer",
    filename=_SHARED.filename,
    url=_SHARED.url,
    approx_bytes=_SHARED.approx_bytes,
    md5=_SHARED.md5,
    checksum_source="MMAudio's download_utils.py (the file MMAudio generates with)",
    description="Synchformer audio-visual synchronisation model",
    shared=_SHARED,
)

SAMPLE_RATE = 16000
VIDEO_FPS = 25.0
VIDEO_SIZE = 224
WINDOW_SEGMENTS = 14  # 4.8 s: the sync head's position embedding holds 14 segments of each stream
WINDOW_FRAMES = 16 + 8 * (WINDOW_SEGMENTS - 1)  # 120 frames at 25 fps
AUDIO_SEGMENT, AUDIO_STEP = 10240, 5120  # 0.64 s every 0.32 s at 16 kHz
WINDOW_SAMPLES = AUDIO_SEGMENT + AUDIO_STEP * (WINDOW_SEGMENTS - 1)  # 76,800
MEL_BINS, MEL_FRAMES = 128, 66
MEL_MEAN, MEL_STD = -4.2677393, 4.5689974
OFFSET_GRID = np.linspace(-2.0, 2.0, 21)  # seconds; class k of the head


# --------------------------------------------------------------------------------------------------
# Audio front end
# --------------------------------------------------------------------------------------------------


def htk_mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = 1024, n_mels: int = MEL_BINS, fmax: float | None = None
) -> torch.Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to ``fmax`` (default Nyquist), unnormalised:
    [n_fft // 2 + 1, n_mels] float32, torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    top = 2595.0 * math.log10(1.0 + fmax / 700.0)
    edges = 700.0 * (10.0 ** (torch.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)  # [n_mels + 2] Hz
    width = edges[1:] - edges[:-1]
    rel = edges[None, :] - freqs[:, None]  # [F, n_mels + 2]
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class SyncMel(nn.Module):
    """Waveform segments [..., 10240] -> normalised log-mel [..., 128, 66]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(400), persistent=False)
        self.register_buffer("filters", htk_mel_filterbank(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        spec = torch.stft(
            x.reshape(-1, x.shape[-1]),
            n_fft=1024,
            hop_length=160,
            win_length=400,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.abs().pow(2)  # [N, 513, 65]
        mel = torch.log((power.transpose(1, 2) @ self.filters).transpose(1, 2) + 1e-6)
        mel = F.pad(mel, (0, MEL_FRAMES - mel.shape[-1]))  # zeros after the log, before normalising
        return ((mel - MEL_MEAN) / (2 * MEL_STD)).reshape(*lead, MEL_BINS, MEL_FRAMES)


# --------------------------------------------------------------------------------------------------
# Audio branch: AST + per-time-step frequency pooling
# --------------------------------------------------------------------------------------------------


class _Linear(nn.Module):
    """A ``dense`` Linear (Hugging Face's naming of AST's sub-layers)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dense = nn.Linear(cin, cout)


class _QKV(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)


class _ASTAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = _QKV(dim)
        self.output = _Linear(dim, dim)


class ASTLayer(nn.Module):
    """Pre-norm ViT block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int = 768, heads: int = 12, mlp: int = 3072, eps: float = 1e-12) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _ASTAttention(dim)
        self.intermediate = _Linear(dim, mlp)
        self.output = _Linear(mlp, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.layernorm_before(x)
        qkv = self.attention.attention
        q, k, v = (
            lin(h).view(b, n, self.heads, -1).transpose(1, 2) for lin in (qkv.query, qkv.key, qkv.value)
        )
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attention.output.dense(a)
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _ASTEmbeddings(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, tokens + 2, dim))
        self.patch_embeddings = nn.Module()
        self.patch_embeddings.projection = nn.Conv2d(1, dim, kernel_size=16, stride=10)


class AST(nn.Module):
    """Audio Spectrogram Transformer on one segment's mel: [N, 128, 66] -> patch tokens [N, 12, 6, D]
    (frequency-major, after the final LayerNorm; the CLS and distillation tokens are dropped)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, mlp: int = 3072) -> None:
        super().__init__()
        self.grid = ((MEL_BINS - 16) // 10 + 1, (MEL_FRAMES - 16) // 10 + 1)  # (12, 6)
        self.embeddings = _ASTEmbeddings(dim, self.grid[0] * self.grid[1])
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(ASTLayer(dim, heads, mlp) for _ in range(depth))
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        n = mel.shape[0]
        emb = self.embeddings
        x = emb.patch_embeddings.projection(mel[:, None]).flatten(2).transpose(1, 2)  # [N, 72, D], f*6 + t
        x = torch.cat([emb.cls_token.expand(n, -1, -1), emb.distillation_token.expand(n, -1, -1), x], 1)
        x = x + emb.position_embeddings
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)[:, 2:].unflatten(1, self.grid)


class AudioBranch(nn.Module):
    """Mel segments [N, 128, 66] -> 6 vectors per segment [N, 6, D] (``afeat_extractor``)."""

    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.ast = AST(cfg.embed_dim, cfg.depth, cfg.num_heads, int(cfg.mlp_ratio * cfg.embed_dim))
        # the same pre-norm CLS-pooling layer as the visual branch's spatial pooling (eps 1e-6, 3072 MLP)
        self.freq_attn_agg = SpatialPool(cfg)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.ast(mel)  # [N, f, t, D]
        n, f, t, d = x.shape
        return self.freq_attn_agg(x.transpose(1, 2).reshape(n * t, f, d)).view(n, t, d)


# --------------------------------------------------------------------------------------------------
# Sync head
# --------------------------------------------------------------------------------------------------


class _GPTAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.key, self.query, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            lin(x).view(b, n, self.heads, -1).transpose(1, 2) for lin in (self.query, self.key, self.value)
        )
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class _GPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _GPTAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class SyncHead(nn.Module):
    """Video [B, Tv, D] and audio [B, Ta, D] tokens (already projected) -> offset logits [B, 21]
    (``transformer``)."""

    def __init__(self, dim: int = 768, heads: int = 8, depth: int = 3, tokens: int = 198, classes: int = 21):
        super().__init__()
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_emb_cfg = nn.Module()
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(_GPTBlock(dim, heads) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        self.off_head = nn.Linear(dim, classes)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        x = torch.cat(
            [
                self.OFF_tok.expand(b, -1, -1),
                self.vis_in_lnorm(video),
                self.MOD_tok.expand(b, -1, -1),
                self.aud_in_lnorm(audio),
            ],
            dim=1,
        )
        pos = self.pos_emb_cfg.pos_emb
        if x.shape[1] != pos.shape[1]:
            raise ValueError(
                f"the sync head takes {pos.shape[1]} tokens (4.8 s of each stream), got {x.shape[1]}"
            )
        return self.off_head(self.ln_f(self.blocks(x + pos))[:, 0])


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class Synchformer(SynchformerEncoder):
    """The full Synchformer: the visual encoder MMAudio uses (inherited, ``vfeat_extractor``), the audio
    branch, the projections and the sync head; state-dict keys are ``synchformer_state_dict.pth``'s."""

    def __init__(self, *, chunk_size: int = 14) -> None:
        super().__init__(SynchformerConfig.full(), chunk_size=chunk_size)
        dim = self.cfg.embed_dim
        self.afeat_extractor = AudioBranch(self.cfg)
        self.vproj = nn.Linear(dim, dim)
        self.aproj = nn.Linear(dim, dim)
        self.transformer = SyncHead(dim)
        self.mel = SyncMel()
        self.eval()

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, 3, 224, 224] -> [B, S, 8, D] (S segments of 16 frames every 8)."""
        feats = super().forward(frames)
        return feats.view(feats.shape[0], -1, self.cfg.time_steps, self.dim)

    def audio_features(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, L] at 16 kHz -> [B, S, 6, D] (S segments of 10,240 samples every 5,120)."""
        segments = wav.unfold(-1, AUDIO_SEGMENT, AUDIO_STEP)  # [B, S, 10240]
        b, s = segments.shape[:2]
        out = self.afeat_extractor(self.mel(segments).flatten(0, 1))  # [B*S, 6, D]
        return out.view(b, s, *out.shape[1:])

    def compare(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Segment features [B, S, 8, D] and [B, S, 6, D] -> offset logits [B, 21] (``compare_v_a``)."""
        return self.transformer(self.vproj(video).flatten(1, 2), self.aproj(audio).flatten(1, 2))


def center_crop(clip: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] -> [T, size, size, 3], torchvision's CenterCrop offsets (round((H - size) / 2))."""
    h, w = clip.shape[1:3]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return clip[:, top : top + size, left : left + size]


class SynchformerExtractor:
    """``av_offset(clips, fps, waveforms)``: one 4.8 s window per item (120 RGB uint8 frames at 25 fps,
    short side 224; 76,800 samples at 16 kHz) -> ``offset`` (B,) in seconds (the argmax of the 21
    classes on the grid -2, -1.8, ..., 2) and ``logits`` (B, 21). Sign, as Synchformer was trained
    (``TemporalCropAndOffset``: the audio crop starts ``offset`` after the video crop): positive means the
    audio is ahead, playing now what the video shows ``offset`` seconds later. DeSync uses |offset|."""

    name = "synchformer"
    sample_rate = SAMPLE_RATE
    video_fps = VIDEO_FPS
    video_size = VIDEO_SIZE

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        self.device = torch.device(device)
        weights = locate(weights, WEIGHTS)  # fails fast when the file is missing
        self.model = Synchformer()
        self.weights = build_weights(self.model, weights, WEIGHTS, seed=seed)
        self.model.to(self.device)

    def _inputs(
        self, clips: list[np.ndarray], fps: float, waveforms: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if abs(fps - VIDEO_FPS) > 1e-6:
            raise ValueError(f"Synchformer takes video at {VIDEO_FPS:g} fps, got {fps:g}")
        if len(clips) != len(waveforms) or not clips:
            raise ValueError(
                f"give one waveform per clip (got {len(clips)} clips, {len(waveforms)} waveforms)"
            )
        frames = []
        for i, clip in enumerate(clips):
            clip = np.asarray(clip)
            if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[3] != 3:
                raise ValueError(
                    f"clip {i} must be RGB uint8 frames [T, H, W, 3], got {clip.dtype} {clip.shape}"
                )
            if clip.shape[0] != WINDOW_FRAMES or min(clip.shape[1:3]) != VIDEO_SIZE:
                raise ValueError(
                    f"clip {i} has shape {clip.shape}; Synchformer takes {WINDOW_FRAMES} frames (4.8 s at "
                    f"{VIDEO_FPS:g} fps) with the short side resized to {VIDEO_SIZE}"
                )
            frames.append(center_crop(clip, VIDEO_SIZE))
        for i, w in enumerate(waveforms):
            if np.ndim(w) != 1 or np.shape(w)[0] != WINDOW_SAMPLES:
                raise ValueError(
                    f"waveform {i} has shape {np.shape(w)}; Synchformer takes mono {WINDOW_SAMPLES} samples "
                    f"(4.8 s at {SAMPLE_RATE} Hz)"
                )
        video = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).contiguous()  # [B, T, 3, H, W]
        audio = torch.from_numpy(np.stack([np.asarray(w, dtype=np.float32) for w in waveforms]))
        return video.to(self.device), audio.to(self.device)

    def av_offset(
        self, clips: list[np.ndarray], fps: float, waveforms: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        video, audio = self._inputs(clips, fps, waveforms)
        with torch.inference_mode():
            logits = self.model.compare(self.model.video_features(video), self.model.audio_features(audio))
        out = to_numpy({"logits": logits})
        out["offset"] = OFFSET_GRID[out["logits"].argmax(axis=1)].astype(np.float32)
        return out
