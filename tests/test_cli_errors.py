"""Every command, given the mistakes people make, ends in one plain line on stderr and a non-zero exit.

A traceback is a bug: none may appear for these inputs. ``--debug`` (or ``MFMJT_DEBUG=1``) brings
the traceback back for whoever wants it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tone, write_mp4, write_tsv

from mfmjt.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wrong things: a text file named like a video, an empty folder, a folder that is not a
    store, a .pth that is not a checkpoint, a model directory with broken JSON, a caption table and a
    video without its row."""
    root = tmp_path_factory.mktemp("bad")
    (root / "notavideo.mp4").write_text("plain text, not a video")
    (root / "empty").mkdir()
    (root / "notastore").mkdir()
    (root / "notastore" / "meta.json").write_text("{}")
    (root / "junk.pth").write_bytes(b"not a checkpoint" * 10)
    (root / "brokenmodel").mkdir()
    (root / "brokenmodel" / "config.json").write_text("{ not json")
    (root / "oldformat").mkdir()
    (root / "oldformat" / "config.json").write_text(json.dumps({"format_version": 99, "network": {}}))
    write_tsv(root / "captions.tsv", "id\tlabel", [("clip", "a dog")])
    write_tsv(root / "badtable.tsv", "name\twhat", [("clip", "a dog")])
    (root / "videos").mkdir()
    write_mp4(root / "videos" / "clip.mp4", 1.2, tone(1.2, 22050, 440))
    return root


def cases(b: Path) -> list[tuple[str, list[str]]]:
    o = str(b / "out")
    return [
        ("generate", ["generate", "--video", str(b / "missing.mp4"), "--out", o]),
        ("generate", ["generate", "--model", "no-such-model", "--prompt", "rain"]),
        ("generate", ["generate", "--model", str(b / "empty"), "--prompt", "rain"]),
        ("generate", ["generate", "--model", str(b / "brokenmodel"), "--prompt", "rain"]),
        ("generate", ["generate", "--model", str(b / "oldformat"), "--prompt", "rain"]),
        ("generate", ["generate", "--model", str(b / "junk.pth"), "--prompt", "rain"]),
        ("generate", ["generate", "--prompt", "rain", "--steps", "0"]),
        ("generate", ["generate", "--prompt", "rain", "--duration", "-3"]),
        ("convert", ["convert", "no-such-model", o]),
        ("convert", ["convert", str(b / "junk.pth"), o]),
        ("convert", ["convert", str(b / "notavideo.mp4"), o]),
        (
            "extract",
            ["extract", "--videos", str(b / "missing"), "--tsv", str(b / "captions.tsv"), "--out", o],
        ),
        ("extract", ["extract", "--videos", str(b / "videos"), "--tsv", str(b / "missing.tsv"), "--out", o]),
        ("extract", ["extract", "--videos", str(b / "videos"), "--tsv", str(b / "badtable.tsv"), "--out", o]),
        (
            "extract",
            [
                "extract",
                "--audios",
                str(b / "videos"),
                "--tsv",
                str(b / "captions.tsv"),
                "--out",
                o,
                "--features",
                "mmaudio-32k",
            ],
        ),  # fmt: skip
        ("train", ["train", "--store", str(b / "missing"), "--out", o]),
        ("train", ["train", "--store", str(b / "empty"), "--out", o]),
        ("train", ["train", "--store", str(b / "notastore"), "--out", o]),
        ("train", ["train", "--store", str(b / "empty"), "--out", o, "--init-from", "no-such-model"]),
        ("train", ["train", "--store", str(b / "empty"), "--out", o, "--variant", "huge"]),
        ("train", ["train", "--store", str(b / "empty"), "--out", o, "--network", "nonsense=1"]),
        ("distill", ["distill", "--teacher", "no-such-model", "--store", str(b / "empty"), "--out", o]),
        ("distill", ["distill", "--teacher", str(b / "junk.pth"), "--store", str(b / "empty"), "--out", o]),
        ("export", ["export", str(b / "missing.pt"), "--out", o]),
        ("export", ["export", str(b / "junk.pth"), "--out", o]),
        ("deepen", ["deepen", str(b / "missing"), "--extra-blocks", "1", "--out", o]),
        ("deepen", ["deepen", "default", "--extra-blocks", "1", "--out", o]),
        ("evaluate", ["evaluate", "--model", "no-such-model", "--n", "1"]),
        ("toy", ["toy", "evaluate", "--model", "no-such-model", "--n", "1"]),
        ("toy", ["toy", "extract", "--out", o, "--n-items", "0"]),
    ]


def test_every_command_turns_user_errors_into_one_line(bad, capsys, monkeypatch):
    monkeypatch.delenv("MFMJT_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name that looks like a repo id must not go online
    covered = set()
    for command, argv in cases(bad):
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("mfmjt ")]
        assert code not in (0, None), (argv, err)
        assert "Traceback" not in err, (argv, err)
        assert len(lines) == 1 and lines[0].startswith(f"mfmjt {command}: error: "), (argv, err)
        assert len(lines[0]) > len(f"mfmjt {command}: error: ") + 10, (argv, err)
        covered.add(command)
    parser_commands = {"generate", "convert", "extract", "train", "distill", "export", "deepen", "evaluate"}
    assert parser_commands | {"toy"} <= covered


def test_debug_shows_the_traceback(bad, monkeypatch):
    monkeypatch.delenv("MFMJT_DEBUG", raising=False)
    with pytest.raises(ValueError, match="no-such-model"):
        main(["--debug", "convert", "no-such-model", str(bad / "out")])
    monkeypatch.setenv("MFMJT_DEBUG", "1")
    with pytest.raises(ValueError, match="no-such-model"):
        main(["convert", "no-such-model", str(bad / "out")])


def test_a_missing_required_flag_is_argparses_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", "x"])
    assert exit_info.value.code == 2 and "--store" in capsys.readouterr().err


def test_an_unusable_video_is_a_value_error_in_the_api_and_a_reported_skip_at_the_cli(bad, capsys, caplog):
    """Media errors are ValueErrors so that callers (the CLI, the demo) treat them as the user's: the API
    raises one naming the file; ``mfmjt generate`` skips that input with the reason and exits 1."""
    from mfmjt.pipeline import load_pipeline

    with pytest.raises(ValueError, match="notavideo.mp4"):
        load_pipeline("default", device="cpu").generate(video=bad / "notavideo.mp4")
    with caplog.at_level("ERROR"):
        code = main(["generate", "--video", str(bad / "notavideo.mp4"), str(bad / "videos" / "clip.mp4"),
                     "--audio-only", "--out", str(bad / "gen")])  # fmt: skip
    assert code == 1 and "Traceback" not in capsys.readouterr().err
    assert "skipped notavideo.mp4" in caplog.text and "1 of 2 inputs failed" in caplog.text
    written = sorted(p.name for p in (bad / "gen").iterdir())
    assert written and all(name.startswith("clip_") for name in written)  # the usable input was made
