"""Training: the feature store, latent statistics, the training loop, exact resume and DDP."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from tensordict import TensorDict
from torch.utils.data import DistributedSampler

import mfmjt.meanflow
from mfmjt.cli import main
from mfmjt.config import NetworkConfig
from mfmjt.data.mix import MixedIndexStream, StoreMix, StoreSpec, held_out_items
from mfmjt.feature_store import FeatureStore, FeatureStoreWriter, latent_stats
from mfmjt.meanflow import MeanFlowConfig, meanflow_loss, sample_time_pairs
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import load_network, read_metadata
from mfmjt.train import TrainConfig, build_network, export_checkpoint, fit, lr_factor, open_stores, train

# A micro network of the tiny variant's feature sizes (clip 32, sync 24, text 32, latent 20).
MICRO = {"hidden_dim": 32, "depth": 2, "fused_depth": 1, "num_heads": 2}
SHAPES = {"latent": (16, 20), "clip_f": (4, 32), "sync_f": (16, 24), "text_f": (77, 32)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the test machine's two cores are shared, and oversubscribed OpenMP
    threads make these small ops ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_items(n: int, shapes: dict = SHAPES, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = shapes["latent"]
    return {
        "latent_mean": (rng.normal(size=(n, *latent)) * rng.uniform(0.5, 2, size=latent[1]) + 0.3).astype(
            np.float32
        ),
        "latent_std": rng.uniform(0.01, 0.1, size=(n, *latent)).astype(np.float32),
        "clip_f": rng.normal(size=(n, *shapes["clip_f"])).astype(np.float32),
        "sync_f": rng.normal(size=(n, *shapes["sync_f"])).astype(np.float32),
        "text_f": rng.normal(size=(n, *shapes["text_f"])).astype(np.float32),
        "has_video": np.arange(n) % 3 != 2,
    }


def make_store(path: Path, n: int = 4, shapes: dict = SHAPES, seed: int = 0) -> Path:
    items = random_items(n, shapes, seed)
    with FeatureStoreWriter(path, n, shapes, duration=0.5, extra={"encoder": "random"}) as writer:
        writer.write_batch(0, **items, item_ids=[f"clip{i}" for i in range(n)], captions=["a dog"] * n)
        writer.set_empty_text(np.zeros(shapes["text_f"], dtype=np.float32))
    return path


def micro_config(store: Path, out_dir: Path, **overrides) -> TrainConfig:
    settings = dict(
        store=store,
        out_dir=out_dir,
        variant="tiny",
        network_overrides=MICRO,
        steps=6,
        batch_size=4,
        lr=1e-3,
        warmup_steps=2,
        checkpoint_every=0,
        progress=False,
        meanflow=MeanFlowConfig(mean_flow_ratio=0.5),
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ feature store
def test_store_round_trip_preserves_arrays_and_metadata(tmp_path):
    items = random_items(5)
    with FeatureStoreWriter(tmp_path / "s", 5, SHAPES, duration=0.5, extra={"fps": 8}) as writer:
        writer.write_batch(0, **{k: v[:3] for k, v in items.items()}, captions=["x", "y", "z"])
        for i in (3, 4):
            writer.write(i, **{k: v[i] for k, v in items.items()}, item_id=f"id{i}", caption=f"cap{i}")
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 5 and store.duration == 0.5 and store.extra == {"fps": 8}
    assert store.ids == ["0", "1", "2", "id3", "id4"]
    assert store.captions == ["x", "y", "z", "cap3", "cap4"]
    assert store.shapes == {
        "latent_mean": (16, 20),
        "latent_std": (16, 20),
        **{k: SHAPES[k] for k in SHAPES if k != "latent"},
    }
    assert store.empty_text_features() is None
    batch = store.get_batch([4, 1])
    for name in ("latent_mean", "latent_std", "clip_f", "sync_f", "text_f"):
        assert batch[name].dtype == torch.float32
        assert torch.equal(batch[name], torch.from_numpy(items[name][[4, 1]])), name
    assert batch["has_video"].tolist() == items["has_video"][[4, 1]].tolist()
    item = store[2]
    assert item["clip_f"].shape == (4, 32) and bool(item["has_video"]) is False


def test_store_rejects_wrong_shapes_and_unfinished_writes(tmp_path):
    items = random_items(2)
    writer = FeatureStoreWriter(tmp_path / "s", 2, SHAPES)
    with pytest.raises(ValueError, match=r"clip_f must have shape \[1, 4, 32\]"):
        writer.write(0, **{**{k: v[0] for k, v in items.items()}, "clip_f": np.zeros((4, 31))})
    writer.write(0, **{k: v[0] for k, v in items.items()})
    with pytest.raises(ValueError, match="incomplete"):
        FeatureStore(tmp_path / "s")  # the writer has not been closed
    with pytest.raises(ValueError, match="1 of 2 items were never written"):
        writer.close()


def test_latent_stats_are_per_channel_mean_and_unbiased_std_over_items_and_time(tmp_path):
    store = FeatureStore(make_store(tmp_path / "s", n=6))
    means = torch.from_numpy(random_items(6)["latent_mean"]).double()
    mean, std = latent_stats(store)
    # float32 results of float64 sums: equal to float32 rounding
    torch.testing.assert_close(mean, means.mean(dim=(0, 1)).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std, means.std(dim=(0, 1)).float(), rtol=1e-6, atol=1e-6)
    # Without the value cached by the writer, the chunked computation gives the same numbers.
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    del meta["latent_stats"]
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    mean2, std2 = latent_stats(tmp_path / "s")
    assert torch.equal(mean2, mean) and torch.equal(std2, std)


# ---------------------------------------------------------------------------------- training
def test_lr_warms_up_linearly_then_decays_at_the_papers_steps():
    cfg = TrainConfig(store=Path("s"), out_dir=Path("o"), steps=400_000, warmup_steps=1000)
    assert lr_factor(0, cfg) == pytest.approx(1 / 1001)
    assert lr_factor(499, cfg) == pytest.approx(500 / 1001)
    assert lr_factor(1000, cfg) == 1.0 and lr_factor(249_999, cfg) == 1.0
    assert lr_factor(250_000, cfg) == pytest.approx(0.1)  # 2e-4 -> 2e-5
    assert lr_factor(350_000, cfg) == pytest.approx(0.01)  # -> 2e-6
    assert lr_factor(399_999, cfg) == pytest.approx(0.01)


def fixed_flow_matching_loss(net: MFMJTNetwork, store: FeatureStore, repeats: int = 16) -> float:
    """Flow-matching loss (r = t) of every item at fixed training-distribution times and noise."""
    g = torch.Generator().manual_seed(123)
    batch = store.get_batch(list(range(len(store))) * repeats)
    x = net.normalize(batch["latent_mean"])
    pairs = sample_time_pairs(x.shape[0], MeanFlowConfig(mean_flow_ratio=0.0), generator=g)
    noise = torch.randn(x.shape, generator=g)
    conds = (batch["clip_f"], batch["sync_f"], batch["text_f"])
    with torch.no_grad():
        return meanflow_loss(net, x, conds, pairs=pairs, noise=noise).loss.item()


@pytest.mark.slow
def test_training_reduces_the_loss_on_a_memorisable_store(tmp_path):
    store_path = make_store(tmp_path / "s", n=4)
    config = micro_config(store_path, tmp_path / "run", steps=50, lr_decay_at=())
    store = FeatureStore(store_path)
    before = fixed_flow_matching_loss(build_network(config, store), store)
    result = fit(config)
    after = fixed_flow_matching_loss(result.network, store)
    assert after < 0.8 * before, (before, after)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 51))
    assert {"loss", "lr", "fm_loss", "mf_loss", "grad_norm", "seconds"} <= set(log[0])
    assert log[0]["lr"] == pytest.approx(1e-3 / 3)  # warm-up: (step + 1) / (warmup + 1)


@pytest.mark.slow
def test_resuming_from_a_checkpoint_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    store = make_store(tmp_path / "s")
    full = fit(micro_config(store, tmp_path / "full", checkpoint_every=2))
    interrupted = micro_config(store, tmp_path / "parts", checkpoint_every=2)
    first = fit(TrainConfig.from_dict({**interrupted.to_dict(), "stop_after": 3}))
    assert first.step == 3 and first.export_dir is None
    resumed = fit(interrupted)
    assert resumed.step == 6 and resumed.export_dir is not None
    for name, a, b in (
        ("network", full.network, resumed.network),
        ("ema", full.ema_network, resumed.ema_network),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    strip = ("seconds", "elapsed")
    log_full, log_parts = read_log(tmp_path / "full"), read_log(tmp_path / "parts")
    assert [{k: v for k, v in r.items() if k not in strip} for r in log_full] == [
        {k: v for k, v in r.items() if k not in strip} for r in log_parts
    ]


def test_flow_matching_mode_never_calls_the_jvp(tmp_path, monkeypatch):
    calls = []
    original = mfmjt.meanflow.average_velocity_and_derivative

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(mfmjt.meanflow, "average_velocity_and_derivative", spy)
    store = make_store(tmp_path / "s")
    out = train(micro_config(store, tmp_path / "fm", steps=3, meanflow=MeanFlowConfig(mean_flow_ratio=0.0)))
    assert calls == []
    assert read_metadata(out)["objective"] == "flow_matching"
    assert all(r["mf_loss"] is None for r in read_log(tmp_path / "fm"))
    train(micro_config(store, tmp_path / "mf", steps=1, meanflow=MeanFlowConfig(mean_flow_ratio=1.0)))
    assert calls  # the spy does see the MeanFlow path


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # bf16 rms_norm, harmless
def test_export_loads_with_from_pretrained_and_records_the_objective(tmp_path):
    store = make_store(tmp_path / "s")
    result = fit(micro_config(store, tmp_path / "run", steps=2, bf16=True))
    assert result.export_dir == tmp_path / "run" / "final"
    loaded = load_network(result.export_dir)
    meta = read_metadata(result.export_dir)
    assert meta["objective"] == "meanflow" and meta["step"] == 2 and meta["duration"] == 0.5
    assert meta["training"]["network_overrides"] == MICRO
    exported = result.ema_network.state_dict()
    assert all(torch.equal(v, exported[k]) for k, v in loaded.state_dict().items())
    mean, std = latent_stats(store)
    assert torch.equal(loaded.latent_mean.flatten(), mean) and torch.equal(loaded.latent_std.flatten(), std)
    assert meta["lineage"] == [
        f"{tmp_path / 'run'}: 2 of 2 steps from scratch, meanflow, r≠t ratio 0.5, adaptive loss p 0, "
        "all-condition dropout 0, lr 0.001, batch 4"
    ]
    # a fine-tune of the export lists its parent's stages first
    child = fit(micro_config(store, tmp_path / "child", steps=1, init_from=result.export_dir))
    lineage = read_metadata(child.export_dir)["lineage"]
    assert lineage[0] == meta["lineage"][0] and len(lineage) == 2
    assert lineage[1].startswith(f"{tmp_path / 'child'}: 1 of 1 steps from {result.export_dir}, meanflow")


def test_guidance_training_runs_from_a_plain_model_and_exports_a_guidance_embedded_one(tmp_path):
    store = make_store(tmp_path / "s")
    plain = fit(micro_config(store, tmp_path / "plain", steps=1))
    guided_cfg = dict(
        network_overrides={**MICRO, "guidance_embed": True},
        meanflow=MeanFlowConfig(mean_flow_ratio=0.5, guidance_max=4.0),
        init_from=plain.export_dir,
        lr=1e-2,
    )
    result = fit(micro_config(store, tmp_path / "guided", steps=3, **guided_cfg))
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path / "guided"))
    loaded = load_network(result.export_dir)
    assert loaded.config.guidance_embed
    assert torch.count_nonzero(loaded.guidance_embed.standard.mlp[2].weight) > 0  # it trained
    assert "guidance trained for ω ≤ 4" in read_metadata(result.export_dir)["lineage"][-1]
    with pytest.raises(ValueError, match="guidance_embed=true"):
        micro_config(store, tmp_path / "bad", meanflow=MeanFlowConfig(guidance_max=4.0))


@pytest.mark.slow
def test_export_of_a_stopped_run_checkpoint_matches_its_ema_and_a_finished_runs_export(tmp_path):
    store = make_store(tmp_path / "s")
    config = micro_config(store, tmp_path / "run", steps=4, checkpoint_every=0)
    stopped = fit(TrainConfig.from_dict({**config.to_dict(), "stop_after": 2}))
    out = export_checkpoint(tmp_path / "run" / "checkpoint_last.pt", tmp_path / "step2")
    meta = read_metadata(out)
    assert meta["step"] == 2 and meta["objective"] == "meanflow" and meta["training"]["steps"] == 4
    loaded = load_network(out).state_dict()
    ema = stopped.ema_network.state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)
    finished = fit(config)  # resumes to step 4; the run's own export equals exporting its last checkpoint
    again_dir = export_checkpoint(tmp_path / "run" / "checkpoint_last.pt", tmp_path / "e")
    again = load_network(again_dir)
    own = load_network(finished.export_dir).state_dict()
    assert all(torch.equal(own[k], v) for k, v in again.state_dict().items())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in finished.export_dir.iterdir())
    checkpoint = str(tmp_path / "run" / "checkpoint_last.pt")
    assert main(["export", checkpoint, "--out", str(tmp_path / "h"), "--dtype", "float16"]) == 0
    half = load_network(tmp_path / "h").state_dict()
    assert read_metadata(tmp_path / "h")["weights_dtype"] == "float16"
    assert all(torch.equal(half[k], v.half().float()) for k, v in own.items())
    with pytest.raises(ValueError, match="not a training checkpoint"):
        torch.save({"format": "other"}, tmp_path / "bad.pt")
        export_checkpoint(tmp_path / "bad.pt", tmp_path / "bad")


def test_bad_configs_raise_value_errors_that_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        fit(micro_config(tmp_path / "missing", tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no feature store"):
        fit(micro_config(tmp_path / "empty", tmp_path / "run"))
    wrong = make_store(tmp_path / "wrong", shapes={**SHAPES, "clip_f": (4, 16)})
    with pytest.raises(ValueError, match="clip_f has 16 channels but the network's clip_dim is 32"):
        fit(micro_config(wrong, tmp_path / "run"))
    with pytest.raises(ValueError, match="batch_size"):
        micro_config(wrong, tmp_path / "run", batch_size=0)


# ------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, config: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )  # fmt: skip
    torch.set_num_threads(1)
    result = fit(TrainConfig.from_dict(config))
    torch.save(result.network.state_dict(), Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_ranks_end_with_identical_updated_weights(tmp_path):
    store = make_store(tmp_path / "s", n=6)
    config = micro_config(store, tmp_path / "run", steps=2, batch_size=2)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config.to_dict(), str(tmp_path)), nprocs=2, join=True)
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    initial = build_network(config, FeatureStore(store)).state_dict()
    assert not torch.equal(w0["final_layer.conv.weight"], initial["final_layer.conv.weight"])
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2]  # only rank 0 writes
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("requested", "local_rank", "expected"),
    [("cuda", "0", "cuda:0"), ("cuda", "3", "cuda:1"), (None, "1", "cuda:1"), ("cuda:1", "0", "cuda:1")],
)
def test_cuda_device_gets_an_index(monkeypatch, tmp_path, requested, local_rank, expected):
    """torch.cuda.set_device refuses a bare "cuda": the process's GPU index comes from LOCAL_RANK."""
    from mfmjt import train as train_module

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = TrainConfig(store=str(tmp_path), out_dir=str(tmp_path / "run"), device=requested)
    info, owned = train_module._setup_distributed(config)
    assert str(info.device) == expected and chosen == [torch.device(expected)] and not owned


# ------------------------------------------------------------------ stores of both layouts, mixes
def make_mmaudio_store(path: Path, n: int, *, video: bool, seed: int = 0, shapes: dict = SHAPES) -> Path:
    """A store in MMAudio's layout, written the way its extraction scripts write one."""
    items = random_items(n, shapes, seed)
    arrays = {"mean": items["latent_mean"], "std": items["latent_std"], "text_features": items["text_f"]}
    if video:
        arrays.update(clip_features=items["clip_f"], sync_features=items["sync_f"])
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"id{i}\tsound {i}\n" for i in range(n))
    (path.parent / f"{path.name}.tsv").write_text(f"id\t{'label' if video else 'caption'}\n{rows}")
    TensorDict({k: torch.from_numpy(v) for k, v in arrays.items()}).memmap_(path)
    return path


def test_store_mix_deals_each_store_its_share_deterministically_and_holds_out_validation_items():
    mix = StoreMix([range(100), range(30), range(7)], [2.0, 1.0, 1.0])
    assert mix.shares == [0.5, 0.25, 0.25]
    held = {0: held_out_items(100, 5)}
    stream = MixedIndexStream(mix, batch_size=6, rank=0, world_size=1, seed=3, held_out=held)
    steps = 400
    batches = [stream.batch(k) for k in range(steps)]
    counts = np.zeros(3)
    for batch in batches:
        assert len(batch) == 6
        per_store = np.bincount([mix.locate(i)[0] for i in batch], minlength=3)
        # every batch holds floor or ceil of B·share items of each store
        assert all(abs(c - 6 * w) < 1 for c, w in zip(per_store, mix.shares, strict=True))
        counts += per_store
    n = steps * 6
    for c, w in zip(counts, mix.shares, strict=True):  # well within a binomial 3-sigma band
        assert abs(c - n * w) <= 3 * math.sqrt(n * w * (1 - w))
    drawn = [mix.locate(i) for b in batches for i in b]
    assert not {i for s, i in drawn if s == 0} & set(held[0].tolist())
    first_epoch = [i for s, i in drawn if s == 1][:30]  # store 1's first 30 draws: each item once
    assert sorted(first_epoch) == list(range(30))
    # a pure function of (seed, step): a fresh stream, asked for step 250 alone, agrees
    again = MixedIndexStream(mix, batch_size=6, rank=0, world_size=1, seed=3, held_out=held)
    assert again.batch(250) == batches[250]
    other = MixedIndexStream(mix, batch_size=6, rank=0, world_size=1, seed=4, held_out=held)
    assert other.batch(0) != batches[0]
    # without weights the shares are the store sizes (plain concatenation)
    assert StoreMix([range(30), range(10)]).shares == [0.75, 0.25]
    assert StoreMix([range(10), range(30)], repeats=[3, None]).shares == [0.5, 0.5]  # MMAudio's oversampling
    with pytest.raises(ValueError, match="to every store .* or to none"):
        StoreMix([range(3), range(3)], [1.0, None])


def test_a_single_store_stream_is_the_plain_distributed_sampler_stream():
    mix = StoreMix([range(10)])
    stream = MixedIndexStream(mix, batch_size=4, rank=1, world_size=2, seed=5)
    sampler = DistributedSampler(range(10), num_replicas=2, rank=1, shuffle=True, seed=5)
    epochs = []
    for e in range(3):
        sampler.set_epoch(e)
        epochs += list(sampler)
    assert [i for k in range(3) for i in stream.batch(k)] == epochs[:12]


def test_store_specs_parse_weights_and_keep_colons_in_paths():
    assert StoreSpec.parse("runs/vgg:3") == StoreSpec(Path("runs/vgg"), 3.0)
    assert StoreSpec.parse("runs/vgg") == StoreSpec(Path("runs/vgg"), None)
    assert StoreSpec.parse("C:/data/x") == StoreSpec(Path("C:/data/x"), None)
    assert StoreSpec.parse("runs/vgg:x5") == StoreSpec(Path("runs/vgg"), repeat=5.0)
    assert str(StoreSpec.parse("runs/vgg:x5")) == "runs/vgg:x5"
    with pytest.raises(ValueError, match="positive"):
        StoreSpec.parse("runs/vgg:0")


def test_training_on_native_and_mmaudio_stores_validates_and_resumes_bit_identically(tmp_path):
    native = make_store(tmp_path / "native", n=6)
    audio = make_mmaudio_store(tmp_path / "mm" / "audiocaps", 5, video=False, seed=1)
    video = make_mmaudio_store(tmp_path / "mm" / "vgg-train", 5, video=True, seed=2)
    stores = [f"{native}:2", f"{audio}:1", f"{video}:1"]
    common = dict(steps=4, val_items=2, val_every=2, checkpoint_every=2)
    full = fit(micro_config(stores, tmp_path / "full", **common))
    parts = micro_config(stores, tmp_path / "parts", **common)
    fit(TrainConfig.from_dict({**parts.to_dict(), "stop_after": 3}))
    resumed = fit(parts)
    for a, b in ((full.network, resumed.network), (full.ema_network, resumed.ema_network)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = ("seconds", "elapsed")
    log = read_log(tmp_path / "full")
    assert [{k: v for k, v in r.items() if k not in strip} for r in log] == [
        {k: v for k, v in r.items() if k not in strip} for r in read_log(tmp_path / "parts")
    ]
    validated = [r["step"] for r in log if "val_one_step_mse" in r]
    assert validated == [2, 4]
    assert all(
        math.isfinite(r[k]) for r in log if "val_fm_loss" in r for k in ("val_one_step_mse", "val_fm_loss")
    )
    assert -1 <= log[-1]["val_one_step_cos"] <= 1
    meta = read_metadata(full.export_dir)
    assert meta["training"]["store"] == stores and meta["duration"] == 0.5
    # the latent statistics come from the first store with video (here the native one)
    mean, _ = latent_stats(native)
    assert torch.equal(full.ema_network.latent_mean.flatten(), mean)


def test_validation_of_a_zero_output_network_matches_the_closed_form(tmp_path):
    """A fresh network's final layer is zero, so u = 0: x̂ = ε and the flow-matching error is |ε - x|²."""
    from mfmjt.data.mix import StoreMix as Mix
    from mfmjt.validation import VALIDATION_NOISE_SEED, validate

    store = FeatureStore(make_store(tmp_path / "s", n=5))
    config = micro_config(tmp_path / "s", tmp_path / "run")
    net = build_network(config, store)
    metrics = validate(net, Mix([store]), [4, 1, 3], batch_size=8)
    x = net.normalize(store.get_batch([4, 1, 3])["latent_mean"])
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(VALIDATION_NOISE_SEED))
    err = (eps - x).square().mean().item()
    assert metrics["val_one_step_mse"] == pytest.approx(err, rel=1e-5)
    assert metrics["val_fm_loss"] == pytest.approx(err, rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(eps.flatten(1), x.flatten(1)).mean().item()
    assert metrics["val_one_step_cos"] == pytest.approx(cos, rel=1e-5, abs=1e-6)


def test_mismatched_stores_are_refused_before_training_naming_array_and_expected_shape(tmp_path):
    native = make_store(tmp_path / "native")
    wrong_clip = make_mmaudio_store(
        tmp_path / "mm" / "a", 3, video=True, shapes={**SHAPES, "clip_f": (4, 16)}
    )
    with pytest.raises(ValueError) as err:
        fit(micro_config([str(native), str(wrong_clip)], tmp_path / "run1"))
    assert "clip_features (clip_f) has 16 channels but the network's clip_dim is 32" in str(err.value)
    assert "expected [4, 32]" in str(err.value)
    longer = make_mmaudio_store(tmp_path / "mm" / "b", 3, video=False, shapes={**SHAPES, "latent": (20, 20)})
    with pytest.raises(
        ValueError, match=r"mean \(latent_mean\) has per-item shape \[20, 20\], expected \[16, 20\]"
    ):
        fit(micro_config([str(native), str(longer)], tmp_path / "run2"))
    short_text = make_store(tmp_path / "t", shapes={**SHAPES, "text_f": (76, 32)})
    with pytest.raises(ValueError, match=r"text_f has 76 tokens but the network's text_seq_len is 77"):
        fit(micro_config(short_text, tmp_path / "run3"))
    for run in ("run1", "run2", "run3"):
        assert not (tmp_path / run).exists()  # refused before anything was written


def test_init_from_an_mmaudio_pth_and_a_registry_name(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import mfmjt.hub
    from mfmjt.train import _load_initial_weights

    golden = load_file("tests/goldens/golden_network_tiny_v1.state.safetensors")  # MMAudio's own keys
    pth = tmp_path / "mmaudio_tiny.pth"
    torch.save(golden, pth)
    store = make_store(tmp_path / "s")
    net = build_network(
        micro_config(store, tmp_path / "run", network_overrides={}, init_from=str(pth)), FeatureStore(store)
    )
    state = net.state_dict()
    differ = [k for k, v in golden.items() if not torch.equal(state[k], v)]
    assert differ == ["empty_string_feat"]  # the store's empty-string features replace the checkpoint's
    assert not torch.any(state["empty_string_feat"])
    assert not torch.any(state["dt_embed.mlp.2.weight"])  # Δt ignored: MMAudio's flow-matching model
    # a registry name resolves the registry's file (md5-checked download), then loads it the same way
    asked = []

    def fake_resolve(entry, **kwargs):
        asked.append(entry)
        return pth

    monkeypatch.setattr(mfmjt.hub, "resolve_file", fake_resolve)
    fresh = MFMJTNetwork(NetworkConfig.variant("tiny"))
    _load_initial_weights(fresh, "mmaudio-small-16k", "small_16k")
    assert asked[0].md5 == "af93cde404179f58e3919ac085b8033b"
    assert torch.equal(fresh.state_dict()["joint_blocks.0.latent_block.attn.qkv.weight"],
                       golden["joint_blocks.0.latent_block.attn.qkv.weight"])  # fmt: skip
    with pytest.raises(ValueError, match="is MMAudio's small_16k network; train it with --variant small_16k"):
        _load_initial_weights(fresh, "mmaudio-small-16k", "tiny")
    with pytest.raises(
        ValueError, match="does not fit variant 'tiny' .*hidden_dim|does not fit variant 'tiny'"
    ):
        _load_initial_weights(
            MFMJTNetwork(NetworkConfig.variant("tiny", hidden_dim=32, num_heads=2)), pth, "tiny"
        )
    with pytest.raises(ValueError, match="not found on disk and not a known name"):
        _load_initial_weights(fresh, "no-such-model", "tiny")


def test_paper_variants_default_to_the_papers_recipe_and_tiny_keeps_its_own():
    paper = TrainConfig(store="s", out_dir="o", variant="small_16k")
    assert (paper.steps, paper.batch_size, paper.lr, paper.betas, paper.weight_decay) == (
        400_000, 64, 2e-4, (0.9, 0.95), 1e-6
    )  # fmt: skip
    assert paper.warmup_steps == 1000 and paper.bf16 is True
    assert lr_factor(249_999, paper) == 1.0 and lr_factor(250_000, paper) == pytest.approx(0.1)
    assert lr_factor(350_000, paper) == pytest.approx(0.01)
    assert paper.ema_decay == pytest.approx(0.99995)  # MMAudio's EMA width: 5 % of the run
    for name in ("small_44k", "medium_44k", "large_44k", "large_44k_v2"):
        cfg = TrainConfig(store="s", out_dir="o", variant=name)
        assert (cfg.steps, cfg.bf16, cfg.ema_decay) == (paper.steps, True, paper.ema_decay)
    assert TrainConfig(store="s", out_dir="o", variant="small_16k", steps=20_000).ema_decay == pytest.approx(
        0.999
    )
    tiny = TrainConfig(store="s", out_dir="o")
    assert (tiny.steps, tiny.bf16, tiny.ema_decay, tiny.lr, tiny.batch_size) == (
        10_000,
        False,
        0.999,
        2e-4,
        64,
    )
    explicit = TrainConfig(store="s", out_dir="o", variant="small_16k", bf16=False, ema_decay=0.9)
    assert explicit.bf16 is False and explicit.ema_decay == 0.9


def test_train_flags_are_generated_from_the_config_fields():
    from dataclasses import fields

    from mfmjt.train_config import add_train_arguments

    parser = add_train_arguments(argparse.ArgumentParser())
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in fields(TrainConfig) if f.name != "meanflow"} <= dests
    assert {f.name for f in fields(MeanFlowConfig)} <= dests
    minimal = TrainConfig.from_args(parser.parse_args(["--store", "s", "--out", "o"]))
    assert minimal == TrainConfig(store="s", out_dir="o")  # the dataclass is the only source of defaults
    readme = ["--store", "runs/store", "--out", "runs/mf", "--variant", "tiny", "--network", "hidden_dim=96",
              "--network", "sync_dim=48", "--steps", "3000", "--bf16", "--no-resume", "--lr-decay-at",
              "--mean-flow-ratio", "0.5", "--stop-after", "10", "--no-progress"]  # fmt: skip
    cfg = TrainConfig.from_args(parser.parse_args(readme))
    assert cfg.store == ("runs/store",) and cfg.network_overrides == {"hidden_dim": 96, "sync_dim": 48}
    assert (cfg.steps, cfg.bf16, cfg.resume, cfg.progress, cfg.lr_decay_at) == (3000, True, False, False, ())
    assert cfg.meanflow == MeanFlowConfig(mean_flow_ratio=0.5) and cfg.stop_after == 10
    mix = TrainConfig.from_args(parser.parse_args(["--store", "a:3", "--store", "b", "--out", "o"]))
    assert [str(s) for s in mix.store_specs] == ["a:3", "b"]


def test_empty_text_comes_from_mmaudios_empty_string_file_for_stores_without_one(tmp_path):
    video = make_mmaudio_store(tmp_path / "mm" / "vgg", 3, video=True)
    feats = torch.randn(1, 77, 32)  # MMAudio's ext_weights/empty_string.pth holds [1, 77, D]
    torch.save(feats, tmp_path / "empty_string.pth")
    config = micro_config(str(video), tmp_path / "run", empty_text=str(tmp_path / "empty_string.pth"))
    net = build_network(config, open_stores(config).mix)
    assert torch.equal(net.empty_string_feat, feats[0])
    np.save(tmp_path / "bad.npy", np.zeros((76, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"bad.npy has shape \[76, 32\], expected \[77, 32\]"):
        bad = micro_config(str(video), tmp_path / "r", empty_text=str(tmp_path / "bad.npy"))
        build_network(bad, open_stores(bad).mix)


def test_training_state_round_trips_through_its_checkpoint(tmp_path):
    from mfmjt.train import RunData, _new_state, _setup_distributed

    store = make_store(tmp_path / "s")
    config = micro_config(store, tmp_path / "run", steps=3)
    info, _ = _setup_distributed(config)
    data = open_stores(config)
    state = _new_state(config, data, info)
    fit(config)  # a finished run leaves its checkpoint at step 3
    assert isinstance(data, RunData)
    state.load(tmp_path / "run" / "checkpoint_last.pt")
    assert state.step == 3 and state.ema.num_updates == 3 and state.scheduler.last_epoch == 3
    state.save(tmp_path / "copy.pt")
    a = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "copy.pt", weights_only=True)
    assert a.keys() == b.keys() and a["step"] == b["step"] and a["train_config"] == b["train_config"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["rng"][0]["generator"], b["rng"][0]["generator"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
