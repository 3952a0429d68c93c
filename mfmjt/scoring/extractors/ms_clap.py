"""MS-CLAP 2023 (HTSAT + GPT-2): the text and audio embeddings behind the paper's CLAP column.

Facts, from av-benchmark (``extract.py``, ``extract_text.py``: ``msclap.CLAP(version="2023")``,
``get_audio_embeddings(files)``, ``get_text_embeddings([caption])``) and the msclap package
(``CLAPWrapper.py``, ``configs/config_2023.yml``, ``models/{clap,htsat,config}.py``):

* audio: the file resampled to 44.1 kHz (no mean removal), then 7 s: a shorter clip is repeated (as
  many whole copies as needed, then cut to 7 s), a longer one cut at a random offset in msclap, at the
  start here (av-benchmark's msclap calls are not seeded, so its own scores vary from run to run);
  stereo files are flattened channel after channel in msclap, averaged here (the scorer's mono);
* the encoder: HTSAT-tiny (embed 96, depths 2-2-6-2) whose front end is built from msclap's
  ``models/config.py``, not from the 2023 yml: a 32 kHz mel filter bank (window 1024, hop 320, 64 bins
  50-14000 Hz) applied to the 44.1 kHz audio, as the model was trained; its 768-d ``latent_output``;
* text: GPT-2 (``gpt2``'s architecture) on the caption + ``" <|endoftext|>"``, tokenised to 77 tokens
  with ``"!"`` (id 0) as the padding token; the hidden state at index (number of non-zero ids - 1),
  i.e. the end-of-text token (a caption holding ``"!"`` shifts it, as in msclap);
* each branch's projection: ``linear1`` (no bias), GELU, ``linear2`` (no bias), dropout, added to the
  first linear's output, layer norm -> 1024-d, not normalised (the score is the cosine).

Checkpoint ``CLAP_weights_2023.pth`` (``{"model": state_dict}``): ``audio_encoder.base.htsat.*`` is the
HTSAT (renamed as in :mod:`._htsat`), ``audio_encoder.projection.*`` / ``caption_encoder.projection.*``
the projections, ``caption_encoder.base.*`` GPT-2's ``GPT2Model`` keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.scoring.extractors import _htsat
from mfmjt.scoring.extractors._weights import ScoringWeights

WEIGHTS = ScoringWeights(
    name="ms_clap",
    filename="CLAP_weights_2023.pth",
    url="https://huggingface.co/microsoft/msclap/resolve/main/CLAP_weights_2023.pth",
    approx_bytes=640_000_000,  # estimated: 160M float32 parameters (the file's size is not known here)
    checksum_source="no checksum published (msclap fetches it unchecked with huggingface_hub); not checked",
    description="MS-CLAP 2023",
)

SAMPLE_RATE = 44100
CLIP_SECONDS = 7
TEXT_LENGTH = 77
EOT = " <|endoftext|>"
TOKENIZER = ("GPT2Tokenizer", "openai-community/gpt2", "gpt2")


class Projection(nn.Module):
    """msclap's ``Projection`` (eval form)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed1 = self.linear1(x)
        return self.layer_norm(embed1 + self.linear2(F.gelu(embed1)))


class MsClap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import ClapAudioModel, GPT2Config, GPT2Model

        # msclap's HTSAT takes its front end from models/config.py (32 kHz filters), not the 2023 yml
        self.frontend = _htsat.LogMel(32000, window_size=1024, hop_size=320, fmin=50, fmax=14000)
        self.audio_model = ClapAudioModel(_htsat.audio_config(96, (2, 2, 6, 2)))
        self.audio_projection = Projection(768, 1024)
        self.text_model = GPT2Model(GPT2Config())  # gpt2 (small): 12 layers, 768 wide, 50257 tokens
        self.text_projection = Projection(768, 1024)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def audio(self, wav: torch.Tensor) -> torch.Tensor:
        n = CLIP_SECONDS * SAMPLE_RATE
        if wav.shape[-1] < n:  # msclap: ceil(n / length) whole copies, then the first n samples
            wav = wav.repeat(1, -(-n // wav.shape[-1]))
        features = self.audio_model(input_features=self.frontend(wav[:, :n])).pooler_output
        return self.audio_projection(features)

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = torch.ne(input_ids, 0).sum(-1) - 1  # msclap's rule: "!" (id 0) is the padding token
        return self.text_projection(hidden[torch.arange(len(hidden), device=hidden.device), last])


def convert_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """msclap's checkpoint layout -> :class:`MsClap`'s."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = _htsat.convert_htsat(state, "audio_encoder.base.htsat.", "audio_model.audio_encoder.")
    renames = {
        "audio_encoder.projection.": "audio_projection.",
        "caption_encoder.projection.": "text_projection.",
        "caption_encoder.base.": "text_model.",
    }
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                if not key.endswith((".attn.bias", ".attn.masked_bias")):  # GPT-2's old causal-mask buffers
                    out[new + key[len(old) :]] = value
                break
        else:
            if key == "logit_scale":
                out[key] = value
    return out


class MsClapExtractor(_htsat.ClapExtractorBase):
    """``audio(waveforms)`` at 44.1 kHz and ``text(captions)`` -> ``embedding`` (B, 1024), not normalised."""

    name = "ms_clap"
    sample_rate = SAMPLE_RATE

    model_class = MsClap
    weights_spec = WEIGHTS
    tokenizer_spec = TOKENIZER
    tokenizer_label = "GPT-2 (MS-CLAP)"
    convert = staticmethod(convert_checkpoint)

    def prepare_tokenizer(self, tokenizer):
        tokenizer.add_special_tokens({"pad_token": "!"})  # msclap's padding token
        return tokenizer

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """msclap's ``preprocess_text`` (truncated to 77 tokens, where msclap fails on longer captions)."""
        encoded = self._load_tokenizer()(
            [c + EOT for c in captions],
            padding="max_length",
            truncation=True,
            max_length=TEXT_LENGTH,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
