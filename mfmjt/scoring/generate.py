"""The generation half of ``mfmjt score --model``: audio for every video (or caption) of a test set,
written as ``<name>.flac``, and the real-time factor measured as the paper does.

RTF = inference time / seconds of audio generated, per clip, averaged over the set (paper, Sec. 3.3),
on the device used. Inference time is the pipeline's own ``timings["total"]`` of a request: video
decoding, CLIP/Synchformer/text features, sampling, VAE decoding and vocoder; writing files is not
counted. One untimed request first warms the device up (CUDA kernels, caches), so the first clip is
not charged for it. Only the public API is used (``load_pipeline``, ``Pipeline.generate``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfmjt.scoring.inputs import Folder

logger = logging.getLogger(__name__)


@dataclass
class GenerationRun:
    """What was generated, how, and how fast."""

    model: str
    out_dir: Path
    settings: dict[str, Any]
    device: str
    rtf: float = math.nan  # mean of the per-clip RTFs
    rtf_per_clip: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    seconds: float = 0.0  # wall time of the whole run, files included

    def as_dict(self) -> dict[str, Any]:
        clips = list(self.rtf_per_clip.values())
        return {
            "model": self.model,
            "out_dir": str(self.out_dir),
            "settings": self.settings,
            "device": self.device,
            "rtf": self.rtf,
            "rtf_min": min(clips) if clips else None,
            "rtf_max": max(clips) if clips else None,
            "clips": len(clips),
            "failed": self.failed,
            "wall_seconds": self.seconds,
        }


def _device_name(device: Any) -> str:
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def generate_set(
    model: str,
    out_dir: str | Path,
    *,
    videos: Folder | None = None,
    captions: Mapping[str, str] | None = None,
    duration: float = 8.0,
    steps: int | None = None,
    cfg: float | None = None,
    guidance: str | None = None,
    seed: int = 0,
    device: str | None = None,
    precision: str | None = None,
    progress: bool = True,
) -> GenerationRun:
    """Generate ``out_dir/<name>.flac`` for each video (prompted by its caption when ``captions`` has
    one, as MMAudio's VGGSound evaluation prompts with the class label) or, without videos, for each
    caption (text-to-audio). Unusable inputs are listed in ``failed``; the run goes on."""
    from tqdm import tqdm

    from mfmjt import load_pipeline, media

    if videos is None and not captions:
        raise ValueError("give videos or captions to generate from")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipe = load_pipeline(model, device=device, max_duration=max(duration, 30.0), precision=precision)
    rec = pipe.recommended
    steps = steps if steps is not None else rec.steps
    cfg = cfg if cfg is not None else rec.cfg_for(steps)
    guidance = guidance if guidance is not None else rec.guidance
    if guidance == "both":
        guidance = "scaled"  # one audio per clip is scored; the paper's MF-MJT uses CFG-scaled
    settings = {"steps": steps, "cfg_strength": cfg, "guidance": guidance, "seed": seed, "duration": duration}
    run = GenerationRun(model, out, settings, _device_name(device))
    logger.info("generating with %s: %s", model, settings)

    jobs: list[tuple[str, Path | None, str]]
    if videos is not None:
        caps = captions or {}
        jobs = [(stem, path, caps.get(stem, "")) for stem, path in videos.files.items()]
        if captions:
            unprompted = [stem for stem in videos.files if stem not in captions]
            if unprompted:
                logger.warning(
                    "%d of %d videos have no caption in the table (e.g. %s): generated without a prompt",
                    len(unprompted),
                    len(jobs),
                    unprompted[0],
                )
    else:
        assert captions is not None
        jobs = [(stem, None, text) for stem, text in captions.items()]

    def one(video: Path | None, prompt: str):
        return pipe.generate(
            video=video,
            prompt=prompt,
            duration=duration,
            steps=steps,
            cfg_strength=cfg,
            guidance=guidance,
            seed=seed,
        )

    warmed = False
    for stem, video, prompt in tqdm(
        jobs, desc="generating", unit="clip", disable=not progress or len(jobs) < 2
    ):
        try:
            if not warmed:
                one(video, prompt)  # untimed warm-up on the first usable input
                warmed = True
            result = one(video, prompt)
        except ValueError as err:  # unusable input (media.MediaError, RequestError): listed, skipped
            run.failed[stem] = str(err)
            logger.warning("skipped %s: %s", stem, err)
            continue
        wave = result.audio[guidance]
        media.write_audio(
            out / f"{stem}.flac", wave[: round(result.duration * result.sample_rate)], result.sample_rate
        )
        run.rtf_per_clip[stem] = result.rtf
    if run.rtf_per_clip:
        run.rtf = sum(run.rtf_per_clip.values()) / len(run.rtf_per_clip)
    run.seconds = time.perf_counter() - started
    return run
