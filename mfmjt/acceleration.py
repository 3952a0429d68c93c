"""The fast path: reduced precision and ``torch.compile`` for a :class:`~mfmjt.pipeline.Pipeline`.

Two independent switches:

* ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``): the dtype of the network and of the
  paper-size feature modules (CLIP, Synchformer, the VAE and BigVGAN). ``"auto"`` is bf16 on CUDA
  (as MMAudio's demo runs) and fp32 elsewhere. Modules are cast in place; the mel converter always
  works in fp32, features and waveforms leave every module as fp32.
* ``compile``: ``torch.compile`` of the network's velocity (with CUDA graphs on CUDA:
  ``mode="reduce-overhead"``; the one-step request has fixed shapes, so it replays one recorded
  graph) and of the VAE decoder and the vocoder (``mode="default"``: their outputs are returned to
  the caller, which CUDA-graph buffers would overwrite on the next call).

Nothing here runs on the default CPU path: a CPU pipeline built without these options computes
bit-identically to one built before this module existed (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_precision(precision: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``"auto"``/None -> bf16 on CUDA, fp32 elsewhere; a name or a dtype -> that dtype."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision}")
        return precision
    if precision is None or precision == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    return PRECISIONS[precision]


def resolve_compile_mode(compile: bool | str, device: torch.device | str) -> str | None:
    """False -> None (eager); True -> ``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"``
    elsewhere; a ``torch.compile`` mode name -> that mode."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "reduce-overhead" if torch.device(device).type == "cuda" else "default"
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {compile!r}")
    return compile


# ------------------------------------------------------------------------------------ precision
def _castable_parts(features: Any) -> list[tuple[str, nn.Module]]:
    """The heavy modules of a paper-size stack that may run in reduced precision.

    Only classes known to feed their inputs in their own dtype are cast: the open_clip model shared
    by the CLIP encoders, Synchformer's ViT, and the codec's VAE and vocoder (not its mel converter).
    Other encoders (e.g. the embedded model's offline stack) are left as they are.
    """
    from mfmjt.features.audio import MMAudioCodec
    from mfmjt.features.clip import ClipTextEncoder, ClipVisualEncoder
    from mfmjt.features.synchformer import SynchformerEncoder

    parts: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    for name in ("clip", "text"):
        encoder = getattr(features, name)
        if isinstance(encoder, ClipVisualEncoder | ClipTextEncoder) and id(encoder.clip) not in seen:
            seen.add(id(encoder.clip))
            parts.append((f"{name} (open_clip)", encoder.clip))
    if isinstance(features.sync, SynchformerEncoder):
        parts.append(("sync", features.sync.vfeat_extractor))
    if isinstance(features.codec, MMAudioCodec):
        parts += [("vae", features.codec.vae), ("vocoder", features.codec.vocoder)]
    return parts


def cast_features(
    features: Any, dtype: torch.dtype, *, vocoder_dtype: torch.dtype | None = None
) -> list[str]:
    """Cast the castable modules of a feature stack to ``dtype`` in place; returns their names.

    ``vocoder_dtype`` (default ``dtype``) lets BigVGAN run in another precision than the rest.
    """
    names = []
    for name, module in _castable_parts(features):
        target = vocoder_dtype if (name == "vocoder" and vocoder_dtype is not None) else dtype
        module.to(dtype=target)
        names.append(f"{name}: {str(target).removeprefix('torch.')}")
    return names


# ------------------------------------------------------------------------------------- compile
def _on_device_times(
    network: nn.Module, compiled: Callable[..., torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """Wrap a compiled ``inner_velocity`` so that time inputs reach it as tensors on the network's
    device (CPU scalars inside a CUDA graph would force a host copy and disable the graph).

    The conversion is the one :meth:`MFMJTNetwork._time_vector` applies, so results are unchanged.
    """

    def inner_velocity(
        latent: torch.Tensor,
        tau: Any,
        conditions: Any,
        dt: Any = None,
        cfg_strength: Any = None,
        scaled: Any = False,
    ) -> torch.Tensor:
        device = network.device
        tau = torch.as_tensor(tau, device=device)
        dt = None if dt is None else torch.as_tensor(dt, device=device)
        cfg_strength = None if cfg_strength is None else torch.as_tensor(cfg_strength, device=device)
        scaled = torch.as_tensor(scaled, dtype=torch.bool, device=device)
        return compiled(latent, tau, conditions, dt, cfg_strength, scaled)

    inner_velocity.is_compiled_velocity = True  # type: ignore[attr-defined]
    return inner_velocity


def compile_network(network: nn.Module, mode: str) -> None:
    """Replace ``network.inner_velocity`` by a compiled version (undo with :func:`uncompile_network`)."""
    uncompile_network(network)
    compiled = torch.compile(type(network).inner_velocity.__get__(network), mode=mode)
    network.inner_velocity = _on_device_times(network, compiled)


def uncompile_network(network: nn.Module) -> None:
    if "inner_velocity" in vars(network):
        del network.inner_velocity


def network_is_compiled(network: nn.Module) -> bool:
    return getattr(vars(network).get("inner_velocity"), "is_compiled_velocity", False)


def compile_codec(features: Any, mode: str = "default") -> list[str]:
    """``torch.compile`` the VAE decoder and the vocoder of an :class:`MMAudioCodec` in place."""
    from mfmjt.features.audio import MMAudioCodec

    codec = features.codec
    if not isinstance(codec, MMAudioCodec):
        return []
    codec.vae.decoder.compile(mode=mode)
    codec.vocoder.compile(mode=mode)
    return ["vae.decoder", "vocoder"]


def uncompile_codec(features: Any) -> None:
    from mfmjt.features.audio import MMAudioCodec

    codec = features.codec
    if isinstance(codec, MMAudioCodec):
        for module in (codec.vae.decoder, codec.vocoder):
            module._compiled_call_impl = None


# ---------------------------------------------------------------------------------- the switch
@dataclass(frozen=True)
class Acceleration:
    """What :func:`accelerate` applied to a pipeline (shown by ``Pipeline.info``)."""

    dtype: torch.dtype  # network and features
    compile_mode: str | None  # the network's torch.compile mode; None: eager
    cast: tuple[str, ...] = ()
    compiled: tuple[str, ...] = ()

    def describe(self) -> str:
        text = str(self.dtype).removeprefix("torch.")
        if self.compile_mode:
            text += f", torch.compile ({self.compile_mode})"
        return text


def accelerate(
    network: nn.Module,
    features: Any,
    device: torch.device,
    *,
    precision: str | torch.dtype | None,
    compile: bool | str,
    vocoder_precision: str | None = None,
) -> Acceleration:
    """Cast the feature stack (when ``precision`` is given, or always on CUDA) and compile on request.

    The network is cast by the pipeline itself; this only compiles it.
    """
    dtype = resolve_precision(precision, device)
    cast: list[str] = []
    if precision is not None or device.type == "cuda":
        vocoder_dtype = None if vocoder_precision is None else resolve_precision(vocoder_precision, device)
        cast = cast_features(features, dtype, vocoder_dtype=vocoder_dtype)
    mode = resolve_compile_mode(compile, device)
    compiled: list[str] = []
    if mode is not None:
        compile_network(network, mode)
        compiled = ["network", *compile_codec(features, "default")]
    if cast or compiled:
        logger.info("acceleration: cast %s; compiled %s (%s)", cast or "nothing", compiled or "nothing", mode)
    return Acceleration(dtype, mode, tuple(cast), tuple(compiled))


def disable_compile(network: nn.Module, features: Any) -> None:
    """Back to eager execution (used when a compiled warm-up fails)."""
    uncompile_network(network)
    uncompile_codec(features)


def options_from_env(environ: Any = None) -> dict[str, Any]:
    """``$MFMJT_PRECISION`` (auto/fp32/bf16/fp16) and ``$MFMJT_COMPILE`` (1/0, or a torch.compile
    mode) as ``load_pipeline`` keyword arguments, for the demo."""
    import os

    env = os.environ if environ is None else environ
    precision = env.get("MFMJT_PRECISION", "").strip().lower() or None
    if precision is not None and precision not in PRECISION_CHOICES:
        raise ValueError(f"MFMJT_PRECISION must be one of {PRECISION_CHOICES}, got {precision!r}")
    raw = env.get("MFMJT_COMPILE", "").strip().lower()
    compile: bool | str = raw in ("1", "true", "yes", "on") or (raw if raw in COMPILE_MODES else False)
    if raw and compile is False and raw not in ("0", "false", "no", "off"):
        raise ValueError(f"MFMJT_COMPILE must be 1, 0 or one of {COMPILE_MODES}, got {raw!r}")
    return {"precision": precision, "compile": compile}


# ----------------------------------------------------------------------------------- warm-up
WARM_UP_PROMPT = "warm-up"


def warm_up(pipe: Any, duration: float = 8.0, steps: tuple[int, ...] | list[int] = (1,)) -> dict[str, float]:
    """Generate for a synthetic clip of ``duration`` seconds (both guidance modes, CFG on), twice per
    entry of ``steps``, so that every shape of such requests is compiled and its CUDA graph recorded.

    If a compiled run fails, compilation is turned off (with a warning) and the warm-up is repeated
    eagerly, so a demo still starts. Returns the stage timings of the last run.
    """
    import tempfile
    from pathlib import Path

    from mfmjt.toy.render import write_scene_mp4  # any clip would do; a toy scene needs no file
    from mfmjt.toy.scene import make_scene
    from mfmjt.toy.specs import SceneConfig

    duration = min(float(duration), pipe.max_duration)
    if not duration > 0:
        raise ValueError(f"warm-up duration must be positive, got {duration}")
    steps = tuple(int(s) for s in steps) or (1,)
    with tempfile.TemporaryDirectory(prefix="mfmjt-warm-up-") as tmp:
        video = write_scene_mp4(
            make_scene(0, SceneConfig(duration=duration + 0.25)), Path(tmp) / "warm_up.mp4"
        )

        def run() -> dict[str, float]:
            timings: dict[str, float] = {}
            for n in steps:
                for _ in range(2):  # the second run replays what the first recorded
                    pipe._video_cache.clear()  # run the video encoders every time
                    result = pipe.generate(
                        video=video, prompt=WARM_UP_PROMPT, duration=duration, steps=n, guidance="both"
                    )
                    pipe._one_step = None  # the next one-step run must call the network again
                    timings = result.timings
            return timings

        try:
            timings = run()
        except Exception as err:
            if not pipe.acceleration.compile_mode:
                raise
            logger.warning(
                "compiled warm-up failed (%s: %s); continuing without torch.compile", type(err).__name__, err
            )
            disable_compile(pipe.network, pipe.features)
            pipe.acceleration = Acceleration(pipe.acceleration.dtype, None, pipe.acceleration.cast, ())
            timings = run()
    logger.info("warm-up (%g s, steps %s): %.2f s for the last request", duration, steps, timings["total"])
    return timings
