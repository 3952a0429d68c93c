"""Every MMAudio model, 16 kHz and 44.1 kHz: registry, names, real-size layouts, sequence lengths, memory.

Nothing here downloads: Hub calls are replaced by fakes, and the real-size modules are built on the
meta device and fed state dicts of meta tensors with the reference manifests' keys and shapes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from mfmjt import hub, memory, pipeline
from mfmjt.config import AUDIO_MODES, NetworkConfig, SequenceLengths
from mfmjt.convert import infer_variant
from mfmjt.features.vae import VAE
from mfmjt.features.vocoder import BigVGANVocoder
from mfmjt.hub import (
    BIGVGAN_44K_REPO,
    HUB_REPOS,
    WEIGHTS_DIR_ENV,
    ChecksumMismatchError,
    HubRepoFile,
    HubRepoWeights,
    WeightsOfflineError,
    mmaudio_name,
    pipeline_weights,
    resolve_hub_repo,
    resolve_mmaudio_files,
)
from mfmjt.model.network import LEGACY_BUFFER_KEYS, MFMJTNetwork
from mfmjt.model_dir import read_model_config, save_network

GOLDENS = Path(__file__).parent / "goldens"
NETWORK_MANIFESTS = json.loads((GOLDENS / "network_manifests.json").read_text())
AUDIO44K_MANIFEST = json.loads((GOLDENS / "mmaudio44k" / "fullsize_manifest.json").read_text())
VARIANTS = ("small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2")
RELEASE = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1"
# MMAUDIO_FACTS.md §1.1 (MMAudio's download_utils.py)
NETWORK_MD5 = {
    "small_16k": "af93cde404179f58e3919ac085b8033b",
    "small_44k": "babd74c884783d13701ea2820a5f5b6d",
    "medium_44k": "5a56b6665e45a1e65ada534defa903d0",
    "large_44k": "fed96c325a6785b85ce75ae1aafd2673",
    "large_44k_v2": "01ad4464f049b2d7efdaa4c1a59b8dfe",
}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub.hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "mfmjt-cache"))

    def no_hub(*args: object, **kwargs: object) -> str:
        raise AssertionError("hf_hub_download must not be called in this test")

    monkeypatch.setattr(hub, "hf_hub_download", no_hub)


def meta_state(entries: dict[str, list[int]] | list) -> dict[str, torch.Tensor]:
    """A state dict of meta tensors with the manifest's keys and shapes (no memory)."""
    items = entries.items() if isinstance(entries, dict) else [(k, s) for k, s, _dtype in entries]
    return {k: torch.empty(s, device="meta") for k, s in items}


# ------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_network_has_its_reference_file_md5_and_feature_files(variant):
    weights = pipeline_weights(f"mmaudio-{variant.replace('_', '-')}")
    assert weights.variant == variant
    assert weights.network.path == f"weights/mmaudio_{variant}.pth"
    assert weights.network.md5 == NETWORK_MD5[variant]
    assert weights.network.url == (
        f"https://huggingface.co/hkchengrex/MMAudio/resolve/main/weights/mmaudio_{variant}.pth"
    )
    assert weights.synchformer.md5 == "5b2f5594b0730f70e41e549b7c94390c"
    if variant == "small_16k":
        assert weights.audio_mode == "16k" and weights.vocoder_repo is None
        assert (weights.vae.md5, weights.vae.url) == (
            "69f56803f59a549a1a507c93859fd4d7",
            f"{RELEASE}/v1-16.pth",
        )
    else:
        assert weights.audio_mode == "44k" and weights.vocoder is None
        assert (weights.vae.md5, weights.vae.url) == (
            "fab020275fa44c6589820ce025191600",
            f"{RELEASE}/v1-44.pth",
        )
        assert weights.vocoder_repo == BIGVGAN_44K_REPO == "nvidia/bigvgan_v2_44khz_128band_512x"
    assert NetworkConfig.variant(variant).latent_dim == AUDIO_MODES[weights.audio_mode].latent_dim


def test_bigvgan_v2_repo_is_pinned_to_a_commit_with_both_files():
    repo = HUB_REPOS[BIGVGAN_44K_REPO]
    assert len(repo.revision) == 40 and all(c in "0123456789abcdef" for c in repo.revision)
    assert {f.filename for f in repo.files} == {"config.json", "bigvgan_generator.pt"}
    assert repo.url("config.json") == (
        f"https://huggingface.co/{BIGVGAN_44K_REPO}/resolve/{repo.revision}/config.json"
    )
    with pytest.raises(ValueError, match="sha256"):
        HubRepoFile("x.pt", "abc", 1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mmaudio-16k", ("small_16k", False)),
        ("mmaudio-44k", ("small_44k", False)),
        ("mmaudio_44k", ("small_44k", False)),
        ("44k", ("small_44k", False)),
        ("mmaudio-large-44k-v2", ("large_44k_v2", True)),
        ("mmaudio_large_44k_v2", ("large_44k_v2", True)),
        ("mmaudio_medium_44k.pth", ("medium_44k", True)),
        ("small_16k", ("small_16k", True)),
        ("mmaudio-large-44k", ("large_44k", True)),
    ],
)
def test_mmaudio_name_maps_stacks_and_networks(name, expected):
    assert mmaudio_name(name) == expected


def test_an_unknown_mmaudio_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"mmaudio-44k.*mmaudio-large-44k-v2"):
        mmaudio_name("mmaudio-huge-48k")


# ---------------------------------------------------------------------- pinned Hub repositories
PAYLOAD = b"generator weights\n" * 1000
CONFIG = b'{"num_mels": 128}\n'


def fake_repo() -> HubRepoWeights:
    return HubRepoWeights(
        "someone/vocoder",
        revision="0123456789abcdef0123456789abcdef01234567",
        files=(
            HubRepoFile("config.json", hashlib.sha256(CONFIG).hexdigest(), len(CONFIG)),
            HubRepoFile("gen.pt", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD)),
        ),
        description="test vocoder",
    )


def test_hub_repo_is_fetched_at_the_pinned_revision_and_verified(tmp_path, monkeypatch):
    calls: list[dict] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        path = tmp_path / "hf" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CONFIG if filename == "config.json" else PAYLOAD)
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    repo = fake_repo()
    paths = resolve_hub_repo(repo)
    assert paths["gen.pt"].read_bytes() == PAYLOAD and paths["config.json"].read_bytes() == CONFIG
    assert [(c["repo_id"], c["filename"], c["revision"]) for c in calls] == [
        ("someone/vocoder", "config.json", repo.revision),
        ("someone/vocoder", "gen.pt", repo.revision),
    ]


def test_hub_repo_file_with_a_wrong_sha256_is_removed_and_reported(tmp_path, monkeypatch):
    def corrupt_download(repo_id: str, filename: str, **kwargs: object) -> str:
        path = tmp_path / "hf" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CONFIG if filename == "config.json" else b"truncated")
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", corrupt_download)
    with pytest.raises(ChecksumMismatchError, match="gen.pt of someone/vocoder") as info:
        resolve_hub_repo(fake_repo())
    assert info.value.actual == hashlib.sha256(b"truncated").hexdigest()
    assert not (tmp_path / "hf" / "gen.pt").exists()


def test_hub_repo_from_a_local_folder_needs_no_hub(tmp_path):
    folder = tmp_path / "weights" / "vocoder"  # <local_dir>/<repo name>/
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "gen.pt").write_bytes(PAYLOAD)
    paths = resolve_hub_repo(fake_repo(), local_dir=tmp_path / "weights")
    assert paths == {"config.json": folder / "config.json", "gen.pt": folder / "gen.pt"}


def test_hub_repo_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    def not_cached(repo_id: str, filename: str, **kwargs: object) -> str:
        assert kwargs["local_files_only"] is True
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(hub, "hf_hub_download", not_cached)
    repo = fake_repo()
    with pytest.raises(WeightsOfflineError) as info:
        resolve_hub_repo(repo, offline=True)
    message = str(info.value)
    for expected in ("config.json", repo.revision, "<folder>/vocoder/", WEIGHTS_DIR_ENV, "offline"):
        assert expected in message


def local_weights_folder(tmp_path: Path) -> Path:
    """Every MMAudio file name, as empty placeholders (resolved with verify=False)."""
    folder = tmp_path / "weights"
    (folder / "bigvgan_v2_44khz_128band_512x").mkdir(parents=True)
    for name in (
        *(f"mmaudio_{v}.pth" for v in VARIANTS),
        "v1-16.pth",
        "v1-44.pth",
        "best_netG.pt",
        "synchformer_state_dict.pth",
        "bigvgan_v2_44khz_128band_512x/config.json",
        "bigvgan_v2_44khz_128band_512x/bigvgan_generator.pt",
    ):
        (folder / name).write_bytes(b"")
    return folder


def test_resolve_mmaudio_files_for_the_44k_stack_and_a_44k_network(tmp_path):
    folder = local_weights_folder(tmp_path)
    stack = resolve_mmaudio_files("mmaudio-44k", local_dir=folder, verify=False)
    assert stack.network is None and stack.audio_mode == "44k"
    assert stack.vae == folder / "v1-44.pth"
    assert stack.vocoder == folder / "bigvgan_v2_44khz_128band_512x" / "bigvgan_generator.pt"
    assert stack.vocoder_config == folder / "bigvgan_v2_44khz_128band_512x" / "config.json"
    assert stack.synchformer == folder / "synchformer_state_dict.pth"
    full = resolve_mmaudio_files("mmaudio-large-44k-v2", local_dir=folder, verify=False)
    assert full.network == folder / "mmaudio_large_44k_v2.pth" and full.variant == "large_44k_v2"
    assert (full.vae, full.vocoder, full.vocoder_config) == (stack.vae, stack.vocoder, stack.vocoder_config)


def test_resolve_mmaudio_files_for_the_16k_stack(tmp_path):
    folder = local_weights_folder(tmp_path)
    stack = resolve_mmaudio_files("mmaudio-16k", local_dir=folder, verify=False)
    assert stack.network is None and stack.audio_mode == "16k"
    assert (stack.vae, stack.vocoder, stack.vocoder_config) == (
        folder / "v1-16.pth",
        folder / "best_netG.pt",
        None,
    )


# ------------------------------------------------------------------------ load / convert routing
@pytest.mark.parametrize(
    ("name", "variant"),
    [
        ("mmaudio-small-16k", "small_16k"),
        ("mmaudio-small-44k", "small_44k"),
        ("mmaudio-medium-44k", "medium_44k"),
        ("mmaudio-large-44k", "large_44k"),
        ("mmaudio-large-44k-v2", "large_44k_v2"),
        ("mmaudio_large_44k_v2", "large_44k_v2"),
    ],
)
def test_load_pipeline_accepts_every_mmaudio_network(name, variant, monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(pipeline, "_load_mmaudio", lambda v, **kwargs: seen.append(v) or "loaded")
    assert pipeline.load_pipeline(name, device="cpu") == "loaded"
    assert seen == [variant]


def test_convert_accepts_every_network_spelling(tmp_path, monkeypatch):
    """``mfmjt convert`` of an MMAudio name resolves the registry's network file (md5-checked download)
    and writes its flow-matching model with MMAudio's feature stack of the right rate."""
    from safetensors.torch import load_file

    from mfmjt.resolve import convert_model

    golden = load_file(str(GOLDENS / "golden_network_tiny_v1.state.safetensors"))
    pth = tmp_path / "net.pth"
    torch.save(golden, pth)
    resolved: list[str] = []
    monkeypatch.setattr(hub, "resolve_file", lambda entry, **kw: resolved.append(entry.name) or pth)
    for name in ("mmaudio-large-44k-v2", "mmaudio_medium_44k", "mmaudio_small_16k.pth"):
        # the registry's file is the tiny golden here, so it cannot fit the named variant
        with pytest.raises(ValueError, match="does not match this network variant"):
            convert_model(name, tmp_path / "out")
    assert resolved == ["mmaudio_large_44k_v2", "mmaudio_medium_44k", "mmaudio_small_16k"]
    assert infer_variant(golden) == "tiny"
    out = convert_model(str(pth), tmp_path / "tiny")
    assert read_model_config(out).objective == "flow_matching"
    with pytest.raises(ValueError, match="not found on disk and not a known name"):
        convert_model("mmaudio-huge", tmp_path / "out")


# ---------------------------------------------------------------------- real-size layouts load
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_network_loads_its_real_checkpoint_layout(variant):
    """MMAudio's state dict (keys and shapes of the manifest, plus the legacy buffers old checkpoints
    carry) is recognised as its variant and loads strictly into the network of that variant."""
    state = meta_state(NETWORK_MANIFESTS[variant]["state_dict"])
    assert infer_variant(state) == variant
    state.update({k: torch.empty(1, device="meta") for k in LEGACY_BUFFER_KEYS})
    with torch.device("meta"):
        net = MFMJTNetwork(NetworkConfig.variant(variant))
    net.load_mmaudio_state_dict(state)


def test_vae_44k_loads_its_real_checkpoint_layout():
    with torch.device("meta"):
        vae = VAE("44k")
    vae.load_state_dict(meta_state(AUDIO44K_MANIFEST["vae_44k"]["keys"]), strict=True)


@pytest.mark.parametrize(
    ("layout", "weight_norm"),
    [
        ("keys_checkpoint_legacy", True),
        ("keys_checkpoint_parametrizations", True),
        ("keys_after_remove_weight_norm", False),
    ],
)
def test_bigvgan_v2_loads_its_real_layouts(layout, weight_norm):
    entry = AUDIO44K_MANIFEST["bigvgan_v2_44khz_128band_512x"]
    with torch.device("meta"):
        vocoder = BigVGANVocoder("44k", weight_norm=weight_norm)
    vocoder.load_state_dict(meta_state(entry[layout]), strict=True)


# ---------------------------------------------------------------------------- sequence lengths
# Hand-computed from MMAudio's SequenceConfig: latent = ceil(d · 44100 / 512 / 2), samples = latent · 1024,
# clip = int(8 d), sync = 8 · (floor((25 d − 16) / 8) + 1).
@pytest.mark.parametrize(
    ("duration", "latent", "samples", "clip", "sync"),
    [
        (1.0, 44, 45_056, 8, 16),  # 43.07 latents -> 44
        (1.5, 65, 66_560, 12, 24),  # 64.60 -> 65
        (2.0, 87, 89_088, 16, 40),  # 86.13 -> 87
        (5.0, 216, 221_184, 40, 112),  # 215.33 -> 216
        (8.0, 345, 353_280, 64, 192),  # MMAudio's asserted training lengths
        (10.0, 431, 441_344, 80, 240),  # 430.66 -> 431
        (30.0, 1292, 1_323_008, 240, 736),  # 1291.99 -> 1292
    ],
)
def test_44k_sequence_lengths_follow_mmaudio(duration, latent, samples, clip, sync):
    lengths = SequenceLengths.for_duration(duration, "44k")
    assert (lengths.latent, lengths.audio_samples, lengths.clip, lengths.sync) == (
        latent,
        samples,
        clip,
        sync,
    )
    # the waveform covers the request and is at most one latent frame longer; it is cut when saved
    assert 0 <= samples - round(duration * 44_100) < 1024


def test_44k_audio_mode_is_40_dim_latents_at_44100_over_1024_per_second():
    mode = AUDIO_MODES["44k"]
    assert (mode.latent_dim, mode.samples_per_latent) == (40, 1024)
    assert mode.latent_rate == pytest.approx(44_100 / 1024)
    assert (
        NetworkConfig.variant("large_44k_v2").latent_seq_len
        == SequenceLengths.for_duration(8.0, "44k").latent
    )


# ------------------------------------------------------------------------------------- memory
def test_memory_estimate_counts_the_real_parameters():
    estimate = memory.estimate_pipeline_memory("large_44k_v2", torch.float32)
    manifest = NETWORK_MANIFESTS["large_44k_v2"]["state_dict"]
    t_embed = sum(math.prod(s) for k, s in manifest.items() if k.startswith("t_embed."))
    # MMAudio's parameters plus our Δt embedder, which has the t embedder's shapes
    network = NETWORK_MANIFESTS["large_44k_v2"]["total_params_state_dict"] + t_embed
    assert estimate.parameters["network"] == network
    assert estimate.parameters["vae"] == AUDIO44K_MANIFEST["vae_44k"]["num_elements"]
    vocoder = AUDIO44K_MANIFEST["bigvgan_v2_44khz_128band_512x"]
    filters = sum(
        math.prod(s) for k, s, _ in vocoder["keys_after_remove_weight_norm"] if k.endswith(".filter")
    )
    assert estimate.parameters["vocoder"] == vocoder["num_parameters_after_remove_weight_norm"] + filters
    assert estimate.weight_bytes == {k: 4 * v for k, v in estimate.parameters.items()}
    bf16 = memory.estimate_pipeline_memory("large_44k_v2", torch.bfloat16)
    assert bf16.weight_bytes["network"] == 2 * network
    assert bf16.weight_bytes["vae"] == estimate.weight_bytes["vae"]  # features stay float32
    assert estimate.total_bytes - bf16.total_bytes == 2 * network
    assert memory.estimate_pipeline_memory("small_16k").parameters["vae"] < estimate.parameters["vae"]


def test_cpu_loading_stops_with_the_needed_memory_when_the_machine_has_less(monkeypatch):
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: 8 * 2**30)

    def must_not_resolve(*args: object, **kwargs: object) -> None:
        raise AssertionError("no weights may be resolved before the memory check")

    monkeypatch.setattr(hub, "resolve_pipeline_files", must_not_resolve)
    needed = memory.estimate_pipeline_memory("large_44k_v2").total_bytes / 2**30
    with pytest.raises(memory.InsufficientMemoryError) as info:
        pipeline.load_pipeline("mmaudio-large-44k-v2", device="cpu")
    message = str(info.value)
    assert f"needs about {needed:.1f} GiB" in message and "8.0 GiB in total" in message
    assert "GPU" in message and "1,032M" in message  # the network's parameter count


def test_cpu_loading_logs_the_need_and_warns_when_little_is_free(monkeypatch, caplog):
    estimate = memory.estimate_pipeline_memory("small_44k")
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: 64 * 2**30)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 2**30)
    with caplog.at_level(logging.INFO, logger="mfmjt.memory"):
        memory.check_memory_before_loading(estimate, "cpu")
    assert caplog.records[-1].levelno == logging.INFO and estimate.describe() in caplog.text
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2**30)
    with caplog.at_level(logging.INFO, logger="mfmjt.memory"):
        memory.check_memory_before_loading(estimate, "cpu")
    assert caplog.records[-1].levelno == logging.WARNING and "1.0 GiB are free" in caplog.text


def test_gpu_loading_is_not_checked_against_cpu_memory(monkeypatch):
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: 2**30)
    memory.check_memory_before_loading(memory.estimate_pipeline_memory("large_44k_v2"), "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_large_44k_v2_runs_one_8_s_step_in_bfloat16_on_the_gpu():
    """The CUDA dtype path at full size: random weights, built on the GPU, one CFG step of 8 s."""
    from mfmjt.sampler import predict_pair

    with torch.device("cuda"):
        net = MFMJTNetwork(NetworkConfig.variant("large_44k_v2")).to(torch.bfloat16).eval()
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    torch.cuda.reset_peak_memory_stats()
    lengths = SequenceLengths.for_duration(8.0, "44k")
    with torch.inference_mode():
        clip_f, sync_f, _ = net.empty_features(1, lengths.clip, lengths.sync, text=False)
        text_f = torch.randn(1, 77, 1024, device="cuda")
        cond = net.preprocess_conditions(clip_f, sync_f, text_f, lengths.latent)
        uncond = net.empty_conditions(1, lengths.latent, lengths.clip, lengths.sync)
        z = torch.randn(1, lengths.latent, 40, device="cuda", dtype=torch.bfloat16)
        one = torch.tensor(1.0, dtype=torch.float64)
        u_c, u_u = predict_pair(net, z, one, one, cond.cat(uncond))
    assert u_c.shape == u_u.shape == (1, 345, 40)
    assert torch.isfinite(u_c).all() and torch.isfinite(u_u).all()
    # 1.03B bfloat16 weights are 1.9 GiB; one step of 8 s adds little
    assert torch.cuda.max_memory_allocated() < 3 * 2**30


@pytest.mark.slow  # builds the small random encoder stack: about 6 s alone, more on a busy machine
def test_a_saved_model_on_the_44k_features_loads_and_generates_at_44_1_khz(tmp_path, monkeypatch):
    """``config.json`` naming ``mmaudio_44k`` features gets the 44k stack (here the goldens' reduced
    codec and the small random encoders in place of the downloaded ones) and the 44k audio mode."""
    from safetensors.torch import load_file
    from stacks import small_random_pipeline

    from mfmjt.features.audio import MMAudioCodec
    from mfmjt.features.base import FeatureStack
    from mfmjt.features.vae import VAEConfig
    from mfmjt.features.vocoder import BigVGANConfig

    small = small_random_pipeline().features
    meta = json.loads((GOLDENS / "mmaudio44k" / "goldens44k_setA.json").read_text())
    codec = MMAudioCodec.from_state_dicts(
        load_file(str(GOLDENS / "mmaudio44k" / "vae44k_weights_checkpoint.safetensors")),
        load_file(str(GOLDENS / "mmaudio44k" / "bigvgan44k_weights_checkpoint_legacy.safetensors")),
        mode="44k",
        vae_config=VAEConfig(**meta["vae"]["config"]),
        vocoder_config=BigVGANConfig.from_dict(meta["bigvgan"]["config"]),
    )
    asked: list[str] = []

    def fake_stack(name: str, device: object = "cpu") -> FeatureStack:
        asked.append(name)
        return FeatureStack(small.clip, small.sync, small.text, codec)

    import mfmjt.features.mmaudio

    monkeypatch.setattr(mfmjt.features.mmaudio, "load_mmaudio_features", fake_stack)
    config = NetworkConfig.variant("tiny", latent_dim=40, clip_dim=32, sync_dim=48, text_dim=32)
    save_network(MFMJTNetwork(config), tmp_path / "model", features={"kind": "mmaudio_44k"})
    pipe = pipeline.load_pipeline(str(tmp_path / "model"), device="cpu")
    assert asked == ["mmaudio-44k"] and pipe.sample_rate == 44_100
    result = pipe.generate(prompt="rain", duration=1.0, guidance="standard")
    assert result.sample_rate == 44_100 and result.audio["standard"].shape == (44 * 1024,)


@pytest.mark.parametrize("zip_format", [True, False])
def test_network_checkpoints_are_read_memory_mapped_with_a_legacy_format_fallback(tmp_path, zip_format):
    from mfmjt.features.audio import read_state_dict

    state = {"latent_mean": torch.arange(6.0).view(1, 1, 6), "w": torch.ones(2, 3)}
    path = tmp_path / "net.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    loaded = read_state_dict(path, mmap=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
