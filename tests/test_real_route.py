"""The whole route through files, as a user runs it: mp4 + TSV -> ``mfmjt extract`` -> ``mfmjt train
--init-from`` an MMAudio-layout ``.pth`` -> ``mfmjt export`` -> ``load_pipeline(dir).generate``.

The encoders are the small random-weight stack of ``tests/stacks.py`` registered as ``mmaudio-16k``
(the name extraction and model loading both look up); ``benchmarks/full_size_route.py`` runs the same
commands with full-size random weights read through :mod:`mfmjt.hub`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stacks import randomize, small_random_pipeline

from mfmjt.cli import main
from mfmjt.data.feature_stacks import ResolvedStack, resolve_feature_stack
from mfmjt.features import registry
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.model.network import DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX
from mfmjt.pipeline import load_pipeline
from mfmjt.toy.scene_files import write_scene_files

DURATION = 1.0  # seconds per item: two Synchformer segments, 32 latents
SMALL_NET = [
    "--variant",
    "tiny",
    "--network",
    "clip_dim=32",
    "--network",
    "sync_dim=48",
    "--network",
    "text_dim=32",
]


@pytest.fixture
def small_mmaudio_16k(monkeypatch: pytest.MonkeyPatch) -> ResolvedStack:
    """The small random stack under the name ``mmaudio-16k`` (extract's --features and exported models)."""
    resolved = ResolvedStack("mmaudio-16k", small_random_pipeline().features, {"kind": "mmaudio_16k"})
    # the one registry entry behind extract's --features, --features <model dir> and load_pipeline(dir)
    kind = registry.feature_kind("mmaudio_16k")
    small = dataclasses.replace(kind, load=lambda directory, params, device="cpu": resolved.stack)
    monkeypatch.setitem(registry._KINDS, "mmaudio_16k", small)
    return resolved


def mmaudio_layout_pth(path: Path) -> dict[str, torch.Tensor]:
    """A random network of the small architecture saved with MMAudio's keys (no Δt/guidance embedder)."""
    net = MFMJTNetwork(NetworkConfig.variant("tiny", clip_dim=32, sync_dim=48, text_dim=32))
    randomize(net, 7)
    state = {
        k: v
        for k, v in net.state_dict().items()
        if not k.startswith((DT_EMBED_PREFIX, GUIDANCE_EMBED_PREFIX))
    }
    torch.save(state, path)
    return state


def test_files_to_generated_audio(tmp_path: Path, small_mmaudio_16k: ResolvedStack) -> None:
    videos = write_scene_files(tmp_path / "vid", range(3), duration=DURATION + 0.2)
    audios = write_scene_files(tmp_path / "aud", range(100, 103), duration=DURATION + 0.3, audio_only=True)
    assert len(videos.ids) >= 2 and len(audios.ids) >= 2

    common = ["--duration", str(DURATION), "--workers", "1", "--batch-size", "2"]
    vstore, astore = tmp_path / "store_v", tmp_path / "store_a"
    assert (
        main(
            [
                "extract",
                "--videos",
                str(videos.folder),
                "--tsv",
                str(videos.tsv),
                "--out",
                str(vstore),
                *common,
            ]
        )
        == 0
    )
    assert main(["extract", "--audios", str(audios.folder), "--tsv", str(audios.tsv), "--out", str(astore),
                 "--layout", "mmaudio", *common]) == 0  # fmt: skip
    meta = json.loads((vstore / "meta.json").read_text())
    assert meta["ids"] == videos.ids  # every audible video became one item, in table order
    assert np.load(vstore / "clip_f.npy").shape == (len(videos.ids), int(DURATION * 8), 32)

    init = mmaudio_layout_pth(tmp_path / "mmaudio_tiny.pth")
    run = tmp_path / "run"
    assert main(["train", "--store", f"{vstore}:1", "--store", f"{astore}:0.3", "--out", str(run), *SMALL_NET,
                 "--init-from", str(tmp_path / "mmaudio_tiny.pth"), "--steps", "3", "--batch-size", "4",
                 "--warmup-steps", "0", "--no-progress"]) == 0  # fmt: skip
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 3

    model = tmp_path / "model"
    assert main(["export", str(run / "checkpoint_last.pt"), "--out", str(model)]) == 0
    config = json.loads((model / "config.json").read_text())
    assert config["features"]["kind"] == "mmaudio_16k"
    weights = load_file(str(model / "model.safetensors"))
    # initialised from the .pth (the latent statistics are kept as they are), then trained
    torch.testing.assert_close(weights["latent_mean"], init["latent_mean"])
    assert not torch.equal(weights["final_layer.conv.weight"], init["final_layer.conv.weight"])

    # extracting more data for this model (--features <model dir>) uses the same registered stack
    assert resolve_feature_stack(str(model)).stack is small_mmaudio_16k.stack

    pipe = load_pipeline(str(model))
    assert pipe.features.clip is small_mmaudio_16k.stack.clip  # the registered stack, nothing downloaded
    result = pipe.generate(video=videos.folder / f"{videos.ids[0]}.mp4", prompt="a ball", duration=DURATION)
    for audio in result.audio.values():
        assert audio.shape[0] >= round(DURATION * result.sample_rate)
        assert audio.shape[0] < round(DURATION * result.sample_rate) + 512  # at most one latent frame more
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_a_published_model_directory_loads_by_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_pipeline("user/repo")`` and ``MFMJT_MODEL=user/repo python app.py`` read a model directory
    uploaded to the Hub; here the repo is a snapshot in a private Hugging Face cache, read offline."""
    import shutil

    from huggingface_hub import constants

    from mfmjt.pipeline import default_model_dir

    cache = tmp_path / "hf"
    repo = cache / "models--someone--mfmjt-test"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(
        default_model_dir(), snapshot
    )  # what `huggingface-cli upload someone/mfmjt-test dir` holds
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    pipe = load_pipeline("someone/mfmjt-test")
    reference = load_pipeline(str(default_model_dir()))
    for (name, mine), (_, theirs) in zip(
        pipe.network.state_dict().items(), reference.network.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, msg=name)
    a = pipe.generate(prompt="a red ball falls", duration=1.0, seed=3).audio
    b = reference.generate(prompt="a red ball falls", duration=1.0, seed=3).audio
    for mode in a:
        np.testing.assert_array_equal(a[mode], b[mode])

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    import app

    monkeypatch.setenv("MFMJT_MODEL", "someone/mfmjt-test")
    loaders = app.loaders_from_env()
    assert list(loaders)[0] == "someone/mfmjt-test"  # the configured model first, then the registry's
    assert loaders["someone/mfmjt-test"]().network.config == pipe.network.config
