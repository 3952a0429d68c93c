"""MMAudio's extracted-feature layout: reading directories written by tensordict the way MMAudio's
extraction scripts write them, and writing ones tensordict reads back."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from mfmjt.data.mmaudio_store import MMAudioStore, MMAudioStoreWriter, tsv_path
from mfmjt.data.stores import (
    TrainingStore,
    open_feature_store,
    store_has_video,
    store_latent_stats,
    store_layout,
)
from mfmjt.feature_store import FeatureStoreWriter

# MMAudio's 8 s, 16 kHz per-item shapes, with the channel sizes shrunk to keep the files small.
LATENT, CLIP, SYNC, TEXT = (250, 20), (64, 16), (192, 12), (77, 8)


def mmaudio_video_arrays(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "mean": torch.randn(n, *LATENT, generator=g) * 2 + 0.5,
        "std": torch.rand(n, *LATENT, generator=g) * 0.1,
        "clip_features": torch.randn(n, *CLIP, generator=g),
        "sync_features": torch.randn(n, *SYNC, generator=g),
        "text_features": torch.randn(n, *TEXT, generator=g),
    }


def write_like_mmaudio(directory, arrays: dict[str, torch.Tensor], ids, labels, column: str) -> None:
    """What MMAudio's extract_*_training_latents.py do: a pandas-style TSV beside the directory, then
    ``TensorDict(stacked).memmap_(directory)``."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", column])
        writer.writerows(zip(ids, labels, strict=True))
    TensorDict(arrays).memmap_(directory)


def test_reads_a_tensordict_written_video_store_with_our_names(tmp_path):
    arrays = mmaudio_video_arrays(5)
    ids = ["-0abc_000030", "0123", "x", "y", "z"]  # "0123" must stay a string, not become 123
    labels = ["dog barking", 'a "quoted"\tlabel', "c", "d", "e"]
    write_like_mmaudio(tmp_path / "vgg-train", arrays, ids, labels, "label")
    assert store_layout(tmp_path / "vgg-train") == "mmaudio"
    store = open_feature_store(tmp_path / "vgg-train")
    assert isinstance(store, MMAudioStore) and store.has_video and len(store) == 5
    assert isinstance(store, TrainingStore)
    assert store.ids == ids and store.captions == labels
    assert store.duration == 8.0 and store.latent_dim == 20
    assert store.shapes == {
        "latent_mean": LATENT,
        "latent_std": LATENT,
        "clip_f": CLIP,
        "sync_f": SYNC,
        "text_f": TEXT,
    }
    batch = store.get_batch([3, 0, 3])
    for ours, theirs in (("latent_mean", "mean"), ("latent_std", "std"), ("clip_f", "clip_features"),
                         ("sync_f", "sync_features"), ("text_f", "text_features")):  # fmt: skip
        assert torch.equal(batch[ours], arrays[theirs][[3, 0, 3]]), ours
    assert batch["has_video"].tolist() == [True] * 3 and batch["index"].tolist() == [3, 0, 3]
    assert store_has_video(store).all()
    # MMAudio's compute_latent_stats: mean and (unbiased) std of `mean` over items and time
    mean, std = store_latent_stats(store)
    torch.testing.assert_close(mean, arrays["mean"].double().mean(dim=(0, 1)).float())
    torch.testing.assert_close(std, arrays["mean"].double().std(dim=(0, 1)).float())


def test_reads_an_audio_text_store_and_fills_zero_video_features(tmp_path):
    arrays = {k: v for k, v in mmaudio_video_arrays(4, seed=1).items() if "clip" not in k and "sync" not in k}
    write_like_mmaudio(tmp_path / "audiocaps", arrays, ["a", "b", "c", "d"], ["w", "x", "y", "z"], "caption")
    store = open_feature_store(tmp_path / "audiocaps")
    assert not store.has_video and store.captions == ["w", "x", "y", "z"]
    assert store.duration == 8.0  # from 250 latents at 31.25 per second
    # MMAudio's data_dim at 8 s: 64 CLIP frames of 1024, 192 Synchformer tokens of 768
    assert store.shapes["clip_f"] == (64, 1024) and store.shapes["sync_f"] == (192, 768)
    store.set_video_fill((64, 16), (192, 12))
    batch = store.get_batch([1, 2])
    assert batch["clip_f"].shape == (2, *CLIP) and not batch["clip_f"].any() and not batch["sync_f"].any()
    assert batch["has_video"].tolist() == [False, False]
    assert torch.equal(batch["text_f"], arrays["text_features"][[1, 2]])
    assert not store_has_video(store).any()
    with pytest.raises(ValueError, match="stores no clip_features"):
        store.array("clip_features")


def test_reader_refuses_inconsistent_directories(tmp_path):
    arrays = mmaudio_video_arrays(3)
    write_like_mmaudio(tmp_path / "s", arrays, ["a", "b"], ["x", "y"], "label")  # TSV one short
    with pytest.raises(ValueError, match=r"s\.tsv lists 2 items but .* holds 3"):
        MMAudioStore(tmp_path / "s")
    tsv_path(tmp_path / "s").unlink()
    with pytest.raises(ValueError, match="has no TSV"):
        MMAudioStore(tmp_path / "s")
    del arrays["sync_features"]
    write_like_mmaudio(tmp_path / "t", arrays, ["a", "b", "c"], ["x", "y", "z"], "label")
    with pytest.raises(ValueError, match="only one of clip_features/sync_features"):
        MMAudioStore(tmp_path / "t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="expected either an mfmjt store .* or MMAudio's"):
        open_feature_store(tmp_path / "empty")


def test_native_stores_are_detected_as_such(tmp_path):
    shapes = {"latent": (4, 20), "clip_f": (2, 8), "sync_f": (8, 4), "text_f": (77, 8)}
    with FeatureStoreWriter(tmp_path / "n", 2, shapes) as writer:
        rng = np.random.default_rng(0)
        writer.write_batch(0, **{k: rng.normal(size=(2, *shapes.get(k, shapes["latent"]))) for k in
                                 ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f")},
                           has_video=[True, False])  # fmt: skip
    assert store_layout(tmp_path / "n") == "mfmjt"
    store = open_feature_store(tmp_path / "n")
    assert isinstance(store, TrainingStore)
    assert store_has_video(store).tolist() == [True, False]


@pytest.mark.parametrize("video", [True, False])
def test_writer_output_is_read_back_by_tensordict_itself_and_by_the_reader(tmp_path, video):
    arrays = mmaudio_video_arrays(6, seed=2)
    if not video:
        arrays = {k: v for k, v in arrays.items() if k in ("mean", "std", "text_features")}
    shapes = {"latent": LATENT, "text_f": TEXT, **({"clip_f": CLIP, "sync_f": SYNC} if video else {})}
    ids = [f"clip{i}" for i in range(6)]
    captions = [f"caption {i}" for i in range(6)]
    out = tmp_path / ("vgg-train" if video else "audiocaps")
    writer = MMAudioStoreWriter.create(out, ids, captions, shapes)
    assert writer.pending == list(range(6))
    writer.write_batch([4, 1], **{k: v[[4, 1]] for k, v in arrays.items()})  # MMAudio's names
    ours = {"mean": "latent_mean", "std": "latent_std", "text_features": "text_f", "clip_features": "clip_f",
            "sync_features": "sync_f"}  # fmt: skip
    rest = ["clip0", "clip2", "clip3", "clip5"]  # by id, with our names
    writer.write_batch(rest, **{ours[k]: v[[0, 2, 3, 5]] for k, v in arrays.items()})
    assert writer.close() == out
    td = TensorDict.load_memmap(out)
    assert set(td.keys()) == set(arrays)
    for key, value in arrays.items():
        assert torch.equal(torch.as_tensor(td[key]), value), key
    with open(tsv_path(out), newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["id", "label" if video else "caption"] and rows[1:] == [
        list(r) for r in zip(ids, captions, strict=True)
    ]
    store = MMAudioStore(out)
    assert store.has_video is video and store.ids == ids
    assert not any(p.name.startswith(".mfmjt") for p in out.iterdir())


def test_writer_resumes_an_interrupted_store_and_refuses_a_different_one(tmp_path):
    arrays = mmaudio_video_arrays(4, seed=3)
    shapes = {"latent": LATENT, "clip_f": CLIP, "sync_f": SYNC, "text_f": TEXT}
    ids, caps = ["a", "b", "c", "d"], ["1", "2", "3", "4"]
    first = MMAudioStoreWriter.create(tmp_path / "s", ids, caps, shapes)
    first.write_batch([0, 2], **{k: v[[0, 2]] for k, v in arrays.items()})
    del first  # the process dies here
    with pytest.raises(ValueError, match="incomplete"):
        MMAudioStore(tmp_path / "s")
    resumed = MMAudioStoreWriter.create(tmp_path / "s", ids, caps, shapes)
    assert resumed.pending == [1, 3]
    resumed.write_batch([1, 3], **{k: v[[1, 3]] for k, v in arrays.items()})
    resumed.close()
    batch = MMAudioStore(tmp_path / "s").get_batch([0, 1, 2, 3])
    assert torch.equal(batch["clip_f"], arrays["clip_features"]) and torch.equal(
        batch["latent_mean"], arrays["mean"]
    )
    again = MMAudioStoreWriter.create(tmp_path / "s", ids, caps, shapes)  # complete: nothing to do
    assert again.pending == [] and again.close() == tmp_path / "s"
    with pytest.raises(ValueError, match="complete store of other items"):
        MMAudioStoreWriter.create(tmp_path / "s", ids, ["x"] * 4, shapes)
    second = MMAudioStoreWriter.create(tmp_path / "t", ids, caps, shapes)
    second.write_batch([0], **{k: v[[0]] for k, v in arrays.items()})
    with pytest.raises(ValueError, match="its captions differ"):
        MMAudioStoreWriter.create(tmp_path / "t", ids, ["x"] * 4, shapes)
    replaced = MMAudioStoreWriter.create(tmp_path / "t", ids, ["x"] * 4, shapes, overwrite=True)
    assert replaced.pending == [0, 1, 2, 3]


def test_writer_rejects_wrong_shapes_missing_arrays_and_unwritten_items(tmp_path):
    arrays = mmaudio_video_arrays(2)
    shapes = {"latent": LATENT, "clip_f": CLIP, "sync_f": SYNC, "text_f": TEXT}
    writer = MMAudioStoreWriter.create(tmp_path / "s", ["a", "b"], ["x", "y"], shapes)
    bad = {**arrays, "clip_features": torch.zeros(2, 64, 15)}
    with pytest.raises(
        ValueError, match=r"clip_features \(clip_f\) must have shape \[2, 64, 16\], got \[2, 64, 15\]"
    ):
        writer.write_batch([0, 1], **bad)
    with pytest.raises(ValueError, match="needs exactly"):
        writer.write_batch([0, 1], **{k: v for k, v in arrays.items() if k != "sync_features"})
    with pytest.raises(ValueError, match="non-finite"):
        writer.write_batch([0, 1], **{**arrays, "mean": torch.full((2, *LATENT), float("nan"))})
    writer.write_batch(["b"], **{k: v[[1]] for k, v in arrays.items()})
    with pytest.raises(ValueError, match="1 of 2 items were never written"):
        writer.close()
    with pytest.raises(ValueError, match="ids must be unique"):
        MMAudioStoreWriter.create(tmp_path / "u", ["a", "a"], ["x", "y"], shapes)
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["clip_features"]["shape"] == [2, *CLIP] and meta["mean"]["dtype"] == "torch.float32"


@pytest.mark.parametrize(("array", "length"), [("clip_features", 50), ("sync_features", 144)])
def test_a_store_whose_video_features_are_too_short_names_them_not_the_latents(tmp_path, array, length):
    from mfmjt.config import NetworkConfig
    from mfmjt.data.compat import store_problems

    arrays = mmaudio_video_arrays(3)
    arrays[array] = arrays[array][:, :length]
    write_like_mmaudio(tmp_path / "v", arrays, ["a", "b", "c"], ["x", "y", "z"], "label")
    store = MMAudioStore(tmp_path / "v")
    assert store.duration == 8.0  # the latents' length: 250 latent frames are 8 s at 16 kHz
    cfg = NetworkConfig.variant("tiny", clip_dim=CLIP[1], sync_dim=SYNC[1], text_dim=TEXT[1])
    problems = store_problems([store], cfg)
    assert problems and all(array in p for p in problems), problems
    assert not any(p.split(": ", 1)[1].startswith(("mean", "std")) for p in problems), problems
