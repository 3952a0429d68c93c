"""Network structure, checkpoint compatibility, variable lengths and input validation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GOLDENS, load_network_golden
from stacks import randomize

from mfmjt.config import VARIANTS, NetworkConfig, SequenceLengths
from mfmjt.model import MFMJTNetwork
from mfmjt.model_dir import load_network, read_model_config, save_network

MANIFESTS = json.loads((GOLDENS / "network_manifests.json").read_text())
MMAUDIO_VARIANTS = [name for name in MANIFESTS if not name.startswith("_")]


@pytest.mark.parametrize("variant", MMAUDIO_VARIANTS)
def test_state_dict_equals_mmaudio_manifest_plus_dt_embed(variant):
    manifest = MANIFESTS[variant]
    kwargs = NetworkConfig.variant(variant).to_dict()
    assert kwargs.pop("guidance_embed") is False  # our extension, off in every MMAudio variant
    assert kwargs == manifest["constructor_kwargs"]
    with torch.device("meta"):
        net = MFMJTNetwork(NetworkConfig.variant(variant))
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    ours = {k: s for k, s in shapes.items() if not k.startswith("dt_embed.")}
    assert list(ours) == list(manifest["state_dict"])  # same keys, same order
    assert ours == manifest["state_dict"]
    assert sum(torch.Size(s).numel() for s in ours.values()) == manifest["total_params_state_dict"]
    # the Δt embedder has the t embedder's shapes
    assert {k.removeprefix("dt_embed."): s for k, s in shapes.items() if k.startswith("dt_embed.")} == {
        k.removeprefix("t_embed."): s for k, s in shapes.items() if k.startswith("t_embed.")
    }
    frozen = {n: list(p.shape) for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == manifest["frozen_parameters_requires_grad_false"]


def test_paper_model_has_157m_parameters():
    with torch.device("meta"):
        net = MFMJTNetwork(NetworkConfig.variant("small_16k"))
    mmaudio = sum(p.numel() for n, p in net.state_dict().items() if not n.startswith("dt_embed."))
    assert mmaudio == 157_283_644
    assert net.config.joint_depth == 4 and net.config.fused_depth == 8  # N1 = 4, N2 = 8


def test_fresh_network_ignores_dt_until_trained():
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    assert torch.count_nonzero(net.dt_embed.mlp[2].weight) == 0
    assert torch.count_nonzero(net.dt_embed.mlp[2].bias) == 0


def test_loading_mmaudio_state_dict_copies_t_embed_and_zeroes_dt_output():
    meta, state, _ = load_network_golden("v1")
    net = MFMJTNetwork(NetworkConfig(**meta["constructor_kwargs"]))
    with torch.no_grad():
        net.dt_embed.mlp[2].weight.fill_(1.0)  # must be reset by the load
    original = {k: v.clone() for k, v in state.items()}
    net.load_mmaudio_state_dict({**state, "t_embed.freqs": torch.zeros(128)})  # legacy buffer is dropped
    assert torch.equal(net.dt_embed.mlp[0].weight, state["t_embed.mlp.0.weight"])
    assert torch.count_nonzero(net.dt_embed.mlp[2].weight) == 0
    assert all(torch.equal(state[k], original[k]) for k in state)  # caller's dict untouched
    assert "t_embed.freqs" not in state


def test_loading_rejects_wrong_variant_with_the_offending_keys():
    _, state, _ = load_network_golden("v1")
    net = MFMJTNetwork(NetworkConfig.variant("tiny", v2=True))
    with pytest.raises(ValueError, match="clip_input_proj"):
        net.load_mmaudio_state_dict(state)
    bad = dict(state)
    bad["latent_mean"] = torch.zeros(1, 1, 40)
    with pytest.raises(ValueError, match=r"latent_mean: checkpoint \[1, 1, 40\]"):
        MFMJTNetwork(NetworkConfig.variant("tiny")).load_mmaudio_state_dict(bad)


def test_save_and_load_pretrained_round_trip(tmp_path):
    meta, state, io = load_network_golden("v2")
    net = MFMJTNetwork(NetworkConfig(**meta["constructor_kwargs"])).eval()
    net.load_mmaudio_state_dict(state)
    with torch.no_grad():
        net.dt_embed.mlp[2].weight.normal_()  # a trained Δt embedder must survive the round trip
    save_network(net, tmp_path, objective="meanflow")
    assert read_model_config(tmp_path).objective == "meanflow"
    loaded = load_network(tmp_path).eval()
    assert loaded.config == net.config
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        args = (io["in.latent"], io["in.clip_f"], io["in.sync_f"], io["in.text_f"], 0.4, 0.3)
        assert torch.equal(loaded(*args), net(*args))


def test_weights_stored_as_float16_load_as_the_rounded_float32_network(tmp_path):
    from safetensors.torch import load_file

    net = MFMJTNetwork(NetworkConfig.variant("tiny", guidance_embed=True)).eval()
    randomize(net, 7)
    save_network(net, tmp_path / "half", weights_dtype=torch.float16, objective="meanflow")
    save_network(net, tmp_path / "full")
    stored = load_file(str(tmp_path / "half" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    half_size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half_size < 0.55 * (tmp_path / "full" / "model.safetensors").stat().st_size
    meta = read_model_config(tmp_path / "half")
    assert meta.weights_dtype == "float16" and meta.objective == "meanflow"
    assert read_model_config(tmp_path / "full").weights_dtype is None
    loaded = load_network(tmp_path / "half").state_dict()
    changed = 0
    for key, value in net.state_dict().items():
        got = loaded[key]
        assert got.dtype == torch.float32, key
        assert torch.equal(got, value.half().float()), key
        changed += int(not torch.equal(got, value))
    assert changed > 0  # the rounding is real, and loading does not undo it
    with pytest.raises(ValueError, match="floating-point"):
        save_network(net, tmp_path / "bad", weights_dtype=torch.int8)


def test_guidance_embedding_adds_nothing_at_omega_one_and_loads_from_plain_checkpoints(tmp_path):
    plain = MFMJTNetwork(NetworkConfig.variant("tiny"))
    randomize(plain, 3)
    guided = MFMJTNetwork(NetworkConfig.variant("tiny", guidance_embed=True))
    randomize(guided, 4)
    guided.load_mmaudio_state_dict(plain.state_dict())  # the new embedder starts with a zero output
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 50, 20, generator=g), torch.randn(2, 16, 32, generator=g))
    args += (torch.randn(2, 48, 24, generator=g), torch.randn(2, 77, 32, generator=g), 0.6, 0.2)
    with torch.no_grad():
        reference = plain(*args)
        assert torch.equal(guided(*args, cfg_strength=3.0, scaled=True), reference)
        randomize(guided.guidance_embed, 5)  # a trained embedder
        assert torch.equal(guided(*args, cfg_strength=1.0), reference)  # ω = 1 is exactly unguided
        assert torch.equal(guided(*args), reference)
        standard = guided(*args, cfg_strength=torch.tensor([2.0, 1.0]), scaled=False)
        scaled = guided(*args, cfg_strength=torch.tensor([2.0, 1.0]), scaled=True)
        assert not torch.allclose(standard[0], reference[0]) and not torch.allclose(standard[0], scaled[0])
        assert torch.equal(standard[1], reference[1]) and torch.equal(scaled[1], reference[1])
        save_network(guided, tmp_path)
        loaded = load_network(tmp_path)
        assert loaded.config.guidance_embed
        assert torch.equal(
            loaded(*args, cfg_strength=2.0, scaled=True), guided(*args, cfg_strength=2.0, scaled=True)
        )
    with pytest.raises(ValueError, match="scaled must be a bool or have shape"):
        guided(*args, cfg_strength=2.0, scaled=torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="no guidance embedding"):
        plain(*args, cfg_strength=2.0)


def test_from_pretrained_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_network(tmp_path)


@pytest.mark.parametrize("duration", [1.0, 2.5, 8.0, 10.0, 13.7])
def test_any_duration_runs_with_mmaudio_sequence_lengths(duration):
    lengths = SequenceLengths.for_duration(duration)
    net = MFMJTNetwork(NetworkConfig.variant("tiny")).eval()
    b = 2
    with torch.no_grad():
        u = net(
            torch.randn(b, lengths.latent, 20),
            torch.randn(b, lengths.clip, 32),
            torch.randn(b, lengths.sync, 24),
            torch.randn(b, 77, 32),
            t=1.0,
            dt=1.0,
        )
    assert u.shape == (b, lengths.latent, 20)


def test_sequence_lengths_follow_mmaudio():
    eight = SequenceLengths.for_duration(8.0)
    assert (eight.latent, eight.clip, eight.sync, eight.audio_samples) == (250, 64, 192, 128_000)
    ten = SequenceLengths.for_duration(10.0)
    assert (ten.latent, ten.clip, ten.sync, ten.audio_samples) == (313, 80, 240, 160_256)
    big = SequenceLengths.for_duration(8.0, "44k")
    assert (big.latent, big.audio_samples) == (345, 353_280)
    with pytest.raises(ValueError, match="at least 0.64"):
        SequenceLengths.for_duration(0.5)


def test_network_is_batch_independent():
    # every weight random: a fresh network's zero-initialised adaLN gates and output layer would
    # ignore the conditions, and then no condition could leak between batch items anyway
    net = MFMJTNetwork(NetworkConfig.variant("tiny")).eval()
    randomize(net, 11)
    x, c, s, t = (
        torch.randn(3, 50, 20),
        torch.randn(3, 16, 32),
        torch.randn(3, 48, 24),
        torch.randn(3, 77, 32),
    )
    times = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        full = net(x, c, s, t, times, 0.1)
        single = net(x[1:2], c[1:2], s[1:2], t[1:2], 0.5, 0.1)
        # other conditions for items 0 and 2 only
        other = net(x, c.flip(0), s.flip(0), t.flip(0), times, 0.1)
    scale = full.abs().max()
    for name, changed in (("clip", (c * 2, s, t)), ("sync", (c, s * 2, t)), ("text", (c, s, t * 2))):
        with torch.no_grad():
            moved = net(x[1:2], *(cond[1:2] for cond in changed), 0.5, 0.1)
        assert (moved - single).abs().max() > 1e-3 * scale, f"the {name} condition changes nothing"
    assert (other[0] - full[0]).abs().max() > 1e-3 * scale  # item 0's new conditions matter to item 0 ...
    torch.testing.assert_close(other[1], full[1], atol=1e-5 * scale, rtol=1e-5)  # ... and not to item 1
    torch.testing.assert_close(full[1:2], single, atol=1e-5 * scale, rtol=1e-5)


BAD_INPUTS = [
    ("latent", lambda x, c, s, t: (x[..., :19], c, s, t), r"latent must have shape \[.*20\]"),
    ("clip_f", lambda x, c, s, t: (x, c[..., :31], s, t), r"clip_f must have shape \[B, N, 32\]"),
    ("sync_f", lambda x, c, s, t: (x, c, s[:, :45], t), "multiple of 8"),
    ("text_f", lambda x, c, s, t: (x, c, s, t[:, :70]), r"text_f must have shape \[2, 77, 32\]"),
    ("batch", lambda x, c, s, t: (x, c, s[:1], t), r"sync_f must have shape \[2, N, 24\]"),
    ("dims", lambda x, c, s, t: (x, c[0], s, t), "clip_f must have shape"),
    ("dtype", lambda x, c, s, t: (x, c, s.long(), t), "sync_f must be a floating-point tensor"),
]


@pytest.mark.parametrize("name,corrupt,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_raise_value_error_naming_the_tensor(name, corrupt, message):
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    args = corrupt(
        torch.randn(2, 50, 20), torch.randn(2, 16, 32), torch.randn(2, 48, 24), torch.randn(2, 77, 32)
    )
    with pytest.raises(ValueError, match=message):
        net(*args, t=0.5)


def test_bad_time_shapes_raise_value_error():
    net = MFMJTNetwork(NetworkConfig.variant("tiny"))
    args = (torch.randn(2, 50, 20), torch.randn(2, 16, 32), torch.randn(2, 48, 24), torch.randn(2, 77, 32))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[2\]"):
        net(*args, t=torch.rand(3))
    with pytest.raises(ValueError, match="dt must be"):
        net(*args, t=0.5, dt=torch.rand(2, 2))


def test_unknown_variant_lists_the_choices():
    with pytest.raises(ValueError, match="small_16k"):
        NetworkConfig.variant("huge")
    assert set(VARIANTS) >= {"small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2", "tiny"}
