"""Training: the feature store, latent statistics, the training loop, exact resume and DDP."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import mfmjt.meanflow
from mfmjt.cli import main
from mfmjt.feature_store import FeatureStore, FeatureStoreWriter, latent_stats
from mfmjt.meanflow import MeanFlowConfig, meanflow_loss, sample_time_pairs
from mfmjt.model import MFMJTNetwork
from mfmjt.model.network import read_metadata
from mfmjt.train import TrainConfig, build_network, export_checkpoint, fit, lr_factor, train

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
    loaded = MFMJTNetwork.from_pretrained(result.export_dir)
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
    loaded = MFMJTNetwork.from_pretrained(result.export_dir)
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
    loaded = MFMJTNetwork.from_pretrained(out).state_dict()
    ema = stopped.ema_network.state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)
    finished = fit(config)  # resumes to step 4; the run's own export equals exporting its last checkpoint
    again_dir = export_checkpoint(tmp_path / "run" / "checkpoint_last.pt", tmp_path / "e")
    again = MFMJTNetwork.from_pretrained(again_dir)
    own = MFMJTNetwork.from_pretrained(finished.export_dir).state_dict()
    assert all(torch.equal(own[k], v) for k, v in again.state_dict().items())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in finished.export_dir.iterdir())
    checkpoint = str(tmp_path / "run" / "checkpoint_last.pt")
    assert main(["export", checkpoint, "--out", str(tmp_path / "h"), "--dtype", "float16"]) == 0
    half = MFMJTNetwork.from_pretrained(tmp_path / "h").state_dict()
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
