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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt import long_form, media
from mfmjt.config import AUDIO_MODES, CLIP_FPS, MIN_DURATION, SYNC_FPS, NetworkConfig, SequenceLengths
from mfmjt.features.base import FeatureStack
from mfmjt.features.mmaudio import load_mmaudio_features, mmaudio_feature_stack  # noqa: F401 (re-exported)
from mfmjt.guidance import guide, needs_unconditional
from mfmjt.model.network import Conditions, MFMJTNetwork
from mfmjt.model_dir import ModelConfig, SamplingSettings
from mfmjt.request import GenerationRequest, Limits, Sampling, resolve_sampling
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
        self.max_duration = check_max_duration(max_duration)
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
        steps: int | None = None,
        cfg_strength: float | None = None,
        guidance: str | None = None,
        seed: int = 0,
        progress: ProgressCallback | None = None,
        guidance_in_network: bool | None = None,
        decoded: media.DecodedVideo | None = None,
    ) -> GenerationResult:
        """Generate audio for a video (or, with ``video=None``, for the prompt alone).

        ``steps``, ``cfg_strength`` and ``guidance`` left None are the model's (:attr:`recommended`,
        resolved by :class:`mfmjt.request.Sampling`): one step at ω 1.5 for a MeanFlow model, 25 steps
        at ω 4.5 for a flow-matching one. ``guidance_in_network`` (default: when the network has a
        guidance embedding and there is no negative prompt) guides in one forward; False forces CFG's
        conditional + unconditional pair. ``decoded`` is ``video`` already decoded by
        :meth:`decode_video` (for the same ``duration``), so that a caller can decode outside a GPU
        reservation; the video is then not decoded again.
        Raises ValueError (``media.MediaError`` for unusable files) with a user-facing message.
        """
        request = GenerationRequest(
            video, prompt, negative_prompt, duration, steps, cfg_strength, guidance, seed
        ).validate(Limits(max_steps=MAX_STEPS), self.recommended)
        if request.video is not None:
            request = replace(request, video=_video_file(request.video))
        in_network = self._guidance_in_network(guidance_in_network, request.negative_prompt)
        with self._lock:
            return self._generate(request, in_network, progress, decoded)

    def sampling(
        self, steps: int | None = None, cfg_strength: float | None = None, guidance: str | None = None
    ) -> Sampling:
        """The settings :meth:`generate` samples with for these arguments (None: the model's), checked."""
        return resolve_sampling(self.recommended, Limits(max_steps=MAX_STEPS), steps, cfg_strength, guidance)

    def _guidance_in_network(self, asked: bool | None, negative_prompt: str) -> bool:
        embedded = bool(self.network.config.guidance_embed)
        if asked and not embedded:
            raise ValueError("this model has no guidance embedding: it can only use CFG's two forwards")
        if asked and negative_prompt:
            raise ValueError("a negative prompt needs CFG's two forwards; leave guidance_in_network unset")
        return embedded and not negative_prompt if asked is None else bool(asked)

    def decode_video(self, video: str | Path, duration: float | None = None) -> media.DecodedVideo:
        """``video`` decoded once, as :meth:`generate` will use it (pass the result as ``decoded=`` with the
        same ``duration``): the first ``duration`` seconds (None: all) up to ``max_duration``; a clip longer
        than one window is decoded in this model's windows (``decoded.windows``), in one pass.
        Raises ValueError (``media.MediaError`` for unusable files) with a user-facing message."""
        request = GenerationRequest(video=video, duration=duration).validate(
            Limits(max_steps=MAX_STEPS), self.recommended
        )
        path = _video_file(request.video)
        long = long_form.plan_request(self, path, request.duration, DEFAULT_T2A_DURATION)
        if long is None:
            return media.decode_video(path, request.duration, max_duration=self.max_duration)
        spans = self._spans(long.plan)
        windows: list[media.DecodedVideo] = []
        try:
            for window in media.decode_video_windows(path, spans):
                windows.append(window)
        except media.MediaError as exc:  # the frames end before a later window starts
            if not windows:
                raise
            logger.warning("%s", exc)
        first = windows[0]
        empty = first.clip_frames[:0], first.sync_frames[:0]
        return replace(
            first,
            clip_frames=empty[0],
            sync_frames=empty[1],
            duration=long.duration,
            truncated=bool(long.message),
            message=long.message,
            decoded_frames=windows[-1].decoded_frames,
            windows=tuple(windows),
            spans=tuple(spans),
        )

    def _spans(self, plan: long_form.WindowPlan) -> list[tuple[float, float]]:
        """(start, length) seconds of each window of ``plan``."""
        rate = self.audio_mode.latent_rate
        return [(w.start / rate, w.length / rate) for w in plan.windows]

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
        request = request.validate(Limits(max_steps=MAX_STEPS), self.recommended)
        video = None if request.video is None else _video_file(request.video)
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
        request: GenerationRequest,
        in_network: bool,
        progress: ProgressCallback | None,
        decoded: media.DecodedVideo | None,
    ) -> GenerationResult:
        """A validated request: one window, or cross-faded windows for a clip longer than one."""
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        video, sampling = request.video, request.sampling
        windows: Iterator[media.DecodedVideo] | None = None  # a long clip's decoded windows
        if decoded is not None and decoded.windows:
            long = long_form.plan_request(
                self, video, None, DEFAULT_T2A_DURATION, available=decoded.duration, message=decoded.message
            )
            if long is None or tuple(self._spans(long.plan)) != decoded.spans:
                raise ValueError(
                    "decoded was made for another model or duration; decode with this pipeline's decode_video"
                )
            windows = iter(decoded.windows)
        elif decoded is not None:
            long = long_form.plan_request(
                self,
                video,
                request.duration,
                DEFAULT_T2A_DURATION,
                available=decoded.duration,
                message=decoded.message,
            )
            if long is not None:  # decoded as one clip but longer than a window: windows from the file
                logger.info("decoded is not in this model's windows; decoding them from %s", video)
                decoded = None
        else:
            long = long_form.plan_request(self, video, request.duration, DEFAULT_T2A_DURATION)
        if long is not None:
            return self._generate_windows(request, long, in_network, progress, windows, timings, t_start)
        unconditional = needs_unconditional(sampling.cfg_strength) and not in_network
        req = self._prepare(
            video,
            request.prompt,
            request.negative_prompt,
            request.duration,
            request.seed,
            unconditional,
            timings,
            decoded,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            z0 = self._sample(
                req.noise, req.cond, req.uncond, sampling, in_network, progress, req.one_step_key
            )
            timings["network"] = time.perf_counter() - start
            start = time.perf_counter()
            waves = self._decode(z0, sampling.modes)
            timings["audio_decode"] = time.perf_counter() - start
        if sampling.steps == 1 and progress is not None:
            progress(1, 1)
        timings["total"] = time.perf_counter() - t_start
        audio = {m: waves[i].astype(np.float32) for i, m in enumerate(sampling.modes)}
        return self._result(audio, req.duration, timings, _settings(request, in_network), video, req.message)

    def _generate_windows(
        self,
        request: GenerationRequest,
        long: long_form.LongFormRequest,
        in_network: bool,
        progress: ProgressCallback | None,
        decoded_windows: Iterator[media.DecodedVideo] | None,
        timings: dict[str, float],
        t_start: float,
        fade: str = "adaptive",
    ) -> GenerationResult:
        """Generate every window of ``long.plan`` and cross-fade them (:class:`long_form.Stitcher`) into
        audio of exactly ``duration * sample_rate`` samples per mode. ``progress(done, total)`` counts
        sampling steps over all windows (one per window at one step)."""
        plan, net, rate = long.plan, self.network, self.audio_mode.latent_rate
        sampling = request.sampling
        steps, modes = sampling.steps, sampling.modes
        unconditional = needs_unconditional(sampling.cfg_strength) and not in_network
        t0 = time.perf_counter()
        text_f = self._text_features(request.prompt)
        negative_f = self._text_features(request.negative_prompt) if request.negative_prompt else None
        timings["text_features"] = time.perf_counter() - t0
        noise = long_form.window_seed_noise(request.seed, plan.total, net.config.latent_dim).to(self.device)
        stitcher = long_form.Stitcher(plan, self.audio_mode.samples_per_latent, len(modes), fade)
        if request.video is None:
            windows = self._text_windows(plan)
        else:
            if decoded_windows is None:
                decoded_windows = media.decode_video_windows(request.video, self._spans(plan))
            windows = self._video_windows(plan, decoded_windows, timings)
        total_steps = len(plan.windows) * steps
        duration, message, end = long.duration, long.message, 0.0
        for k, (clip_f, sync_f, latents, seconds) in enumerate(windows):
            window = plan.windows[k]
            t0 = time.perf_counter()
            with torch.inference_mode():
                cond = net.preprocess_conditions(clip_f, sync_f, text_f, latents)
                uncond = None
                if unconditional:
                    uncond = net.empty_conditions(1, latents, clip_f.shape[1], sync_f.shape[1], negative_f)
                _add(timings, "conditions", t0)
                t0 = time.perf_counter()
                step_progress = None
                if progress is not None:
                    step_progress = lambda i, n, k=k: progress(k * steps + i, total_steps)  # noqa: E731
                window_noise = noise[:, window.start : window.start + latents]
                z0 = self._sample(window_noise, cond, uncond, sampling, in_network, step_progress)
                _add(timings, "network", t0)
                t0 = time.perf_counter()
                waves = self._decode(z0, modes)
                _add(timings, "audio_decode", t0)
            if steps == 1 and progress is not None:
                progress(k + 1, total_steps)
            if k > 0 and window.start + latents < plan.fade(k)[1]:
                break  # the video's frames ended before this window reaches its cross-fade
            stitcher.add(k, waves)
            end = window.start / rate + seconds
            if latents < window.length:
                break
        if end < duration - 1e-9:  # the video's frames ended before its timestamps said
            duration = end
            note = f"the video's frames end at {duration:.2f} s; the audio stops there"
            message = f"{message}; {note}" if message else note
        n = round(duration * self.sample_rate)
        timings["total"] = time.perf_counter() - t_start
        logger.info("%.2f s of audio from windows of %.2f s", duration, plan.window / rate)
        audio = {m: stitcher.audio[i, :n].copy() for i, m in enumerate(modes)}
        settings = dict(
            _settings(request, in_network),
            windows=len(plan.windows),
            window_seconds=plan.window / rate,
            overlap_seconds=plan.overlap / rate,
        )
        return self._result(audio, duration, timings, settings, request.video, message)

    def _video_windows(
        self, plan: long_form.WindowPlan, decoded: Iterator[media.DecodedVideo], timings: dict[str, float]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
        """(clip features, sync features, latent frames, seconds of video) per window of ``plan`` from its
        ``decoded`` frames.

        A window whose frames end less than ``long_form.PAD_TOLERANCE`` early (the last window may reach
        up to a latent frame past the video) holds the last frame; one that ends earlier is generated at
        the length it has, and is the last; one with too few frames to use ends the clip before it.
        """
        rate = self.audio_mode.latent_rate
        try:
            for w in plan.windows:
                length = w.length / rate
                t0 = time.perf_counter()
                try:
                    window = next(decoded)
                except StopIteration:
                    return
                except media.MediaError as exc:  # frames end before this window has enough of them
                    if w.index == 0:
                        raise
                    logger.warning("%s", exc)
                    return
                _add(timings, "decode_video", t0)
                latents, seconds = w.length, length
                if window.duration < length - long_form.PAD_TOLERANCE:  # the frames end early
                    latents = max(1, min(w.length, math.ceil(window.duration * rate)))
                    seconds = window.duration
                    logger.warning("%s", window.message)
                    clip, sync = window.clip_frames, window.sync_frames
                else:
                    clip = long_form.hold_last(window.clip_frames, int(length * CLIP_FPS + 1e-9))
                    sync = long_form.hold_last(window.sync_frames, int(length * SYNC_FPS + 1e-9))
                t0 = time.perf_counter()
                with torch.inference_mode():
                    clip_f = self.features.clip(clip[None].to(self.device)).float()
                    _add(timings, "clip_features", t0)
                    t0 = time.perf_counter()
                    sync_f = self.features.sync(sync[None].to(self.device)).float()
                    _add(timings, "sync_features", t0)
                yield clip_f, sync_f, latents, seconds
                if latents < w.length:
                    return
        finally:
            close = getattr(decoded, "close", None)
            if close is not None:
                close()

    def _text_windows(
        self, plan: long_form.WindowPlan
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
        rate = self.audio_mode.latent_rate
        for w in plan.windows:
            lengths = SequenceLengths.for_duration(max(w.length / rate, MIN_DURATION), self.audio_mode)
            clip_f, sync_f, _ = self.network.empty_features(1, lengths.clip, lengths.sync, text=False)
            yield clip_f, sync_f, w.length, w.length / rate

    def _sample(
        self,
        noise: torch.Tensor,
        cond: Conditions,
        uncond: Conditions | None,
        sampling: Sampling,
        in_network: bool,
        progress: ProgressCallback | None,
        one_step_key: tuple | None = None,
    ) -> dict[str, torch.Tensor]:
        """z_0 per guidance mode from the noise ``z_1`` (under inference mode); at one step with CFG the
        u_c, u_∅ of the last request with the same ``one_step_key`` are reused (None: never)."""
        steps, w, modes = sampling.steps, sampling.cfg_strength, sampling.modes
        if steps == 1 and not in_network:
            return self._one_step_sample(one_step_key, noise, cond, uncond, w, modes)
        return sample(
            self.network,
            noise,
            cond,
            uncond,
            steps=steps,
            cfg_strength=w,
            guidance=sampling.guidance,
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


def _settings(request: GenerationRequest, in_network: bool) -> dict[str, Any]:
    """A result's ``settings``: what was asked for, with the model's defaults filled in."""
    return dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        cfg_strength=request.cfg_strength,
        guidance=request.guidance,
        guidance_in_network=in_network,
        seed=request.seed,
    )


def _model_name(name: Any) -> str:
    """``name`` as text, or a one-sentence error."""
    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        shown = "nothing" if name is None else f"{type(name).__name__} {name!r}"[:60]
        raise ValueError(
            f"the model must be named: 'default', an MMAudio network, a model directory or a HF repo id "
            f"(got {shown})"
        )
    return name


def check_max_duration(value: Any) -> float:
    """``max_duration`` as seconds, at least one Synchformer segment (0.64 s), or a one-sentence error."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds >= MIN_DURATION):
        raise ValueError(f"max_duration must be at least {MIN_DURATION:g} seconds, got {value!r}")
    return seconds


def _video_file(video: str | Path) -> Path:
    """``video`` as an existing file, or a one-sentence error (a folder, a missing file)."""
    path = Path(video)
    if path.is_dir():
        raise media.MediaError(f"{path} is a folder, not a video: give one video file")
    return media.check_file(path)


def _add(timings: dict[str, float], stage: str, since: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - since


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
    name = _model_name(name)
    max_duration = check_max_duration(max_duration)
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
