"""The generation pipeline: composes media decoding, feature encoders, network, sampler and codec.

It computes nothing itself. Per request it caches what does not depend on the sampling settings:
video features per (file content, duration), text features per prompt, and, for one-step
requests, the conditional and unconditional predictions of the last request, so that changing ω
or the guidance mode only re-mixes and re-decodes. A network with guidance learnt in training
(a guidance embedding) is guided in one forward instead, except with a negative prompt, which only
CFG's two forwards can use.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt import long_form, media
from mfmjt.config import AUDIO_MODES, NetworkConfig, SequenceLengths
from mfmjt.features.base import FeatureStack
from mfmjt.features.mmaudio import load_mmaudio_features, mmaudio_feature_stack  # noqa: F401 (re-exported)
from mfmjt.guidance import check_guidance, guide, needs_unconditional
from mfmjt.model.network import Conditions, MFMJTNetwork
from mfmjt.model_dir import ModelConfig, SamplingSettings
from mfmjt.request import GenerationRequest, Limits
from mfmjt.resolve import MMAUDIO_NAMES, MMAUDIO_VARIANTS, PACKAGE_ASSETS, default_model_dir, resolve_model  # noqa: F401
from mfmjt.sampler import predict_pair, sample

logger = logging.getLogger(__name__)

DEFAULT_T2A_DURATION = 8.0
MAX_STEPS = 200
ProgressCallback = Callable[[int, int], None]


@dataclass
class GenerationResult:
    """Generated audio per guidance mode, and how it was made."""

    audio: dict[str, np.ndarray]  # mode -> float32 [samples]
    sample_rate: int
    duration: float  # seconds of the request (the audio may be up to one latent frame longer)
    timings: dict[str, float]  # stage -> seconds
    settings: dict[str, Any] = field(default_factory=dict)
    video: Path | None = None
    message: str = ""  # notes for the user, e.g. that a long clip was cut

    @property
    def rtf(self) -> float:
        """Real-time factor of the whole request: seconds of compute per second of audio."""
        return self.timings.get("total", math.nan) / self.duration


@dataclass
class _VideoFeatures:
    clip_f: torch.Tensor  # [1, Nc, clip_dim]
    sync_f: torch.Tensor  # [1, 8S, sync_dim]
    duration: float
    message: str
    digest: str


@dataclass
class PreparedRequest:
    """A request up to the network: its conditions and starting noise (see :meth:`Pipeline.prepare`)."""

    noise: torch.Tensor  # z_1 [1, latent frames, latent_dim], from the request's seed
    cond: Conditions
    uncond: Conditions | None  # empty video and text (the negative prompt's text if one was given)
    duration: float  # seconds that will be generated
    message: str  # notes for the user, e.g. that a long clip was cut
    one_step_key: tuple  # what the one-step predictions depend on
    timings: dict[str, float]  # stage -> seconds so far


@dataclass
class _OneStepState:
    key: tuple
    noise: torch.Tensor
    u_cond: torch.Tensor
    u_uncond: torch.Tensor | None


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def get_fresh(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


def file_digest(path: str | Path) -> str:
    """Content hash of a file (BLAKE2b), the video-cache key."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Pipeline:
    """Video-to-audio and text-to-audio generation with one network and one feature stack."""

    def __init__(
        self,
        network: MFMJTNetwork,
        features: FeatureStack,
        *,
        name: str = "",
        objective: str = "meanflow",
        audio_mode: str = "16k",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        max_duration: float = 30.0,
        description: str = "",
        window_seconds: float | None = None,
        model_config: ModelConfig | None = None,
        precision: str | None = None,
        compile: bool | str = False,
    ) -> None:
        from mfmjt.acceleration import accelerate, resolve_precision

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or resolve_precision(precision, self.device)
        self.network = network.eval().to(device=self.device, dtype=self.dtype)
        self.features = features
        for module in (features.clip, features.sync, features.text, features.codec):
            if isinstance(module, torch.nn.Module):
                module.eval().to(self.device)
        # precision (features) and torch.compile: see mfmjt.acceleration; a no-op on the default CPU path
        self.acceleration = accelerate(
            self.network, features, self.device, precision=precision or dtype, compile=compile
        )
        self.name = name
        self.objective = objective
        self.description = description
        self.audio_mode = AUDIO_MODES[audio_mode]
        if features.codec.sample_rate != self.audio_mode.sample_rate:
            raise ValueError(
                f"codec sample rate {features.codec.sample_rate} != {self.audio_mode.sample_rate}"
            )
        self.max_duration = float(max_duration)
        # seconds per window for clips longer than this (None: the network's latent_seq_len)
        self.window_seconds = window_seconds
        self.model_config = model_config  # what config.json said, when loaded from a model directory
        self._video_cache: _LRU = _LRU(4)
        self._text_cache: _LRU = _LRU(64)
        self._one_step: _OneStepState | None = None
        self._lock = threading.RLock()

    @property
    def sample_rate(self) -> int:
        return self.audio_mode.sample_rate

    @property
    def recommended(self) -> SamplingSettings:
        """The model's recommended sampling settings (steps, ω, guidance rule): its config's, or
        by objective (MeanFlow: 1 step, ω 1.5; flow matching: 25 steps, ω 4.5)."""
        if self.model_config is not None:
            return self.model_config.recommended
        return SamplingSettings.for_objective(self.objective)

    # ------------------------------------------------------------------------- saving / loading
    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> Pipeline:
        """Load a model directory (any format version); ``kwargs`` as for :func:`load_pipeline`."""
        return _load_directory(Path(directory), **kwargs)

    def save_pretrained(self, directory: str | Path, *, weights_dtype: torch.dtype | None = None) -> Path:
        """Write this pipeline as a model directory that :meth:`from_pretrained` loads: the network,
        ``config.json`` and the feature stack's own files (e.g. the offline codec).

        A stack of pretrained encoders (``mmaudio_16k``) is recorded by kind only: loading fetches
        its published weights again, not the modules held here.
        """
        from dataclasses import replace

        from mfmjt.features.registry import kind_of
        from mfmjt.model_dir import FeatureSpec, write_model_dir

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        kind = kind_of(self.features)
        params, files = kind.save(self.features, directory) if kind.save is not None else ({}, [])
        config = self.model_config or ModelConfig(network=self.network.config, objective=self.objective)
        config = replace(
            config,
            name=self.name,
            description=self.description,
            objective=self.objective,
            sample_rate=self.sample_rate,
            features=FeatureSpec(kind.name, params, tuple(files)),
        )
        return write_model_dir(directory, self.network, config, weights_dtype=weights_dtype)

    def info(self) -> dict[str, str]:
        """What is loaded, for display."""
        kind = {"meanflow": "MeanFlow", "flow_matching": "flow matching"}.get(self.objective, self.objective)
        return {
            "name": self.name,
            "kind": kind,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "acceleration": self.acceleration.describe(),
            "parameters": f"{sum(p.numel() for p in self.network.parameters()) / 1e6:.1f}M",
            "description": self.description,
        }

    # ---------------------------------------------------------------------------- features
    def _video_features(
        self,
        video: str | Path,
        duration: float | None,
        timings: dict[str, float],
        decoded: media.DecodedVideo | None = None,
    ) -> _VideoFeatures:
        start = time.perf_counter()
        digest = file_digest(video)
        key = (digest, duration, self.max_duration)
        cached = self._video_cache.get_fresh(key)
        timings["hash_video"] = time.perf_counter() - start
        if cached is not None:
            timings["video_features"] = 0.0
            return cached
        start = time.perf_counter()
        if decoded is None:
            decoded = media.decode_video(video, duration, max_duration=self.max_duration)
        timings["decode_video"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            clip_f = self.features.clip(decoded.clip_frames[None].to(self.device)).float()
            timings["clip_features"] = time.perf_counter() - start
            start = time.perf_counter()
            sync_f = self.features.sync(decoded.sync_frames[None].to(self.device)).float()
            timings["sync_features"] = time.perf_counter() - start
        result = _VideoFeatures(clip_f, sync_f, decoded.duration, decoded.message, digest)
        self._video_cache.put(key, result)
        return result

    def _text_features(self, prompt: str) -> torch.Tensor:
        cached = self._text_cache.get_fresh(prompt)
        if cached is None:
            with torch.inference_mode():
                cached = self.features.text([prompt]).float()
            self._text_cache.put(prompt, cached)
        return cached

    # --------------------------------------------------------------------------- generate
    def generate(
        self,
        video: str | Path | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        duration: float | None = None,
        steps: int = 1,
        cfg_strength: float = 1.5,
        guidance: str = "scaled",
        seed: int = 0,
        progress: ProgressCallback | None = None,
        guidance_in_network: bool | None = None,
        decoded: media.DecodedVideo | None = None,
    ) -> GenerationResult:
        """Generate audio for a video (or, with ``video=None``, for the prompt alone).

        ``guidance_in_network`` (default: when the network has a guidance embedding and there is no
        negative prompt) guides in one forward; False forces CFG's conditional + unconditional pair.
        ``decoded`` is ``video`` already decoded (``media.decode_video(video, duration, max_duration=...)``),
        so that a caller can decode outside a GPU reservation.
        Raises ValueError (``media.MediaError`` for unusable files) with a user-facing message.
        """
        request = GenerationRequest(
            video, prompt, negative_prompt, duration, steps, cfg_strength, guidance, seed
        )
        request = request.validate(Limits(max_steps=MAX_STEPS), self.objective)
        modes, w, duration = check_guidance(request.guidance), request.cfg_strength, request.duration
        prompt, negative_prompt, steps, seed = (
            request.prompt,
            request.negative_prompt,
            request.steps,
            request.seed,
        )
        embedded = self.network.config.guidance_embed
        if guidance_in_network and not embedded:
            raise ValueError("this model has no guidance embedding: it can only use CFG's two forwards")
        if guidance_in_network and negative_prompt:
            raise ValueError("a negative prompt needs CFG's two forwards; leave guidance_in_network unset")
        if guidance_in_network is None:
            guidance_in_network = embedded and not negative_prompt
        with self._lock:
            return self._generate(
                video,
                prompt,
                negative_prompt,
                duration,
                int(steps),
                w,
                modes,
                int(seed),
                progress,
                guidance_in_network,
                decoded,
            )

    def prepare(
        self,
        video: str | Path | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        duration: float | None = None,
        seed: int = 0,
        *,
        unconditional: bool = True,
    ) -> PreparedRequest:
        """What :meth:`generate` feeds the network for these arguments: the conditions (and, with
        ``unconditional``, the empty ones CFG needs) and the seed's noise. For analyses that call the
        network themselves, e.g. to look at u_c and u_∅ of a one-step request."""
        request = GenerationRequest(video, prompt, negative_prompt, duration, seed=seed)
        request = request.validate(Limits(max_steps=MAX_STEPS), self.objective)
        with self._lock:
            return self._prepare(
                video,
                request.prompt,
                request.negative_prompt,
                request.duration,
                request.seed,
                unconditional,
                {},
            )

    def _prepare(
        self,
        video: str | Path | None,
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        seed: int,
        unconditional: bool,
        timings: dict[str, float],
        decoded: media.DecodedVideo | None = None,
    ) -> PreparedRequest:
        net = self.network
        message = ""
        if video is not None:
            feats = self._video_features(video, duration, timings, decoded)
            duration, message = feats.duration, feats.message
            video_key = (feats.digest, feats.duration)
        else:
            requested = DEFAULT_T2A_DURATION if duration is None else duration
            duration = min(requested, self.max_duration)
            if requested > self.max_duration:
                message = f"Generated the first {self.max_duration:g} s: the limit of this demo."
            feats = None
            video_key = None
        lengths = SequenceLengths.for_duration(duration, self.audio_mode)

        start = time.perf_counter()
        text_f = self._text_features(prompt)
        negative_f = self._text_features(negative_prompt) if negative_prompt else None
        timings["text_features"] = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode():
            if feats is None:
                clip_f, sync_f, _ = net.empty_features(1, lengths.clip, lengths.sync, text=False)
            else:
                clip_f, sync_f = feats.clip_f, feats.sync_f
            cond = net.preprocess_conditions(clip_f, sync_f, text_f, lengths.latent)
            uncond = None
            if unconditional:
                uncond = net.empty_conditions(1, lengths.latent, lengths.clip, lengths.sync, negative_f)
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn(1, lengths.latent, net.config.latent_dim, generator=generator).to(self.device)
        timings["conditions"] = time.perf_counter() - start
        key = (video_key, prompt, negative_prompt, lengths.latent, seed)
        return PreparedRequest(noise, cond, uncond, duration, message, key, timings)

    def _generate(
        self,
        video: str | Path | None,
        prompt: str,
        negative_prompt: str,
        duration: float | None,
        steps: int,
        w: float,
        modes: tuple[str, ...],
        seed: int,
        progress: ProgressCallback | None,
        in_network: bool,
        decoded: media.DecodedVideo | None = None,
    ) -> GenerationResult:
        long = long_form.plan_request(self, video, duration, DEFAULT_T2A_DURATION)
        if long is not None:  # longer than one training-length window
            return long_form.generate_long_form(
                self, long, video, prompt, negative_prompt, steps, w, modes, seed, progress, in_network
            )
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        unconditional = needs_unconditional(w) and not in_network
        req = self._prepare(video, prompt, negative_prompt, duration, seed, unconditional, timings, decoded)
        duration, noise, cond, uncond = req.duration, req.noise, req.cond, req.uncond

        start = time.perf_counter()
        with torch.inference_mode():
            z0 = self._sample(noise, cond, uncond, steps, w, modes, in_network, progress, req.one_step_key)
            timings["network"] = time.perf_counter() - start
            start = time.perf_counter()
            waves = self._decode(z0, modes)
            timings["audio_decode"] = time.perf_counter() - start
        if steps == 1 and progress is not None:
            progress(1, 1)
        timings["total"] = time.perf_counter() - t_start
        audio = {m: waves[i].astype(np.float32) for i, m in enumerate(modes)}
        settings = _settings(prompt, negative_prompt, steps, w, modes, in_network, seed)
        return self._result(audio, duration, timings, settings, video, req.message)

    def _sample(
        self,
        noise: torch.Tensor,
        cond: Conditions,
        uncond: Conditions | None,
        steps: int,
        w: float,
        modes: tuple[str, ...],
        in_network: bool,
        progress: ProgressCallback | None,
        one_step_key: tuple | None = None,
    ) -> dict[str, torch.Tensor]:
        """z_0 per guidance mode from the noise ``z_1`` (under inference mode); at one step with CFG the
        u_c, u_∅ of the last request with the same ``one_step_key`` are reused (None: never)."""
        if steps == 1 and not in_network:
            return self._one_step_sample(one_step_key, noise, cond, uncond, w, modes)
        return sample(
            self.network,
            noise,
            cond,
            uncond,
            steps=steps,
            cfg_strength=w,
            guidance="both" if len(modes) == 2 else modes[0],
            progress=progress if steps > 1 else None,
            guidance_in_network=in_network,
        )

    def _decode(self, z0: dict[str, torch.Tensor], modes: tuple[str, ...]) -> np.ndarray:
        """Waveforms (modes, samples) of the sampled latents (under inference mode)."""
        latents = torch.cat([self.network.unnormalize(z0[m].to(self.dtype)).float() for m in modes])
        return self.features.codec.decode(latents).float().cpu().numpy()

    def _result(
        self,
        audio: dict[str, np.ndarray],
        duration: float,
        timings: dict[str, float],
        settings: dict[str, Any],
        video: str | Path | None,
        message: str,
    ) -> GenerationResult:
        return GenerationResult(
            audio=audio,
            sample_rate=self.sample_rate,
            duration=duration,
            timings=timings,
            settings=settings,
            video=Path(video) if video is not None else None,
            message=message,
        )

    def _one_step_sample(
        self,
        key: tuple | None,
        noise: torch.Tensor,
        cond: Conditions,
        uncond: Conditions | None,
        w: float,
        modes: tuple[str, ...],
    ) -> dict[str, torch.Tensor]:
        """z_0 = z_1 - u(z_1, 0, 1); reuses the last request's u_c, u_∅ if only ω or the mode changed
        (never for ``key`` None, which leaves the last request's alone)."""
        reusable = key is not None and self._one_step is not None and self._one_step.key == key
        state = self._one_step if reusable else None
        t = torch.tensor(1.0, dtype=torch.float64)
        if state is None:
            u_c, u_u = predict_pair(self.network, noise, t, t, cond if uncond is None else cond.cat(uncond))
            state = _OneStepState(key, noise, u_c, u_u)
        elif uncond is not None and state.u_uncond is None:
            state.u_uncond = self.network.predict(noise, t, t, uncond).float()
        if key is not None:
            self._one_step = state
        return {m: state.noise - guide(state.u_cond, state.u_uncond, w, m) for m in modes}

    def warm_up(self, duration: float = 8.0, steps: tuple[int, ...] = (1,)) -> dict[str, float]:
        """Run V2A requests of ``duration`` seconds on a synthetic clip so that compilation and CUDA
        graph capture happen now rather than in the first user request; caches are emptied afterwards.
        Returns the timings of the last (warm) request. See :func:`mfmjt.acceleration.warm_up`."""
        from mfmjt.acceleration import warm_up

        with self._lock:
            try:
                return warm_up(self, duration, steps)
            finally:
                self._video_cache.clear()
                self._one_step = None

    # ------------------------------------------------------------------------------ output
    def mux(
        self, result: GenerationResult, video: str | Path | None, out_dir: str | Path, stem: str | None = None
    ) -> list[Path]:
        """Write one H.264/AAC mp4 per guidance mode (the source video with the generated audio)."""
        video = video if video is not None else result.video
        if video is None:
            raise ValueError("mux needs the source video; use save_audio for text-to-audio results")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or Path(video).stem
        return [
            media.mux_audio_into_video(
                video, wave, result.sample_rate, out_dir / f"{stem}_{mode}.mp4", result.duration
            )
            for mode, wave in result.audio.items()
        ]

    def save_audio(
        self, result: GenerationResult, out_dir: str | Path, stem: str, suffix: str = ".flac"
    ) -> list[Path]:
        """Write one audio file per guidance mode, cut to the requested duration."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        n = round(result.duration * result.sample_rate)
        return [
            media.write_audio(out_dir / f"{stem}_{mode}{suffix}", wave[:n], result.sample_rate)
            for mode, wave in result.audio.items()
        ]


# ------------------------------------------------------------------------------------ loading


def _settings(
    prompt: str,
    negative_prompt: str,
    steps: int,
    w: float,
    modes: tuple[str, ...],
    in_network: bool,
    seed: int,
) -> dict[str, Any]:
    """A result's ``settings``: what was asked for."""
    return dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        cfg_strength=w,
        guidance="both" if len(modes) == 2 else modes[0],
        guidance_in_network=in_network,
        seed=seed,
    )


def _load_mmaudio(variant: str, network_file: Path | None = None, **kwargs: Any) -> Pipeline:
    """MMAudio's ``variant`` with its public network weights, or those of ``network_file``."""
    from mfmjt.features.audio import read_state_dict
    from mfmjt.hub import resolve_pipeline_files
    from mfmjt.memory import check_memory_before_loading, estimate_pipeline_memory

    device = torch.device(kwargs.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = kwargs.get("dtype") or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    check_memory_before_loading(estimate_pipeline_memory(variant, dtype), device)
    files = resolve_pipeline_files(variant, network=network_file is None)
    with torch.device(device):  # a GPU run never holds the float32 network in CPU memory
        net = MFMJTNetwork(NetworkConfig.variant(variant)).to(dtype)
    net.load_mmaudio_state_dict(read_state_dict(network_file or files.network, mmap=True))
    return Pipeline(
        net,
        mmaudio_feature_stack(files, device),
        name=f"MMAudio {variant}",
        objective="flow_matching",
        audio_mode=files.audio_mode,
        description=(
            f"MMAudio's public {variant} weights in the MF-MJT network (Δt ignored): a flow-matching "
            "model, good at 25 steps and poor at one step. No public MF-MJT weights exist yet."
        ),
        **kwargs,
    )


def _load_directory(directory: Path, **kwargs: Any) -> Pipeline:
    """A model directory: ``config.json`` + ``model.safetensors`` and its feature stack's files."""
    from mfmjt.features.registry import feature_kind
    from mfmjt.model_dir import load_network, read_model_config

    config = read_model_config(directory)
    kind = feature_kind(config.features.kind)
    if kind.sample_rate != config.sample_rate:
        raise ValueError(
            f"{directory}/config.json: sample_rate {config.sample_rate} but the {kind.name} features "
            f"run at {kind.sample_rate}"
        )
    features = kind.load(directory, config.features.params, kwargs.get("device") or "cpu")
    mode = next((m for m, a in AUDIO_MODES.items() if a.sample_rate == config.sample_rate), None)
    if mode is None:
        raise ValueError(f"{directory}/config.json: no audio mode runs at {config.sample_rate} Hz")
    return Pipeline(
        load_network(directory),
        features,
        name=config.name or directory.name,
        objective=config.objective,
        description=config.description,
        audio_mode=mode,
        model_config=config,
        window_seconds=config.recommended.window or config.provenance.duration,
        **kwargs,
    )


def load_pipeline(
    name: str = "default",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    max_duration: float = 30.0,
    precision: str | None = None,
    compile: bool | str = False,
) -> Pipeline:
    """``"default"`` (embedded offline model), an MMAudio network (public weights from the Hub:
    ``mmaudio-small-16k``, ``mmaudio-small-44k``, ``mmaudio-medium-44k``, ``mmaudio-large-44k``,
    ``mmaudio-large-44k-v2``), a local model directory, or a Hugging Face repo id holding one.

    ``precision`` ("auto", "fp32", "bf16", "fp16") and ``compile`` select the fast path
    (:mod:`mfmjt.acceleration`); call :meth:`Pipeline.warm_up` after loading when compiling."""
    kwargs: dict[str, Any] = dict(
        device=device, dtype=dtype, max_duration=max_duration, precision=precision, compile=compile
    )
    source = resolve_model(name)  # the one name -> model resolver (mfmjt.resolve)
    if source.kind == "mmaudio":
        return _load_mmaudio(source.variant, **kwargs)
    if source.kind == "file":
        if not source.features.kind.startswith("mmaudio"):
            raise ValueError(
                f"{name} is a bare {source.variant} network: its feature stack is not in the file; "
                "load the model directory it came from"
            )
        return _load_mmaudio(source.variant, network_file=source.file, **kwargs)
    return _load_directory(source.directory, **kwargs)
