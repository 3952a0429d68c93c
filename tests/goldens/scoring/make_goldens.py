"""Regenerate the scoring-extractor goldens by running the reference implementations.

Not part of the test suite. Each golden is made by building our extractor with ``weights="random"``
(seed 0), loading the same state dict into the reference model, and running the reference on the
inputs stored in the golden. References:

* panns: av-benchmark's ``av_bench/panns/models.py`` Cnn14 (a checkout of github hkchengrex/av-benchmark
  on ``sys.path``; it loads its checkpoint from ``$HOME/.cache/audioldm_eval/ckpt/``, so HOME is pointed
  at a scratch folder holding the random state dict under that name);
* vggish: av-benchmark's ``av_bench/vggish`` (torchvggish port without the last ReLU, no PCA);
* passt: hear21passt's ``get_basic_model(mode="all")`` as av-benchmark calls it;
* synchformer: av-benchmark's ``av_bench/synchformer`` ``Synchformer`` (its copy of v-iashin/Synchformer,
  the model its DeSync runs), loaded strictly with our random state dict, fed as av-benchmark feeds it:
  ``VideoDataset``'s sync transform, then the segmenting and mel lines of ``encode_video_with_sync``
  (``extract_video.py``) and ``encode_audio_with_sync`` (``av_bench/extract.py``), restated here because
  those modules import ImageBind and CLAP. It needs ``transformers<5`` (its AST copy imports helpers that
  v5 removed), einops and omegaconf: run it in a separate environment, e.g. ``python -m venv
  --system-site-packages /work/venvs/desync`` with ``pip install "transformers>=4.40,<4.50" einops
  omegaconf requests``. The input is one 4.8 s window (120 frames, 76,800 samples), one video with two
  audio tracks (the second rolled by 0.5 s); ~2 min on one CPU thread.

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


def synchformer_inputs(g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The golden's window from what it stores: RGB uint8 frames [120, 224, 280, 3] (each stored pixel a
    28x28 block) and waveforms [2, 76800] (the stored track, and the same rolled by 0.5 s).
    tests/test_scoring_extractors.py expands them the same way."""
    clip = np.repeat(np.repeat(g["video_pattern"], 28, axis=1), 28, axis=2)
    base = g["audio"].astype(np.float32)
    return clip, np.stack([base, np.roll(base, 8000)])


def make_synchformer() -> None:
    import torchaudio
    from av_bench.synchformer.synchformer import Synchformer
    from torchvision.transforms import v2

    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    stored = {
        "video_pattern": rng.integers(0, 256, (120, 8, 10, 3), dtype=np.uint8),
        "audio": test_signal(4.8, 16000, seed=4, batch=1)[0].astype(np.float16),
    }
    clip, waves = synchformer_inputs(stored)
    ext = get_extractor("synchformer", weights="random")
    ref = Synchformer().eval()
    ref.load_state_dict(ext.model.state_dict())  # strict: our keys are the checkpoint's

    # av-benchmark's VideoDataset sync transform (the short side is 224 already: Resize keeps it)
    transform = v2.Compose([
        v2.Resize(224, interpolation=v2.InterpolationMode.BICUBIC),
        v2.CenterCrop(224),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
    ])  # fmt: skip
    x = transform(torch.from_numpy(clip).permute(0, 3, 1, 2))[None]  # (1, T, C, H, W)
    # extract_video.py encode_video_with_sync: 16-frame segments every 8
    x = torch.stack([x[:, i * 8 : i * 8 + 16] for i in range((x.shape[1] - 16) // 8 + 1)], dim=1)
    vfeats = ref.extract_vfeats(x.flatten(0, 1)[:, None]).view(1, x.shape[1], 8, 768)

    # av_bench/extract.py encode_audio_with_sync and ExtractionModels.sync_mel_spectrogram
    mel_fn = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, win_length=400, hop_length=160, n_fft=1024, n_mels=128
    )
    a = torch.from_numpy(waves)
    a = torch.stack([a[:, i * 5120 : i * 5120 + 10240] for i in range((a.shape[1] - 10240) // 5120 + 1)], 1)
    mel = torch.log(mel_fn(a) + 1e-6)
    mel = torch.nn.functional.pad(mel, (0, 66 - mel.shape[-1]))  # pad_or_truncate(x, 66)
    mel = (mel - -4.2677393) / (2 * 4.5689974)
    afeats = ref.extract_afeats(mel.unsqueeze(2))  # (2, 14, 6, 768)

    video = vfeats.expand(2, -1, -1, -1)
    logits = ref.compare_v_a(video, afeats)
    # the head alone on float16-rounded features (what the golden stores)
    v16, a16 = vfeats.half(), afeats.half()
    head_logits = ref.compare_v_a(v16.float().expand(2, -1, -1, -1), a16.float())
    grid = make_class_grid_values()
    print("logits", logits, "offsets", grid[logits.argmax(-1).numpy()])
    save_file(
        {
            **stored,
            "mel": mel[:, [0, 13]].numpy(),  # (2, 2, 128, 66): the first and the last segment
            "video_features": v16.numpy(),
            "audio_features": a16.numpy(),
            "logits": logits.numpy(),
            "head_logits": head_logits.numpy(),
        },
        OUT / "synchformer.safetensors",
    )


def make_class_grid_values() -> np.ndarray:
    from av_bench.synchformer.synchformer import make_class_grid

    return make_class_grid(-2, 2, 21).numpy()


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    for name in sys.argv[1:]:
        globals()[f"make_{name}"]()
        print("wrote", name)
