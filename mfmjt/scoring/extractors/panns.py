"""PANNs Cnn14 (16 kHz AudioSet tagger): the embedding behind FD-PANNs and the classifier behind KL and IS.

Facts, from av-benchmark (``av_bench/extraction_models.py``, ``av_bench/panns/models.py``, the copy of
audioset_tagging_cnn's Cnn14 that MMAudio's evaluation uses):

* the 16 kHz checkpoint ``Cnn14_16k_mAP=0.438.pth`` (zenodo record 3987831), built with
  ``sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527``;
  front end: torchlibrosa's STFT (hann, centred, reflect padding) and log-mel (ref 1, amin 1e-10, no
  top_db), then ``bn0`` over the mel axis;
* six conv blocks (two 3x3 conv + BN + ReLU, 2x2 average pooling; the last without pooling), mean over
  frequency, max + mean over time, ``fc1`` + ReLU: the 2048-d ``embedding`` (av-benchmark's "2048",
  used for FD); ``fc_audioset`` on it: the 527 AudioSet ``logits`` (used for KL and IS through a
  softmax, and through a sigmoid for KL-sigmoid); ``probs`` is the model's own sigmoid of the logits;
* av-benchmark feeds the first 8 s of each file, mean-subtracted, resampled to 16 kHz (its
  ``AudioDataset``): cropping and DC removal are the scorer's, this extractor takes the waveform as given.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfmjt.scoring.extractors._base import run_grouped
from mfmjt.scoring.extractors._weights import ScoringWeights, build_weights, locate

WEIGHTS = ScoringWeights(
    name="panns",
    filename="Cnn14_16k_mAP=0.438.pth",
    url="https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
    approx_bytes=327_428_481,
    md5="362fc5ff18f1d6ad2f6d464b45893f2c",
    checksum_source="a public download script that pins this file (not checked against the file here)",
    description="PANNs Cnn14 16 kHz AudioSet tagger",
)

SAMPLE_RATE = 16000
FRONTEND = ("spectrogram_extractor.", "logmel_extractor.")


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool > 1 else x


class Cnn14(nn.Module):
    """Cnn14 in eval form; parameter names are the checkpoint's."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        window_size: int = 512,
        hop_size: int = 160,
        mel_bins: int = 64,
        fmin: float = 50,
        fmax: float = 8000,
        classes_num: int = 527,
    ) -> None:
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
            n_mels=mel_bins,
            fmin=fmin,
            fmax=fmax,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes_num)

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(wav))  # (B, 1, T, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, pool=2 if i < 5 else 1)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        logits = self.fc_audioset(embedding)
        return {"embedding": embedding, "logits": logits, "probs": torch.sigmoid(logits)}


class PannsExtractor:
    """``audio(waveforms)`` at 16 kHz -> ``embedding`` (B, 2048), ``logits`` and ``probs`` (B, 527)."""

    name = "panns"
    sample_rate = SAMPLE_RATE
    min_samples = 32 * 160  # five 2x poolings of the 10 ms frames need at least 32 frames

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        self.device = torch.device(device)
        weights = locate(weights, WEIGHTS)  # fails fast when the file is missing
        self.model = Cnn14().eval()
        self.weights = build_weights(
            self.model, weights, WEIGHTS, seed=seed, keep=lambda k: k.startswith(FRONTEND)
        )
        self.model.to(self.device)

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        for i, w in enumerate(waveforms):
            if np.shape(w)[-1] < self.min_samples:
                raise ValueError(
                    f"waveform {i} is shorter than {self.min_samples} samples, the PANNs minimum"
                )
        return run_grouped(waveforms, self.model, self.device)
