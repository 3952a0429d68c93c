"""The fast path (mfmjt.acceleration): reduced precision stays close to fp32, compiling changes
nothing but speed, and the default CPU path is untouched.

Errors are relative RMS errors ``||x - x_ref|| / ||x_ref||`` against the same modules in fp32.
bf16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2 %); through a few layers the per-element
errors add up to the values measured on these stacks (CPU, torch 2.14), and each tolerance below is
about twice the measured value:

=================================  ==========  ===========
output                             bf16        fp16
=================================  ==========  ===========
tiny network goldens v1 / v2       1.8 / 2.2 %  0.22 / 0.26 %
CLIP visual / text (small model)   0.6 / 0.9 %
Synchformer (golden config)        0.4 %
VAE decoder (log-mel)              1.0 %
BigVGAN (waveform)                 2.0 %       0.45 %
V2A request, 1 / 4 steps (wave)    2.3 / 2.5 %
=================================  ==========  ===========

Before the sinusoidal time embedders kept their frequencies in float32, the v2 golden (frequencies
up to 10^4) was 96 % off in bf16; that test guards the fix.
"""

from __future__ import annotations

import copy

import av
import numpy as np
import pytest
import torch
from conftest import load_network_golden
from stacks import small_random_pipeline

from mfmjt import media
from mfmjt.acceleration import (
    cast_features,
    compile_network,
    network_is_compiled,
    resolve_compile_mode,
    resolve_precision,
    uncompile_network,
)
from mfmjt.config import SequenceLengths
from mfmjt.model import MFMJTNetwork, NetworkConfig
from mfmjt.pipeline import Pipeline
from mfmjt.sampler import sample

BF16_NETWORK_RTOL = 0.05
FP16_NETWORK_RTOL = 0.006
BF16_FEATURE_RTOL = {"clip": 0.015, "text": 0.02, "sync": 0.01, "mel": 0.025, "wave": 0.05}
FP16_WAVE_RTOL = 0.01
# A whole request in bf16 (encoders, network, VAE and vocoder): measured 2.3 % at one step.
BF16_REQUEST_RTOL = 0.05
# On CUDA other kernels round (flash attention, cuBLAS bf16 GEMMs, inductor's fused fp32 pointwise
# code): not measurable here, so 8 % against fp32. A compiled and an eager bf16 run each sit ~2.4 %
# from fp32 with largely independent rounding, ~3.4 % from each other: 6 %.
CUDA_BF16_RTOL = 0.08
CUDA_COMPILED_RTOL = 0.06


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().cpu(), expected.double().cpu()
    return ((actual - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module")
def fresh():
    """A factory of independent copies of the small random stack: (network, features)."""
    base = small_random_pipeline()
    return lambda: copy.deepcopy((base.network, base.features))


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A 2 s, 25 fps, 160x120 H.264 clip with a moving square."""
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(50):
            img = np.zeros((120, 160, 3), np.uint8)
            img[40:80, 2 * i : 2 * i + 20] = (255, 80, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# ------------------------------------------------------------------------------------ options
def test_precision_and_compile_options_resolve():
    assert resolve_precision(None, "cpu") == torch.float32
    assert resolve_precision("auto", "cuda") == torch.bfloat16
    assert resolve_precision("fp16", "cpu") == torch.float16
    assert resolve_precision(torch.bfloat16, "cpu") == torch.bfloat16
    assert resolve_compile_mode(True, "cuda") == "reduce-overhead"
    assert resolve_compile_mode(True, "cpu") == "default"
    assert resolve_compile_mode(False, "cuda") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="compile must be"):
        resolve_compile_mode("fastest", "cpu")


# ---------------------------------------------------------------------------- default CPU path
@torch.no_grad()
def test_default_cpu_pipeline_is_untouched_and_bit_identical(clip_path, fresh):
    """No option: fp32 everywhere, nothing compiled, and the result equals the modules composed by
    hand in fp32 bit for bit; precision="fp32" gives the very same waveform."""
    pipe = small_random_pipeline()
    assert pipe.acceleration.cast == () and pipe.acceleration.compiled == ()
    assert not network_is_compiled(pipe.network)
    assert all(p.dtype == torch.float32 for p in pipe.features.codec.parameters())
    result = pipe.generate(video=clip_path, prompt="a square", duration=1.5, guidance="both", seed=3)

    net, f = pipe.network, pipe.features
    n = SequenceLengths.for_duration(1.5)
    decoded = media.decode_video(clip_path, 1.5, max_duration=3.0)
    clip_f, sync_f = f.clip(decoded.clip_frames[None]), f.sync(decoded.sync_frames[None])
    cond = net.preprocess_conditions(clip_f, sync_f, f.text(["a square"]), n.latent)
    uncond = net.empty_conditions(1, n.latent, n.clip, n.sync)
    noise = torch.randn(1, n.latent, net.config.latent_dim, generator=torch.Generator().manual_seed(3))
    z0 = sample(net, noise, cond, uncond, steps=1, cfg_strength=1.5, guidance="both")
    waves = f.codec.decode(torch.cat([net.unnormalize(z0[m]) for m in ("standard", "scaled")])).numpy()
    for i, mode in enumerate(("standard", "scaled")):
        assert np.array_equal(result.audio[mode], waves[i])

    explicit = Pipeline(*fresh(), precision="fp32", max_duration=3.0)
    again = explicit.generate(video=clip_path, prompt="a square", duration=1.5, guidance="both", seed=3)
    for mode in ("standard", "scaled"):
        assert np.array_equal(again.audio[mode], result.audio[mode])


# ------------------------------------------------------------------------------ reduced precision
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("dtype", "rtol"), [(torch.bfloat16, BF16_NETWORK_RTOL), (torch.float16, FP16_NETWORK_RTOL)]
)
@torch.no_grad()
def test_reduced_precision_network_close_to_golden(version, dtype, rtol):
    meta, state, io = load_network_golden(version)
    net = MFMJTNetwork(NetworkConfig(**meta["constructor_kwargs"])).eval()
    net.load_mmaudio_state_dict(state)
    net.to(dtype)
    cond = net.preprocess_conditions(io["in.clip_f"], io["in.sync_f"], io["in.text_f"], latent_seq_len=50)
    out = net.inner_velocity(io["in.latent"], io["in.t"], cond)
    assert out.dtype == dtype
    assert rel_error(out, io["forward.flow"]) < rtol


@torch.no_grad()
def test_bf16_features_close_to_fp32(fresh):
    g = torch.Generator().manual_seed(0)
    clip_frames = torch.randint(0, 256, (1, 16, 3, 384, 384), generator=g, dtype=torch.uint8)
    sync_frames = torch.randint(0, 256, (1, 40, 3, 224, 224), generator=g, dtype=torch.uint8)
    prompts = ["a dog barks", ""]
    latent = torch.randn(2, 20, 40, generator=torch.Generator().manual_seed(1))
    outputs, ref_mel = {}, None
    for dtype in (torch.float32, torch.bfloat16):
        f = fresh()[1]
        cast = cast_features(f, dtype)
        assert len(cast) == 4  # the shared open_clip model, Synchformer, VAE, vocoder
        mel = f.codec.vae.decode(latent.to(dtype))
        ref_mel = mel if ref_mel is None else ref_mel
        outputs[dtype] = {
            "clip": f.clip(clip_frames),
            "text": f.text(prompts),
            "sync": f.sync(sync_frames),
            "mel": mel,
            # on the fp32 mel, so that the vocoder's own error is measured
            "wave": f.codec.vocoder(ref_mel.to(dtype)),
        }
        assert all(outputs[dtype][k].dtype == torch.float32 for k in ("clip", "text", "sync"))
    for key, rtol in BF16_FEATURE_RTOL.items():
        err = rel_error(outputs[torch.bfloat16][key], outputs[torch.float32][key])
        assert err < rtol, f"{key}: {err:.4f} >= {rtol}"


@torch.no_grad()
def test_fp16_vocoder_option_is_closer_than_bf16(fresh):
    mel = fresh()[1].codec.vae.decode(torch.randn(1, 20, 12, generator=torch.Generator().manual_seed(2)))
    waves = {}
    for vocoder_dtype in (torch.float32, torch.float16, torch.bfloat16):
        f = fresh()[1]
        cast_features(f, torch.bfloat16, vocoder_dtype=vocoder_dtype)
        assert f.codec.vocoder.conv_pre.weight.dtype == vocoder_dtype
        assert f.codec.vae.data_mean.dtype == torch.bfloat16
        waves[vocoder_dtype] = f.codec.vocoder(mel.to(vocoder_dtype)).float()
    fp16 = rel_error(waves[torch.float16], waves[torch.float32])
    assert fp16 < FP16_WAVE_RTOL
    assert fp16 < rel_error(waves[torch.bfloat16], waves[torch.float32]) / 2


@torch.no_grad()
def test_bf16_pipeline_request_close_to_fp32(clip_path, fresh):
    results = {}
    for precision in ("fp32", "bf16"):
        pipe = Pipeline(*fresh(), device="cpu", precision=precision, max_duration=3.0)
        assert pipe.info()["acceleration"].startswith("float32" if precision == "fp32" else "bfloat16")
        results[precision] = pipe.generate(video=clip_path, prompt="a square", duration=1.5, guidance="both")
    for mode in ("standard", "scaled"):
        bf16, fp32 = (torch.from_numpy(results[p].audio[mode]) for p in ("bf16", "fp32"))
        assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
        assert rel_error(bf16, fp32) < BF16_REQUEST_RTOL


# ------------------------------------------------------------------------------------- compile
@pytest.mark.slow
@torch.no_grad()
def test_compiled_network_equals_eager_on_cpu():
    """Inductor on CPU (C++ kernels): same velocities as eager within float32 reassociation."""
    meta, state, io = load_network_golden("v1")
    net = MFMJTNetwork(NetworkConfig(**meta["constructor_kwargs"])).eval()
    net.load_mmaudio_state_dict(state)
    cond = net.preprocess_conditions(io["in.clip_f"], io["in.sync_f"], io["in.text_f"], latent_seq_len=50)
    t = torch.tensor(0.6, dtype=torch.float64)
    eager = net.predict(io["in.latent"], t, t, cond)
    compile_network(net, "default")
    assert network_is_compiled(net)
    compiled = net.predict(io["in.latent"], t, t, cond)
    uncompile_network(net)
    assert not network_is_compiled(net)
    assert torch.equal(net.predict(io["in.latent"], t, t, cond), eager)
    assert rel_error(compiled, eager) < 1e-5


def test_warm_up_runs_and_leaves_no_cached_request(fresh):
    pipe = Pipeline(*fresh(), max_duration=3.0)
    timings = pipe.warm_up(duration=1.0)
    assert timings["total"] > 0 and "clip_features" in timings
    assert len(pipe._video_cache) == 0 and pipe._one_step is None


# ----------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_cuda_bf16_sampling_close_to_fp32(clip_path, fresh):
    results = {}
    for precision in ("fp32", "bf16"):
        pipe = Pipeline(*fresh(), device="cuda", precision=precision, max_duration=3.0)
        results[precision] = pipe.generate(
            video=clip_path, prompt="a square", duration=1.5, guidance="both", steps=4, cfg_strength=4.5
        )
    for mode in ("standard", "scaled"):
        bf16, fp32 = (torch.from_numpy(results[p].audio[mode]) for p in ("bf16", "fp32"))
        assert rel_error(bf16, fp32) < CUDA_BF16_RTOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_cuda_compiled_pipeline_equals_eager(clip_path, fresh):
    """CUDA graphs (reduce-overhead) for the network, inductor for VAE and vocoder, in bf16."""
    results = {}
    for compile in (False, True):
        pipe = Pipeline(*fresh(), device="cuda", precision="bf16", compile=compile)
        if compile:
            pipe.warm_up(duration=1.5)
            assert pipe.acceleration.compile_mode == "reduce-overhead", "compiled warm-up fell back to eager"
        results[compile] = pipe.generate(video=clip_path, prompt="a square", duration=1.5, guidance="both")
    for mode in ("standard", "scaled"):
        compiled, eager = (torch.from_numpy(results[c].audio[mode]) for c in (True, False))
        assert rel_error(compiled, eager) < CUDA_COMPILED_RTOL


def test_options_from_env():
    from mfmjt.acceleration import options_from_env

    assert options_from_env({}) == {"precision": None, "compile": False}
    assert options_from_env({"MFMJT_PRECISION": "bf16", "MFMJT_COMPILE": "1"}) == {
        "precision": "bf16",
        "compile": True,
    }
    assert options_from_env({"MFMJT_COMPILE": "max-autotune"})["compile"] == "max-autotune"
    assert options_from_env({"MFMJT_COMPILE": "0"})["compile"] is False
    with pytest.raises(ValueError, match="MFMJT_PRECISION"):
        options_from_env({"MFMJT_PRECISION": "half"})
    with pytest.raises(ValueError, match="MFMJT_COMPILE"):
        options_from_env({"MFMJT_COMPILE": "sometimes"})


def test_explicit_network_dtype_also_sets_the_features(fresh):
    pipe = Pipeline(*fresh(), dtype=torch.bfloat16, max_duration=3.0)
    assert pipe.network.dtype == torch.bfloat16 and pipe.acceleration.dtype == torch.bfloat16
    assert pipe.features.codec.vocoder.conv_pre.weight.dtype == torch.bfloat16
    assert pipe.features.sync.vfeat_extractor.cls_token.dtype == torch.bfloat16
    assert pipe.features.codec.mel.mel_basis.dtype == torch.float32  # the mel converter stays fp32
