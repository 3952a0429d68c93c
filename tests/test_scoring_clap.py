"""The CLAP extractors (laion_clap, ms_clap) reproduce the reference packages, loading checkpoints in the
publishers' layouts.

Goldens (tests/goldens/scoring/{laion_clap,ms_clap}.safetensors, made by make_goldens.py there) hold
the reference's outputs for seeded random weights drawn under the reference's own tensor names, those
names and shapes, the inputs, the captions and the reference's token ids. The test draws the same
tensors again, writes them as a checkpoint file in the publisher's layout (laion_clap: ``state_dict``
with ``module.`` prefixes; msclap: ``model``) and loads it through the extractor's key conversion. The
tokenizers are small byte-level BPE vocabularies of the real tokenizer classes (the published ones
cannot be downloaded here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

from mfmjt import hub
from mfmjt.scoring.extractor import AudioExtractor, TextExtractor
from mfmjt.scoring.extractors import get_extractor

pytest.importorskip("transformers", reason="the eval extra is not installed")
pytest.importorskip("torchlibrosa", reason="the eval extra is not installed")

from mfmjt.scoring.extractors import _htsat  # noqa: E402  (needs the eval extra)
from mfmjt.scoring.extractors._weights import random_tensor  # noqa: E402

GOLDENS = Path(__file__).parent / "goldens" / "scoring"
TOKENIZERS = GOLDENS / "tokenizers"
RTOL = 1e-4  # max abs error relative to the reference output's largest magnitude

# name -> (tokenizer folder, front end (rate, window, hop, fmin, fmax), the HTSAT's prefix, layout)
CASES = {
    "laion_clap": ("roberta", (48000, 1024, 480, 50, 14000), "audio_branch."),
    "ms_clap": ("gpt2", (32000, 1024, 320, 50, 14000), "audio_encoder.base.htsat."),
}


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual.astype(np.float64) - expected).max())
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} x {scale:.3g}"


def golden(name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = str(GOLDENS / f"{name}.safetensors")
    with safe_open(path, "np") as f:
        meta = f.metadata()
    return load_file(path), meta


def reference_checkpoint(name: str, path: Path) -> Path:
    """The golden's random weights, under the reference's names, saved in the publisher's layout."""
    _, meta = golden(name)
    _, frontend_args, prefix = CASES[name]
    state = {k: random_tensor(0, k, shape) for k, shape in json.loads(meta["shapes"]).items()}
    frontend = _htsat.LogMel(*frontend_args)  # torchlibrosa's kernels, as the reference stores them
    state.update({prefix + k: v for k, v in frontend.state_dict().items()})
    if name == "laion_clap":
        torch.save({"epoch": 15, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    else:
        torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request, tmp_path_factory):
    name = request.param
    path = reference_checkpoint(name, tmp_path_factory.mktemp(name) / "checkpoint.pt")
    ext = get_extractor(name, weights=path, tokenizer=TOKENIZERS / CASES[name][0])
    path.unlink()  # several hundred MB
    return name, ext


@pytest.mark.slow  # two full-size models (~150M parameters each) built and run on CPU
def test_clap_matches_the_reference_package(loaded):
    name, ext = loaded
    g, meta = golden(name)
    captions = json.loads(meta["captions"])
    assert isinstance(ext, AudioExtractor) and isinstance(ext, TextExtractor)
    assert ext.sample_rate == {"laion_clap": 48000, "ms_clap": 44100}[name]
    tokens = ext.tokenize(captions)
    np.testing.assert_array_equal(tokens["input_ids"].numpy(), g["input_ids"])
    np.testing.assert_array_equal(tokens["attention_mask"].numpy(), g["attention_mask"])
    wav = list(g["input_pcm16"].astype(np.float32) / 32768)
    audio = ext.audio(wav)["embedding"]
    text = ext.text(captions)["embedding"]
    assert_close(audio, g["audio_embedding"])
    assert_close(text, g["text_embedding"])
    assert not np.allclose(text[0], text[1], atol=1e-3) and not np.allclose(audio[0], audio[1], atol=1e-3)
    if name == "laion_clap":  # unit vectors, as laion_clap returns them
        np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_clap_crops_long_clips_at_the_start(loaded):
    """Past the model's input (LAION-CLAP 10 s, MS-CLAP 7 s) only the first samples count (the
    references cut at a random offset; see the modules' docs)."""
    name, ext = loaded
    g, _ = golden(name)
    rate, seconds = ext.sample_rate, {"laion_clap": 10, "ms_clap": 7}[name]
    clip = np.resize(g["input_pcm16"][0].astype(np.float32) / 32768, rate * seconds)  # repeated
    longer = np.concatenate([clip, np.full(rate, 0.5, dtype=np.float32)])
    assert_close(ext.audio([longer])["embedding"], ext.audio([clip])["embedding"], 1e-5)


@pytest.mark.slow
def test_mfmjt_score_gives_the_clap_column(loaded, tmp_path):
    """``score(..., metric_names=[key])`` reads the files, removes the mean for LAION-CLAP only (as
    av-benchmark's loaders do) and averages the caption-audio cosines of the names on both sides."""
    import soundfile as sf

    from mfmjt.scoring import score
    from mfmjt.scoring.metrics import cosine_score

    name, ext = loaded
    g, meta = golden(name)
    captions = dict(zip(("a", "b"), json.loads(meta["captions"]), strict=True))
    wav = g["input_pcm16"].astype(np.float32) / 32768 + np.float32(0.05)  # a DC offset
    for stem, x in zip(captions, wav, strict=True):
        sf.write(tmp_path / f"{stem}.wav", x, ext.sample_rate, subtype="FLOAT")
    key = {"laion_clap": "laion_clap", "ms_clap": "clap"}[name]
    result = score(tmp_path, captions=captions, metric_names=[key], extractors={name: ext}, progress=False)
    dc_removed = name == "laion_clap"
    audio = ext.audio([x - x.mean() if dc_removed else x for x in wav])["embedding"]
    expected = cosine_score(ext.text(list(captions.values()))["embedding"], audio)
    assert result.counts[key] == 2
    assert result.values[key] == pytest.approx(expected, abs=1e-5)


def test_checkpoint_conversion_renames_every_htsat_tensor():
    """The HTSAT block layout (qkv stacked along the output axis) maps onto transformers' one."""
    q, k, v = (torch.full((4, 4), float(i)) for i in range(3))
    state = {
        "audio_branch.layers.0.blocks.1.attn.qkv.weight": torch.cat([q, k, v]),
        "audio_branch.layers.0.blocks.1.norm1.bias": torch.ones(4),
        "audio_branch.layers.0.blocks.1.attn_mask": torch.ones(2),
        "audio_branch.bn0.running_var": torch.ones(64),
        "audio_branch.logmel_extractor.melW": torch.ones(3),
        "audio_branch.tscam_conv.weight": torch.ones(1),
        "text_branch.x": torch.ones(1),
    }
    out = _htsat.convert_htsat(state, "audio_branch.", "enc.")
    block = "enc.layers.0.blocks.1."
    assert sorted(out) == sorted([
        block + "attention.self.query.weight", block + "attention.self.key.weight",
        block + "attention.self.value.weight", block + "layernorm_before.bias",
        "enc.batch_norm.running_var", "frontend.logmel_extractor.melW",
    ])  # fmt: skip
    for i, part in enumerate(("query", "key", "value")):
        assert torch.equal(out[block + f"attention.self.{part}.weight"], torch.full((4, 4), float(i)))


def test_repeat_pad_is_laion_clap_repeatpad():
    wav = torch.arange(1.0, 4.0)[None]  # 3 samples -> 8: two whole copies, then zeros
    assert _htsat.repeat_pad(wav, 8).tolist() == [[1, 2, 3, 1, 2, 3, 0, 0]]
    assert _htsat.repeat_pad(wav, 2).tolist() == [[1, 2]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_offline_names_checkpoint_and_tokenizer(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # none cached
    monkeypatch.setenv(hub.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    module = __import__(f"mfmjt.scoring.extractors.{name}", fromlist=["WEIGHTS", "TOKENIZER"])
    with pytest.raises(hub.WeightsOfflineError) as err:
        get_extractor(name)
    assert module.WEIGHTS.url in str(err.value) and hub.WEIGHTS_DIR_ENV in str(err.value)
    # the checkpoint on disk (any file: it is checked when loaded), the tokenizer still missing
    (tmp_path / "empty" / module.WEIGHTS.filename).write_bytes(b"")
    with pytest.raises(hub.WeightsOfflineError) as err:
        get_extractor(name)
    hub_id, folder = module.TOKENIZER[1:]
    assert f"https://huggingface.co/{hub_id}" in str(err.value) and f"{folder}/" in str(err.value)


def test_a_missing_tokenizer_folder_is_one_sentence(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "vocab.json").write_text("{}")
    for folder in (tmp_path / "nope", tmp_path / "half"):
        with pytest.raises(FileNotFoundError, match="does not hold vocab.json and merges.txt; pass a folder"):
            get_extractor("ms_clap", weights="random", tokenizer=folder)
