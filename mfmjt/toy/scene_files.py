"""Synthetic scenes written to disk as an ordinary dataset: media files plus an ``id``/``label`` table.

What ``mfmjt extract --videos DIR --tsv FILE`` (or ``--audios``) reads for a real data set, so the
whole route (extract -> train -> export -> generate) can be run on files without downloading any.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from mfmjt.toy.render import write_scene_mp4
from mfmjt.toy.scene import make_scene
from mfmjt.toy.specs import SceneConfig

logger = logging.getLogger(__name__)

#: Scenes whose audio peaks below this are skipped (extraction lists them as 'silent').
MIN_PEAK = 1e-3


@dataclass(frozen=True)
class SceneFiles:
    """A written set: the media folder, the table and the ids in table order."""

    folder: Path
    tsv: Path
    ids: list[str]
    captions: list[str]


def write_scene_files(
    out: str | Path,
    seeds: Sequence[int],
    *,
    duration: float,
    audio_only: bool = False,
    size: int = 128,
) -> SceneFiles:
    """Write one file per audible scene to ``out/media`` (mp4 with its audio track, or ``.wav`` with
    ``audio_only``) and ``out/set.tsv`` (columns ``id``, ``label``); silent scenes are skipped."""
    out = Path(out)
    folder = out / "media"
    folder.mkdir(parents=True, exist_ok=True)
    config = SceneConfig(width=size, height=size, duration=duration, background_prob=0.5)
    ids: list[str] = []
    captions: list[str] = []
    for seed in seeds:
        scene = make_scene(int(seed), config)
        if float(abs(scene.audio).max(initial=0.0)) < MIN_PEAK:
            logger.info("scene %d is silent; skipped", seed)
            continue
        item = f"scene_{int(seed):06d}"
        if audio_only:
            sf.write(folder / f"{item}.wav", scene.audio, scene.sample_rate)
        else:
            write_scene_mp4(scene, folder / f"{item}.mp4")
        ids.append(item)
        captions.append(scene.caption)
    tsv = out / "set.tsv"
    with open(tsv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "label"])
        writer.writerows(zip(ids, captions, strict=True))
    logger.info("wrote %d %s files and %s", len(ids), "audio" if audio_only else "video", tsv)
    return SceneFiles(folder, tsv, ids, captions)
