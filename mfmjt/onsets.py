"""Onset detection in a mono waveform: the demo marks onsets on its spectrograms, the toy metrics score
temporal sync with it."""

from __future__ import annotations

import numpy as np

# detect_onsets' rise threshold for generated audio (codec-decoded audio has softer attacks than 2 dB);
# the toy evaluation and the demo's onset marks use it
ONSET_THRESHOLD_DB = 1.5


def detect_onsets(
    audio: np.ndarray,
    sample_rate: int,
    *,
    n_fft: int = 128,
    hop: int = 16,
    history_ms: float = 20.0,
    threshold_db: float = 2.0,
    min_gap_ms: float = 25.0,
    floor: float = 1e-5,
    dynamic_range_db: float = 80.0,
) -> np.ndarray:
    """Onset times (seconds) of a mono waveform, by spectral flux against recent maxima.

    Frame ``k`` holds samples ``[k * hop, k * hop + n_fft)`` and stands for the time its last ``hop``
    samples start, ``(k * hop + n_fft - hop) / sample_rate``, so new sound shows at once (1 ms
    resolution at 16 kHz). In every frequency bin its log power is compared with the loudest frame
    of the preceding ``history_ms``; an onset is a frame whose mean rise (each bin clipped to
    [0, 20] dB) exceeds ``threshold_db``. Decaying or sustained sounds never rise above their own
    past, so only new sounds trigger it, even while another object still rings. Sound present from
    the start of the clip is not an onset. Levels are floored at ``floor`` (power) and at
    ``dynamic_range_db`` below the loudest bin of the clip, so faint noise does not count.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < n_fft:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft + 2)[1:-1]
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    floor = max(floor, float(power.max()) * 10.0 ** (-dynamic_range_db / 10.0))
    level = 10.0 * np.log10(power + floor)
    hist = max(1, round(history_ms / 1000.0 * sample_rate / hop))
    past = np.concatenate([np.repeat(level[:1], hist, axis=0), level])[:-1]  # no onset at t = 0
    past_max = np.lib.stride_tricks.sliding_window_view(past, hist, axis=0).max(axis=-1)
    rise = np.clip(level - past_max, 0.0, 20.0).mean(axis=1)
    onsets: list[float] = []
    gap = min_gap_ms / 1000.0
    for k in np.nonzero(rise > threshold_db)[0]:
        t = (k * hop + n_fft - hop) / sample_rate
        if not onsets or t - onsets[-1] >= gap:
            onsets.append(t)
    return np.asarray(onsets)
