"""Scoring folders of generated audio in the paper's metrics (and av-benchmark's extra ones).

:func:`score` reads the generated folder (and the reference folder, videos and captions the metrics
need), runs each extractor once per input (through the embedding cache), and applies the formulas of
:mod:`mfmjt.scoring.metrics`. Files are matched by name (the file name without its extension).
Unreadable or too-short files are listed in the report with their reason; they do not stop the run.
Which metric uses which extractor output, and every protocol constant, is in :data:`METRICS` and
docs/EVALUATION.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfmjt.scoring import inputs, metrics
from mfmjt.scoring.cache import EmbeddingCache, cache_key, file_digest, text_digest
from mfmjt.scoring.extractor import Extractor

logger = logging.getLogger(__name__)

DEFAULT_DURATION = 8.0  # seconds of each clip scored (VGGSound; the paper generates 10 s for AudioCaps)
MIN_AUDIO_SECONDS = 1.0  # VGGish needs one 0.96 s example
DESYNC_WINDOW = 4.8  # seconds: Synchformer scores the first and the last 4.8 s of a clip
IS_SPLITS = 10
IS_SEED = 2020
DEFAULT_VIDEO_FPS = 25.0  # an extractor without ``video_fps`` gets frames at this rate ...
DEFAULT_VIDEO_SIZE = 224  # ... with this short side


@dataclass(frozen=True)
class Metric:
    """One column: the extractor it runs, the output it reads, and what it needs besides audio."""

    key: str  # --metrics name
    column: str  # table heading
    lower_is_better: bool
    extractor: str  # registry name of mfmjt.scoring.extractors
    kind: str  # "fd" | "kl" | "is" | "text_cosine" | "video_cosine" | "desync"
    output: str  # the extractor output: "frames" | "embedding" | "logits" | "offset"
    needs: str  # "reference" | "videos" | "captions" | "" (generated audio alone)
    paper: bool  # a column of the paper's Tables 1/2 (else one of av-benchmark's extra columns)
    scale: float = 1.0  # the IB-score is printed times 100, as in the paper
    description: str = ""


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("fad", "FAD", True, "vggish", "fd", "frames", "reference", True,
               description="Fréchet distance of VGGish per-window (0.96 s) embeddings"),
        Metric("fd", "FD", True, "panns", "fd", "embedding", "reference", True,
               description="Fréchet distance of PANNs (CNN14) 2048-d clip embeddings"),
        Metric("kl", "KL", True, "panns", "kl", "logits", "reference", True,
               description="KL(reference || generated) of PANNs softmax outputs, paired by name"),
        Metric("is", "IS", False, "passt", "is", "logits", "", True,
               description="inception score of PaSST softmax outputs (10 splits)"),
        Metric("ib", "IB", False, "imagebind", "video_cosine", "embedding", "videos", True, scale=100.0,
               description="ImageBind video-audio cosine similarity x 100"),
        Metric("desync", "DeSync", True, "synchformer", "desync", "offset", "videos", True,
               description="Synchformer |offset| in seconds, first and last 4.8 s averaged"),
        Metric("clap", "CLAP", False, "ms_clap", "text_cosine", "embedding", "captions", True,
               description="MS-CLAP (2023) text-audio cosine similarity"),
        Metric("fd_passt", "FD_PaSST", True, "passt", "fd", "embedding", "reference", False,
               description="Fréchet distance of PaSST 768-d clip embeddings"),
        Metric("kl_passt", "KL_PaSST", True, "passt", "kl", "logits", "reference", False,
               description="KL(reference || generated) of PaSST softmax outputs"),
        Metric("is_panns", "IS_PANNs", False, "panns", "is", "logits", "", False,
               description="inception score of PANNs softmax outputs (10 splits)"),
        Metric("laion_clap", "LAION-CLAP", False, "laion_clap", "text_cosine", "embedding", "captions", False,
               description="LAION-CLAP text-audio cosine similarity"),
    )
}  # fmt: skip

# The paper's columns in its order; then av-benchmark's extra columns.
PAPER_V2A = ("fad", "fd", "kl", "is", "ib", "desync")  # Table 1 (plus RTF)
PAPER_T2A = ("fad", "fd", "is", "clap")  # Table 2 (plus RTF)
EXTRA = ("fd_passt", "kl_passt", "is_panns", "laion_clap")

# How each extractor's audio is loaded, as av-benchmark loads it: mean removal (its AudioDataset does
# it for PANNs, VGGish, PaSST and LAION-CLAP; ImageBind, Synchformer and MS-CLAP read the raw file).
REMOVE_DC = {"vggish": True, "panns": True, "passt": True, "laion_clap": True}

ExtractorLoader = Callable[[str], Extractor]


class ScoreError(ValueError):
    """A scoring request that cannot run; the message is one sentence for the user."""


@dataclass
class Skipped:
    file: str
    role: str  # "generated" | "reference" | "video" | "caption"
    reason: str


@dataclass
class ScoreResult:
    """Metric values by key (``is`` also gives ``is_std``), what was scored and what was skipped."""

    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # items behind each metric
    skipped: list[Skipped] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    extractors: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)


def resolve_metrics(
    names: Sequence[str] | None, *, videos: bool, captions: bool, reference: bool
) -> list[str]:
    """The metric keys to compute. ``names``: keys of :data:`METRICS`, kept as given (a key whose input
    is missing is then refused), and the groups ``paper``, ``extra`` and ``all``, which expand to their
    metrics that the given inputs allow. Default: the paper's columns for the inputs (Table 1 with
    videos, Table 2 with captions) plus av-benchmark's PaSST/PANNs extras."""
    have = {"": True, "reference": reference, "videos": videos, "captions": captions}

    def allowed(keys: Sequence[str]) -> list[str]:
        return [k for k in keys if have[METRICS[k].needs]]

    if not names:
        paper = PAPER_V2A if videos else PAPER_T2A if captions else ("fad", "fd", "kl", "is")
        return allowed([*paper, "fd_passt", "kl_passt", "is_panns"])
    groups = {"paper": PAPER_V2A + ("clap",), "extra": EXTRA, "all": tuple(METRICS)}
    chosen: list[str] = []
    for raw in names:
        for name in (n.strip().lower().replace("-", "_") for n in raw.split(",")):
            if not name:
                continue
            if name in groups:
                keys = allowed(groups[name])
            elif name in METRICS:
                keys = [name]
            else:
                raise ScoreError(
                    f"unknown metric {name!r}; choose from {', '.join(METRICS)} "
                    "(or the groups paper, extra, all)"
                )
            chosen += [k for k in keys if k not in chosen]
    if not chosen:
        raise ScoreError("none of the metrics asked for can be computed from the inputs given")
    return chosen


def _check_needs(chosen: Sequence[str], *, reference: bool, videos: bool, captions: bool) -> None:
    flags = {"reference": ("--reference", reference), "videos": ("--videos", videos)}
    flags["captions"] = ("--captions", captions)
    for key in chosen:
        need = METRICS[key].needs
        if need and not flags[need][1]:
            what = {
                "reference": "a folder of reference (real) audio",
                "videos": "the folder of videos the audio was generated for",
                "captions": "the caption table the audio was generated from",
            }[need]
            raise ScoreError(f"metric {key} needs {flags[need][0]} ({what})")


def _registry_loader(weights: str | None, device: str | None, paths: Mapping[str, str]) -> ExtractorLoader:
    def load(name: str) -> Extractor:
        try:
            from mfmjt.scoring.extractors import get_extractor
        except ImportError as err:
            raise ScoreError(
                "the feature extractors (mfmjt.scoring.extractors) are not part of this installation; "
                "install mfmjt with the eval extra from a release that has them"
            ) from err
        try:
            return get_extractor(name, weights=paths.get(name, weights), device=device or "cpu")
        except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
            # an unknown or unbuilt extractor, a weight file that is not its checkpoint, a missing
            # package of the eval extra: the registry's message is the user's (missing weights raise
            # mfmjt.hub.WeightsUnavailableError, which the command reports as it is)
            raise ScoreError(str(err)) from err

    return load


class _Scorer:
    def __init__(
        self,
        load: ExtractorLoader,
        cache: EmbeddingCache,
        duration: float,
        batch_size: int,
        progress: bool,
    ) -> None:
        self.load, self.cache, self.duration, self.batch_size = load, cache, duration, batch_size
        self.progress = progress
        self.loaded: dict[str, Extractor] = {}
        self.skipped: dict[tuple[str, str], Skipped] = {}

    # -------------------------------------------------------------------------------- helpers
    def extractor(self, name: str) -> Extractor:
        if name not in self.loaded:
            logger.info("loading the %s extractor", name)
            self.loaded[name] = self.load(name)
        return self.loaded[name]

    def skip(self, file: Path | str, role: str, reason: str) -> None:
        self.skipped.setdefault((str(file), role), Skipped(str(file), role, reason))

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="file", disable=not self.progress or total < 2, leave=False)

    def _cached(
        self, ext: Extractor, items: Sequence[tuple[str, str]], settings: dict[str, object]
    ) -> tuple[dict[str, dict[str, np.ndarray]], list[tuple[str, str, str]]]:
        """Cache hits by name, and (name, key, content) of the misses. Random-weight builds
        (``weights == "random"``) are not cached: nothing says two builds have the same weights."""
        found: dict[str, dict[str, np.ndarray]] = {}
        missing: list[tuple[str, str, str]] = []
        for name, content in items:
            key = cache_key(content, ext.name, ext.weights, settings)
            hit = None if ext.weights == "random" else self.cache.get(ext.name, key)
            if hit is not None:
                found[name] = hit
            else:
                missing.append((name, key, content))
        return found, missing

    def _store(self, ext: Extractor, key: str, outputs: dict[str, np.ndarray]) -> None:
        if ext.weights != "random":
            self.cache.put(ext.name, key, outputs)

    @staticmethod
    def _rows(outputs: Mapping[str, Any], count: int, who: str) -> list[dict[str, np.ndarray]]:
        arrays = {
            k: v.detach().float().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in outputs.items()
        }  # torch tensors (any device, bf16 included) or arrays
        for k, v in arrays.items():
            if v.shape[:1] != (count,):
                raise RuntimeError(f"{who} returned {k!r} of shape {v.shape} for {count} items")
        return [{k: v[i] for k, v in arrays.items()} for i in range(count)]

    # ---------------------------------------------------------------------------------- audio
    def audio_features(
        self, name: str, files: Mapping[str, Path], role: str
    ) -> dict[str, dict[str, np.ndarray]]:
        ext = self.extractor(name)
        remove_dc = REMOVE_DC.get(name, False)
        settings = {"kind": "audio", "rate": ext.sample_rate, "duration": self.duration, "dc": remove_dc}
        settings["resampler"] = "scipy.resample_poly"
        digests: list[tuple[str, str]] = []
        for stem, path in files.items():
            try:
                digests.append((stem, file_digest(path)))
            except OSError as err:
                self.skip(path, role, f"cannot be read ({err.strerror or err})")
        found, missing = self._cached(ext, digests, settings)
        bar = self._bar(len(missing), f"{name} ({role})")
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            waves: list[tuple[str, str, np.ndarray]] = []
            for stem, key, _ in batch:
                path = files[stem]
                try:
                    wave, rate = inputs.read_waveform(path)
                except ValueError as err:
                    self.skip(path, role, str(err))
                    continue
                x = inputs.prepare_audio(wave, rate, ext.sample_rate, self.duration, remove_dc)
                if len(x) < MIN_AUDIO_SECONDS * ext.sample_rate:
                    self.skip(path, role, f"too short: {len(x) / ext.sample_rate:.2f} s (at least "
                              f"{MIN_AUDIO_SECONDS:g} s)")  # fmt: skip
                    continue
                waves.append((stem, key, x))
            by_length: dict[int, list[tuple[str, str, np.ndarray]]] = {}
            for item in waves:  # items of one call have one length ("frames" must stack)
                by_length.setdefault(len(item[2]), []).append(item)
            for group in by_length.values():
                outputs = ext.audio([w for _, _, w in group])  # type: ignore[attr-defined]
                for (stem, key, _), row in zip(
                    group, self._rows(outputs, len(group), f"{name}.audio"), strict=True
                ):
                    found[stem] = row
                    self._store(ext, key, row)
            bar.update(len(batch))
        bar.close()
        return found

    # ----------------------------------------------------------------------------------- text
    def text_features(self, name: str, captions: Mapping[str, str]) -> dict[str, dict[str, np.ndarray]]:
        ext = self.extractor(name)
        settings = {"kind": "text"}
        found, missing = self._cached(ext, [(s, text_digest(c)) for s, c in captions.items()], settings)
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            outputs = ext.text([captions[stem] for stem, _, _ in batch])  # type: ignore[attr-defined]
            for (stem, key, _), row in zip(
                batch, self._rows(outputs, len(batch), f"{name}.text"), strict=True
            ):
                found[stem] = row
                self._store(ext, key, row)
        return found

    # ---------------------------------------------------------------------------------- video
    def _video_settings(self, ext: Extractor) -> tuple[float, int]:
        return float(getattr(ext, "video_fps", DEFAULT_VIDEO_FPS)), int(
            getattr(ext, "video_size", DEFAULT_VIDEO_SIZE)
        )

    def video_features(self, name: str, videos: Mapping[str, Path]) -> dict[str, dict[str, np.ndarray]]:
        ext = self.extractor(name)
        fps, size = self._video_settings(ext)
        settings = {"kind": "video", "fps": fps, "size": size, "duration": self.duration}
        digests = []
        for stem, path in videos.items():
            try:
                digests.append((stem, file_digest(path)))
            except OSError as err:
                self.skip(path, "video", f"cannot be read ({err.strerror or err})")
        found, missing = self._cached(ext, digests, settings)
        bar = self._bar(len(missing), f"{name} (video)")
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            clips = []
            for stem, key, _ in batch:
                try:
                    frames = inputs.decode_frames(videos[stem], fps, self.duration, size)
                except ValueError as err:
                    self.skip(videos[stem], "video", str(err))
                    continue
                if len(frames) < 2:
                    self.skip(videos[stem], "video", f"too short: {len(frames)} frame(s) at {fps:g} fps")
                    continue
                clips.append((stem, key, frames))
            by_length: dict[tuple[int, ...], list] = {}
            for item in clips:
                by_length.setdefault(item[2].shape, []).append(item)
            for group in by_length.values():
                outputs = ext.video([f for _, _, f in group], fps)  # type: ignore[attr-defined]
                for (stem, key, _), row in zip(
                    group, self._rows(outputs, len(group), f"{name}.video"), strict=True
                ):
                    found[stem] = row
                    self._store(ext, key, row)
            bar.update(len(batch))
        bar.close()
        return found

    def offsets(self, name: str, pairs: Mapping[str, tuple[Path, Path]]) -> dict[str, np.ndarray]:
        """Synchformer offsets [2] (first, last window) per name of (video, generated audio)."""
        ext = self.extractor(name)
        fps, size = self._video_settings(ext)
        rate = ext.sample_rate
        settings = {"kind": "av_offset", "fps": fps, "size": size, "rate": rate, "duration": self.duration}
        settings["window"] = DESYNC_WINDOW
        items = []
        for stem, (video, audio) in pairs.items():
            try:
                items.append((stem, file_digest(video) + file_digest(audio)))
            except OSError as err:
                self.skip(video, "video", f"cannot be read ({err.strerror or err})")
        found, missing = self._cached(ext, items, settings)
        n_frames, n_samples = round(DESYNC_WINDOW * fps), round(DESYNC_WINDOW * rate)
        bar = self._bar(len(missing), f"{name} (DeSync)")
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            windows: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
            for stem, key, _ in batch:
                video, audio = pairs[stem]
                try:
                    frames = inputs.decode_frames(video, fps, self.duration, size)
                except ValueError as err:
                    self.skip(video, "video", str(err))
                    continue
                try:
                    wave, source_rate = inputs.read_waveform(audio)
                except ValueError as err:
                    self.skip(audio, "generated", str(err))
                    continue
                wave = inputs.prepare_audio(wave, source_rate, rate, self.duration, remove_dc=False)
                seconds = min(len(frames) / fps, len(wave) / rate)
                if seconds + 1e-6 < DESYNC_WINDOW:
                    self.skip(audio, "generated", f"too short for DeSync: {seconds:.2f} s of video and audio "
                              f"(at least {DESYNC_WINDOW:g} s)")  # fmt: skip
                    continue
                f_end, s_end = round(seconds * fps), round(seconds * rate)
                windows.append((
                    stem, key,
                    frames[:n_frames], frames[f_end - n_frames : f_end],
                    wave[:n_samples], wave[s_end - n_samples : s_end],
                ))  # fmt: skip
            if windows:
                clips = [w[2] for w in windows] + [w[3] for w in windows]
                waves = [w[4] for w in windows] + [w[5] for w in windows]
                out = ext.av_offset(clips, fps, waves)  # type: ignore[attr-defined]
                offsets = np.asarray(out["offset"], dtype=np.float64).reshape(-1)
                if offsets.shape != (len(clips),):
                    raise RuntimeError(
                        f"{name}.av_offset returned {offsets.shape} offsets for {len(clips)} clips"
                    )
                k = len(windows)
                for i, (stem, key, *_rest) in enumerate(windows):
                    row = {"offset": np.array([offsets[i], offsets[k + i]])}
                    found[stem] = row
                    self._store(ext, key, row)
            bar.update(len(batch))
        bar.close()
        return {stem: row["offset"] for stem, row in found.items()}


def _stack(rows: Iterable[dict[str, np.ndarray]], output: str, who: str) -> np.ndarray:
    """One row per item ([N, D]); for ``"frames"`` the windows of every item, pooled ([sum N_i, D])."""
    arrays = []
    for row in rows:
        if output in row:
            arrays.append(row[output])
        elif output == "logits" and "probs" in row:
            arrays.append(metrics.logits_from_probs(row["probs"][None])[0])
        else:
            raise RuntimeError(f"the {who} extractor gives {sorted(row)}, not {output!r}")
    if not arrays:
        return np.zeros((0, 0))
    return np.concatenate(arrays) if output == "frames" else np.stack(arrays)


def score(
    generated: str | Path,
    reference: str | Path | None = None,
    *,
    videos: str | Path | None = None,
    captions: str | Path | Mapping[str, str] | None = None,
    metric_names: Sequence[str] | None = None,
    duration: float = DEFAULT_DURATION,
    batch_size: int = 16,
    device: str | None = None,
    weights: str | None = None,
    extractor_weights: Mapping[str, str] | None = None,
    extractors: Mapping[str, Extractor] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ScoreResult:
    """Score the audio in ``generated`` against ``reference`` (and ``videos`` / ``captions``).

    ``metric_names``: keys of :data:`METRICS` (default: the paper's columns the inputs allow, plus the
    PaSST/PANNs extras). ``extractors`` maps registry names to ready extractor objects (used instead
    of ``mfmjt.scoring.extractors.get_extractor(name, weights=..., device=...)``). ``cache_dir=None``
    disables the embedding cache. Raises :class:`ScoreError` (or ``ScoreInputError``) for unusable
    requests, ``mfmjt.hub.WeightsUnavailableError`` when an extractor's weights are missing.
    """
    if not (duration > 0 and np.isfinite(duration)):
        raise ScoreError(f"duration must be a positive number of seconds, got {duration}")
    if batch_size < 1:
        raise ScoreError(f"batch size must be at least 1, got {batch_size}")
    chosen = resolve_metrics(
        metric_names,
        videos=videos is not None,
        captions=captions is not None,
        reference=reference is not None,
    )
    _check_needs(
        chosen, reference=reference is not None, videos=videos is not None, captions=captions is not None
    )
    gen = inputs.scan_folder(generated, "--generated")
    ref = inputs.scan_folder(reference, "--reference") if reference is not None else None
    vid = inputs.scan_folder(videos, "--videos", videos_only=True) if videos is not None else None
    if captions is None or isinstance(captions, Mapping):
        caps = dict(captions) if captions is not None else None
    else:
        caps = inputs.read_captions(captions)

    result = ScoreResult()
    result.settings = {"duration": duration, "batch_size": batch_size, "device": device, "metrics": chosen}
    result.settings["is_splits"], result.settings["is_seed"] = IS_SPLITS, IS_SEED
    result.settings["desync_window"] = DESYNC_WINDOW
    names = set(gen.files)
    for other, label in ((ref, "reference"), (vid, "videos")):
        if other is None:
            continue
        result.unmatched[f"generated_without_{label}"] = sorted(names - set(other.files))
        result.unmatched[f"{label}_without_generated"] = sorted(set(other.files) - names)
    if caps is not None:
        result.unmatched["generated_without_caption"] = sorted(names - set(caps))
    paired_needs = {METRICS[k].needs for k in chosen} - {""}
    for need, other in (("reference", ref), ("videos", vid)):
        if need in paired_needs and other is not None and not names & set(other.files):
            option = "--reference" if need == "reference" else "--videos"
            raise ScoreError(
                f"no file of --generated has the name of a file in {option} "
                "(files are matched by their name without the extension)"
            )
    if "captions" in paired_needs and caps is not None and not names & set(caps):
        raise ScoreError("no file of --generated has a name listed in the --captions table")
    for folder, role in ((gen, "generated"), (ref, "reference"), (vid, "video")):
        for dup in folder.duplicates if folder else ():
            result.skipped.append(Skipped(str(dup), role, "another file of this folder has the same name"))

    load: ExtractorLoader
    if extractors is not None:
        missing = sorted({METRICS[k].extractor for k in chosen} - set(extractors))
        if missing:
            raise ScoreError(f"no extractor given for {', '.join(missing)}")
        load = extractors.__getitem__
    else:
        load = _registry_loader(weights, device, extractor_weights or {})
    run = _Scorer(load, EmbeddingCache(cache_dir), duration, batch_size, progress)
    with torch.inference_mode():
        _compute(run, result, chosen, gen, ref, vid, caps)
    result.skipped += list(run.skipped.values())
    result.extractors = {
        name: {"weights": ext.weights, "sample_rate": ext.sample_rate} for name, ext in run.loaded.items()
    }
    result.cache = {"hits": run.cache.hits, "misses": run.cache.misses}
    return result


def _compute(
    run: _Scorer,
    result: ScoreResult,
    chosen: Sequence[str],
    gen: inputs.Folder,
    ref: inputs.Folder | None,
    vid: inputs.Folder | None,
    caps: dict[str, str] | None,
) -> None:

    audio_needed: dict[str, set[str]] = {}  # extractor -> roles whose audio it embeds
    for key in chosen:
        m = METRICS[key]
        if m.kind in ("fd", "kl"):
            audio_needed.setdefault(m.extractor, set()).update({"generated", "reference"})
        elif m.kind in ("is", "text_cosine", "video_cosine"):
            audio_needed.setdefault(m.extractor, set()).add("generated")
    features: dict[tuple[str, str], dict[str, dict[str, np.ndarray]]] = {}
    for name, roles in audio_needed.items():
        for role in ("generated", "reference"):
            if role in roles:
                folder = gen if role == "generated" else ref
                assert folder is not None
                features[(name, role)] = run.audio_features(name, folder.files, role)

    for key in chosen:
        m = METRICS[key]
        value: float | None = None
        count = 0
        try:
            if m.kind == "fd":
                g = features[(m.extractor, "generated")]
                r = features[(m.extractor, "reference")]
                a = _stack(g.values(), m.output, m.extractor)  # frames: every clip's windows, pooled
                b = _stack(r.values(), m.output, m.extractor)
                value, count = metrics.frechet_distance(a, b), len(g)
            elif m.kind == "kl":
                g = features[(m.extractor, "generated")]
                r = features[(m.extractor, "reference")]
                both = sorted(set(g) & set(r))
                if not both:
                    raise ScoreError(f"metric {key}: no generated file has a readable reference of its name")
                value = metrics.kl_divergence(
                    _stack((r[s] for s in both), m.output, m.extractor),
                    _stack((g[s] for s in both), m.output, m.extractor),
                )
                count = len(both)
            elif m.kind == "is":
                g = features[(m.extractor, "generated")]
                logits = _stack(g.values(), m.output, m.extractor)
                splits = min(IS_SPLITS, len(logits))
                value, std = metrics.inception_score(logits, splits, shuffle=True, seed=IS_SEED)
                result.values[f"{key}_std"] = std
                if splits != IS_SPLITS:
                    result.settings[f"{key}_splits"] = splits
                count = len(logits)
            elif m.kind == "text_cosine":
                assert caps is not None
                g = features[(m.extractor, "generated")]
                text = run.text_features(m.extractor, {s: caps[s] for s in g if s in caps})
                both = sorted(set(g) & set(text))
                value = metrics.cosine_score(
                    _stack((text[s] for s in both), m.output, m.extractor),
                    _stack((g[s] for s in both), m.output, m.extractor),
                )
                count = len(both)
            elif m.kind == "video_cosine":
                assert vid is not None
                g = features[(m.extractor, "generated")]
                video = run.video_features(m.extractor, {s: vid.files[s] for s in g if s in vid.files})
                both = sorted(set(g) & set(video))
                value = metrics.cosine_score(
                    _stack((video[s] for s in both), m.output, m.extractor),
                    _stack((g[s] for s in both), m.output, m.extractor),
                )
                count = len(both)
            elif m.kind == "desync":
                assert vid is not None
                pairs = {s: (vid.files[s], p) for s, p in gen.files.items() if s in vid.files}
                offsets = run.offsets(m.extractor, pairs)
                value = metrics.desync_score(np.stack(list(offsets.values()))) if offsets else None
                count = len(offsets)
        except ValueError as err:
            if isinstance(err, ScoreError):
                raise
            logger.warning("metric %s not computed: %s", key, err)
            result.settings.setdefault("not_computed", {})[key] = str(err)
            value = None
        if value is not None:
            result.values[key] = value * m.scale
        result.counts[key] = count
