"""The score report: JSON for scripts, a markdown table with the paper's columns for people."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mfmjt.scoring.scorer import EXTRA, METRICS, PAPER_T2A, PAPER_V2A, ScoreResult

REPORT_VERSION = 1


def report_dict(
    result: ScoreResult,
    *,
    generated: str | Path,
    reference: str | Path | None,
    videos: str | Path | None = None,
    captions: str | Path | None = None,
    generation: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Everything of one run, JSON-ready. ``generation``: the one-go run's model, settings and RTF."""
    from mfmjt import __version__

    values = dict(result.values)
    if generation is not None and "rtf" in generation:
        values["rtf"] = generation["rtf"]
    return {
        "report_version": REPORT_VERSION,
        "mfmjt_version": __version__,
        "label": label or Path(generated).name,
        "inputs": {
            "generated": str(generated),
            "reference": None if reference is None else str(reference),
            "videos": None if videos is None else str(videos),
            "captions": None if captions is None or not isinstance(captions, str | Path) else str(captions),
        },
        "metrics": values,
        "counts": result.counts,
        "definitions": {k: METRICS[k].description for k in result.counts},
        "settings": result.settings,
        "extractors": result.extractors,
        "generation": dict(generation) if generation is not None else None,
        "skipped": [asdict(s) for s in result.skipped],
        "unmatched": result.unmatched,
        "cache": result.cache,
    }


def _cell(value: float | None, key: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if key == "desync":
        return f"{value:.3f}"
    if key == "rtf":
        return f"{value:.3f}"
    return f"{value:.2f}"


def columns_for(metric_keys: Sequence[str]) -> list[str]:
    """The table's columns: the paper's (Table 1 order, CLAP where Table 2 has it), RTF, then extras."""
    paper = [k for k in PAPER_V2A if k in metric_keys] + (["clap"] if "clap" in metric_keys else [])
    if not paper:
        paper = list(PAPER_T2A)
    return paper + ["rtf"] + [k for k in EXTRA if k in metric_keys]


def markdown_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """One row per report, the paper's columns (arrows as in its tables), then av-benchmark's extras."""
    keys: list[str] = []
    for rep in reports:
        for k in rep["settings"].get("metrics", []):
            if k not in keys:
                keys.append(k)
    cols = columns_for(keys)
    head = [("RTF", "↓") if k == "rtf" else (METRICS[k].column, "↓" if METRICS[k].lower_is_better else "↑")
            for k in cols]  # fmt: skip
    lines = [
        "| run | " + " | ".join(f"{name} {arrow}" for name, arrow in head) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for rep in reports:
        cells = [_cell(rep["metrics"].get(k), k) for k in cols]
        lines.append(f"| {rep['label']} | " + " | ".join(cells) + " |")
    notes = []
    for rep in reports:
        n = rep["counts"]
        skipped = len(rep["skipped"])
        counted = ", ".join(f"{METRICS[k].column} {v}" for k, v in n.items())
        notes.append(f"{rep['label']}: files scored per metric: {counted}; skipped: {skipped}")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def write_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (JSON) and the markdown table beside it (same name, ``.md``); each written atomically."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    md = out.with_suffix(".md")
    for path, text in (
        (out, json.dumps(report, indent=2, default=_json_default) + "\n"),
        (md, markdown_table([report])),
    ):
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return out, md


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
