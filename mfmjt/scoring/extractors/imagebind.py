"""ImageBind (huge): the video and audio embeddings behind the IB-score (mean cosine of video and audio).

Facts, from ImageBind (github facebookresearch/ImageBind, and hkchengrex/ImageBind, the fork av-benchmark
installs, whose vision and audio code is the same; ``imagebind/models/imagebind_model.py``,
``multimodal_preprocessors.py``, ``transformer.py``, ``helpers.py``, ``data.py``) and av-benchmark
(``extract_video.py``, ``av_bench/data/video_dataset.py``, ``av_bench/data/audio_dataset.py``,
``av_bench/evaluate.py``):

* checkpoint ``imagebind_huge.pth`` (all six modalities; the vision and audio tensors are loaded here);
* vision: a 2-frame clip (3 x 2 x 224 x 224) cut by a Conv3d of kernel = stride = (2, 14, 14), no bias,
  into 256 patches of width 1280; a class token; a learned position embedding [1, 257, 1280]; a
  LayerNorm (eps 1e-6) before 32 pre-norm blocks of width 1280 with 16 heads (``nn.MultiheadAttention``,
  MLP 4x with exact GELU, LayerNorms eps 1e-6); head: LayerNorm, the class token, Linear 1280 -> 1024
  without bias; post: L2 normalisation;
* audio: a 1 x 128 x 204 log-mel image cut by a Conv2d of kernel 16, stride 10, no bias, into 12 x 19
  patches of width 768, then a LayerNorm (eps 1e-5); a class token; a learned position embedding [1, 229,
  768]; 12 blocks of width 768 with 12 heads whose attention has learned key/value bias tokens
  (``add_bias_kv``); head as vision (768 -> 1024); post: L2 normalisation times the fixed logit scale
  20 (``exp(log_logit_scale)``, clipped at 100);
* a sample of several clips is embedded clip by clip and its embedding is the mean of the clips'
  post-processed embeddings (``ImageBindModel.forward`` on 5-D and 6-D inputs);
* audio (``load_and_transform_audio_data``): 16 kHz, 3 clips of 2 s at starts ``i * max(T - 2, 0) / 2``
  (pytorchvideo's ``ConstantClipsPerVideoSampler``, exact fractions), samples ``[int(start * 16000),
  int(end * 16000))``; each clip's mean subtracted in place (on the shared waveform: where clips overlap,
  a later clip sees the earlier subtraction), Kaldi fbank (``torchaudio.compliance.kaldi.fbank``:
  htk_compat, hanning window, 128 bins, 25 ms / 10 ms, no energy, no dither), zero-padded or cut to 204
  frames, then (x + 4.268) / 9.138;
* video (av-benchmark): frames at 0.5 fps (4 for 8 s), short side resized to 224 (bicubic, antialiased),
  scaled to [0, 1], normalised with CLIP's mean and std, 3 spatial crops of 224 (start, centre, end of
  the long side: ImageBind's ``SpatialCrop``/``uniform_crop``), and every pair of consecutive frames
  a clip: 3 x (T - 1) clips per video;
* IB-score = ``cosine_similarity(video, audio).mean()`` (the scorer; the paper prints it x 100).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.scoring.extractors._weights import ScoringWeights, build_weights, locate

WEIGHTS = ScoringWeights(
    name="imagebind",
    filename="imagebind_huge.pth",
    url="https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
    approx_bytes=4_500_000_000,
    checksum_source="none is published (ImageBind's code downloads it unchecked); loading checks every "
    "tensor name and shape, and the download's sha256 is logged",
    description="ImageBind huge",
)

SAMPLE_RATE = 16000
VIDEO_FPS = 0.5
IMAGE_SIZE = 224
# audio front end (ImageBind's load_and_transform_audio_data)
CLIP_SECONDS = 2
CLIPS_PER_AUDIO = 3
MEL_BINS = 128
MEL_FRAMES = 204
MEL_MEAN, MEL_STD = -4.268, 9.138
# video front end (CLIP's normalisation, as ImageBind and av-benchmark)
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
NUM_CROPS = 3
AUDIO_LOGIT_SCALE = 20.0
MAX_LOGIT_SCALE = 100.0
MODALITIES = ("vision", "audio")


@dataclass(frozen=True)
class ImageBindConfig:
    """The sizes of ImageBind's vision and audio encoders (default: ``imagebind_huge``)."""

    vision_dim: int = 1280
    vision_blocks: int = 32
    vision_heads: int = 16
    audio_dim: int = 768
    audio_blocks: int = 12
    audio_heads: int = 12
    out_dim: int = 1024


HUGE = ImageBindConfig()


class _Stem(nn.Module):
    """Patch embedding: ``proj`` (a conv), flattened to tokens, then ``norm_layer`` if any."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # B C (T) H W -> B (T H W) C
        return x if self.norm_layer is None else self.norm_layer(x)


class _PositionEmbedding(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))


class _Tokenizer(nn.Module):
    """Patches, the class token in front, plus the learned position embedding (inputs of the one size
    the checkpoint was trained at, so no interpolation)."""

    def __init__(self, stem: _Stem, num_patches: int, dim: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.pos_embedding_helper = _PositionEmbedding(1 + num_patches, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block (ImageBind's ``BlockWithMasking`` without mask, layer scale or drop path,
    which are unused or identities at inference)."""

    def __init__(self, dim: int, heads: int, bias_kv: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, *, pre_norm: bool, bias_kv: bool) -> None:
        super().__init__()
        # index 0 as in the checkpoint (ImageBind's Sequential(LayerNorm | Identity, rearrange))
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(dim, eps=1e-6) if pre_norm else nn.Identity())
        self.blocks = nn.Sequential(*(_Block(dim, heads, bias_kv) for _ in range(depth)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pre_transformer_layer(tokens))


class _ClassToken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class _Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class _LogitScale(nn.Module):
    """ImageBind's fixed (non-learnable) ``LearnableLogitScaling``: ``min(exp(log_scale), 100) * x``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=MAX_LOGIT_SCALE) * x


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-6), _ClassToken(), nn.Linear(dim, out_dim, bias=False))


def is_fixed(name: str) -> bool:
    """State-dict entries that are constants of the architecture (kept by the random build)."""
    return name.endswith("log_logit_scale")


def select_encoders(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision and audio entries of a full ImageBind state dict (text, depth, thermal, IMU dropped)."""
    parts = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")
    prefixes = tuple(f"{p}.{m}." for p in parts for m in MODALITIES)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


class ImageBindEncoders(nn.Module):
    """ImageBind's vision and audio encoders under the checkpoint's names (``modality_*.{vision,audio}``)."""

    def __init__(self, config: ImageBindConfig = HUGE) -> None:
        super().__init__()
        vd, ad = config.vision_dim, config.audio_dim
        # the first entry of the vision stem is ImageBind's PadIm2Video (no weights): clips here have 2 frames
        vision_stem = _Stem(
            nn.Sequential(nn.Identity(), nn.Conv3d(3, vd, (2, 14, 14), (2, 14, 14), bias=False))
        )
        audio_stem = _Stem(nn.Conv2d(1, ad, 16, 10, bias=False), nn.LayerNorm(ad))
        audio_patches = ((MEL_BINS - 16) // 10 + 1) * ((MEL_FRAMES - 16) // 10 + 1)
        self.modality_preprocessors = nn.ModuleDict(
            {
                "vision": _Tokenizer(vision_stem, (IMAGE_SIZE // 14) ** 2, vd),
                "audio": _Tokenizer(audio_stem, audio_patches, ad),
            }
        )
        self.modality_trunks = nn.ModuleDict(
            {
                "vision": _Trunk(vd, config.vision_blocks, config.vision_heads, pre_norm=True, bias_kv=False),
                "audio": _Trunk(ad, config.audio_blocks, config.audio_heads, pre_norm=False, bias_kv=True),
            }
        )
        self.modality_heads = nn.ModuleDict(
            {"vision": _head(vd, config.out_dim), "audio": _head(ad, config.out_dim)}
        )
        self.modality_postprocessors = nn.ModuleDict(
            {"vision": _Normalize(), "audio": nn.Sequential(_Normalize(), _LogitScale(AUDIO_LOGIT_SCALE))}
        )

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """One embedding per clip: vision clips [N, 3, 2, 224, 224], audio clips [N, 1, 128, 204]."""
        tokens = self.modality_preprocessors[modality](x)
        tokens = self.modality_trunks[modality](tokens)
        return self.modality_postprocessors[modality](self.modality_heads[modality](tokens))


def audio_clip_bounds(num_samples: int, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample ranges of the 3 clips of 2 s (pytorchvideo's ConstantClipsPerVideoSampler as ImageBind
    drives it, in exact fractions of the float duration): starts evenly spaced from 0 to the last 2 s;
    audio of 2 s or less gives 3 times the whole of it."""
    last_start = Fraction(max(num_samples / sample_rate - CLIP_SECONDS, 0))
    step = last_start / max(CLIPS_PER_AUDIO - 1, 1)
    return [
        (int(step * i * sample_rate), int((step * i + CLIP_SECONDS) * sample_rate))
        for i in range(CLIPS_PER_AUDIO)
    ]


def audio_clips(waveform: torch.Tensor) -> torch.Tensor:
    """A mono 16 kHz waveform [L] -> the normalised log-mel clips [3, 1, 128, 204]."""
    from torchaudio.compliance import kaldi

    wave = waveform.detach().to(torch.float32).clone()[None]  # [1, L]; clips are views of it
    mels = []
    for a, b in audio_clip_bounds(wave.shape[-1]):
        clip = wave[:, a:b]
        clip -= clip.mean()  # in place, as ImageBind does
        fbank = kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=SAMPLE_RATE,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=MEL_BINS,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).T  # [128, frames]
        frames = fbank.shape[1]
        fbank = F.pad(fbank, (0, MEL_FRAMES - frames)) if frames < MEL_FRAMES else fbank[:, :MEL_FRAMES]
        mels.append(fbank[None])
    return (torch.stack(mels) - MEL_MEAN) / MEL_STD


def _crop_offsets(height: int, width: int, size: int = IMAGE_SIZE) -> list[tuple[int, int]]:
    """(y, x) of ImageBind's 3 spatial crops: start, centre (rounded up), end of the longer side."""
    y, x = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if height > width:
        return [(0, x), (y, x), (height - size, x)]
    return [(y, 0), (y, x), (y, width - size)]


def video_clips(frames: np.ndarray) -> torch.Tensor:
    """RGB frames [T, H, W, 3] uint8 at 0.5 fps -> the clips [3 (T - 1), 3, 2, 224, 224]: short side to 224
    (bicubic, antialiased; a no-op for frames already at 224), CLIP normalisation, 3 spatial crops, every
    pair of consecutive frames."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
    video = TF.resize(video, [IMAGE_SIZE], interpolation=InterpolationMode.BICUBIC, antialias=True)
    video = TF.normalize(video.to(torch.float32) / 255.0, PIXEL_MEAN, PIXEL_STD)
    height, width = video.shape[-2:]
    crops = torch.stack(
        [video[..., y : y + IMAGE_SIZE, x : x + IMAGE_SIZE] for y, x in _crop_offsets(height, width)]
    )  # [crops, T, 3, 224, 224]
    pairs = torch.stack([crops[:, i : i + 2] for i in range(len(video) - 1)], dim=1)  # [crops, T-1, 2, ...]
    return pairs.flatten(0, 1).transpose(1, 2)  # [crops (T-1), 3, 2, 224, 224]


class ImageBindExtractor:
    """``audio(waveforms)`` at 16 kHz -> ``embedding`` (B, 1024): the mean of its 3 clips' embeddings
    (each L2-normalised, times 20); ``video(clips, fps)`` (frames at 0.5 fps) -> ``embedding`` (B, 1024):
    the mean of the L2-normalised embeddings of its 3 (T - 1) two-frame clips. The IB-score is the cosine
    of the two, so neither scale matters; they are ImageBind's own outputs as av-benchmark stores them."""

    name = "imagebind"
    sample_rate = SAMPLE_RATE
    video_fps = VIDEO_FPS
    video_size = IMAGE_SIZE

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        config: ImageBindConfig = HUGE,
        clips_per_batch: int = 9,
    ) -> None:
        self.device = torch.device(device)
        weights = locate(weights, WEIGHTS)  # fails fast when the file is missing
        self.model = ImageBindEncoders(config).eval()
        self.weights = build_weights(
            self.model, weights, WEIGHTS, seed=seed, keep=is_fixed, convert=select_encoders
        )
        self.model.to(self.device)
        self.clips_per_batch = clips_per_batch

    def _embed_mean(self, modality: str, per_item: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        counts = [len(c) for c in per_item]
        clips = torch.cat(list(per_item))
        with torch.inference_mode():
            out = torch.cat(
                [
                    self.model.embed(modality, clips[i : i + self.clips_per_batch].to(self.device))
                    for i in range(0, len(clips), self.clips_per_batch)
                ]
            )
        means = [chunk.mean(dim=0) for chunk in torch.split(out, counts)]
        return {"embedding": torch.stack(means).float().cpu().numpy()}

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(waveforms) == 0:
            raise ValueError("no waveforms given")
        items = []
        for i, w in enumerate(waveforms):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1:
                raise ValueError(f"waveform {i} has shape {w.shape}; pass mono 1-D arrays")
            if len(w) < SAMPLE_RATE // 40:
                raise ValueError(f"waveform {i} has {len(w)} samples; ImageBind needs at least 25 ms")
            items.append(audio_clips(torch.from_numpy(w)))
        return self._embed_mean("audio", items)

    def video(self, clips: list[np.ndarray], fps: float) -> dict[str, np.ndarray]:
        if len(clips) == 0:
            raise ValueError("no video clips given")
        if not math.isclose(fps, VIDEO_FPS):
            raise ValueError(
                f"ImageBind scores frames at {VIDEO_FPS:g} fps (av-benchmark's protocol), got {fps:g}"
            )
        items = []
        for i, frames in enumerate(clips):
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(
                    f"clip {i} must be RGB uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}"
                )
            if len(frames) < 2:
                raise ValueError(f"clip {i} has {len(frames)} frame(s); ImageBind needs at least 2")
            items.append(video_clips(frames))
        return self._embed_mean("vision", items)
