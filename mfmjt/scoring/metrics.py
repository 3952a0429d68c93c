"""The metric formulas over feature arrays, as av-benchmark (MMAudio's evaluation) defines them.

Plain NumPy functions of arrays whose first axis is the item: no extractor, no file. Where the
references (github.com/hkchengrex/av-benchmark, ``av_bench/metrics/``; audioldm_eval before it) make
a choice, these functions make the same one: unbiased covariances, KL(reference || generated) over
the softmax of the logits summed over classes and averaged over items, inception score over 10
shuffled splits with seed 2020. docs/EVALUATION.md lists the sources.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cosine_score",
    "desync_score",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "gaussian_statistics",
    "inception_score",
    "kl_divergence",
    "logits_from_probs",
]


def _matrix(name: str, features: np.ndarray, min_rows: int = 1) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items x dimensions), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} items, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov``, divisor N - 1) of ``features`` [N, D], N >= 2."""
    array = _matrix("features", features, min_rows=2)
    return array.mean(axis=0), np.atleast_2d(np.cov(array, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_statistics(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b):
    ``|mu_a - mu_b|^2 + tr(sigma_a) + tr(sigma_b) - 2 tr((sigma_a sigma_b)^(1/2))``.

    The trace term is computed as the sum of the square roots of the eigenvalues of the symmetric
    matrix ``sigma_a^(1/2) sigma_b sigma_a^(1/2)`` (similar to ``sigma_a sigma_b``, so the same
    eigenvalues): no complex intermediate and no singular-product retry, unlike ``scipy.linalg.sqrtm``
    of the product that pytorch-fid and av-benchmark use (same value where that one succeeds).
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a = np.atleast_2d(np.asarray(sigma_a, np.float64))
    sigma_b = np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (len(mu_a),) * 2:
        raise ValueError(
            f"the two sets have different dimensions: means {mu_a.shape} and {mu_b.shape}, "
            f"covariances {sigma_a.shape} and {sigma_b.shape}"
        )
    root_a = _sqrt_psd(sigma_a)
    inner = root_a @ sigma_b @ root_a
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings [N, D] and [M, D].

    FAD is this over VGGish's per-window (0.96 s) embeddings of all clips; FD over PANNs' (or
    PaSST's) per-clip embeddings. Symmetric in its arguments.
    """
    a = _matrix("features_a", features_a, min_rows=2)
    b = _matrix("features_b", features_b, min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sets have different dimensions: {a.shape[1]} and {b.shape[1]}")
    return frechet_distance_from_statistics(*gaussian_statistics(a), *gaussian_statistics(b))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _log_sigmoid(logits: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -logits)


def kl_divergence(
    reference_logits: np.ndarray, generated_logits: np.ndarray, activation: str = "softmax"
) -> float:
    """Mean over paired items of KL(reference || generated) between classifier outputs.

    Row i of both arrays is the same file name. ``activation="softmax"`` (the paper's KL, av-benchmark's
    ``KL-*-softmax``): ``sum_c p_c (log p_c - log q_c)`` with p, q the softmax of the reference and
    generated logits. ``"sigmoid"`` is audioldm_eval's ``kl_sigmoid``, the same sum over per-class
    sigmoid probabilities (not a proper divergence; kept for comparison).
    """
    ref = _matrix("reference_logits", reference_logits)
    gen = _matrix("generated_logits", generated_logits)
    if ref.shape != gen.shape:
        raise ValueError(f"paired logits must have the same shape, got {ref.shape} and {gen.shape}")
    if activation == "softmax":
        log_p, log_q = _log_softmax(ref), _log_softmax(gen)
    elif activation == "sigmoid":
        log_p, log_q = _log_sigmoid(ref), _log_sigmoid(gen)
    else:
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    return float((np.exp(log_p) * (log_p - log_q)).sum() / len(ref))


def inception_score(
    logits: np.ndarray, splits: int = 10, *, shuffle: bool = True, seed: int = 2020
) -> tuple[float, float]:
    """Inception score (mean, std over splits) of classifier logits [N, C].

    p = softmax(logits); the items are permuted with ``np.random.RandomState(seed)`` (when
    ``shuffle``), cut into ``splits`` consecutive chunks ``[i N / splits, (i + 1) N / splits)``, and each
    chunk scores ``exp(mean_i KL(p_i || mean_chunk p))``; the std is NumPy's (divisor = splits).
    ``splits`` must not exceed N.
    """
    array = _matrix("logits", logits)
    n = len(array)
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and the number of items ({n}), got {splits}")
    if shuffle:
        array = array[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(array)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        log_q = np.log(p[rows].mean(axis=0, keepdims=True))
        scores.append(float(np.exp((p[rows] * (log_p[rows] - log_q)).sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def cosine_score(embeddings_a: np.ndarray, embeddings_b: np.ndarray, eps: float = 1e-8) -> float:
    """Mean cosine similarity of paired rows (the CLAP score: text vs audio; the IB-score: video vs
    audio, which the paper's table prints times 100). Norms are clamped at ``eps`` as torch does."""
    a = _matrix("embeddings_a", embeddings_a)
    b = _matrix("embeddings_b", embeddings_b)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {a.shape} and {b.shape}")
    norms = np.maximum(np.linalg.norm(a, axis=1), eps) * np.maximum(np.linalg.norm(b, axis=1), eps)
    return float(((a * b).sum(axis=1) / norms).mean())


def desync_score(offsets: np.ndarray) -> float:
    """DeSync: the mean absolute audio-visual offset (seconds) predicted by Synchformer, over every
    window scored (av-benchmark: the first and the last 4.8 s of each clip, both in the mean)."""
    array = np.asarray(offsets, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError("offsets must be a non-empty array of finite numbers")
    return float(np.abs(array).mean())


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """Logits that give back ``probs`` [N, C] under the activation that made them: rows summing to 1
    are taken as a softmax (log p, up to a per-row constant that softmax ignores), others as
    per-class sigmoids (log p - log(1 - p)). Probabilities are clipped to [1e-7, 1 - 1e-7] first;
    an extractor's ``"logits"`` output is exact and preferred."""
    p = np.clip(_matrix("probs", probs), 1e-7, 1 - 1e-7)
    if np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        return np.log(p)
    return np.log(p) - np.log1p(-p)
