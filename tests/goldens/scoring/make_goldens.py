"""Regenerate the scoring-extractor goldens by running the reference implementations.

Not part of the test suite. Each golden is made by building our extractor with ``weights="random"``
(seed 0), loading the same state dict into the reference model, and running the reference on the
inputs stored in the golden. References:

* panns: av-benchmark's ``av_bench/panns/models.py`` Cnn14 (a checkout of github hkchengrex/av-benchmark
  on ``sys.path``; it loads its checkpoint from ``$HOME/.cache/audioldm_eval/ckpt/``, so HOME is pointed
  at a scratch folder holding the random state dict under that name);
* vggish: av-benchmark's ``av_bench/vggish`` (torchvggish port without the last ReLU, no PCA);
* passt: hear21passt's ``get_basic_model(mode="all")`` as av-benchmark calls it.

Usage: ``PYTHONPATH=<worktree>:<av-benchmark checkout> python tests/goldens/scoring/make_goldens.py NAME...``
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from mfmjt.scoring.extractors import get_extractor

OUT = Path(__file__).parent


def test_signal(seconds: float, sr: int, seed: int, batch: int = 2) -> np.ndarray:
    """Sines, a chirp and noise at -12 dBFS: every band carries energy."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for b in range(batch):
        f0 = 220.0 * (b + 1)
        x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
        x += 0.25 * rng.standard_normal(t.shape)
        rows.append(np.clip(x, -1, 1))
    return np.stack(rows).astype(np.float32)


def make_panns() -> None:
    ext = get_extractor("panns", weights="random")
    wav = test_signal(1.5, 16000, seed=1)
    with tempfile.TemporaryDirectory() as home:
        ckpt = Path(home) / ".cache/audioldm_eval/ckpt/Cnn14_16k_mAP=0.438.pth"
        ckpt.parent.mkdir(parents=True)
        torch.save({"model": ext.model.state_dict()}, ckpt)
        os.environ["HOME"] = home
        from av_bench.panns import Cnn14

        ref = Cnn14(
            features_list=["2048", "logits"],
            sample_rate=16000,
            window_size=512,
            hop_size=160,
            mel_bins=64,
            fmin=50,
            fmax=8000,
            classes_num=527,
        ).eval()
    with torch.no_grad():
        out = ref(torch.from_numpy(wav))
    save_file(
        {
            "input": wav,
            "embedding": out["2048"].numpy(),
            "logits": out["logits"].numpy(),
            "probs": out["clipwise_output"].numpy(),
        },
        OUT / "panns.safetensors",
    )


def make_vggish() -> None:
    from av_bench.vggish.vggish import VGGish

    ext = get_extractor("vggish", weights="random")
    wav = test_signal(2.0, 16000, seed=2)
    ref = VGGish(device="cpu", pretrained=False, postprocess=False).eval()
    ref.load_state_dict(ext.model.state_dict())
    with torch.no_grad():
        frames = ref(torch.from_numpy(wav))
    save_file({"input": wav, "frames": frames.numpy()}, OUT / "vggish.safetensors")


def make_passt() -> None:
    import hear21passt.base as passt_base

    ext = get_extractor("passt", weights="random")
    wav = test_signal(3.0, 32000, seed=3)
    # get_basic_model as av-benchmark calls it, with its network built without the ImageNet download
    build = passt_base.get_model_passt
    passt_base.get_model_passt = lambda **kw: build(pretrained=False, **kw)
    ref = passt_base.get_basic_model(mode="all").eval()
    ref.net.load_state_dict(ext.model.net.state_dict())
    padded = torch.nn.functional.pad(torch.from_numpy(wav), (0, 320000 - wav.shape[-1]))  # av-benchmark
    # one item at a time: in this run a batch of two gave the second item logits 5.1 away from the same
    # item run alone (and from our extractor, batched or not); unexplained, see the merge report
    with torch.no_grad():
        out = torch.cat([ref(padded[i : i + 1]) for i in range(len(padded))])
    save_file(
        {"input": wav, "logits": out[:, :527].numpy(), "embedding": out[:, 527:].numpy()},
        OUT / "passt.safetensors",
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    for name in sys.argv[1:]:
        globals()[f"make_{name}"]()
        print("wrote", name)
