"""The metric formulas against closed forms and hand-computed values (mfmjt.scoring.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from mfmjt.scoring import (
    cosine_score,
    desync_score,
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    inception_score,
    kl_divergence,
    logits_from_probs,
)


def _exact_samples(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n samples whose sample mean and unbiased covariance are exactly ``mean`` and ``cov``."""
    d = len(mean)
    z = np.random.default_rng(seed).standard_normal((n, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal columns with zero mean (z was centred)
    white = q * math.sqrt(n - 1)  # unbiased covariance = identity
    return mean + white @ np.linalg.cholesky(cov).T


def test_fd_of_two_gaussians_is_the_closed_form_for_diagonal_covariances():
    # FD = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 when both covariances are diagonal
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    x, y = _exact_samples(m1, np.diag(a), 50, 0), _exact_samples(m2, np.diag(b), 70, 1)
    expected = (1 + 0 + 4) + ((1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-9)


def test_fd_of_full_covariances_matches_the_matrix_square_root_definition():
    rng = np.random.default_rng(3)
    a1, a2 = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = a1 @ a1.T + 0.1 * np.eye(5), a2 @ a2.T + 0.1 * np.eye(5)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    # pytorch-fid / av-benchmark: tr(sqrtm(s1 s2)) through scipy
    reference = (m1 - m2) @ (m1 - m2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance_from_statistics(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)
    x, y = _exact_samples(m1, s1, 40, 4), _exact_samples(m2, s2, 40, 5)
    assert frechet_distance(x, y) == pytest.approx(reference, rel=1e-8)


def test_fd_is_zero_for_a_set_against_itself_and_stays_finite_when_covariances_are_singular():
    x = np.random.default_rng(0).standard_normal((30, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    flat = np.zeros((10, 6))
    flat[:, 0] = np.arange(10)  # rank-1 covariance (more dimensions than spread)
    shifted = flat + 1.0
    assert frechet_distance(flat, shifted) == pytest.approx(6.0, abs=1e-9)  # |(1,...,1)|^2


def test_gaussian_statistics_use_the_unbiased_covariance():
    x = np.array([[0.0], [2.0]])
    mu, sigma = gaussian_statistics(x)
    assert mu.tolist() == [1.0] and sigma.tolist() == [[2.0]]


@pytest.mark.parametrize(
    "bad, message",
    [
        ((np.zeros((1, 3)), np.zeros((5, 3))), "at least 2 items"),
        ((np.zeros((5, 3)), np.zeros((5, 4))), "different dimensions"),
        ((np.zeros(5), np.zeros((5, 1))), "2-D array"),
        ((np.full((3, 2), np.nan), np.zeros((3, 2))), "NaN"),
    ],
)
def test_fd_refuses_unusable_inputs_in_one_sentence(bad, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(*bad)


def test_kl_is_reference_to_generated_over_softmax_summed_over_classes_averaged_over_items():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    q = np.array([[0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    by_hand = [
        0.7 * math.log(0.7 / 0.4) + 0.2 * math.log(0.2 / 0.4) + 0.1 * math.log(0.1 / 0.2),
        0.1 * math.log(1.0) + 0.8 * math.log(0.8 / 0.1) + 0.1 * math.log(0.1 / 0.8),
    ]
    # logits: log-probabilities plus a per-row constant, which softmax removes
    ref_logits, gen_logits = np.log(p) + [[3.0], [-1.0]], np.log(q) + [[0.5], [7.0]]
    assert kl_divergence(ref_logits, gen_logits) == pytest.approx(sum(by_hand) / 2, rel=1e-12)
    # direction: KL(reference || generated) differs from KL(generated || reference)
    assert kl_divergence(gen_logits, ref_logits) != pytest.approx(kl_divergence(ref_logits, gen_logits))
    assert kl_divergence(ref_logits, ref_logits) == pytest.approx(0.0, abs=1e-12)


def test_kl_sigmoid_is_audioldm_evals_per_class_sum():
    g, r = np.array([[0.0, 2.0]]), np.array([[1.0, -1.0]])
    sig = 1 / (1 + np.exp(-np.array([1.0, -1.0])))
    sig_g = 1 / (1 + np.exp(-np.array([0.0, 2.0])))
    expected = float((sig * (np.log(sig) - np.log(sig_g))).sum())
    assert kl_divergence(r, g, activation="sigmoid") == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="softmax"):
        kl_divergence(r, g, activation="relu")


def test_inception_score_of_uniform_predictions_is_one_and_of_balanced_one_hot_is_the_class_count():
    assert inception_score(np.zeros((20, 5)), splits=10) == pytest.approx((1.0, 0.0))
    # every split holds each of 4 classes once, predicted with certainty: IS = 4 in each split
    one_hot = np.tile(np.eye(4) * 60.0, (3, 1))  # 12 items; softmax(60) is 1 to 1e-26
    mean, std = inception_score(one_hot, splits=3, shuffle=False)
    assert mean == pytest.approx(4.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_by_hand_on_two_items():
    p = np.array([[0.75, 0.25], [0.25, 0.75]])
    marginal = p.mean(axis=0)  # (0.5, 0.5)
    kl = (p * np.log(p / marginal)).sum(axis=1).mean()
    mean, std = inception_score(np.log(p), splits=1)
    assert mean == pytest.approx(math.exp(kl), rel=1e-12) and std == 0.0


def test_inception_score_shuffles_with_av_benchmarks_seed_before_splitting():
    logits = np.random.default_rng(0).standard_normal((40, 6)) * 3
    order = np.random.RandomState(2020).permutation(40)
    assert inception_score(logits, 4) == pytest.approx(inception_score(logits[order], 4, shuffle=False))
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits[:3], 10)


def test_cosine_score_is_the_mean_of_paired_cosines():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [3.0, 0.0]])
    assert cosine_score(a, b) == pytest.approx((1.0 - 1.0 + 0.0) / 3)
    with pytest.raises(ValueError, match="same shape"):
        cosine_score(a, b[:2])


def test_desync_is_the_mean_absolute_offset_over_all_windows():
    first_last = np.array([[0.2, -0.4], [0.0, 1.0]])
    assert desync_score(first_last) == pytest.approx((0.2 + 0.4 + 0.0 + 1.0) / 4)


def test_logits_from_probs_inverts_sigmoid_and_softmax_outputs():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    sigmoid = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(logits_from_probs(sigmoid), logits, rtol=1e-9)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    recovered = logits_from_probs(softmax)
    np.testing.assert_allclose(recovered - recovered[:, :1], logits - logits[:, :1], rtol=1e-9)
