"""Spectrograms of the demo's results on one time axis, with detected onsets marked.

Drawn with numpy and Pillow (no plotting library: a picture costs a few tens of milliseconds), one
panel per result, stacked so that the same time is at the same x in every panel. Onsets come from
:func:`mfmjt.synthetic.detect_onsets` with the evaluation's threshold; each panel marks its own onsets
as solid ticks and the other panels' onsets as faint lines, so what the guidance rule moved, added or
removed shows at a glance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mfmjt.onsets import ONSET_THRESHOLD_DB, detect_onsets

WIDTH = 900  # pixels of the time axis
PANEL_HEIGHT = 130
LABEL_HEIGHT = 26
AXIS_HEIGHT = 26
FONT_SIZE = 17
MAX_FREQ_HZ = 8000.0
DYNAMIC_RANGE_DB = 70.0
ONSET_COLOURS = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (160, 255, 120)]


def _colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 RGB, a dark-blue to yellow ramp."""
    anchors = np.array([[10, 10, 40], [60, 20, 110], [180, 50, 90], [250, 150, 40], [255, 250, 180]], float)
    x = np.clip(values, 0, 1) * (len(anchors) - 1)
    low = np.floor(x).astype(int).clip(0, len(anchors) - 2)
    frac = (x - low)[..., None]
    return (anchors[low] * (1 - frac) + anchors[low + 1] * frac).astype(np.uint8)


def log_spectrogram(wave: np.ndarray, sample_rate: int, columns: int, seconds: float) -> np.ndarray:
    """dB magnitude [freq rows (high first), ``columns``] of the first ``seconds`` of ``wave``."""
    n_fft = 512 if sample_rate <= 24_000 else 1024
    x = np.zeros(max(round(seconds * sample_rate), n_fft), np.float32)
    w = np.asarray(wave, np.float32).reshape(-1)[: len(x)]
    x[: len(w)] = w
    starts = np.linspace(0, len(x) - n_fft, columns).astype(int)
    frames = x[starts[:, None] + np.arange(n_fft)[None]] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    top = min(int(MAX_FREQ_HZ / (sample_rate / n_fft)), power.shape[1] - 1)
    return 10 * np.log10(power[:, : top + 1].T[::-1] + 1e-10)


def onsets(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (seconds) of a result, as the evaluation detects them."""
    return detect_onsets(np.asarray(wave, np.float64), sample_rate, threshold_db=ONSET_THRESHOLD_DB)


def spectrogram_panels(
    waves: Mapping[str, np.ndarray], sample_rate: int, seconds: float, labels: Mapping[str, str] | None = None
) -> Image.Image:
    """One picture: a spectrogram per result (top to bottom in ``waves`` order) over ``seconds``."""
    names = list(waves)
    found = {name: onsets(waves[name], sample_rate) for name in names}
    specs = {name: log_spectrogram(waves[name], sample_rate, WIDTH, seconds) for name in names}
    loudest = max(float(s.max()) for s in specs.values())
    height = len(names) * (PANEL_HEIGHT + LABEL_HEIGHT) + AXIS_HEIGHT
    image = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=FONT_SIZE)

    def x_of(t: float) -> int:
        return int(round(min(max(t / seconds, 0.0), 1.0) * (WIDTH - 1)))

    for i, name in enumerate(names):
        top = i * (PANEL_HEIGHT + LABEL_HEIGHT)
        colour = ONSET_COLOURS[i % len(ONSET_COLOURS)]
        label = (labels or {}).get(name, name)
        draw.rectangle([4, top + 7, 18, top + 21], fill=colour)
        draw.text((24, top + 4), f"{label}: {len(found[name])} onsets (marked)", fill=(0, 0, 0), font=font)
        spec = (specs[name] - (loudest - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB
        rows = np.linspace(0, spec.shape[0] - 1, PANEL_HEIGHT).astype(int)
        panel = Image.fromarray(_colormap(spec[rows]))
        image.paste(panel, (0, top + LABEL_HEIGHT))
        y0, y1 = top + LABEL_HEIGHT, top + LABEL_HEIGHT + PANEL_HEIGHT - 1
        for other in names:
            if other != name:
                for t in found[other]:
                    draw.line([(x_of(t), y0), (x_of(t), y1)], fill=(200, 200, 200), width=1)
        for t in found[name]:
            draw.line([(x_of(t), y0), (x_of(t), y1)], fill=colour, width=2)
    axis_top = height - AXIS_HEIGHT
    step = 0.5 if seconds <= 4 else 1.0 if seconds <= 12 else 5.0
    t = 0.0
    while t <= seconds + 1e-9:
        x = x_of(t)
        draw.line([(x, axis_top), (x, axis_top + 4)], fill=(0, 0, 0))
        draw.text((min(x + 2, WIDTH - 40), axis_top + 5), f"{t:g} s", fill=(0, 0, 0), font=font)
        t += step
    return image
