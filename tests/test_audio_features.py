"""The 16 kHz audio side (mel, VAE, BigVGAN, codec) reproduces MMAudio's goldens and key layouts.

Goldens (tests/goldens, from the original implementation in float32 with seeded random weights):
reduced-width VAE (hidden 32) and BigVGAN (initial channels 128) of the same classes; full-size
modules are only compared by state-dict key/shape manifests, built on the meta device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mfmjt.config import SequenceLengths
from mfmjt.features.audio import MMAudioCodec, read_state_dict
from mfmjt.features.base import AudioCodec
from mfmjt.features.mel import MelConfig, MelConverter, slaney_mel_filterbank
from mfmjt.features.vae import VAE, VAEConfig, load_vae
from mfmjt.features.vocoder import BigVGANConfig, BigVGANVocoder, load_vocoder

GOLDENS = Path(__file__).parent / "goldens"

# Tolerances. Mel: FFT rounding differs between builds; measured 1.3e-6 (16k) and 1.6e-5 (44k, natural
# log of bins near the 1e-5 floor). VAE: relative to the tensor's max magnitude, measured <= 8e-7.
# Vocoder: waveform in (-1, 1), measured 2.3e-6. All budgets are 1e-4, the reference's suggestion.
MEL_ATOL = 1e-4
VAE_RTOL = 1e-4
VOCODER_ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: one thread is faster, and much faster on a busy shared CPU (measured 15x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def max_abs_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


def shapes(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in state_dict.items()]


@pytest.fixture(scope="module")
def manifests() -> dict:
    return json.loads((GOLDENS / "audio_manifests.json").read_text())


@pytest.fixture(scope="module")
def golden_meta() -> dict:
    return json.loads((GOLDENS / "golden_audio.json").read_text())


@pytest.fixture(scope="module")
def mel_golden() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDENS / "golden_mel.safetensors"))


@pytest.fixture(scope="module")
def vae_golden() -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: load_file(str(GOLDENS / f"golden_vae16k_small.{name}.safetensors"))
        for name in ("io", "state_raw", "state_after_remove_weight_norm")
    }


@pytest.fixture(scope="module")
def vocoder_golden() -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: load_file(str(GOLDENS / f"golden_bigvgan16k_small.{name}.safetensors"))
        for name in ("io", "state_weightnorm", "state_after_remove_weight_norm")
    }


@pytest.fixture(scope="module")
def small_vae_config(golden_meta) -> VAEConfig:
    return VAEConfig(**golden_meta["vae16k_small"]["constructor_kwargs"])


@pytest.fixture(scope="module")
def small_vocoder_config(golden_meta) -> BigVGANConfig:
    return BigVGANConfig.from_dict(golden_meta["bigvgan16k_small"]["config"])


@pytest.fixture(scope="module")
def small_codec(vae_golden, vocoder_golden, small_vae_config, small_vocoder_config) -> MMAudioCodec:
    return MMAudioCodec.from_state_dicts(
        vae_golden["state_raw"],
        vocoder_golden["state_weightnorm"],
        vae_config=small_vae_config,
        vocoder_config=small_vocoder_config,
    )


def legacy_weight_norm_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in state_dict.items()
    }


# --------------------------------------------------------------------------------------------------
# Mel converter


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_mel_filterbank_equals_librosa_slaney_basis(mode, mel_golden):
    c = MelConfig.preset(mode)
    basis = slaney_mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
    assert basis.dtype == torch.float32
    assert max_abs_err(basis, mel_golden[f"mel{mode}.state.mel_basis"]) <= 1e-7


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_mel_converter_reproduces_golden(mode, mel_golden):
    mel = MelConverter(mode)(mel_golden[f"mel{mode}.in.waveform"])
    expected = mel_golden[f"mel{mode}.out.mel"]
    assert mel.shape == expected.shape
    assert max_abs_err(mel, expected) <= MEL_ATOL


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_mel_converter_buffers_match_manifest_and_golden(mode, manifests, mel_golden):
    converter = MelConverter(mode)
    assert shapes(converter.state_dict()) == list(manifests[f"mel_converter_{mode}"]["state_dict"].items())
    assert torch.equal(converter.hann_window, mel_golden[f"mel{mode}.state.hann_window"])


def test_mel_converter_frame_count_is_samples_over_hop():
    assert MelConverter("16k")(torch.zeros(1, 128_000)).shape == (1, 80, 500)


def test_mel_converter_does_not_modify_its_input(mel_golden):
    waveform = mel_golden["mel16k.in.waveform"].clone()
    MelConverter("16k")(waveform)
    assert torch.equal(waveform, mel_golden["mel16k.in.waveform"])  # item 1 exceeds ±1: clamp is a copy


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(16_000),
        torch.zeros(1, 1, 16_000),
        torch.zeros(1, 16_000, dtype=torch.int16),
        torch.zeros(1, 300),
    ],
)
def test_mel_converter_rejects_bad_waveform(bad):
    with pytest.raises(ValueError, match=r"waveform .*\[B, samples\]"):
        MelConverter("16k")(bad)


# --------------------------------------------------------------------------------------------------
# VAE


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_vae_full_size_state_dict_matches_manifest(mode, manifests):
    with torch.device("meta"):
        vae = VAE(mode)
    manifest = manifests[f"vae_{mode}"]
    assert shapes(vae.state_dict()) == list(manifest["state_dict"].items())
    assert sum(v.numel() for v in vae.state_dict().values()) == manifest["total_numel_state_dict"]


def test_vae_small_state_dict_keys_are_in_reference_order(vae_golden, small_vae_config, golden_meta):
    state = VAE(small_vae_config).state_dict()
    assert list(state) == golden_meta["vae16k_small"]["state_keys_in_order"]
    assert shapes(state) == [(k, list(vae_golden["state_raw"][k].shape)) for k in state]


def test_vae_weight_normalisation_equals_reference_remove_weight_norm(vae_golden, small_vae_config):
    raw = {k: v.clone() for k, v in vae_golden["state_raw"].items()}
    vae = load_vae(raw, small_vae_config, weights_normalized=False)
    expected = vae_golden["state_after_remove_weight_norm"]
    assert max(max_abs_err(v, expected[k]) for k, v in vae.state_dict().items()) <= 1e-6
    assert all(torch.equal(raw[k], v) for k, v in vae_golden["state_raw"].items())  # caller's dict untouched


def test_vae_counts_weights_as_raw_after_any_state_dict_load(vae_golden, small_vae_config):
    vae = load_vae(vae_golden["state_raw"], small_vae_config)
    assert vae.weight_norm_removed
    vae.load_state_dict(vae_golden["state_raw"])
    assert not vae.weight_norm_removed


@pytest.mark.parametrize(
    ("layout", "weights_normalized"),
    [
        ("state_raw", False),
        ("state_raw", None),
        ("state_after_remove_weight_norm", True),
        ("state_after_remove_weight_norm", None),
    ],
)
def test_vae_encode_and_decode_reproduce_golden(layout, weights_normalized, vae_golden, small_vae_config):
    io = vae_golden["io"]
    vae = load_vae(vae_golden[layout], small_vae_config, weights_normalized=weights_normalized)
    with torch.no_grad():
        posterior = vae.encode(io["in.mel"])
        from_mean = vae.decode(io["encode.mean"])
        from_z_rand = vae.decode(io["in.z_rand"])
    assert max_rel_err(posterior.mean, io["encode.mean"]) <= VAE_RTOL
    assert max_rel_err(posterior.logvar, io["encode.logvar_clamped"]) <= VAE_RTOL
    assert max_rel_err(posterior.std, io["encode.std"]) <= VAE_RTOL
    assert max_rel_err(from_mean, io["decode.from_mean"]) <= VAE_RTOL
    assert max_rel_err(from_z_rand, io["decode.from_z_rand"]) <= VAE_RTOL


def test_vae_data_statistics_equal_checkpoint_buffers(vae_golden, small_vae_config):
    vae = VAE(small_vae_config)
    assert torch.equal(vae.data_mean, vae_golden["io"]["buffers.data_mean"])
    assert torch.equal(vae.data_std, vae_golden["io"]["buffers.data_std"])


def test_vae_refuses_to_run_before_weight_norm_removal(vae_golden, small_vae_config):
    vae = VAE(small_vae_config)
    vae.load_state_dict(vae_golden["state_raw"])
    with pytest.raises(RuntimeError, match="remove_weight_norm"):
        vae.encode(vae_golden["io"]["in.mel"])


def test_vae_posterior_sample_is_reproducible_with_a_generator(vae_golden, small_vae_config):
    vae = load_vae(vae_golden["state_raw"], small_vae_config)
    posterior = vae.encode(vae_golden["io"]["in.mel"])
    a = posterior.sample(torch.Generator().manual_seed(3))
    b = posterior.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mode())


def test_vae_rejects_bad_shapes(small_vae_config):
    vae = VAE(small_vae_config).remove_weight_norm()
    with pytest.raises(ValueError, match=r"mel .*\[B, 80, T\]"):
        vae.encode(torch.zeros(2, 64, 62))
    with pytest.raises(ValueError, match=r"z .*\[B, 20, N\]"):
        vae.decode(torch.zeros(2, 31, 20))


def test_load_vae_rejects_a_state_dict_of_another_size(vae_golden):
    with pytest.raises(ValueError, match="does not fit the VAE"):
        load_vae(vae_golden["state_raw"], VAEConfig(hidden_dim=16))


# --------------------------------------------------------------------------------------------------
# BigVGAN vocoder


def test_bigvgan_full_size_state_dicts_match_manifest(manifests):
    manifest = manifests["bigvgan_vocoder_16k"]
    assert BigVGANConfig.from_dict(manifest["config"]) == BigVGANConfig.preset("16k")
    with torch.device("meta"):
        vocoder = BigVGANVocoder("16k", weight_norm=True)
    parametrized = manifest["state_dict_as_constructed_weight_norm_parametrized"]
    assert shapes(vocoder.state_dict()) == list(parametrized.items())
    assert sum(v.numel() for v in vocoder.state_dict().values()) == manifest["total_numel_state_dict"]
    vocoder.remove_weight_norm()
    assert shapes(vocoder.state_dict()) == list(manifest["state_dict_after_remove_weight_norm"].items())


def test_bigvgan_small_state_dict_keys_are_in_reference_order(golden_meta, small_vocoder_config):
    meta = golden_meta["bigvgan16k_small"]
    vocoder = BigVGANVocoder(small_vocoder_config, weight_norm=True)
    assert list(vocoder.state_dict()) == meta["state_weightnorm_keys_in_order"]
    assert list(vocoder.remove_weight_norm().state_dict()) == meta["state_after_removal_keys_in_order"]


def test_bigvgan_antialias_filters_equal_checkpoint_buffers(vocoder_golden, small_vocoder_config):
    expected = vocoder_golden["state_after_remove_weight_norm"]
    built = BigVGANVocoder(small_vocoder_config).state_dict()
    filters = [k for k in expected if k.endswith(".filter")]
    assert len(filters) == 218
    assert all(torch.equal(built[k], expected[k]) for k in filters)


@pytest.mark.parametrize("names", ["parametrizations", "legacy weight_g/weight_v"])
def test_bigvgan_weight_norm_removal_equals_reference(names, vocoder_golden, small_vocoder_config):
    state = vocoder_golden["state_weightnorm"]
    if names.startswith("legacy"):
        state = legacy_weight_norm_names(state)
    vocoder = load_vocoder({"generator": state}, small_vocoder_config)
    assert not vocoder.has_weight_norm
    expected = vocoder_golden["state_after_remove_weight_norm"]
    assert max(max_abs_err(v, expected[k]) for k, v in vocoder.state_dict().items()) <= 1e-6


@pytest.mark.parametrize("layout", ["state_weightnorm", "state_after_remove_weight_norm"])
def test_bigvgan_reproduces_golden_waveform(layout, vocoder_golden, small_vocoder_config):
    io = vocoder_golden["io"]
    with torch.no_grad():
        waveform = load_vocoder(vocoder_golden[layout], small_vocoder_config)(io["in.mel"])
    assert waveform.shape == io["out.waveform"].shape == (2, 1, 62 * 256)
    assert max_abs_err(waveform, io["out.waveform"]) <= VOCODER_ATOL


def test_bigvgan_config_rejects_unsupported_variants():
    with pytest.raises(ValueError, match="snakebeta"):
        BigVGANConfig.from_dict({"resblock": "2", "activation": "snakebeta"})


def test_bigvgan_rejects_bad_mel(small_vocoder_config):
    with pytest.raises(ValueError, match=r"mel .*\[B, 80, T\]"):
        BigVGANVocoder(small_vocoder_config)(torch.zeros(2, 62, 80))


def test_load_vocoder_rejects_a_state_dict_of_another_size(vocoder_golden):
    with pytest.raises(ValueError, match="does not fit the BigVGAN"):
        load_vocoder(vocoder_golden["state_weightnorm"], BigVGANConfig(upsample_initial_channel=64))


# --------------------------------------------------------------------------------------------------
# Codec (AudioCodec protocol)


def test_codec_implements_audio_codec_protocol(small_codec):
    assert isinstance(small_codec, AudioCodec)
    assert (small_codec.sample_rate, small_codec.latent_dim, small_codec.latent_rate) == (16_000, 20, 31.25)
    lengths = SequenceLengths.for_duration(1.0)  # 32 latent frames, 16,384 samples
    wave = 0.1 * torch.randn(2, lengths.audio_samples, generator=torch.Generator().manual_seed(0))
    mean, std = small_codec.encode(wave)  # [B, samples] -> (mean, std) [B, latent frames, latent_dim]
    assert mean.shape == std.shape == (2, lengths.latent, 20) and (std > 0).all()
    audio = small_codec.decode(mean)  # [B, latent frames, latent_dim] -> [B, samples]
    assert audio.shape == (2, lengths.audio_samples) and torch.isfinite(audio).all()


def test_codec_encode_is_mel_then_vae_posterior_channel_last(small_codec, mel_golden, vae_golden):
    # the VAE golden's input mel is the 16k mel golden of this waveform
    mean, std = small_codec.encode(mel_golden["mel16k.in.waveform"])
    io = vae_golden["io"]
    assert mean.shape == std.shape == (2, 31, 20)
    assert max_rel_err(mean, io["encode.mean"].transpose(1, 2)) <= VAE_RTOL
    assert max_rel_err(std, io["encode.std"].transpose(1, 2)) <= VAE_RTOL


def test_codec_decode_is_vae_decoder_then_vocoder(small_codec, vae_golden):
    latent = vae_golden["io"]["in.z_rand"][:, :, :6].transpose(1, 2).contiguous()  # [2, 6, 20], short: fast
    waveform = small_codec.decode(latent)
    assert waveform.shape == (2, 6 * 512)
    with torch.no_grad():
        expected = small_codec.vocoder(small_codec.vae.decode(latent.transpose(1, 2)))[:, 0]
    assert torch.equal(waveform, expected)
    assert waveform.abs().max() < 1  # tanh output


def test_codec_does_not_modify_its_inputs(small_codec):
    waveform = torch.linspace(-1.5, 1.5, 2048).repeat(1, 1)
    latent = torch.randn(1, 2, 20)
    waveform_copy, latent_copy = waveform.clone(), latent.clone()
    small_codec.encode(waveform)
    small_codec.decode(latent)
    assert torch.equal(waveform, waveform_copy) and torch.equal(latent, latent_copy)


@pytest.mark.parametrize(
    ("call", "bad", "pattern"),
    [
        ("encode", torch.zeros(2, 1, 16_000), r"waveform .*\[B, samples"),
        ("encode", torch.zeros(2, 16_000, dtype=torch.int16), r"waveform .*\[B, samples"),
        ("encode", torch.zeros(2, 100), r"waveform .*samples >= 512"),
        ("decode", torch.zeros(2, 20, 31), r"latent .*\[B, N, 20\]"),
        ("decode", torch.zeros(31, 20), r"latent .*\[B, N, 20\]"),
    ],
)
def test_codec_rejects_bad_input(call, bad, pattern, small_codec):
    with pytest.raises(ValueError, match=pattern):
        getattr(small_codec, call)(bad)


def test_codec_from_files_reads_the_checkpoint_layouts(
    tmp_path, vae_golden, vocoder_golden, small_vae_config, small_vocoder_config, mel_golden
):
    torch.save(vae_golden["state_raw"], tmp_path / "v1-16.pth")
    torch.save({"generator": vocoder_golden["state_weightnorm"]}, tmp_path / "best_netG.pt")
    generator = read_state_dict(tmp_path / "best_netG.pt", key="generator")
    assert set(generator) == set(vocoder_golden["state_weightnorm"])
    codec = MMAudioCodec.from_files(
        tmp_path / "v1-16.pth",
        tmp_path / "best_netG.pt",
        vae_config=small_vae_config,
        vocoder_config=small_vocoder_config,
    )
    mean, _ = codec.encode(mel_golden["mel16k.in.waveform"])
    assert max_rel_err(mean, vae_golden["io"]["encode.mean"].transpose(1, 2)) <= VAE_RTOL


def test_codec_rejects_an_unknown_mode_and_16k_weights_in_44k_mode(vae_golden, vocoder_golden):
    with pytest.raises(ValueError, match="unknown codec mode '22k'"):
        MMAudioCodec.from_state_dicts(vae_golden["state_raw"], vocoder_golden["state_weightnorm"], mode="22k")
    with pytest.raises(ValueError, match="does not fit the VAE"):
        MMAudioCodec.from_state_dicts(vae_golden["state_raw"], vocoder_golden["state_weightnorm"], mode="44k")
