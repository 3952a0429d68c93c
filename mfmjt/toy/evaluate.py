"""Evaluation of a model on held-out toy scenes: generate a clip per scene and score it.

The metrics are :mod:`mfmjt.toy.metrics`'. Speed: RTF = request seconds / audio seconds
(``timings["total"]``, which includes video decoding and features; over the clips whose video was
not in the pipeline's cache), and ``rtf_generation`` (condition projections, network and audio
decoder only, every clip).

Held-out scenes use seeds from ``HELD_OUT_SEED`` (training uses 0..1999) and are drawn like training
items: a scene of ``duration + 0.25`` s, written to mp4 and decoded for ``duration`` seconds. Each
scene is written once into a cache directory. The same metrics for the real audio (sanity: F1 ≈ 1)
and for the real audio through the codec (the upper bound of any model using that codec) come from
:func:`evaluate_references`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt.onsets import detect_onsets
from mfmjt.toy.metrics import (
    ONSET_THRESHOLD_DB,
    OnsetReference,
    frechet_distance,
    log_mel_frames,
    pitch_checks,
    reference_onsets,
    score_onsets,
    sum_scores,
)
from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig, SoundEvent

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 1_000_000
SCENE_PADDING_S = 0.25  # as in training: the scene runs past the window so decoding keeps all of it
CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Settings and scenes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    """How clips are generated. ``use_caption``: the scene's caption is the prompt (as in training).
    ``steps``, ``cfg`` and ``guidance`` None are the model's (:meth:`resolve`, as ``Pipeline.generate``)."""

    steps: int | None = None
    cfg: float | None = None
    guidance: str | None = None  # "standard" | "scaled" | "both"
    use_caption: bool = True
    seed: int = 0  # the clip of scene s uses generation seed ``seed + s``
    guidance_in_network: bool | None = None  # None: the model's own way (see Pipeline.generate)

    def resolve(self, pipeline: Any) -> EvalSettings:
        """A copy with the sampling settings left None filled from ``pipeline.recommended``."""
        from dataclasses import replace

        from mfmjt.request import Sampling

        s = Sampling(self.steps, self.cfg, self.guidance).resolve(pipeline.recommended)
        return replace(self, steps=s.steps, cfg=s.cfg_strength, guidance=s.guidance)

    @property
    def label(self) -> str:
        if self.steps is None or self.cfg is None or self.guidance is None:
            return "the model's sampling settings"
        label = f"{self.steps} step{'s' if self.steps > 1 else ''}, ω={self.cfg:g}, {self.guidance}"
        return label + (", two-pass CFG" if self.guidance_in_network is False else "")


@dataclass(frozen=True)
class EvalScene:
    """One held-out clip: its video file, real audio (cut to ``duration``) and ground truth."""

    seed: int
    duration: float
    video: Path
    audio: np.ndarray  # float32 [round(duration * sample_rate)]
    sample_rate: int
    caption: str
    events: tuple[SoundEvent, ...]
    continuous_starts: tuple[float, ...]  # starts of hums and rolling


def default_scene_cache() -> Path:
    """``$MFMJT_CACHE/eval_scenes`` (default ``~/.cache/mfmjt/eval_scenes``)."""
    env = os.environ.get("MFMJT_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "mfmjt") / "eval_scenes"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def held_out_scene(seed: int, duration: float, cache_dir: str | Path) -> EvalScene:
    """The scene of ``seed`` as an evaluation clip, written into (or read from) ``cache_dir``."""
    folder = Path(cache_dir) / f"v{CACHE_VERSION}_{duration:g}s"
    paths = tuple(folder / f"scene_{seed}{suffix}" for suffix in (".mp4", ".npy", ".json"))
    video, audio_path, meta_path = paths
    if not all(path.is_file() for path in paths):
        folder.mkdir(parents=True, exist_ok=True)
        scene = make_scene(seed, SceneConfig(duration=duration + SCENE_PADDING_S))
        n = round(duration * scene.sample_rate)
        meta = {
            "seed": seed,
            "duration": duration,
            "sample_rate": scene.sample_rate,
            "caption": scene.caption,
            "events": [{k: _plain(v) for k, v in asdict(e).items()} for e in scene.events],
            "continuous_starts": [float(c.start) for c in scene.continuous],
        }
        tmp = {path: path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}") for path in paths}
        write_scene_mp4(scene, tmp[video])
        np.save(tmp[audio_path], scene.audio[:n])
        tmp[meta_path].write_text(json.dumps(meta))
        for path in paths:  # the json last: a complete set only when it exists
            tmp[path].replace(path)
    meta = json.loads(meta_path.read_text())
    return EvalScene(
        seed=seed,
        duration=float(meta["duration"]),
        video=video,
        audio=np.load(audio_path),
        sample_rate=int(meta["sample_rate"]),
        caption=meta["caption"],
        events=tuple(SoundEvent(**e) for e in meta["events"]),
        continuous_starts=tuple(meta["continuous_starts"]),
    )


def held_out_scenes(
    n: int, cache_dir: str | Path | None = None, duration: float = 4.0, first_seed: int = HELD_OUT_SEED
) -> list[EvalScene]:
    """``n`` evaluation clips, seeds ``first_seed ...`` (never used in training)."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if first_seed < HELD_OUT_SEED:
        logger.warning("seeds below %d may overlap the training scenes", HELD_OUT_SEED)
    cache = Path(cache_dir) if cache_dir is not None else default_scene_cache()
    return [held_out_scene(first_seed + i, float(duration), cache) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Scoring sets of clips
# --------------------------------------------------------------------------------------------------


def _reference_of(scene: EvalScene) -> OnsetReference:
    return reference_onsets(scene.events, scene.duration, scene.continuous_starts)


def score_clips(
    audios: Sequence[np.ndarray], scenes: Sequence[EvalScene], real_frames: np.ndarray | None = None
) -> dict[str, Any]:
    """All audio metrics of ``audios[k]`` (a clip for ``scenes[k]``), pooled over the set."""
    if len(audios) != len(scenes) or not scenes:
        raise ValueError(f"need one audio per scene, got {len(audios)} for {len(scenes)}")
    scores, checks, frames = [], [], []
    for audio, scene in zip(audios, scenes, strict=True):
        audio = np.asarray(audio, dtype=np.float32)[: round(scene.duration * scene.sample_rate)]
        reference = _reference_of(scene)
        detected = detect_onsets(audio, scene.sample_rate, threshold_db=ONSET_THRESHOLD_DB)
        score = score_onsets(reference, detected)
        scores.append(score)
        checks += pitch_checks(audio, scene.sample_rate, reference, detected, score)
        frames.append(log_mel_frames(audio, scene.sample_rate))
    if real_frames is None:
        real_frames = np.concatenate([log_mel_frames(s.audio, s.sample_rate) for s in scenes])
    total = sum_scores(scores)
    return {
        "onset_precision": total.precision,
        "onset_recall": total.recall,
        "onset_f1": total.f1,
        "offset_ms": total.offset_ms,
        "bias_ms": total.bias_ms,
        "n_reference": total.tp + total.fn,
        "n_matched": total.tp,
        "n_false_alarms": total.fp,
        "offscreen_recall": total.offscreen_hits / total.offscreen_total if total.offscreen_total else None,
        "n_offscreen": total.offscreen_total,
        "pitch_accuracy": float(np.mean(checks)) if checks else None,
        "n_pitch": len(checks),
        "frechet_distance": frechet_distance(np.concatenate(frames), real_frames),
    }


def evaluate_model(
    pipeline: Any, scenes: Sequence[EvalScene], settings: EvalSettings = EvalSettings()
) -> dict[str, Any]:
    """Generate a clip for every scene with ``settings`` and score it; one metrics dict per guidance
    mode (two for ``guidance="both"``). Deterministic: scene ``s`` uses seed ``settings.seed + s``."""
    if not scenes:
        raise ValueError("no scenes to evaluate")
    settings = settings.resolve(pipeline)
    durations = {s.duration for s in scenes}
    # warm up (tokenizer, allocator) on a text-only request so the first clip's time is not inflated
    pipeline.generate(prompt="warm up", duration=min(durations), steps=1, cfg_strength=1.0)
    audios: dict[str, list[np.ndarray]] = {}
    timings: list[dict[str, float]] = []
    start = time.perf_counter()
    for scene in scenes:
        result = pipeline.generate(
            video=scene.video,
            prompt=scene.caption if settings.use_caption else "",
            duration=scene.duration,
            steps=settings.steps,
            cfg_strength=settings.cfg,
            guidance=settings.guidance,
            seed=settings.seed + scene.seed,
            guidance_in_network=settings.guidance_in_network,
        )
        if abs(result.duration - scene.duration) > 1e-6:
            raise RuntimeError(
                f"scene {scene.seed}: generated {result.duration} s, expected {scene.duration}"
            )
        for mode, wave in result.audio.items():
            audios.setdefault(mode, []).append(wave)
        timings.append({k: v / result.duration for k, v in result.timings.items()})
    logger.info("%s: %d clips in %.1f s", settings.label, len(scenes), time.perf_counter() - start)
    real_frames = np.concatenate([log_mel_frames(s.audio, s.sample_rate) for s in scenes])
    stages = sorted({k for t in timings for k in t})
    per_stage = {k: float(np.mean([t.get(k, 0.0) for t in timings])) for k in stages}
    # a clip whose video features came from the pipeline's cache (small sets) has no full request time
    fresh = [t["total"] for t in timings if "decode_video" in t]
    return {
        "model": getattr(pipeline, "name", ""),
        "objective": getattr(pipeline, "objective", ""),
        "settings": asdict(settings),
        "n_clips": len(scenes),
        "duration": sorted(durations),
        "first_seed": min(s.seed for s in scenes),
        "rtf": float(np.mean(fresh)) if fresh else None,
        "rtf_generation": sum(per_stage.get(k, 0.0) for k in ("conditions", "network", "audio_decode")),
        "rtf_stages": per_stage,
        "modes": {mode: score_clips(waves, scenes, real_frames) for mode, waves in audios.items()},
    }


@torch.no_grad()
def codec_round_trip(codec: Any, audio: np.ndarray) -> np.ndarray:
    """``codec.decode(codec.encode(audio).mean)``, cut to the input length."""
    wave = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
    mean, _ = codec.encode(wave)
    return codec.decode(mean)[0].float().cpu().numpy()[: wave.shape[1]]


def evaluate_references(scenes: Sequence[EvalScene], codec: Any | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of the real audio (sanity) and, given a codec, of its encode→decode round trip."""
    real_frames = np.concatenate([log_mel_frames(s.audio, s.sample_rate) for s in scenes])
    out = {"real": score_clips([s.audio for s in scenes], scenes, real_frames)}
    if codec is not None:
        out["codec"] = score_clips([codec_round_trip(codec, s.audio) for s in scenes], scenes, real_frames)
    return out


# --------------------------------------------------------------------------------------------------
# Command-line helpers
# --------------------------------------------------------------------------------------------------


def run_evaluation(
    model: str,
    n: int,
    settings: EvalSettings,
    *,
    duration: float = 4.0,
    cache_dir: str | Path | None = None,
    references: bool = False,
    device: str | None = None,
    first_seed: int = HELD_OUT_SEED,
) -> dict[str, Any]:
    """``mfmjt evaluate``: load ``model``, score it on ``n`` held-out clips (and the references).

    ``first_seed`` picks the scenes: the default set starts at ``HELD_OUT_SEED``; a disjoint range
    (e.g. 2,000,000) gives validation scenes for choosing between models without touching it."""
    from mfmjt.pipeline import load_pipeline

    scenes = held_out_scenes(n, cache_dir, duration, first_seed=first_seed)
    pipe = load_pipeline(model, device=device)
    result = {"source": model, **evaluate_model(pipe, scenes, settings)}
    if references:
        result["references"] = evaluate_references(scenes, pipe.features.codec)
    return result


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per guidance mode (and reference), for logs."""
    name = result.get("source") or result["model"]
    rows = [(f"{name} [{mode}]", m) for mode, m in result["modes"].items()]
    rows += [(name, m) for name, m in result.get("references", {}).items()]
    return [
        f"{name}: onset F1 {_fmt(m['onset_f1'])} (P {_fmt(m['onset_precision'])}, "
        f"R {_fmt(m['onset_recall'])}), offset {_fmt(m['offset_ms'], 1)} ms, "
        f"pitch {_fmt(m['pitch_accuracy'])}, FD {_fmt(m['frechet_distance'], 2)}"
        for name, m in rows
    ] + [f"RTF {_fmt(result['rtf'], 4)} (generation {_fmt(result['rtf_generation'], 4)})"]
