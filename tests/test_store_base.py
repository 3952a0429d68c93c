"""The one store base: both layouts, holding the same items, answer the dataset protocol alike."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mfmjt.data.mmaudio_store import MMAudioStoreWriter
from mfmjt.data.stores import TrainingStoreBase, open_feature_store
from mfmjt.feature_store import FeatureStoreWriter

SHAPES = {"latent": (250, 4), "clip_f": (64, 6), "sync_f": (192, 5), "text_f": (77, 3)}


def _items(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    names = ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f")
    per_item = {"latent_mean": SHAPES["latent"], "latent_std": SHAPES["latent"]}
    return {
        k: rng.standard_normal((n, *per_item.get(k, SHAPES.get(k, ())))).astype(np.float32) for k in names
    }


def test_both_layouts_share_one_base_and_give_equal_batches(tmp_path):
    items, ids, captions = _items(4), ["a", "b", "c", "d"], ["w", "x", "y", "z"]
    with FeatureStoreWriter(tmp_path / "ours", 4, SHAPES, duration=8.0) as writer:
        writer.write_batch(0, **items, item_ids=ids, captions=captions)
    with MMAudioStoreWriter.create(tmp_path / "theirs", ids, captions, SHAPES) as writer:
        writer.write_batch([0, 1, 2, 3], **items)
    ours, theirs = open_feature_store(tmp_path / "ours"), open_feature_store(tmp_path / "theirs")
    for store in (ours, theirs):
        assert isinstance(store, TrainingStoreBase)
        assert len(store) == 4 and store.ids == ids and store.captions == captions
        assert store.has_audio and store.latent_dim == 4 and store.duration == 8.0
    a, b = ours.get_batch([3, 0]), theirs.get_batch([3, 0])
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    torch.testing.assert_close(a["text_f"], torch.from_numpy(items["text_f"][[3, 0]]), rtol=0, atol=0)
    assert a["index"].tolist() == [3, 0] and a["has_video"].tolist() == [True, True]
    # negative items count from the end; out-of-range ones are refused alike
    for store in (ours, theirs):
        torch.testing.assert_close(store[-1]["clip_f"], torch.from_numpy(items["clip_f"][3]), rtol=0, atol=0)
        with pytest.raises(IndexError, match="out of range for a store of 4"):
            store[4]
        with pytest.raises(IndexError, match=r"indices must be in \[0, 4\)"):
            store.get_batch([0, 4])
        # memory maps are opened per process: a pickled store (a DataLoader worker's copy) reopens them
        store.get_batch([0])
        copy = pickle.loads(pickle.dumps(store))
        assert copy._arrays is None
        torch.testing.assert_close(copy.get_batch([2])["sync_f"], store.get_batch([2])["sync_f"])
        batches = list(DataLoader(store, batch_size=2, collate_fn=lambda b: b))
        assert [batch["index"].tolist() for batch in batches] == [[0, 1], [2, 3]]
