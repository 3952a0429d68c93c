"""LAION-CLAP (HTSAT-base + RoBERTa): the text and audio embeddings behind av-benchmark's LAION-CLAP score.

Facts, from av-benchmark (``av_bench/extraction_models.py``, ``extract.py``, ``extract_text.py``) and
the laion_clap package it calls (``hook.py``, ``clap_module/{model,htsat}.py``, ``training/data.py``):

* ``laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-base")`` with the checkpoint
  ``music_speech_audioset_epoch_15_esc_89.98.pt``; audio: HTSAT-base (embed 128, depths 2-2-12-2) at
  48 kHz, window 1024, hop 480, 64 mel bins 50-14000 Hz; text: RoBERTa-base (``roberta-base``'s
  architecture, layer-norm eps 1e-5) and its pooled first token;
* each branch's projection: Linear(width, 512), ReLU, Linear(512, 512); both embeddings are
  L2-normalised (``get_audio_embedding`` / ``get_text_embedding``), so the score is their dot product;
* audio: ``get_audio_embedding_from_data(wav, use_tensor=True)`` on av-benchmark's 48 kHz, mean-removed
  first 8 s (``use_tensor=True`` skips laion_clap's int16 round trip, so none is done here either);
  non-fusion input is 10 s (480,000 samples): a shorter clip is repeated whole as often as it fits and
  zero-padded (``repeatpad``); a longer one is cut at a random offset in laion_clap, at the start here;
* text: the RoBERTa tokenizer, padded and truncated to 77 tokens.

The checkpoint is a training checkpoint (``state_dict`` with ``module.`` prefixes, and the MLPs
``audio_transform``/``text_transform`` of the training loss, not used for the embeddings); its keys are
renamed to ``transformers``' ``ClapModel`` (see :mod:`._htsat` for the audio branch; ``text_branch`` is
``text_model``, ``*_projection.0/.2`` are ``linear1/linear2``).
"""

from __future__ import annotations

import torch
from torch import nn

from mfmjt.scoring.extractors import _htsat
from mfmjt.scoring.extractors._weights import ScoringWeights

WEIGHTS = ScoringWeights(
    name="laion_clap",
    filename="music_speech_audioset_epoch_15_esc_89.98.pt",
    url="https://huggingface.co/lukewys/laion_clap/resolve/main/music_speech_audioset_epoch_15_esc_89.98.pt",
    approx_bytes=2_350_000_000,  # "~2.35GB" as reported by its users (the training checkpoint)
    checksum_source="no checksum published (the Hub's file page gives none that we could read); not checked",
    description="LAION-CLAP HTSAT-base (music_speech_audioset_epoch_15_esc_89.98)",
)

SAMPLE_RATE = 48000
CLIP_SAMPLES = 480000  # 10 s: the non-fusion model's input
TEXT_LENGTH = 77
TOKENIZER = ("RobertaTokenizer", "FacebookAI/roberta-base", "roberta-base")


class LaionClap(nn.Module):
    """The HTSAT front end (``frontend``) and ``transformers``' ``ClapModel`` (``clap``)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import ClapConfig, ClapModel

        self.frontend = _htsat.LogMel(SAMPLE_RATE, window_size=1024, hop_size=480, fmin=50, fmax=14000)
        config = ClapConfig(
            text_config={"layer_norm_eps": 1e-5},  # roberta-base's (ClapTextConfig's default is 1e-12)
            audio_config=_htsat.audio_config(128, (2, 2, 12, 2)).to_dict(),
            projection_dim=512,
        )
        self.clap = ClapModel(config)

    def audio(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(_htsat.repeat_pad(wav, CLIP_SAMPLES))
        return self.clap.get_audio_features(input_features=mel).pooler_output  # projected, normalised

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def convert_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """laion_clap's checkpoint layout -> :class:`LaionClap`'s."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = _htsat.convert_htsat(state, "audio_branch.", "clap.audio_model.audio_encoder.")
    for key, value in state.items():
        if key.startswith("text_branch."):
            if not key.endswith(_htsat.DERIVED_KEYS):
                out["clap." + "text_model." + key[len("text_branch.") :]] = value
        elif key.startswith(("audio_projection.", "text_projection.")):
            branch, index, leaf = key.split(".")
            out[f"clap.{branch}.linear{1 if index == '0' else 2}.{leaf}"] = value
        elif key in ("logit_scale_a", "logit_scale_t"):
            out["clap." + key] = value
    return out


class LaionClapExtractor(_htsat.ClapExtractorBase):
    """``audio(waveforms)`` at 48 kHz and ``text(captions)`` -> unit-norm ``embedding`` (B, 512)."""

    name = "laion_clap"
    sample_rate = SAMPLE_RATE

    model_class = LaionClap
    weights_spec = WEIGHTS
    tokenizer_spec = TOKENIZER
    tokenizer_label = "RoBERTa (LAION-CLAP)"
    convert = staticmethod(convert_checkpoint)

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """laion_clap's ``CLAP_Module.tokenizer``: padded and truncated to 77 tokens."""
        encoded = self._load_tokenizer()(
            list(captions), padding="max_length", truncation=True, max_length=TEXT_LENGTH, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
