"""HTS-AT, the audio encoder of both CLAP models: its log-mel front end, its transformers build, and the
conversion of the original HTSAT checkpoint layout to it.

Facts, from the two reference packages (laion_clap ``clap_module/htsat.py``, msclap ``models/htsat.py``;
both are Ke Chen's HTSAT):

* front end inside the model: torchlibrosa ``Spectrogram`` (hann window of ``window_size``, centred,
  reflect padding) and ``LogmelFilterBank`` (ref 1, amin 1e-10, no top_db), then ``bn0`` over the mel
  bins; the (B, 1, T, 64) log-mel is resized (bicubic, align_corners) to 1024 frames and folded into a
  256x256 image (4 time chunks stacked along frequency);
* a Swin transformer (patch 4, window 8, four stages, patch merging between them), a final layer norm
  and the mean over all positions: the ``embedding`` (``latent_output``) both CLAP models project;
* ``transformers``' ``ClapAudioModel`` is this encoder (HF converted LAION-CLAP to it): its
  ``pooler_output`` is the same mean. The front end stays torchlibrosa's, as in the references, so that
  the filter bank and STFT kernels stored in the checkpoints are the ones used.

Checkpoint layout (``<prefix>`` = ``audio_branch.`` in LAION-CLAP, ``audio_encoder.base.htsat.`` in
MS-CLAP): ``bn0`` is the encoder's ``batch_norm``; in each block ``attn.qkv`` (q, k, v stacked along the
output axis) is split into ``attention.self.{query,key,value}``, ``attn.proj`` is
``attention.output.dense``, ``norm1``/``norm2`` are ``layernorm_before``/``layernorm_after``,
``mlp.fc1``/``mlp.fc2`` are ``intermediate.dense``/``output.dense``; the AudioSet classifier
(``tscam_conv``, ``head``) and the derived buffers (``attn_mask``, ``relative_position_index``) are
not used.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from mfmjt.scoring.extractors._base import run_grouped, to_numpy
from mfmjt.scoring.extractors._tokenizer import load_tokenizer
from mfmjt.scoring.extractors._weights import RANDOM, ScoringWeights, build_weights, locate

FRONTEND_KEYS = ("frontend.spectrogram_extractor.", "frontend.logmel_extractor.")
DERIVED_KEYS = ("relative_position_index", "position_ids", "token_type_ids")  # buffers computed at build


class LogMel(nn.Module):
    """HTSAT's front end: (B, L) waveforms -> (B, 1, T, mel_bins) log-mel (torchlibrosa, as in HTSAT)."""

    def __init__(self, sample_rate: int, window_size: int, hop_size: int, fmin: float, fmax: float) -> None:
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        self.spectrogram_extractor = Spectrogram(
            n_fft=window_size,
            hop_length=hop_size,
            win_length=window_size,
            window="hann",
            center=True,
            pad_mode="reflect",
            freeze_parameters=True,
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=sample_rate,
            n_fft=window_size,
            n_mels=64,
            fmin=fmin,
            fmax=fmax,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.logmel_extractor(self.spectrogram_extractor(wav))


def audio_config(embed_dim: int, depths: tuple[int, ...], projection_dim: int = 512):
    """``ClapAudioConfig`` of an HTSAT with ``embed_dim`` channels after patch embedding (96: tiny, 128:
    base) and ``depths`` blocks per stage; heads 4, 8, 16, 32; window 8; 256x256 input of 64 mel bins."""
    from transformers import ClapAudioConfig

    return ClapAudioConfig(
        patch_embeds_hidden_size=embed_dim,
        depths=list(depths),
        num_attention_heads=[4, 8, 16, 32],
        hidden_size=embed_dim * 2 ** (len(depths) - 1),
        window_size=8,
        spec_size=256,
        num_mel_bins=64,
        patch_size=4,
        patch_stride=[4, 4],
        enable_fusion=False,
        projection_dim=projection_dim,
    )


_BLOCK_RENAMES = (
    ("attn.proj.", "attention.output.dense."),
    ("attn.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)
_BLOCK = re.compile(r"^(layers\.\d+\.blocks\.\d+\.)(.*)$")


def convert_htsat(
    state: dict[str, torch.Tensor], src: str, encoder: str, frontend: str = "frontend."
) -> dict[str, torch.Tensor]:
    """The tensors of an original HTSAT under ``src`` renamed to a ``ClapAudioModel`` encoder under
    ``encoder`` (e.g. ``audio_model.audio_encoder.``) and a :class:`LogMel` under ``frontend``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(src):
            continue
        name = key[len(src) :]
        if name.startswith(("spectrogram_extractor.", "logmel_extractor.")):
            out[frontend + name] = value
            continue
        if name.startswith(("tscam_conv.", "head.")) or name.endswith(
            ("attn_mask", "relative_position_index")
        ):
            continue
        if name.startswith("bn0."):
            out[encoder + "batch_norm." + name[4:]] = value
            continue
        block = _BLOCK.match(name)
        if block:
            prefix, rest = block.groups()
            if rest.startswith("attn.qkv."):
                leaf = rest[len("attn.qkv.") :]
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                    out[f"{encoder}{prefix}attention.self.{part}.{leaf}"] = chunk.clone()
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            name = prefix + rest
        out[encoder + name] = value
    return out


def keep_fixed(key: str) -> bool:
    """Tensors that are not learned: the front end's STFT kernels and mel filters (computed by
    torchlibrosa, and also stored in the checkpoints) and buffers every build derives itself."""
    return key.startswith(FRONTEND_KEYS) or key.endswith(DERIVED_KEYS)


def repeat_pad(wav: torch.Tensor, length: int) -> torch.Tensor:
    """(B, L) -> (B, length): whole repetitions of the clip, then zeros (LAION-CLAP's ``repeatpad``)."""
    n = wav.shape[-1]
    if n >= length:
        return wav[..., :length]
    repeated = wav.repeat(1, length // n)
    return nn.functional.pad(repeated, (0, length - repeated.shape[-1]))


class ClapExtractorBase:
    """What both CLAP extractors share: the weights through the scoring path (HTSAT's fixed front-end
    buffers kept, the published layout converted) and the tokenizer, loaded up front for real weights
    (so a missing one fails before any work) or at the first ``text()`` call of a random build.
    Subclasses set the class attributes below."""

    model_class: type[nn.Module]
    weights_spec: ScoringWeights
    tokenizer_spec: tuple[str, ...]  # load_tokenizer's leading arguments
    tokenizer_label: str

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        tokenizer: str | os.PathLike[str] | None = None,
    ) -> None:
        self.device = torch.device(device)
        weights = locate(weights, self.weights_spec)  # fails fast when the file is missing
        self._tokenizer_source = tokenizer
        self._tokenizer = None
        if weights != RANDOM or tokenizer is not None:  # real runs fail before any work without it
            self._load_tokenizer()
        self.model = self.model_class().eval()
        self.weights = build_weights(
            self.model, weights, self.weights_spec, seed=seed, keep=keep_fixed, convert=self.convert
        )
        self.model.to(self.device)

    @staticmethod
    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state

    def prepare_tokenizer(self, tokenizer: Any) -> Any:
        return tokenizer

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = load_tokenizer(*self.tokenizer_spec, self._tokenizer_source, self.tokenizer_label)
            self._tokenizer = self.prepare_tokenizer(tokenizer)
        return self._tokenizer

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        return run_grouped(waveforms, lambda wav: {"embedding": self.model.audio(wav)}, self.device)

    def text(self, captions: list[str]) -> dict[str, np.ndarray]:
        if len(captions) == 0:
            raise ValueError("no captions given")
        tokens = {k: v.to(self.device) for k, v in self.tokenize(captions).items()}
        with torch.inference_mode():
            return to_numpy({"embedding": self.model.text(**tokens)})
