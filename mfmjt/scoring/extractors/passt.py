"""PaSST (32 kHz AudioSet transformer): the embedding behind FD-PaSST and the classifier behind its KL and IS.

Facts, from av-benchmark (``av_bench/extraction_models.py`` and ``av_bench/extract.py``) and hear21passt
(``hear21passt/base.py``, ``wrapper.py``, ``models/passt.py``, ``models/preprocess.py``):

* model: hear21passt's ``get_basic_model(mode="all")``: architecture ``passt_s_swa_p16_128_ap476``
  (a DeiT-base with distillation token: 16x16 patches at stride 10x10 over a 128x998 mel, 12 blocks of
  width 768, 12 heads), checkpoint ``passt-s-f128-p16-s10-ap.476-swa.pt`` of the PaSST release v0.0.1;
* front end (``AugmentMelSTFT`` in eval mode): pre-emphasis -0.97, 1024-point STFT of an 800-sample
  hann window at a 320-sample hop (10 ms), 128 Kaldi mel bands 0-15 kHz, log(x + 1e-5), (x + 4.5) / 5;
* the network returns the 527 AudioSet ``logits`` (``head``: LayerNorm + Linear on the mean of the class
  and distillation tokens) and that 768-d mean as the ``embedding``; av-benchmark takes
  ``output[:, :527]`` as logits (KL and IS through a softmax) and ``output[:, 527:]`` as the FD
  features; ``probs`` is the sigmoid of the logits (PaSST is trained as a multi-label tagger);
* every waveform is zero-padded or cut to exactly 10 s at 32 kHz (320000 samples) before the model, as
  av-benchmark does.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.scoring.extractors._base import run_grouped
from mfmjt.scoring.extractors._weights import ScoringWeights, build_weights, locate

ARCH = "passt_s_swa_p16_128_ap476"
WEIGHTS = ScoringWeights(
    name="passt",
    filename="passt-s-f128-p16-s10-ap.476-swa.pt",
    url="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
    approx_bytes=345_000_000,
    sha256="302903fa8c4aee817b11dc982da0b29aaf8d11a3e722420476d0a12c9db70c2c",
    checksum_source="a public project that pins this file (not checked against the file here)",
    description="PaSST-S SWA AudioSet tagger",
)

SAMPLE_RATE = 32000
CLIP_SAMPLES = 10 * SAMPLE_RATE
NUM_CLASSES = 527


class Passt(nn.Module):
    """hear21passt's mel front end and network, in eval mode (the network's names are the checkpoint's)."""

    def __init__(self) -> None:
        super().__init__()
        from hear21passt.models.passt import get_model
        from hear21passt.models.preprocess import AugmentMelSTFT

        with contextlib.redirect_stdout(io.StringIO()):  # hear21passt prints its model and settings
            # the settings of hear21passt.base.get_basic_model; augmentation is off in eval mode
            self.mel = AugmentMelSTFT(
                n_mels=128,
                sr=SAMPLE_RATE,
                win_length=800,
                hopsize=320,
                n_fft=1024,
                freqm=48,
                timem=192,
                htk=False,
                fmin=0.0,
                fmax=None,
                norm=1,
                fmin_aug_range=10,
                fmax_aug_range=2000,
            )
            self.net = get_model(arch=ARCH, pretrained=False)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        n = wav.shape[-1]
        wav = wav[..., :CLIP_SAMPLES] if n >= CLIP_SAMPLES else F.pad(wav, (0, CLIP_SAMPLES - n))
        with contextlib.redirect_stdout(io.StringIO()):  # its first forward prints shapes
            logits, embedding = self.net(self.mel(wav).unsqueeze(1))
        return {"embedding": embedding, "logits": logits, "probs": torch.sigmoid(logits)}


class PasstExtractor:
    """``audio(waveforms)`` at 32 kHz (padded or cut to 10 s) -> ``embedding`` (B, 768), ``logits`` and
    ``probs`` (B, 527)."""

    name = "passt"
    sample_rate = SAMPLE_RATE

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        self.device = torch.device(device)
        weights = locate(weights, WEIGHTS)  # fails fast when the file is missing
        self.model = Passt().eval()
        self.weights = build_weights(self.model.net, weights, WEIGHTS, seed=seed)
        self.model.to(self.device)

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        # every item becomes 10 s, so one batch runs them all
        fixed = [np.asarray(w, dtype=np.float32)[:CLIP_SAMPLES] for w in waveforms]
        fixed = [np.pad(w, (0, CLIP_SAMPLES - w.shape[-1])) if w.ndim == 1 else w for w in fixed]
        return run_grouped(fixed, self.model, self.device)
