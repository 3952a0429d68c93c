"""The paper's experiments in miniature: the embedded models on held-out synthetic scenes.

(a) Table 1: MeanFlow vs flow matching at 1 and 25 steps (ω = 1.5 at one step, 4.5 at 25, scaled
    CFG; and ω = 1, no guidance), with the real audio and its codec round trip as references, and
    optionally a second MeanFlow model of the baseline's size and steps (``meanflow_equal``).
(b) Fig. 3: standard vs scaled CFG over ω ∈ {1, 1.5, 2.5, 3.5, 4.5}, at 1 and 25 steps (MeanFlow).
(c) Fig. 4: the share of r ≠ t pairs in training (0.1, 0.25, 0.5), one step, ω = 1.5.

Metrics (``mfmjt.toy.metrics``): onset F1 / offset stand in for DeSync, pitch-class accuracy for IB,
the Fréchet distance of log-mel frames for FD. Writes ``docs/results.md`` and ``docs/*.png`` and
prints the tables; models that do not exist yet are skipped with a note.

    python benchmarks/paper_in_miniature.py                  # models under runs/
    python benchmarks/paper_in_miniature.py --n 8 --model meanflow=/tmp/run8/final --docs /tmp/docs
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mfmjt.toy import evaluate as ev
from mfmjt.toy import metrics as tm
from mfmjt.toy.encoders import OfflineEncoderConfig
from mfmjt.toy.evaluate import EvalScene, EvalSettings, evaluate_model, evaluate_references, held_out_scenes

logger = logging.getLogger("benchmarks.paper_in_miniature")

OMEGAS = (1.0, 1.5, 2.5, 3.5, 4.5)
# name -> (directory under --runs, label, expected r != t ratio; None for flow matching)
MODELS: dict[str, tuple[str, str, float | None]] = {
    "meanflow": ("default/final", "MF-MJT (MeanFlow)", 0.25),
    "flow_matching": ("fm/final", "flow matching", None),
    # optional: a MeanFlow model of the flow-matching baseline's size, data and steps
    "meanflow_equal": ("meanflow_equal/final", "MeanFlow, baseline's size and steps", 0.25),
    # experiment (c): three fine-tunes of one parent, equal in all but the r != t ratio
    "ratio_0.1": ("ratio0.1/final", "MeanFlow, ratio 0.1", 0.1),
    "ratio_0.25": ("ratio0.25/final", "MeanFlow, ratio 0.25", 0.25),
    "ratio_0.5": ("ratio0.5/final", "MeanFlow, ratio 0.5", 0.5),
}


@dataclass(frozen=True)
class Row:
    """One evaluated (model, settings) pair: its result dict from :func:`evaluate_model`."""

    model: str
    settings: EvalSettings
    result: dict[str, Any]

    def metrics(self, mode: str | None = None) -> dict[str, Any]:
        modes = self.result["modes"]
        return modes.get(mode or self.settings.guidance, {})


class Runner:
    """Loads models lazily and memoises evaluations per (model, settings)."""

    def __init__(self, paths: dict[str, Path], scenes: list[EvalScene]) -> None:
        self.paths = paths
        self.scenes = scenes
        self.notes: list[str] = []
        self._pipes: dict[str, Any] = {}
        self._rows: dict[tuple[str, EvalSettings], Row] = {}

    def available(self, name: str) -> bool:
        path = self.paths[name]
        if (path / "config.json").is_file():
            return True
        note = f"skipped `{name}`: no model at `{path}` yet"
        if note not in self.notes:
            self.notes.append(note)
            logger.warning(note)
        return False

    def pipeline(self, name: str) -> Any:
        if name not in self._pipes:
            from mfmjt.pipeline import load_pipeline

            self._pipes[name] = load_pipeline(str(self.paths[name]), device="cpu")
        return self._pipes[name]

    def meta(self, name: str) -> dict[str, Any]:
        return json.loads((self.paths[name] / "config.json").read_text())

    def run(self, name: str, settings: EvalSettings) -> Row | None:
        if not self.available(name):
            return None
        key = (name, settings)
        if key not in self._rows:
            start = time.perf_counter()
            result = evaluate_model(self.pipeline(name), self.scenes, settings)
            logger.info("%s, %s: %.0f s", name, settings.label, time.perf_counter() - start)
            self._rows[key] = Row(name, settings, result)
        return self._rows[key]

    def rows(self) -> list[Row]:
        return list(self._rows.values())


# ------------------------------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def metric_cells(m: dict[str, Any]) -> list[str]:
    return [
        fmt(m.get("onset_f1")),
        fmt(m.get("onset_precision")),
        fmt(m.get("onset_recall")),
        fmt(m.get("offset_ms"), 1),
        fmt(m.get("pitch_accuracy")),
        fmt(m.get("frechet_distance"), 2),
    ]


METRIC_HEADER = ["onset F1 ↑", "P", "R", "offset ms ↓", "pitch acc. ↑", "FD ↓"]


# ------------------------------------------------------------------------------------ experiments


def experiment_a(runner: Runner, references: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name in ("meanflow", "meanflow_equal", "flow_matching"):
        for steps, cfg in ((1, 1.5), (1, 1.0), (25, 4.5), (25, 1.0)):
            row = runner.run(name, EvalSettings(steps=steps, cfg=cfg, guidance="scaled"))
            if row is not None:
                label = MODELS[name][1]
                rtf = [fmt(row.result["rtf"], 4), fmt(row.result["rtf_generation"], 4)]
                rows.append([label, str(steps), f"{cfg:g}", *metric_cells(row.metrics()), *rtf])
    for name, m in references.items():
        label = {"real": "real audio", "codec": "real audio → codec (upper bound)"}[name]
        rows.append([label, "–", "–", *metric_cells(m), "–", "–"])
    return table(["model", "steps", "ω", *METRIC_HEADER, "RTF ↓", "RTF gen. ↓"], rows)


METRIC_KEYS_B = (("onset_f1", 3), ("offset_ms", 1), ("pitch_accuracy", 3), ("frechet_distance", 2))


def experiment_b(runner: Runner, docs: Path, bound: dict[str, Any]) -> tuple[str, list[Path]]:
    rows, curves = [], {}
    for steps in (1, 25):
        for cfg in OMEGAS:
            row = runner.run("meanflow", EvalSettings(steps=steps, cfg=cfg, guidance="both"))
            if row is None:
                return "", []
            std, sca = row.metrics("standard"), row.metrics("scaled")
            curves[(steps, cfg)] = (std, sca)
            rows.append(
                [str(steps), f"{cfg:g}"]
                + [f"{fmt(std.get(k), d)} / {fmt(sca.get(k), d)}" for k, d in METRIC_KEYS_B]
            )
    header = [
        "steps",
        "ω",
        *(f"{label} (stand. / scaled)" for label in ("onset F1 ↑", "offset ms ↓", "pitch ↑", "FD ↓")),
    ]
    return table(header, rows), [plot_fig3(curves, bound, docs / "fig3_cfg_scaled.png")]


def experiment_c(runner: Runner, docs: Path, bound: dict[str, Any]) -> tuple[str, list[Path]]:
    rows, points = [], []
    settings = EvalSettings(steps=1, cfg=1.5, guidance="scaled")
    for name in ("ratio_0.1", "ratio_0.25", "ratio_0.5"):
        row = runner.run(name, settings)
        if row is None:
            continue
        ratio = float(runner.meta(name).get("training", {}).get("meanflow", {}).get("mean_flow_ratio", -1))
        if ratio != MODELS[name][2]:
            runner.notes.append(f"`{name}` was trained with r≠t ratio {ratio}, not {MODELS[name][2]}")
        m = row.metrics()
        points.append((ratio, m))
        rows.append([f"{ratio:g}", *metric_cells(m)])
    if not rows:
        return "", []
    return table(["r≠t ratio", *METRIC_HEADER], rows), [plot_fig4(points, bound, docs / "fig4_ratio.png")]


# ---------------------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bound_line(ax: Any, value: float | None) -> None:
    ax.ticklabel_format(axis="y", useOffset=False)
    if value is not None:
        ax.axhline(value, color="grey", linestyle=":", label="real audio → codec")


def plot_fig3(curves: dict[tuple[int, float], tuple[dict, dict]], bound: dict[str, Any], path: Path) -> Path:
    """Onset F1 and FD vs ω, standard and scaled CFG; ``bound``: the codec round trip's metrics."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8, 6), sharex=True)
    for col, steps in enumerate((1, 25)):
        for row, (key, label) in enumerate(
            (("onset_f1", "onset F1 ↑"), ("frechet_distance", "Fréchet distance ↓"))
        ):
            ax = axes[row][col]
            for k, (mode, style) in enumerate((("standard", "o--"), ("scaled", "s-"))):
                ys = [curves[(steps, w)][k].get(key) for w in OMEGAS]
                ax.plot(OMEGAS, [float("nan") if y is None else y for y in ys], style, label=f"CFG-{mode}")
            _bound_line(ax, bound.get(key))
            ax.set_title(f"({'ab'[col]}) {steps} step{'s' if steps > 1 else ''}" if row == 0 else "")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("CFG strength ω")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fig4(points: list[tuple[float, dict]], bound: dict[str, Any], path: Path) -> Path:
    """Onset F1, offset and pitch accuracy vs the r ≠ t ratio."""
    plt = _pyplot()
    points = sorted(points, key=lambda p: p[0])
    xs = [p[0] for p in points]
    panels = (
        ("onset_f1", "onset F1 ↑"),
        ("offset_ms", "onset offset (ms) ↓"),
        ("pitch_accuracy", "pitch acc. ↑"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.2))
    for ax, (key, label) in zip(axes, panels, strict=True):
        ys = [float("nan") if p[1].get(key) is None else p[1][key] for p in points]
        ax.plot(xs, ys, "o-", label="model")
        _bound_line(ax, bound.get(key))
        ax.set_xticks(xs)
        ax.set_xlabel("ratio of r ≠ t pairs in training")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("one step, ω = 1.5, scaled CFG")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ main


def reference_codec(runner: Runner, store_codec: Path) -> tuple[Any | None, str]:
    """The first available model's codec, else the feature store's; and where it came from."""
    for name in MODELS:
        if (runner.paths[name] / "config.json").is_file():
            return runner.pipeline(name).features.codec, f"the codec of `{name}`"
    if store_codec.is_file():
        from mfmjt.toy.codec import OfflineAudioCodec

        return OfflineAudioCodec.load(store_codec), f"`{store_codec}`"
    return None, "none found"


def describe_models(runner: Runner) -> list[str]:
    lines = []
    for name, (_, label, _) in MODELS.items():
        if (runner.paths[name] / "config.json").is_file():
            meta = runner.meta(name)
            mf = meta.get("training", {}).get("meanflow", {})
            extra = f", r≠t ratio {mf.get('mean_flow_ratio')}" if meta.get("objective") == "meanflow" else ""
            extra += f", times logit-normal({mf.get('time_mu')}, {mf.get('time_sigma')})"
            if mf.get("adaptive_loss_power"):
                extra += f", adaptive loss p = {mf['adaptive_loss_power']:g}"
            if mf.get("all_dropout"):
                extra += f", all-condition dropout {mf['all_dropout']:g}"
            init_from = meta.get("training", {}).get("init_from")
            if init_from:
                extra += f", continued from `{init_from}`"
            encoders = meta.get("features", {}).get("encoders")
            if encoders is not None:  # the offline stack: which sync tokens
                extra += f", {OfflineEncoderConfig.from_dict(encoders).sync_features} sync tokens"
            net = meta.get("network", {})
            joint, fused = net.get("depth", 0) - net.get("fused_depth", 0), net.get("fused_depth")
            size = f" (hidden {net.get('hidden_dim')}, {joint} joint + {fused} audio-only blocks)"
            lines.append(
                f"- `{name}` ({label}): `{runner.paths[name]}`, {meta.get('objective')}, variant "
                f"{meta.get('variant')}{size}, {meta.get('step')} training steps{extra}"
            )
            lines += [f"  - {stage}" for stage in meta.get("lineage", [])]  # how a shipped model was made
    return lines


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    runner: Runner,
    sections: list[tuple[str, str, str]],
    plots: list[Path],
) -> str:
    n, first = len(runner.scenes), runner.scenes[0].seed
    settings_lines = [
        f"- {n} held-out clips of {args.duration:g} s, scene seeds {first}..{first + n - 1} (training uses "
        f"0..1999), drawn like training clips (scene of {args.duration + ev.SCENE_PADDING_S:g} s → mp4 → "
        f"decoded for {args.duration:g} s); prompt = the scene's caption; clip of scene s generated with "
        "seed s.",
        f"- Temporal sync: `detect_onsets` (rise threshold {tm.ONSET_THRESHOLD_DB} dB) vs audible on-screen "
        f"impacts (strength ≥ {tm.AUDIBLE_STRENGTH}; impacts within {1000 * tm.MERGE_S:g} ms merged), "
        f"one-to-one greedy matching within ±{1000 * tm.ONSET_TOLERANCE_S:g} ms; quieter impacts, hum/roll "
        "starts and off-screen sounds are don't-care (off-screen recall is in the JSON). Offset = mean "
        "|detected − true| of matched onsets.",
        "- Pitch acc.: matched single-object onsets whose dominant new frequency (5–45 ms after the onset, "
        "minus the 40 ms before) is nearest to the true colour's pitch × the material's strongest partial, "
        "among the 8 colours (chance 0.125).",
        f"- FD: Fréchet distance of {tm.MEL_BANDS}-band log-mel frames (32 ms / 10 ms, floor −60 dB) of "
        "generated vs real audio, pooled over the clips.",
        f"- RTF: request seconds / audio seconds, CPU ({platform.processor() or platform.machine()}), "
        f"torch threads = {args.threads}, float32, while other jobs share the machine; RTF gen. counts the "
        "condition projections, network and audio decoder only (no video decoding or features).",
    ]
    parts = [
        "# MF-MJT in miniature: results",
        "",
        "Produced by `python benchmarks/paper_in_miniature.py` "
        f"(`--n {n} --duration {args.duration:g}`). These are small models trained on "
        "`mfmjt.toy` scenes, not the paper's VGGSound models; the metrics are the miniature "
        "counterparts described in `mfmjt/evaluate.py`.",
        "",
        "## Models",
        "",
        *(describe_models(runner) or ["- none found"]),
        "",
        "## Settings",
        "",
        *settings_lines,
    ]
    if runner.notes:
        parts += ["", "## Notes", "", *(f"- {note}" for note in runner.notes)]
    for title, intro, body in sections:
        parts += ["", f"## {title}", "", intro, "", body or "_no model available yet_"]
    for plot in plots:
        parts += ["", f"![{plot.stem}]({plot.name})"]
    text = "\n".join(parts) + "\n"
    path.write_text(text)
    return text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the trained models are")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help=f"override a path; names: {list(MODELS)}",
    )
    parser.add_argument("--n", type=int, default=32, help="held-out clips")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--cache", type=Path, default=Path("runs/eval_scenes"), help="scene cache")
    parser.add_argument("--store-codec", type=Path, default=Path("runs/store_4s/codec.safetensors"))
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="where results.md and the plots go")
    parser.add_argument("--json", type=Path, default=Path("runs/eval/paper_in_miniature.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these experiments")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    paths = {name: args.runs / sub for name, (sub, _, _) in MODELS.items()}
    for item in args.model:
        name, _, path = item.partition("=")
        if name not in MODELS or not path:
            raise SystemExit(f"--model takes NAME=DIR with NAME in {list(MODELS)}, got {item!r}")
        paths[name] = Path(path)
    only = set(args.only or "abc")
    if only & {"b", "c"}:
        try:  # the plots come at the end of long runs: check their dependency first
            _pyplot()
        except ImportError as err:
            hint = f"experiments b and c plot with matplotlib: pip install 'mfmjt[eval]' ({err})"
            raise SystemExit(hint) from err
    args.docs.mkdir(parents=True, exist_ok=True)
    scenes = held_out_scenes(args.n, args.cache, args.duration)
    runner = Runner(paths, scenes)

    codec, codec_source = reference_codec(runner, args.store_codec)
    runner.notes.append(f"codec of the reference row: {codec_source}")
    references = evaluate_references(scenes, codec)
    sections, plots = [], []
    if "a" in only:
        sections.append(
            (
                "(a) One step vs 25 steps, MeanFlow vs flow matching (Table 1)",
                "Scaled CFG. The reference rows score the real audio and its codec round trip "
                "(`encode → decode`), the best any model with this codec can do.",
                experiment_a(runner, references),
            )
        )
    if "b" in only:
        body, figs = experiment_b(runner, args.docs, references.get("codec", {}))
        sections.append(
            (
                "(b) Standard vs scaled CFG over ω (Fig. 3)",
                'MeanFlow model; each cell is standard / scaled from one `guidance="both"` request '
                "(ω = 1 is no guidance: both equal). What scaled CFG does to a one-step sample: "
                "[one_step_guidance.md](one_step_guidance.md).",
                body,
            )
        )
        plots += figs
    if "c" in only:
        body, figs = experiment_c(runner, args.docs, references.get("codec", {}))
        sections.append(
            ("(c) Ratio of r ≠ t pairs in training (Fig. 4)", "One step, ω = 1.5, scaled CFG.", body)
        )
        plots += figs

    text = write_markdown(args.docs / "results.md", args, runner, sections, plots)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    raw = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "references": references,
        "notes": runner.notes,
        "rows": [
            {"model": r.model, "settings": asdict(r.settings), "result": r.result} for r in runner.rows()
        ],
    }
    args.json.write_text(json.dumps(raw, indent=2))
    logger.info(
        "wrote %s, %s and %s", args.docs / "results.md", ", ".join(map(str, plots)) or "no plots", args.json
    )


if __name__ == "__main__":
    main()
