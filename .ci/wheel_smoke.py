"""Run by .ci/wheel_smoke in the wheel's venv: the installed package loads its default model and generates."""

import sys
from pathlib import Path

# An editable install in the system site-packages (a developer's `pip install -e .`) adds an import
# hook that would serve mfmjt from the checkout; leave it out so the wheel's copy is the one tested.
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]

import numpy as np  # noqa: E402

import mfmjt  # noqa: E402
from mfmjt import load_pipeline  # noqa: E402

venv = Path(sys.argv[1]).resolve()
installed = Path(mfmjt.__file__).resolve()
if venv not in installed.parents:
    sys.exit(f"mfmjt was imported from {installed}, not from the wheel installed in {venv}")
pipe = load_pipeline("default", device="cpu")
result = pipe.generate(prompt="a red ball bounces twice", duration=2.0, steps=1, cfg_strength=1.5, seed=0)
audio = result.audio["scaled"]
if not (audio.size >= 2 * pipe.sample_rate and np.isfinite(audio).all() and np.abs(audio).max() > 0):
    sys.exit(f"bad clip: {audio.shape}, peak {np.abs(audio).max()}")
print(f"wheel smoke test passed: {installed.parent}, {pipe.info()['name']}, {audio.size} samples")
