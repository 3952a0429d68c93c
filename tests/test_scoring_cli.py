"""``mfmjt score`` end to end on files made here (wav, flac, mp4 with sound, caption tables), with the
small extractors of tests/projection_extractors.py behind the registry seam; the cache; DeSync's
windows; the user's errors; the weights message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import cfr, write_mp4, write_tsv, write_video
from projection_extractors import projection_extractors

from mfmjt.cli import main
from mfmjt.scoring import frechet_distance, inception_score, kl_divergence, scorer
from mfmjt.scoring.inputs import prepare_audio, read_waveform

SECONDS = 6.0
EVENTS = (0.5, 1.3, 2.6, 3.1, 4.4, 5.2)  # flashes in the videos, clicks in the audio


def _scene_audio(rate: int, seed: int, shift: float = 0.0, seconds: float = SECONDS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wave = 0.02 * rng.standard_normal(round(seconds * rate))
    f = 200 + 150 * seed
    t = np.arange(len(wave)) / rate
    wave += 0.1 * np.sin(2 * np.pi * f * t)
    for event in EVENTS:
        start = round((event + shift) * rate)
        burst = 0.8 * rng.standard_normal(round(0.03 * rate))
        wave[start : start + len(burst)] += burst[: max(len(wave) - start, 0)]
    return np.clip(wave, -1, 1).astype(np.float32)


def _flash_painter(i: int, w: int, h: int) -> np.ndarray:
    lit = any(round(e * 25) == i for e in EVENTS)
    return np.full((h, w, 3), 250 if lit else 10, np.uint8)


def _flash_video(path: Path) -> Path:
    return write_video(path, cfr(25, SECONDS), (48, 32), "libx264", 25, painter=_flash_painter)


@pytest.fixture
def extractors(monkeypatch):
    found = projection_extractors()
    monkeypatch.setattr(scorer, "_registry_loader", lambda weights, device, paths: found.__getitem__)
    return found


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score")
    ref, gen, vids = root / "ref", root / "gen", root / "videos"
    for d in (ref, gen, vids):
        d.mkdir()
    names = [f"clip{i}" for i in range(5)]
    for i, name in enumerate(names):
        sf.write(ref / f"{name}.wav", _scene_audio(44_100, i), 44_100)
        _flash_video(vids / f"{name}.mp4")
    for i, name in enumerate(names[:3]):  # generated: flac at 16 kHz, in sync with the videos
        sf.write(gen / f"{name}.flac", _scene_audio(16_000, i + 10), 16_000)
    write_mp4(gen / f"{names[3]}.mp4", SECONDS, _scene_audio(22_050, 13), 22_050)  # a video's audio
    sf.write(gen / "clip4.wav", _scene_audio(16_000, 14)[:8000], 16_000)  # 0.5 s: too short
    (gen / "broken.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(gen / "extra.wav", _scene_audio(16_000, 15), 16_000)  # no reference, no video
    captions = write_tsv(
        root / "captions.tsv",
        "id\tcaption",
        [(n, f"clicks and a {200 + 150 * i} hz hum") for i, n in enumerate(names)],
    )
    return {"ref": ref, "gen": gen, "videos": vids, "captions": captions, "root": root}


def _run(media, out: Path, *extra: str, gen: Path | None = None) -> dict:
    args = ["score", "--generated", str(gen or media["gen"]), "--reference", str(media["ref"])]
    args += ["--out", str(out), "--duration", str(SECONDS), "--device", "cpu", "--batch-size", "2", *extra]
    assert main(args) == 0
    return json.loads(out.read_text())


def test_score_computes_every_column_and_lists_what_it_skipped(media, extractors, tmp_path, capsys):
    report = _run(
        media,
        tmp_path / "report.json",
        "--videos", str(media["videos"]), "--captions", str(media["captions"]),
        "--metrics", "all", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    values = report["metrics"]
    assert set(values) >= {
        "fad",
        "fd",
        "kl",
        "is",
        "ib",
        "desync",
        "clap",
        "fd_passt",
        "kl_passt",
        "is_panns",
    }
    assert all(np.isfinite(v) for v in values.values())
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert "too short: 0.50 s" in skipped["clip4.wav"]
    assert "corrupt" in skipped["broken.wav"]
    # counts: 3 flac + 1 mp4 + extra.wav readable; KL pairs only the 4 matched ones
    assert report["counts"]["fd"] == 5 and report["counts"]["kl"] == 4 and report["counts"]["is"] == 5
    assert report["counts"]["desync"] == 4 and report["counts"]["ib"] == 4 and report["counts"]["clap"] == 4
    assert report["unmatched"]["generated_without_reference"] == ["broken", "extra"]
    assert report["settings"]["is_splits"] == 5
    table = (tmp_path / "report.md").read_text()
    assert table == capsys.readouterr().out
    header = table.splitlines()[0]
    assert header.index("FAD ↓") < header.index("FD ↓") < header.index("KL ↓") < header.index("IS ↑")
    assert (
        header.index("IB ↑") < header.index("DeSync ↓") < header.index("RTF ↓") < header.index("FD_PaSST ↓")
    )
    assert "LAION-CLAP ↑" in header


def test_score_values_are_the_formulas_over_the_extractor_outputs(media, extractors, tmp_path):
    report = _run(media, tmp_path / "r.json", "--metrics", "fad", "fd", "kl", "is", "--no-cache")
    gen = ["clip0.flac", "clip1.flac", "clip2.flac", "clip3.mp4", "extra.wav"]
    ref = [f"clip{i}.wav" for i in range(5)]

    def outputs(name, files, folder):
        ext = extractors[name]
        waves = []
        for f in files:
            wave, rate = read_waveform(folder / f)
            waves.append(prepare_audio(wave, rate, ext.sample_rate, SECONDS, remove_dc=True))
        return [ext.audio([w]) for w in waves]

    v_gen, v_ref = outputs("vggish", gen, media["gen"]), outputs("vggish", ref, media["ref"])
    fad = frechet_distance(
        np.concatenate([o["frames"][0] for o in v_gen]), np.concatenate([o["frames"][0] for o in v_ref])
    )
    assert report["metrics"]["fad"] == pytest.approx(fad, rel=1e-6)  # per-window embeddings, pooled
    p_gen, p_ref = outputs("panns", gen, media["gen"]), outputs("panns", ref, media["ref"])
    fd = frechet_distance(
        np.stack([o["embedding"][0] for o in p_gen]), np.stack([o["embedding"][0] for o in p_ref])
    )
    assert report["metrics"]["fd"] == pytest.approx(fd, rel=1e-6)
    kl = kl_divergence(
        np.stack([o["logits"][0] for o in p_ref[:4]]), np.stack([o["logits"][0] for o in p_gen[:4]])
    )
    assert report["metrics"]["kl"] == pytest.approx(kl, rel=1e-6)  # paired by name: clip0..clip3
    s_gen = outputs("passt", gen, media["gen"])
    is_mean, is_std = inception_score(np.stack([o["logits"][0] for o in s_gen]), splits=5)
    assert report["metrics"]["is"] == pytest.approx(is_mean, rel=1e-6)
    assert report["metrics"]["is_std"] == pytest.approx(is_std, rel=1e-6, abs=1e-12)


def test_ib_is_100_times_the_mean_cosine_of_imagebinds_video_and_audio_embeddings(
    media, tmp_path, monkeypatch
):
    pytest.importorskip("torchaudio", reason="the eval extra is not installed")
    from mfmjt.scoring.extractors.imagebind import ImageBindConfig, ImageBindExtractor
    from mfmjt.scoring.inputs import decode_frames

    # the real extractor (front ends, 0.5 fps protocol) at a small size with seeded random weights
    ext = ImageBindExtractor(weights="random", config=ImageBindConfig(64, 2, 4, 48, 2, 4, 32))
    monkeypatch.setattr(
        scorer, "_registry_loader", lambda weights, device, paths: {"imagebind": ext}.__getitem__
    )
    out = tmp_path / "ib.json"
    args = ["score", "--generated", str(media["gen"]), "--videos", str(media["videos"]), "--metrics", "ib"]
    assert main([*args, "--out", str(out), "--duration", str(SECONDS), "--no-cache"]) == 0
    report = json.loads(out.read_text())
    cosines = []
    for name in ("clip0.flac", "clip1.flac", "clip2.flac", "clip3.mp4"):  # those with a video
        frames = decode_frames(media["videos"] / f"{Path(name).stem}.mp4", 0.5, SECONDS, 224)
        assert frames.shape == (3, 224, 336, 3)  # 6 s at 0.5 fps, short side 224
        wave, rate = read_waveform(media["gen"] / name)
        audio = ext.audio([prepare_audio(wave, rate, 16_000, SECONDS, remove_dc=False)])["embedding"][0]
        video = ext.video([frames], 0.5)["embedding"][0]
        cosines.append(audio @ video / np.linalg.norm(audio) / np.linalg.norm(video))
    assert report["counts"]["ib"] == 4
    assert report["metrics"]["ib"] == pytest.approx(100 * np.mean(cosines), rel=1e-5)
    assert report["extractors"]["imagebind"]["weights"] == "random (seed 0)"


def test_fad_pools_the_windows_of_clips_of_different_lengths(tmp_path, extractors):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    lengths = {"a": 2.0, "b": 4.0, "c": 3.0}
    for i, (name, seconds) in enumerate(lengths.items()):
        sf.write(gen / f"{name}.wav", _scene_audio(16_000, i, seconds=seconds), 16_000)
        sf.write(ref / f"{name}.wav", _scene_audio(16_000, i + 5, seconds=6.0), 16_000)
    out = tmp_path / "r.json"
    assert main(["score", "--generated", str(gen), "--reference", str(ref), "--metrics", "fad",
                 "--out", str(out), "--no-cache", "--duration", "6"]) == 0  # fmt: skip
    vggish = extractors["vggish"]

    def frames(path):  # as av-benchmark loads it: the file's samples less their mean, 16 kHz already
        wave = sf.read(path, dtype="float32")[0]
        return vggish.audio([wave - wave.mean()])["frames"][0]

    windows = [frames(gen / f"{name}.wav") for name in lengths]
    assert [len(w) for w in windows] == [2, 4, 3]  # 0.96 s windows
    refs = [frames(ref / f"{name}.wav") for name in lengths]
    expected = frechet_distance(np.concatenate(windows), np.concatenate(refs))
    assert json.loads(out.read_text())["metrics"]["fad"] == pytest.approx(expected, rel=1e-4)


def test_the_cache_serves_the_reference_side_to_a_second_model(media, extractors, tmp_path):
    cache = tmp_path / "cache"
    first = _run(media, tmp_path / "a.json", "--metrics", "fad", "kl", "--cache", str(cache))
    assert first["cache"]["hits"] == 0
    other = tmp_path / "other_model"
    other.mkdir()
    for i in range(5):
        sf.write(other / f"clip{i}.wav", _scene_audio(16_000, i + 30), 16_000)
    calls = extractors["vggish"].calls
    second = _run(media, tmp_path / "b.json", "--metrics", "fad", "kl", "--cache", str(cache), gen=other)
    assert second["cache"]["hits"] == 2 * 5  # vggish and panns, the 5 reference files each
    assert extractors["vggish"].calls - calls == 3  # the new model's 5 files, 2 per batch
    uncached = _run(media, tmp_path / "c.json", "--metrics", "fad", "kl", "--no-cache", gen=other)
    assert second["metrics"] == uncached["metrics"]


def test_compare_prints_one_row_per_report(tmp_path, capsys, caplog):
    def report(label, fad, kl):
        return {"label": label, "metrics": {"fad": fad, "kl": kl}, "counts": {"fad": 3, "kl": 3},
                "settings": {"metrics": ["fad", "kl"]}, "skipped": []}  # fmt: skip

    paths = []
    for label, fad, kl in (("one step", 1.4567, 1.87), ("25 steps", 1.13, 1.5949)):
        paths.append(tmp_path / f"{len(paths)}.json")
        paths[-1].write_text(json.dumps(report(label, fad, kl)))
    assert main(["score", "--compare", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | FAD ↓ | KL ↓ | RTF ↓ |"
    assert lines[2].startswith("| one step | 1.46 |") and lines[3].startswith("| 25 steps | 1.13 |")
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["score", "--compare", str(tmp_path / "bad.json")]) == 2
    assert "is not a report of mfmjt score" in caplog.records[-1].getMessage()


def test_desync_scores_the_first_and_last_window_and_sees_a_shift(tmp_path, extractors):
    vids, sync, late = tmp_path / "v", tmp_path / "sync", tmp_path / "late"
    for d in (vids, sync, late):
        d.mkdir()
    for i in range(2):
        _flash_video(vids / f"c{i}.mp4")
        sf.write(sync / f"c{i}.wav", _scene_audio(16_000, i), 16_000)
        sf.write(late / f"c{i}.wav", _scene_audio(16_000, i, shift=0.4), 16_000)
    common = [
        "--videos",
        str(vids),
        "--metrics",
        "desync",
        "--duration",
        "6",
        "--no-cache",
        "--device",
        "cpu",
    ]
    assert main(["score", "--generated", str(sync), "--out", str(tmp_path / "s.json"), *common]) == 0
    assert main(["score", "--generated", str(late), "--out", str(tmp_path / "l.json"), *common]) == 0
    in_sync = json.loads((tmp_path / "s.json").read_text())["metrics"]["desync"]
    shifted = json.loads((tmp_path / "l.json").read_text())["metrics"]["desync"]
    assert in_sync == pytest.approx(0.0, abs=1e-6)
    assert shifted == pytest.approx(0.4, abs=1e-6)
    # each call scored 2 clips x 2 windows of 4.8 s (120 frames at 25 fps)
    assert extractors["synchformer"].calls[-1] == 4


def test_desync_lists_clips_shorter_than_its_window_and_scores_the_rest(tmp_path, extractors):
    vids, gen = tmp_path / "v", tmp_path / "gen"
    vids.mkdir(), gen.mkdir()
    for name in ("long", "short_audio", "short_video"):
        seconds = 3.0 if name == "short_video" else SECONDS
        write_video(vids / f"{name}.mp4", cfr(25, seconds), (48, 32), "libx264", 25, painter=_flash_painter)
    sf.write(gen / "long.wav", _scene_audio(16_000, 0, shift=0.4), 16_000)
    sf.write(gen / "short_audio.wav", _scene_audio(16_000, 1, seconds=4.7), 16_000)
    sf.write(gen / "short_video.wav", _scene_audio(16_000, 2), 16_000)
    out = tmp_path / "r.json"
    args = ["score", "--generated", str(gen), "--videos", str(vids), "--metrics", "desync", "--out", str(out)]
    assert main([*args, "--no-cache", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    # only the 6 s clip is scored: its two windows both see the 0.4 s delay
    assert report["counts"]["desync"] == 1
    assert report["metrics"]["desync"] == pytest.approx(0.4, abs=1e-6)
    assert extractors["synchformer"].calls == [2]
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "short_audio.wav": "too short for DeSync: 4.70 s of video and audio (at least 4.8 s)",
        "short_video.wav": "too short for DeSync: 3.00 s of video and audio (at least 4.8 s)",
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--generated", "{root}/missing"], "--generated folder {root}/missing does not exist"),
        (["--generated", "{root}/gen", "--reference", "{root}/videos", "--metrics", "kl", "--videos",
          "{root}/empty"], "--videos folder {root}/empty holds no videos"),
        (["--generated", "{root}/gen", "--metrics", "ib"], "metric ib needs --videos"),
        (["--generated", "{root}/gen", "--metrics", "fad"], "metric fad needs --reference"),
        (["--generated", "{root}/gen", "--metrics", "clap"], "metric clap needs --captions"),
        (["--generated", "{root}/gen", "--metrics", "fad,bogus"], "unknown metric 'bogus'; choose"),
        (["--generated", "{root}/gen", "--reference", "{root}/other", "--metrics", "kl"],
         "no file of --generated has the name of a file in --reference"),
        (["--model", "default"], "--model needs --videos or --captions"),
        ([], "give --generated"),
        (["--generated", "{root}/gen", "--metrics", "is", "--extractor-weights", "panns"], "NAME=PATH"),
    ],
)  # fmt: skip
def test_user_errors_are_one_sentence(tmp_path, caplog, extractors, extra, message):
    (tmp_path / "gen").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "videos").mkdir()
    sf.write(tmp_path / "gen" / "a.wav", np.zeros(16_000, np.float32), 16_000)
    sf.write(tmp_path / "other" / "b.wav", np.zeros(16_000, np.float32), 16_000)
    sf.write(tmp_path / "videos" / "a.wav", np.zeros(16_000, np.float32), 16_000)
    args = [a.format(root=tmp_path) for a in extra]
    assert main(["score", *args, "--out", str(tmp_path / "r.json")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message.format(root=tmp_path) in errors[0]
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert not (tmp_path / "r.json").exists()


def test_missing_weights_name_what_to_download_and_where_to_put_it(tmp_path, caplog, monkeypatch):
    from mfmjt.hub import UrlSource, WeightFile, resolve_file

    entry = WeightFile(
        "panns_cnn14_16k",
        "eval_weights/Cnn14_16k_mAP=0.438.pth",
        "0" * 32,
        327_000_000,
        (UrlSource("https://example.invalid/Cnn14_16k_mAP=0.438.pth"),),
        "PANNs CNN14 (16 kHz)",
    )

    def loader(weights, device, paths):
        def load(name):
            resolve_file(entry, cache_dir=tmp_path / "cache", offline=True)  # how extractors fetch weights

        return load

    monkeypatch.setattr(scorer, "_registry_loader", loader)
    monkeypatch.delenv("MFMJT_WEIGHTS_DIR", raising=False)
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "a.wav", np.zeros(16_000, np.float32), 16_000)
    assert (
        main(["score", "--generated", str(gen), "--metrics", "is_panns", "--out", str(tmp_path / "r.json")])
        == 2
    )
    message = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"][0]
    assert "https://example.invalid/Cnn14_16k_mAP=0.438.pth" in message and "MFMJT_WEIGHTS_DIR" in message


def test_score_accepts_av_benchmarks_csv_captions(tmp_path, extractors):
    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(2):
        sf.write(gen / f"y{i}.wav", _scene_audio(16_000, i), 16_000)
    csv_path = tmp_path / "caps.csv"
    csv_path.write_text('name,caption\ny0,"a hum, and clicks"\ny1,rain\n', encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(["score", "--generated", str(gen), "--captions", str(csv_path), "--metrics", "laion_clap",
                 "--out", str(out), "--no-cache"]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["counts"]["laion_clap"] == 2 and -1.0 <= report["metrics"]["laion_clap"] <= 1.0


def test_importing_mfmjt_and_the_formulas_does_not_import_the_eval_dependencies():
    code = (
        "import sys, mfmjt, mfmjt.scoring; from mfmjt import load_pipeline; "
        "from mfmjt.scoring import frechet_distance; import mfmjt.cli; "
        "heavy = ('scipy', 'mfmjt.scoring.scorer', 'mfmjt.scoring.extractors'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
def test_score_with_model_generates_then_scores_and_measures_rtf(tmp_path, extractors):
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(2):
        write_mp4(vids / f"v{i}.mp4", 5.0, _scene_audio(16_000, i, seconds=5.0), 16_000, seed=i)
    out = tmp_path / "run.json"
    args = ["score", "--model", "default", "--videos", str(vids), "--reference", str(vids), "--duration", "5"]
    assert (
        main([*args, "--metrics", "fad", "is", "desync", "--out", str(out), "--no-cache", "--device", "cpu"])
        == 0
    )
    report = json.loads(out.read_text())
    gen = report["generation"]
    assert gen["clips"] == 2 and gen["rtf"] > 0 and gen["device"] == "cpu"
    assert report["metrics"]["rtf"] == gen["rtf"]
    assert sorted(p.name for p in (tmp_path / "run_audio").iterdir()) == ["v0.flac", "v1.flac"]
    assert sf.info(str(tmp_path / "run_audio" / "v0.flac")).duration == pytest.approx(5.0, abs=0.05)
    assert report["counts"]["desync"] == 2
    assert "RTF ↓" in (tmp_path / "run.md").read_text()


@pytest.mark.parametrize(
    "raised, message",
    [
        (None, "the feature extractors (mfmjt.scoring.extractors) are not part of this installation"),
        (
            ValueError("the 'synchformer' extractor is not implemented yet; available: ['panns']"),
            "not implemented",
        ),
        (ModuleNotFoundError("the 'passt' extractor needs the package 'timm'"), "needs the package"),
    ],
)
def test_registry_failures_are_one_sentence(tmp_path, caplog, monkeypatch, raised, message):
    import types

    if raised is None:  # no registry at all
        monkeypatch.setitem(sys.modules, "mfmjt.scoring.extractors", None)
    else:
        fake = types.ModuleType("mfmjt.scoring.extractors")

        def get_extractor(name, weights=None, device="cpu"):
            raise raised

        fake.get_extractor = get_extractor
        monkeypatch.setitem(sys.modules, "mfmjt.scoring.extractors", fake)
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "a.wav", _scene_audio(16_000, 0, seconds=2.0), 16_000)
    assert main(["score", "--generated", str(gen), "--metrics", "is", "--out", str(tmp_path / "r.json")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


@pytest.mark.slow
def test_score_with_the_registrys_random_weight_extractors(media, tmp_path):
    registry = pytest.importorskip("mfmjt.scoring.extractors", reason="the extractors are a separate change")
    wanted = {"fad": "vggish", "fd": "panns", "kl": "panns", "is": "passt", "fd_passt": "passt"}
    metrics = [k for k, name in wanted.items() if name in registry.EXTRACTOR_NAMES]
    out = tmp_path / "r.json"
    args = ["--metrics", *metrics, "--weights", "random", "--cache", str(tmp_path / "cache")]
    report = _run(media, out, *args)
    assert set(metrics) <= set(report["metrics"]) and all(np.isfinite(report["metrics"][k]) for k in metrics)
    again = _run(media, tmp_path / "r2.json", *args)
    assert again["metrics"] == report["metrics"]


@pytest.mark.slow  # the full-size Synchformer on two 4.8 s windows: minutes on a CPU
def test_desync_with_the_registrys_random_weight_synchformer(tmp_path):
    vids, gen = tmp_path / "v", tmp_path / "gen"
    vids.mkdir(), gen.mkdir()
    # a 4.8 s clip: its first and last windows are the same 120 frames and 76,800 samples
    write_mp4(vids / "c.mp4", 4.8, None, seed=3)
    sf.write(gen / "c.flac", _scene_audio(16_000, 0, seconds=4.8), 16_000)
    out = tmp_path / "r.json"
    args = ["score", "--generated", str(gen), "--videos", str(vids), "--metrics", "desync", "--out", str(out)]
    assert main([*args, "--weights", "random", "--no-cache", "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert report["counts"]["desync"] == 1 and report["skipped"] == []
    assert report["extractors"]["synchformer"]["weights"] == "random (seed 0)"
    value = report["metrics"]["desync"]  # |one grid offset|: a multiple of 0.2 s in [0, 2]
    assert 0 <= value <= 2 and value / 0.2 == pytest.approx(round(value / 0.2), abs=1e-5)


def test_default_metrics_and_groups_follow_the_inputs():
    resolve = scorer.resolve_metrics
    v2a = resolve(None, videos=True, captions=True, reference=True)
    assert v2a == ["fad", "fd", "kl", "is", "ib", "desync", "fd_passt", "kl_passt", "is_panns"]  # Table 1
    t2a = resolve(None, videos=False, captions=True, reference=True)
    assert t2a == ["fad", "fd", "is", "clap", "fd_passt", "kl_passt", "is_panns"]  # Table 2
    assert resolve(None, videos=False, captions=False, reference=False) == ["is", "is_panns"]
    assert resolve(["paper"], videos=True, captions=False, reference=True) == list(scorer.PAPER_V2A)
    assert resolve(["all"], videos=False, captions=True, reference=False) == [
        "is",
        "clap",
        "is_panns",
        "laion_clap",
    ]
    # a name asked for explicitly stays, and is refused later for its missing input
    assert resolve(["is", "fad"], videos=False, captions=False, reference=False) == ["is", "fad"]
