"""Scoring generated audio in the paper's metrics (FAD, FD, KL, IS, IB-score, CLAP, DeSync, RTF).

The formulas (:mod:`mfmjt.scoring.metrics`) are plain NumPy over feature arrays::

    from mfmjt.scoring import frechet_distance, kl_divergence, inception_score, cosine_score

:func:`score` runs them over folders of audio with the feature extractors of
``mfmjt.scoring.extractors`` (the ``eval`` extra); ``mfmjt score`` is its command. Importing this
package imports NumPy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mfmjt.scoring.metrics import (
    cosine_score,
    desync_score,
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    inception_score,
    kl_divergence,
    logits_from_probs,
)

__all__ = [
    "METRICS",
    "ScoreError",
    "ScoreResult",
    "cosine_score",
    "desync_score",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "gaussian_statistics",
    "inception_score",
    "kl_divergence",
    "logits_from_probs",
    "score",
]

if TYPE_CHECKING:
    from mfmjt.scoring.scorer import METRICS, ScoreError, ScoreResult, score


def __getattr__(name: str) -> Any:
    # Lazy: the scorer reads media (PyAV, torch); the formulas above need NumPy only.
    if name in ("METRICS", "ScoreError", "ScoreResult", "score"):
        from mfmjt.scoring import scorer

        return getattr(scorer, name)
    raise AttributeError(f"module 'mfmjt.scoring' has no attribute {name!r}")
