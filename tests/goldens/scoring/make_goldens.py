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
* imagebind: ImageBind (hkchengrex/ImageBind at 9989650, the fork av-benchmark installs; its vision and
  audio code equals facebookresearch/ImageBind at 53680b0) driven by av-benchmark's own front ends:
  ``ImageBindAudioDataset.load_and_transform_audio_data`` (pytorchvideo at 6cdc929 for the clip sampler;
  ``torchaudio.load`` replaced by the stored waveform), ``VideoDataset.ib_transform`` and ``.crop`` (its
  ``torio`` decoder import stubbed: the stored frames replace the decoded ones) and
  ``encode_video_with_imagebind`` of ``extract_video.py`` (read from the file: that script imports
  Synchformer). Two models, both seeded by :func:`randomize` (seed 0) on the reference's own state-dict
  names, so ``weights="random"`` rebuilds them: the real ``imagebind_huge()`` and a small
  ``ImageBindModel`` (sizes in the golden's metadata). The golden's metadata also holds the name and
  shape of every vision and audio tensor of ``imagebind_huge()`` (the checkpoint layout).
  The reference's requirements (einops, iopath, ftfy, regex, pytorchvideo) lived in a venv with the
  system site packages: ``python -m venv --system-site-packages /work/venvs/imagebind``.
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
(imagebind: also the ImageBind and pytorchvideo checkouts on ``PYTHONPATH``)
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


def imagebind_inputs() -> dict[str, np.ndarray]:
    """Audio of 4.5 s (overlapping clips) and 1.5 s (one padded clip, three times); a landscape video of 3
    frames and a portrait one of 2, both smaller than 224 so that the resize is exercised."""
    rng = np.random.default_rng(7)

    def frames(n: int, h: int, w: int) -> np.ndarray:
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        out = []
        for t in range(n):
            base = np.stack([np.sin(6 * x + t), np.cos(5 * y - t), np.sin(4 * (x + y) + 2 * t)], axis=-1)
            out.append(np.clip(127.5 + 90 * base + rng.normal(0, 20, (h, w, 3)), 0, 255))
        return np.stack(out).astype(np.uint8)

    return {
        "audio_0": test_signal(4.5, 16000, seed=4, batch=1)[0],
        "audio_1": test_signal(1.5, 16000, seed=5, batch=1)[0],
        "video_0": frames(3, 112, 128),
        "video_1": frames(2, 140, 100),
    }


IMAGEBIND_SMALL = {  # ImageBindConfig fields -> the reference's ImageBindModel arguments
    "vision_dim": 64,
    "vision_blocks": 2,
    "vision_heads": 4,
    "audio_dim": 48,
    "audio_blocks": 2,
    "audio_heads": 4,
    "out_dim": 32,
}


def _imagebind_reference_run(model, inputs: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    import ast
    import types

    import torchaudio
    from einops import rearrange
    from imagebind.models.imagebind_model import ModalityType

    sys.modules.setdefault("torio", types.ModuleType("torio"))
    sys.modules.setdefault("torio.io", types.ModuleType("torio.io"))
    sys.modules["torio.io"].StreamingMediaDecoder = None  # type: ignore[attr-defined]
    import av_bench
    from av_bench.data.audio_dataset import ImageBindAudioDataset
    from av_bench.data.video_dataset import VideoDataset

    script = Path(av_bench.__file__).parents[1] / "extract_video.py"
    tree = ast.parse(script.read_text())
    fn = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "encode_video_with_imagebind"
    )
    namespace = {
        "torch": torch,
        "rearrange": rearrange,
        "ModalityType": ModalityType,
        "imagebind_model": None,
    }
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(script), "exec"), namespace)
    encode_video = namespace["encode_video_with_imagebind"]

    out = {}
    audio_ds = ImageBindAudioDataset([])
    for key in ("audio_0", "audio_1"):
        wave = torch.from_numpy(inputs[key].copy())[None]
        torchaudio.load = lambda path, wave=wave: (wave.clone(), 16000)
        mels = audio_ds.load_and_transform_audio_data(Path(f"{key}.wav"))  # [1, 3, 1, 128, 204]
        out[f"{prefix}_{key}"] = model({ModalityType.AUDIO: mels})[ModalityType.AUDIO][0].numpy()
        if key == "audio_0":  # the front end on its own (overlapping clips: the in-place mean removal shows)
            out["mels_audio_0"] = mels[0].numpy()
    video_ds = VideoDataset([], duration_sec=8.0)
    for key in ("video_0", "video_1"):
        chunk = torch.from_numpy(inputs[key]).permute(0, 3, 1, 2)  # torio's [T, C, H, W] uint8
        ib = torch.stack(video_ds.crop([video_ds.ib_transform(chunk)]))[None]  # [1, crops, T, C, H, W]
        out[f"{prefix}_{key}"] = encode_video(model, ib)[0].numpy()
    return out


def make_imagebind() -> None:
    import json

    from imagebind.models import imagebind_model

    from mfmjt.scoring.extractors._weights import randomize
    from mfmjt.scoring.extractors.imagebind import is_fixed, select_encoders

    torch.set_num_threads(1)
    inputs = imagebind_inputs()
    outputs: dict[str, np.ndarray] = {}
    metadata: dict[str, str] = {"small_config": json.dumps(IMAGEBIND_SMALL), "seed": "0"}

    def seeded(model):
        encoders = set(select_encoders(model.state_dict()))
        randomize(model, 0, keep=lambda name: is_fixed(name) or name not in encoders)
        return model.eval()

    c = IMAGEBIND_SMALL
    small = seeded(
        imagebind_model.ImageBindModel(
            vision_embed_dim=c["vision_dim"], vision_num_blocks=c["vision_blocks"],
            vision_num_heads=c["vision_heads"], audio_embed_dim=c["audio_dim"],
            audio_num_blocks=c["audio_blocks"], audio_num_heads=c["audio_heads"], out_embed_dim=c["out_dim"],
            text_embed_dim=32, text_num_blocks=1, text_num_heads=4, depth_embed_dim=32, depth_num_blocks=1,
            depth_num_heads=4, thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=4,
            imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=4,
        )
    )  # fmt: skip
    outputs.update(_imagebind_reference_run(small, inputs, "small"))
    del small
    huge = seeded(imagebind_model.imagebind_huge(pretrained=False))
    layout = {k: list(v.shape) for k, v in select_encoders(huge.state_dict()).items()}
    metadata["huge_layout"] = json.dumps(layout)
    outputs.update(_imagebind_reference_run(huge, inputs, "huge"))
    save_file({**inputs, **outputs}, OUT / "imagebind.safetensors", metadata=metadata)


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
