"""One resolver (mfmjt.resolve): every kind of model name, in every command that takes one.

Kinds: 'default', an MMAudio spelling, a model directory (and a file inside it), a .pth and a
.safetensors state dict, a Hugging Face repo id (``snapshot_download`` replaced by a copy of a local
directory: nothing is downloaded). Commands: load_pipeline, train --init-from, distill --teacher,
convert, the extraction's feature stacks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mfmjt import hub, resolve
from mfmjt.cli import main
from mfmjt.config import NetworkConfig
from mfmjt.data.feature_stacks import resolve_feature_stack
from mfmjt.distill import load_teacher
from mfmjt.feature_store import FeatureStoreWriter
from mfmjt.model.network import MFMJTNetwork
from mfmjt.model_dir import load_network, read_model_config
from mfmjt.pipeline import load_pipeline
from mfmjt.resolve import ModelNotFoundError, default_model_dir, resolve_model
from mfmjt.train import _load_initial_weights

GOLDENS = Path(__file__).parent / "goldens"
REPO = "someone/mfmjt-default-copy"


@pytest.fixture
def hub_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake Hub: the repo id REPO is a copy of the embedded default; any other id does not exist."""
    from huggingface_hub.errors import RepositoryNotFoundError

    snapshot = tmp_path / "hub-snapshot"
    shutil.copytree(default_model_dir(), snapshot)
    asked: list[str] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        asked.append(repo_id)
        if repo_id != REPO:
            request = httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
            response = httpx.Response(404, request=request)
            raise RepositoryNotFoundError(
                f"404 Client Error: Repository Not Found for {repo_id}", response=response
            )
        return str(snapshot)

    monkeypatch.setattr(resolve, "snapshot_download", fake_snapshot_download)
    return snapshot


@pytest.fixture
def tiny_pth(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """MMAudio's tiny golden network as a .pth (MMAudio's keys, no Δt embedder)."""
    state = load_file(str(GOLDENS / "golden_network_tiny_v1.state.safetensors"))
    path = tmp_path / "mmaudio_tiny.pth"
    torch.save(state, path)
    return path, state


def default_state() -> dict[str, torch.Tensor]:
    return load_network(default_model_dir()).state_dict()


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:4]


# ----------------------------------------------------------------------------------- resolving
@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("mmaudio-small-16k", "small_16k"),
        ("mmaudio_small_44k", "small_44k"),
        ("medium_44k", "medium_44k"),
        ("mmaudio-large-44k", "large_44k"),
        ("mmaudio_large_44k_v2.pth", "large_44k_v2"),
    ],
)
def test_every_mmaudio_spelling_is_one_source_without_downloading(name, variant, monkeypatch):
    monkeypatch.setattr(hub, "resolve_file", lambda *a, **k: pytest.fail("resolving must not download"))
    source = resolve_model(name)
    assert (source.kind, source.variant, source.objective) == ("mmaudio", variant, "flow_matching")
    assert source.network_config == NetworkConfig.variant(variant)
    mode = "16k" if variant == "small_16k" else "44k"
    assert source.features.kind == f"mmaudio_{mode}" and source.audio_mode == mode
    assert (source.recommended.steps, source.recommended.cfg) == (25, 4.5)
    assert source.architecture() == (variant, {})


def test_default_directory_and_files_inside_it_are_the_same_model(tmp_path):
    default = resolve_model("default")
    assert default.kind == "default" and default.directory == default_model_dir()
    assert default.objective == "meanflow" and default.features.kind == "offline"
    variant, overrides = default.architecture()
    assert NetworkConfig.variant(variant, **overrides) == default.network_config
    for name in (str(default_model_dir()), str(default_model_dir() / "config.json")):
        source = resolve_model(name)
        assert source.kind == "directory" and source.config == default.config


def test_state_dict_files_are_read_by_their_shapes(tmp_path, tiny_pth):
    pth, state = tiny_pth
    source = resolve_model(pth)
    assert (source.kind, source.variant, source.objective) == ("file", "tiny", "flow_matching")
    assert source.network_config == NetworkConfig.variant("tiny")
    net = source.load_network()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # an MF-MJT network saved as a bare .safetensors: Δt embedder and guidance embedding found
    guided = MFMJTNetwork(NetworkConfig.variant("tiny", guidance_embed=True))
    save_file(guided.state_dict(), str(tmp_path / "net.safetensors"))
    source = resolve_model(tmp_path / "net.safetensors")
    assert source.objective == "meanflow" and source.network_config.guidance_embed
    assert_same_state(source.load_network().state_dict(), guided.state_dict())


def test_a_hub_repo_id_is_its_snapshot_and_an_unknown_one_a_plain_error(hub_repo):
    source = resolve_model(REPO)
    assert source.kind == "hub" and source.directory == hub_repo
    assert source.config == resolve_model("default").config
    with pytest.raises(ModelNotFoundError, match="neither on disk nor a Hugging Face model repository"):
        resolve_model("someone/nothing-here")


@pytest.mark.parametrize("name", ["", "no-such-model", "./missing/dir", "mmaudio-huge-16k"])
def test_names_that_are_nothing_say_what_a_name_may_be(name):
    with pytest.raises(ModelNotFoundError, match="'default', an MMAudio network"):
        resolve_model(name)


def test_a_folder_or_file_that_is_not_a_model_is_refused_by_name(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model(tmp_path)
    with pytest.raises(ModelNotFoundError, match="not a network checkpoint"):
        resolve_model(tmp_path / "notes.txt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable network checkpoint"):
        resolve_model(tmp_path / "junk.pth")


# ------------------------------------------------------------------------------- load_pipeline
def test_load_pipeline_takes_default_directory_and_hub_id_alike(hub_repo):
    a = load_pipeline("default", device="cpu")
    b = load_pipeline(REPO, device="cpu")
    c = load_pipeline(str(hub_repo), device="cpu")
    for pipe in (b, c):
        assert pipe.model_config == a.model_config
        assert_same_state(pipe.network.state_dict(), a.network.state_dict())


def test_load_pipeline_of_a_network_file_uses_its_mmaudio_variant(tmp_path, monkeypatch, tiny_pth):
    from mfmjt import pipeline

    seen: list[tuple] = []
    monkeypatch.setattr(
        pipeline, "_load_mmaudio", lambda v, network_file=None, **k: seen.append((v, network_file)) or "ok"
    )
    big = tmp_path / "small16k.pth"
    with torch.device("meta"):
        state = MFMJTNetwork(NetworkConfig.variant("small_16k")).state_dict()
    torch.save({k: torch.zeros(1).expand(v.shape) for k, v in state.items() if "dt_embed" not in k}, big)
    assert load_pipeline(str(big)) == "ok" and seen == [("small_16k", big)]
    assert load_pipeline("mmaudio-small-44k") == "ok" and seen[-1] == ("small_44k", None)
    with pytest.raises(ValueError, match="bare tiny network: its feature stack is not in the file"):
        load_pipeline(str(tiny_pth[0]))


# -------------------------------------------------------------------------------- init_from
def default_sized_store(path: Path, n: int = 4) -> Path:
    cfg = resolve_model("default").network_config
    shapes = {
        "latent": (cfg.latent_seq_len, cfg.latent_dim),
        "clip_f": (cfg.clip_seq_len, cfg.clip_dim),
        "sync_f": (cfg.sync_seq_len, cfg.sync_dim),
        "text_f": (cfg.text_seq_len, cfg.text_dim),
    }
    rng = np.random.default_rng(0)
    items = {k: rng.normal(size=(n, *s)).astype(np.float32) for k, s in shapes.items()}
    items["latent_mean"] = items.pop("latent")
    items["latent_std"] = np.full_like(items["latent_mean"], 0.05)
    with FeatureStoreWriter(path, n, shapes, duration=2.0, extra={"encoder": "random"}) as writer:
        writer.write_batch(0, **items, has_video=np.ones(n, bool), item_ids=[f"c{i}" for i in range(n)],
                           captions=["a ball"] * n)  # fmt: skip
        writer.set_empty_text(np.zeros(shapes["text_f"], dtype=np.float32))
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "default",
        pytest.param("directory", marks=pytest.mark.slow),
        pytest.param("hub", marks=pytest.mark.slow),
    ],
)
def test_train_init_from_takes_the_sources_architecture_objective_and_features(kind, tmp_path, hub_repo):
    name = {"default": "default", "directory": str(default_model_dir()), "hub": REPO}[kind]
    store = default_sized_store(tmp_path / "store")
    out = tmp_path / "run"
    argv = ["train", "--store", str(store), "--out", str(out), "--init-from", name, "--steps", "1"]
    argv += ["--batch-size", "2", "--warmup-steps", "0", "--no-progress", "--checkpoint-every", "0"]
    assert main(argv) == 0
    exported = read_model_config(out / "final")
    default = resolve_model("default").config
    assert exported.network == default.network  # no --variant / --network flags needed
    assert exported.features.kind == "offline" and (out / "final" / "codec.safetensors").is_file()
    trained = default.provenance.training["meanflow"]
    assert exported.provenance.training["meanflow"]["guidance_max"] == trained["guidance_max"]
    # a flag still overrides what the source recorded
    assert main([*argv[:4], str(tmp_path / "run2"), *argv[5:], "--guidance-max", "2"]) == 0
    assert read_model_config(tmp_path / "run2" / "final").provenance.training["meanflow"]["guidance_max"] == 2


def test_init_from_a_file_and_an_mmaudio_name_load_their_weights(tmp_path, monkeypatch, tiny_pth):
    pth, state = tiny_pth
    monkeypatch.setattr(hub, "resolve_file", lambda entry, **kw: pth)  # the registry's file, offline
    for name in (str(pth), "mmaudio-small-16k"):
        net = MFMJTNetwork(NetworkConfig.variant("tiny"))
        _load_initial_weights(net, name, None)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="it is a tiny network: drop --variant"):
        _load_initial_weights(
            MFMJTNetwork(NetworkConfig.variant("tiny", depth=2, fused_depth=1)), pth, "tiny"
        )


# --------------------------------------------------------------------------- distill --teacher
def test_every_kind_of_teacher_name_loads_the_same_network(tmp_path, monkeypatch, hub_repo, tiny_pth):
    reference = load_teacher("default").state_dict()
    for name in (str(default_model_dir()), REPO):
        assert_same_state(load_teacher(name).state_dict(), reference)
    pth, state = tiny_pth
    assert torch.equal(load_teacher(pth).state_dict()["latent_mean"], state["latent_mean"])
    asked: list[str] = []
    monkeypatch.setattr(hub, "resolve_file", lambda entry, **kw: asked.append(entry.name) or pth)
    # an MMAudio name builds the registry variant and loads the registry's file (here the tiny golden)
    with pytest.raises(ValueError, match="does not match this network variant"):
        load_teacher("mmaudio-small-16k")
    assert asked == ["mmaudio_small_16k"]


# ------------------------------------------------------------------------------------- convert
@pytest.mark.parametrize("kind", ["default", "hub", "file"])
def test_convert_writes_a_model_directory_of_any_name(kind, tmp_path, hub_repo, tiny_pth):
    name = {"default": "default", "hub": REPO, "file": str(tiny_pth[0])}[kind]
    out = tmp_path / "converted"
    assert main(["convert", name, str(out)]) == 0
    source = resolve_model(name)
    assert read_model_config(out).network == source.network_config
    assert read_model_config(out).objective == source.objective
    assert_same_state(load_network(out).state_dict(), source.load_network().state_dict())
    if kind != "file":  # the default's codec travels with it: the copy loads as a pipeline
        assert load_pipeline(str(out), device="cpu").model_config.features == source.features


# ------------------------------------------------------------------------------ feature stacks
def test_extraction_feature_stacks_take_model_names(hub_repo):
    default = resolve_feature_stack("default")
    for name in (REPO, str(default_model_dir())):
        stack = resolve_feature_stack(name)
        assert stack.spec == default.spec and set(stack.files) == set(default.files)
    with pytest.raises(ModelNotFoundError, match="unknown feature stack 'mmaudio-32k'"):
        resolve_feature_stack("mmaudio-32k")


def test_train_init_from_a_flow_matching_model_fine_tunes_with_meanflow_by_default(tmp_path):
    """From a flow-matching model (every MMAudio network, the lab's teacher), ``mfmjt train --init-from``
    runs the lab's MeanFlow fine-tuning recipe unless told to continue flow matching."""
    from mfmjt.train_config import FINETUNE_DEFAULTS

    source = tmp_path / "fm"
    shutil.copytree(default_model_dir(), source)
    meta = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**meta, "objective": "flow_matching"}))
    assert resolve_model(str(source)).objective == "flow_matching"
    store = default_sized_store(tmp_path / "store")
    argv = ["train", "--store", str(store), "--init-from", str(source), "--steps", "6", "--batch-size", "2"]
    argv += ["--no-progress", "--checkpoint-every", "0"]
    assert main([*argv, "--out", str(tmp_path / "ft")]) == 0
    training = read_model_config(tmp_path / "ft" / "final").provenance.training
    meanflow = training["meanflow"]
    for key in ("mean_flow_ratio", "one_step_share", "guidance_max", "adaptive_loss_power", "all_dropout"):
        assert meanflow[key] == FINETUNE_DEFAULTS[key], key
    assert training["lr"] == 1e-4 and training["warmup_steps"] == 20 and list(training["lr_decay_at"]) == []
    assert training["ema_decay"] == pytest.approx(1 - 1 / 2)  # a horizon of a third of the 6 steps
    assert read_model_config(tmp_path / "ft" / "final").network.guidance_embed
    # a flag still wins, and --continue-flow-matching keeps what the source recorded
    assert main([*argv, "--out", str(tmp_path / "ft2"), "--mean-flow-ratio", "0.1"]) == 0
    given = read_model_config(tmp_path / "ft2" / "final").provenance.training
    assert given["meanflow"]["mean_flow_ratio"] == 0.1
    assert main([*argv, "--out", str(tmp_path / "fm2"), "--continue-flow-matching"]) == 0
    kept = read_model_config(tmp_path / "fm2" / "final").provenance.training
    recorded = resolve_model("default").config.provenance.training
    assert kept["warmup_steps"] != 20
    assert all(kept["meanflow"][key] == value for key, value in recorded["meanflow"].items())
