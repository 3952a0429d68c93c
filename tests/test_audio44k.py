"""The 44.1 kHz audio side (mel, VAE 44k, BigVGAN v2, codec) reproduces MMAudio's 44k goldens.

Goldens (tests/goldens/mmaudio44k, copied from /work/shared/reference/mmaudio44k): MMAudio's own code run
in float32 with seeded random weights of reduced width (VAE hidden 24, BigVGAN v2 initial channels 64);
the real-size modules are compared by key -> shape manifests built on the meta device.
Measured here (max abs error): BigVGAN v2 waveform 1.3e-6 in all three weight-norm layouts, VAE moments
1.5e-6, decoded mel 9.5e-6 (|x| <= 18), 44k mel 5.7e-6. The budget is the reference's suggestion:
2e-5 times max(1, max |golden|), i.e. at most about 3.6e-4 for the decoded mel and 2e-5 for the waveform.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mfmjt.config import AUDIO_MODES
from mfmjt.features.audio import MMAudioCodec
from mfmjt.features.base import AudioCodec
from mfmjt.features.mel import MelConverter
from mfmjt.features.vae import VAE, VAEConfig, load_vae
from mfmjt.features.vocoder import BigVGANConfig, BigVGANVocoder, load_vocoder

GOLDENS = Path(__file__).parent / "goldens" / "mmaudio44k"
LAYOUTS = ("checkpoint_legacy", "checkpoint_parametrized", "inference")


def budget(golden: torch.Tensor) -> float:
    """The reference's pass criterion: 2e-5 · max(1, max |golden|)."""
    return 2e-5 * max(1.0, golden.abs().max().item())


def max_abs_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


def key_shapes(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in state_dict.items()]


def manifest_shapes(entries: list) -> list[tuple[str, list[int]]]:
    return [(key, shape) for key, shape, _dtype in entries]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((GOLDENS / "goldens44k_setA.json").read_text())


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((GOLDENS / "fullsize_manifest.json").read_text())


@pytest.fixture(scope="module")
def vae_io() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "vae44k_io.safetensors"))


@pytest.fixture(scope="module")
def vocoder_io() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "bigvgan44k_io.safetensors"))


@pytest.fixture(scope="module")
def small_vae_config(meta) -> VAEConfig:
    return VAEConfig(**meta["vae"]["config"])


@pytest.fixture(scope="module")
def small_vocoder_config(meta) -> BigVGANConfig:
    return BigVGANConfig.from_dict(meta["bigvgan"]["config"])


def vocoder_state(layout: str) -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / f"bigvgan44k_weights_{layout}.safetensors"))


# --------------------------------------------------------------------------------------------------
# Mel


@pytest.mark.parametrize("case", ["case1", "case2"])
def test_44k_mel_reproduces_golden(case, vae_io):
    mel = MelConverter("44k")(vae_io[f"{case}.waveform"])
    expected = vae_io[f"{case}.mel"]
    assert mel.shape == expected.shape == (2, 128, vae_io[f"{case}.waveform"].shape[1] // 512)
    assert max_abs_err(mel, expected) <= budget(expected)


def test_44k_mel_of_the_vocoder_golden_source(vocoder_io):
    mel = MelConverter("44k")(vocoder_io["source_waveform"])
    assert max_abs_err(mel, vocoder_io["mel"]) <= budget(vocoder_io["mel"])


# --------------------------------------------------------------------------------------------------
# VAE 44k


def test_vae_44k_preset_is_the_reference_real_size_config(meta):
    real = meta["vae"]["real_44k_config"]
    preset = VAEConfig.preset("44k")
    assert (preset.data_dim, preset.embed_dim, preset.hidden_dim) == (
        real["data_dim"],
        real["embed_dim"],
        real["hidden_dim"],
    )


def test_vae_44k_full_size_state_dict_matches_manifest(manifest):
    with torch.device("meta"):
        vae = VAE("44k")
    assert key_shapes(vae.state_dict()) == manifest_shapes(manifest["vae_44k"]["keys"])
    assert sum(v.numel() for v in vae.state_dict().values()) == manifest["vae_44k"]["num_elements"]


def test_vae_44k_weight_normalisation_equals_reference():
    vae = load_vae(load_file(str(GOLDENS / "vae44k_weights_checkpoint.safetensors")), VAEConfig(128, 40, 24))
    expected = load_file(str(GOLDENS / "vae44k_weights_inference.safetensors"))
    assert max(max_abs_err(v, expected[k]) for k, v in vae.state_dict().items()) <= 1e-6


@pytest.mark.parametrize("layout", ["checkpoint", "inference"])
@pytest.mark.parametrize("case", ["case1", "case2"])
def test_vae_44k_encode_and_decode_reproduce_golden(layout, case, vae_io, small_vae_config):
    vae = load_vae(load_file(str(GOLDENS / f"vae44k_weights_{layout}.safetensors")), small_vae_config)
    with torch.no_grad():
        posterior = vae.encode(vae_io[f"{case}.mel"])
        decoded = vae.decode(vae_io[f"{case}.z"])
    for name, actual in (
        ("mean", posterior.mean),
        ("logvar", posterior.logvar),
        ("std", posterior.std),
        ("decoded", decoded),
    ):
        expected = vae_io[f"{case}.{name}"]
        assert actual.shape == expected.shape, name
        assert max_abs_err(actual, expected) <= budget(expected), name


# --------------------------------------------------------------------------------------------------
# BigVGAN v2


def test_bigvgan_v2_preset_equals_the_hub_config(manifest, meta):
    hub_config = manifest["bigvgan_v2_44khz_128band_512x"]["config"]
    assert BigVGANConfig.from_dict(hub_config) == BigVGANConfig.preset("44k")
    assert BigVGANConfig.from_dict(meta["bigvgan"]["real_config"]) == BigVGANConfig.preset("44k")
    assert BigVGANConfig.preset("44k").hop_size == 512


def test_bigvgan_v2_config_reads_a_config_json(tmp_path, meta):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(meta["bigvgan"]["real_config"]))
    assert BigVGANConfig.from_json(path) == BigVGANConfig.preset("44k")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        BigVGANConfig.from_json(path)
    with pytest.raises(ValueError, match="cannot read the BigVGAN config"):
        BigVGANConfig.from_json(tmp_path / "missing.json")


def test_bigvgan_v2_full_size_state_dicts_match_manifest_in_all_three_layouts(manifest):
    entry = manifest["bigvgan_v2_44khz_128band_512x"]
    with torch.device("meta"):
        vocoder = BigVGANVocoder("44k", weight_norm=True)
    built = key_shapes(vocoder.state_dict())
    assert built == manifest_shapes(entry["keys_checkpoint_parametrizations"])
    legacy = [
        (
            k.replace(".parametrizations.weight.original0", ".weight_g").replace(
                ".parametrizations.weight.original1", ".weight_v"
            ),
            s,
        )
        for k, s in built
    ]
    assert legacy == manifest_shapes(entry["keys_checkpoint_legacy"])
    assert sum(p.numel() for p in vocoder.parameters()) == entry["num_parameters_with_weight_norm"]
    vocoder.remove_weight_norm()
    assert key_shapes(vocoder.state_dict()) == manifest_shapes(entry["keys_after_remove_weight_norm"])
    assert sum(p.numel() for p in vocoder.parameters()) == entry["num_parameters_after_remove_weight_norm"]
    assert vocoder.conv_post.bias is None


def test_bigvgan_v2_small_state_dict_keys_are_in_reference_order(meta, small_vocoder_config):
    files = meta["files"]
    vocoder = BigVGANVocoder(small_vocoder_config, weight_norm=True)
    parametrized = files["bigvgan44k_weights_checkpoint_parametrized.safetensors"]["key_order"]
    assert list(vocoder.state_dict()) == parametrized
    inference = files["bigvgan44k_weights_inference.safetensors"]["key_order"]
    assert list(vocoder.remove_weight_norm().state_dict()) == inference


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bigvgan_v2_loads_every_layout_to_the_reference_inference_weights(layout, small_vocoder_config):
    vocoder = load_vocoder({"generator": vocoder_state(layout)}, small_vocoder_config)
    assert not vocoder.has_weight_norm
    expected = vocoder_state("inference")
    assert set(vocoder.state_dict()) == set(expected)
    assert max(max_abs_err(v, expected[k]) for k, v in vocoder.state_dict().items()) <= 1e-6


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bigvgan_v2_reproduces_golden_waveform(layout, vocoder_io, small_vocoder_config):
    vocoder = load_vocoder(vocoder_state(layout), small_vocoder_config)
    with torch.no_grad():
        waveform = vocoder(vocoder_io["mel"])
    expected = vocoder_io["waveform"]
    assert waveform.shape == expected.shape == (2, 1, 40 * 512)
    assert max_abs_err(waveform, expected) <= budget(expected)
    # the v2 output stage is a clamp: about 1% of the golden's samples sit exactly at ±1
    assert (waveform.abs() == 1).float().mean().item() == pytest.approx(0.0105, abs=0.003)


def test_bigvgan_v2_stage_outputs_match_golden_intermediates(vocoder_io, small_vocoder_config):
    """Checks the stage order and the per-stage AMP-block averaging, not only the end result."""
    vocoder = load_vocoder(vocoder_state("inference"), small_vocoder_config)
    c = vocoder.config
    n = len(c.resblock_kernel_sizes)
    with torch.no_grad():
        x = vocoder.conv_pre(vocoder_io["mel"])
        assert max_abs_err(x, vocoder_io["voc.conv_pre.out"]) <= budget(vocoder_io["voc.conv_pre.out"])
        for i, (up,) in enumerate(vocoder.ups):
            x = up(x)
            x = sum(block(x) for block in vocoder.resblocks[i * n : (i + 1) * n]) / n
            expected = vocoder_io[f"voc.stage{i}.out"]
            assert max_abs_err(x, expected) <= budget(expected), f"stage {i}"
        pre_clamp = vocoder.conv_post(vocoder.activation_post(x))
    assert max_abs_err(pre_clamp, vocoder_io["voc.conv_post.out"]) <= budget(vocoder_io["voc.conv_post.out"])


def test_bigvgan_v2_rejects_a_16k_mel(small_vocoder_config):
    with pytest.raises(ValueError, match=r"mel .*\[B, 128, T\]"):
        BigVGANVocoder(small_vocoder_config)(torch.zeros(1, 80, 10))


# --------------------------------------------------------------------------------------------------
# 44k codec


@pytest.fixture(scope="module")
def small_codec(small_vae_config, small_vocoder_config) -> MMAudioCodec:
    return MMAudioCodec.from_state_dicts(
        load_file(str(GOLDENS / "vae44k_weights_checkpoint.safetensors")),
        {"generator": vocoder_state("checkpoint_legacy")},
        mode="44k",
        vae_config=small_vae_config,
        vocoder_config=small_vocoder_config,
    )


def test_44k_codec_implements_the_protocol_at_the_44k_audio_mode(small_codec):
    mode = AUDIO_MODES["44k"]
    assert isinstance(small_codec, AudioCodec)
    assert (small_codec.sample_rate, small_codec.latent_dim) == (mode.sample_rate, mode.latent_dim)
    assert small_codec.samples_per_latent == mode.samples_per_latent == 1024
    assert small_codec.latent_rate == pytest.approx(44_100 / 1024)


def test_44k_codec_encode_is_mel_then_vae_posterior_channel_last(small_codec, vae_io):
    mean, std = small_codec.encode(vae_io["case2.waveform"])  # 38400 samples: 75 frames, 37 latents
    assert mean.shape == std.shape == (2, 37, 40)
    assert max_abs_err(mean, vae_io["case2.mean"].transpose(1, 2)) <= budget(vae_io["case2.mean"])
    assert max_abs_err(std, vae_io["case2.std"].transpose(1, 2)) <= budget(vae_io["case2.std"])


def test_44k_codec_decode_is_vae_decoder_then_bigvgan_v2(small_codec, vae_io):
    latent = vae_io["case2.z"][:, :, :5].transpose(1, 2).contiguous()  # [2, 5, 40]
    waveform = small_codec.decode(latent)
    assert waveform.shape == (2, 5 * 1024)
    with torch.no_grad():
        expected = small_codec.vocoder(small_codec.vae.decode(latent.transpose(1, 2)))[:, 0]
    assert torch.equal(waveform, expected)
    assert waveform.abs().max() <= 1


def test_44k_codec_from_files_reads_the_hub_generator_and_its_config_json(tmp_path, meta, vae_io):
    torch.save(load_file(str(GOLDENS / "vae44k_weights_checkpoint.safetensors")), tmp_path / "v1-44.pth")
    torch.save({"generator": vocoder_state("checkpoint_legacy")}, tmp_path / "bigvgan_generator.pt")
    (tmp_path / "config.json").write_text(json.dumps(meta["bigvgan"]["config"]))
    codec = MMAudioCodec.from_files(
        tmp_path / "v1-44.pth",
        tmp_path / "bigvgan_generator.pt",
        tmp_path / "config.json",
        mode="44k",
        vae_config=VAEConfig(**meta["vae"]["config"]),
    )
    assert codec.vocoder.config.upsample_initial_channel == 64
    mean, _ = codec.encode(vae_io["case2.waveform"])
    assert max_abs_err(mean, vae_io["case2.mean"].transpose(1, 2)) <= budget(vae_io["case2.mean"])
