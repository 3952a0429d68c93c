"""Regenerate the scoring-extractor goldens by running the reference implementations.

Not part of the test suite. Each golden is made by building our extractor with ``weights="random"``
(seed 0), loading the same state dict into the reference model, and running the reference on the
inputs stored in the golden. References:

* panns: av-benchmark's ``av_bench/panns/models.py`` Cnn14 (a checkout of github hkchengrex/av-benchmark
  on ``sys.path``; it loads its checkpoint from ``$HOME/.cache/audioldm_eval/ckpt/``, so HOME is pointed
  at a scratch folder holding the random state dict under that name);
* vggish: av-benchmark's ``av_bench/vggish`` (torchvggish port without the last ReLU, no PCA);
* passt: hear21passt's ``get_basic_model(mode="all")`` as av-benchmark calls it.
* laion_clap, ms_clap: the reference packages themselves (laion-clap 1.1.7, msclap 1.3.4, in a venv
  with transformers 4.57, which they require below 5: ``/work/venvs/clap``), called as av-benchmark calls
  them, on seeded random weights given in the reference's own layout (each tensor from
  ``_weights.random_tensor(0, <reference name>, shape)``; the STFT kernels, mel filters and derived
  buffers as the reference builds them). Their weights are too large to store: the golden keeps the
  reference's tensor names and shapes, and the test rebuilds the checkpoint file from them and loads
  it through the extractor's key conversion. Tokenizers: the published ones cannot be downloaded here,
  so the reference's tokenizer classes are given a small byte-level BPE vocabulary made here
  (``tokenizers/{roberta,gpt2}``: GPT-2's 256 byte symbols in GPT-2's order, so "!" is id 0 as in
  GPT-2, a few merges); the architectures are unchanged. The from_pretrained calls of the references
  (weights and tokenizers of roberta-base / gpt2, which they download) are patched to build the
  architecture from its published configuration instead.

Usage: ``PYTHONPATH=<worktree>:<av-benchmark checkout> python tests/goldens/scoring/make_goldens.py NAME...``
The CLAP references need a venv of their own (``python -m venv --system-site-packages``, then
``pip install --no-deps laion-clap==1.1.7 msclap==1.3.4 "transformers>=4.34,<5" "tokenizers>=0.22,<=0.23"
ftfy braceexpand wget h5py webdataset``); run it with that venv's python.
"""

from __future__ import annotations

import json
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


CAPTIONS = ["a dog barks while rain falls on a roof", "the engine of a car starts, then a horn!"]
MERGES = [
    "Ġ a",
    "Ġ t",
    "h e",
    "Ġt he",
    "Ġ r",
    "i n",
    "a in",
    "Ġr ain",
    "o g",
    "Ġ d",
    "Ġd og",
    "a r",
    "Ġ b",
    "Ġb ar",
]


def byte_symbols() -> list[str]:
    """GPT-2's 256 byte symbols in GPT-2's vocabulary order (printable bytes first, then the rest
    shifted past 255): ids 0-255 of GPT-2's vocabulary, and 4-259 of RoBERTa's."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def write_tokenizers() -> None:
    merged = ["".join(m.split()) for m in MERGES]
    vocabularies = {
        "gpt2": [*byte_symbols(), *merged, "<|endoftext|>"],
        "roberta": ["<s>", "<pad>", "</s>", "<unk>", *byte_symbols(), *merged, "<mask>"],
    }
    for name, tokens in vocabularies.items():
        folder = OUT / "tokenizers" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(
            json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False)
        )
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")


def _randomize_reference(model: torch.nn.Module, fixed) -> dict[str, list[int]]:
    """Give ``model`` the seeded random weights; return the names and shapes that were drawn."""
    from mfmjt.scoring.extractors._weights import random_tensor

    drawn = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not fixed(name):
                tensor.copy_(random_tensor(0, name, tensor.shape))
                drawn[name] = list(tensor.shape)
    return drawn


def _pcm16(seconds: float, sr: int, seed: int) -> np.ndarray:
    return np.round(test_signal(seconds, sr, seed) * 32767).astype(np.int16)


def make_laion_clap() -> None:
    import transformers

    write_tokenizers()
    roberta_tokenizer = transformers.RobertaTokenizer.from_pretrained
    tiny = str(OUT / "tokenizers" / "roberta")
    for cls in (transformers.BertTokenizer, transformers.RobertaTokenizer, transformers.BartTokenizer):
        cls.from_pretrained = classmethod(lambda cls, *a, **k: roberta_tokenizer(tiny))
    roberta = transformers.RobertaConfig(  # roberta-base's published config.json
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    transformers.RobertaModel.from_pretrained = classmethod(lambda cls, *a, **k: cls(roberta))
    import laion_clap

    ref = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-base", device="cpu")
    drawn = _randomize_reference(
        ref.model, lambda n: "_extractor." in n or n.endswith(("attn_mask", "relative_position_index"))
    )
    pcm = _pcm16(1.5, 48000, seed=4)
    wav = torch.from_numpy(pcm.astype(np.float32) / 32768)
    audio = ref.get_audio_embedding_from_data(wav, use_tensor=True)  # av-benchmark's call
    tokens = ref.tokenizer(CAPTIONS)
    text = ref.get_text_embedding(CAPTIONS, use_tensor=True)  # av-benchmark's extract_text.py
    save_file(
        {
            "input_pcm16": pcm,
            "audio_embedding": audio.numpy(),
            "text_embedding": text.numpy(),
            "input_ids": tokens["input_ids"].numpy(),
            "attention_mask": tokens["attention_mask"].numpy(),
        },
        OUT / "laion_clap.safetensors",
        metadata={"captions": json.dumps(CAPTIONS), "shapes": json.dumps(drawn), "layout": "module."},
    )


def make_ms_clap() -> None:
    import transformers

    write_tokenizers()
    gpt2_tokenizer = transformers.GPT2Tokenizer.from_pretrained
    tiny = str(OUT / "tokenizers" / "gpt2")
    transformers.AutoTokenizer.from_pretrained = lambda *a, **k: gpt2_tokenizer(tiny)
    transformers.AutoModel.from_pretrained = lambda *a, **k: transformers.GPT2Model(transformers.GPT2Config())
    from msclap import CLAP as Wrapper
    from msclap.models.clap import CLAP

    args = dict(audioenc_name="HTSAT", sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64,
                fmin=50, fmax=8000, classes_num=527, out_emb=768, text_model="gpt2",
                transformer_embed_dim=768, d_proj=1024)  # fmt: skip  # configs/config_2023.yml
    model = CLAP(**args)
    drawn = _randomize_reference(
        model, lambda n: "_extractor." in n or n.endswith(("attn_mask", "relative_position_index"))
    )
    pcm = _pcm16(1.5, 44100, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": model.state_dict()}, Path(tmp) / "CLAP_weights_2023.pth")
        ref = Wrapper(model_fp=str(Path(tmp) / "CLAP_weights_2023.pth"), version="2023", use_cuda=False)
    clips = {str(i): torch.from_numpy(p.astype(np.float32) / 32768)[None] for i, p in enumerate(pcm)}
    ref.read_audio = lambda path, resample=True: (clips[path], 44100)  # the file, read at 44.1 kHz
    audio = ref.get_audio_embeddings(list(clips))  # av-benchmark's call (on paths)
    tokens = ref.preprocess_text(CAPTIONS)
    text = ref.get_text_embeddings(CAPTIONS)
    save_file(
        {
            "input_pcm16": pcm,
            "audio_embedding": audio.numpy(),
            "text_embedding": text.numpy(),
            "input_ids": tokens["input_ids"].numpy(),
            "attention_mask": tokens["attention_mask"].numpy(),
        },
        OUT / "ms_clap.safetensors",
        metadata={"captions": json.dumps(CAPTIONS), "shapes": json.dumps(drawn), "layout": "model"},
    )


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    for name in sys.argv[1:]:
        globals()[f"make_{name}"]()
        print("wrote", name)
