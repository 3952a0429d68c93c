"""VGGish (16 kHz): the per-window embeddings behind FAD.

Facts, from av-benchmark (``av_bench/vggish/vggish.py``, "converted from harritaylor/torchvggish"):

* input: torchvggish's ``waveform_to_examples`` (the TensorFlow VGGish front end: 25 ms hann STFT with
  10 ms hop, 64 mel bands 125-7500 Hz, log(mel + 0.01), cut into non-overlapping 0.96 s examples of
  96x64); this extractor calls the torchvggish package for it;
* network: VGG with conv widths 64, M, 128, M, 256, 256, M, 512, 512, M, then 4096-4096-128 fully
  connected layers, the features transposed to (H, W, C) order before flattening (TensorFlow's);
* av-benchmark removes the last ReLU ("to match audioldm_eval") and uses no PCA/quantisation
  postprocessing: the raw 128-d output of each 0.96 s example is one ``frames`` row, and FAD is computed
  over all examples of all clips together (``unroll_dict(..., cat=True)``);
* ``embedding`` here is the mean of an item's frames (for metrics that want one vector per clip);
* weights: torchvggish's release ``vggish-10086976.pth`` (what ``torch.hub.load('harritaylor/torchvggish',
  'vggish')`` loads; its name carries the first 8 hex digits of its sha256, torch.hub's convention).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from mfmjt.scoring.extractors._weights import ScoringWeights, build_weights, locate

WEIGHTS = ScoringWeights(
    name="vggish",
    filename="vggish-10086976.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    approx_bytes=288_567_937,
    sha256="10086976",
    checksum_source="torch.hub's file-name convention (a sha256 prefix only; the full hash is not published)",
    description="VGGish (torchvggish port)",
)

SAMPLE_RATE = 16000
MIN_SAMPLES = 400 + 95 * 160  # one 0.96 s example: 96 frames of 25 ms at a 10 ms hop


def _layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 1
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
            cin = int(v)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """(N, 1, 96, 64) log-mel examples -> (N, 128); parameter names are the checkpoint's."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _layers()
        # no ReLU after the last layer (av-benchmark / audioldm_eval)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 128)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TensorFlow's (H, W, C) flattening order
        return self.embeddings(x)


def _network_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # a torchvggish model's state dict may also hold its PCA postprocessor; VGGish here has none
    return {k: v for k, v in state.items() if k.startswith(("features.", "embeddings."))}


class VggishExtractor:
    """``audio(waveforms)`` at 16 kHz -> ``frames`` (B, N, 128) per 0.96 s and their mean ``embedding``."""

    name = "vggish"
    sample_rate = SAMPLE_RATE

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        from torchvggish import vggish_input

        self._examples = vggish_input.waveform_to_examples
        self.device = torch.device(device)
        weights = locate(weights, WEIGHTS)  # fails fast when the file is missing
        self.model = VGGish().eval()
        self.weights = build_weights(self.model, weights, WEIGHTS, seed=seed, convert=_network_only)
        self.model.to(self.device)

    def examples(self, waveform: np.ndarray) -> np.ndarray:
        """(N, 96, 64) log-mel examples of one 16 kHz waveform (torchvggish / TensorFlow VGGish)."""
        return self._examples(np.asarray(waveform, dtype=np.float32), SAMPLE_RATE, return_tensor=False)

    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(waveforms) == 0:
            raise ValueError("no waveforms given")
        examples = []
        for i, w in enumerate(waveforms):
            if np.ndim(w) != 1:
                raise ValueError(f"waveform {i} has shape {np.shape(w)}; pass mono 1-D arrays")
            if len(w) < MIN_SAMPLES:
                raise ValueError(f"waveform {i} is shorter than VGGish's window of {MIN_SAMPLES} samples")
            examples.append(self.examples(w))
        counts = {len(e) for e in examples}
        if len(counts) != 1:
            raise ValueError(f"waveforms give {sorted(counts)} VGGish windows; crop them to one length")
        x = torch.from_numpy(np.concatenate(examples)).float().unsqueeze(1).to(self.device)
        with torch.inference_mode():
            frames = self.model(x).reshape(len(waveforms), counts.pop(), -1).float().cpu().numpy()
        return {"frames": frames, "embedding": frames.mean(axis=1)}
