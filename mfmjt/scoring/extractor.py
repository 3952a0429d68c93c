"""The contract between the scoring metrics and the feature extractors.

Every extractor of ``mfmjt.scoring.extractors`` is an object with a registry ``name``, the audio
``sample_rate`` it expects (mono float32 in [-1, 1]; the scorer resamples to it), a ``weights``
description (what file it loaded, or "random" for a random-weight build), and the methods of the
modalities it scores. Every method is batched: it takes a list of items and returns a dict of named
float arrays whose first axis is the item index.

Named outputs (the scorer picks the one each metric needs):

- ``audio(waveforms) -> {"embedding": (B, D)}`` for every audio extractor, plus ``"probs": (B, C)``
  for classifiers (PANNs, PaSST: the probabilities after the model's own sigmoid/softmax) and
  ``"frames": (B, N, D)`` where a metric uses per-window embeddings (VGGish FAD);
- ``text(captions) -> {"embedding": (B, D)}`` for CLAP models;
- ``video(clips) -> {"embedding": (B, D)}`` for ImageBind, where a clip is a (T, H, W, 3) uint8
  array with its frame rate in ``fps``;
- ``av_offset(clips, fps, waveforms) -> {"offset": (B,)}`` (seconds; one 4.8 s window per item) for the
  Synchformer DeSync (it also gives its ``"logits": (B, 21)``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Extractor(Protocol):
    name: str
    sample_rate: int
    weights: str


class AudioExtractor(Extractor, Protocol):
    def audio(self, waveforms: list[np.ndarray]) -> dict[str, np.ndarray]: ...


class TextExtractor(Extractor, Protocol):
    def text(self, captions: list[str]) -> dict[str, np.ndarray]: ...


class VideoExtractor(Extractor, Protocol):
    def video(self, clips: list[np.ndarray], fps: float) -> dict[str, np.ndarray]: ...


class SyncExtractor(Extractor, Protocol):
    def av_offset(
        self, clips: list[np.ndarray], fps: float, waveforms: list[np.ndarray]
    ) -> dict[str, np.ndarray]: ...
