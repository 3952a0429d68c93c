"""The flags of mfmjt distill, extract and toy are generated from their dataclasses: every field has a
flag (unless marked ``cli: False``), and a command given no options builds the dataclass's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import fields, replace
from pathlib import Path

import pytest

from mfmjt.cli import build_parser
from mfmjt.data.extract_media import ExtractMediaConfig
from mfmjt.dataclass_args import values_from_args
from mfmjt.distill import DistillConfig, EndpointConfig, TeacherSampleConfig, config_from_args
from mfmjt.toy.cli import EvaluateOptions, ExtractRunOptions, SceneOptions
from mfmjt.toy.evaluate import EvalSettings
from mfmjt.toy.extract import ExtractConfig


def _flag_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if f.metadata.get("cli", True) and not dataclasses.is_dataclass(f.default)]


def _field_default(f: dataclasses.Field, defaults: object | None):
    if defaults is not None:
        return getattr(defaults, f.name)
    return f.default


def assert_flags_of(args, cls: type, *, prefix: str = "", defaults: object | None = None) -> None:
    """Each flag field of ``cls`` is in the parsed namespace, either unset (None: the dataclass's own
    default applies) or at the field's default."""
    checked = 0
    for f in _flag_fields(cls):
        assert hasattr(args, prefix + f.name), f"{cls.__name__}.{f.name} has no flag"
        value = getattr(args, prefix + f.name)
        if f.default is dataclasses.MISSING:
            continue
        expected = _field_default(f, defaults)
        assert value is None or value == expected, (f.name, value, expected)
        checked += 1
    assert checked > 0


DISTILL = ["distill", "--teacher", "t", "--store", "s", "--out", "o"]


def test_distill_has_a_flag_per_field_and_their_defaults():
    args = build_parser().parse_args(DISTILL)
    own = {f.name: f.default for f in fields(DistillConfig)}
    assert_flags_of(args, DistillConfig)
    assert_flags_of(args, TeacherSampleConfig, prefix="teacher_sample_", defaults=own["samples"])
    assert_flags_of(args, EndpointConfig, prefix="endpoint_", defaults=own["endpoints"])
    config = config_from_args(args)
    seed = config.train.seed
    assert config.samples == replace(own["samples"], seed=seed)
    assert config.endpoints == replace(own["endpoints"], seed=seed)
    assert (config.x_source, config.meanflow_weight) == (own["x_source"], own["meanflow_weight"])


def test_distill_flags_reach_their_fields():
    args = build_parser().parse_args(
        [*DISTILL, "--endpoint-cfg", "3", "--endpoint-chunk", "7", "--teacher-sample-cfg", "2"]
        + ["--teacher-sample-guidance", "standard", "--x-source", "teacher", "--seed", "5"]
    )
    config = config_from_args(args)
    assert (config.endpoints.cfg_strength, config.endpoints.chunk, config.endpoints.seed) == (3.0, 7, 5)
    assert (config.samples.cfg_strength, config.samples.guidance, config.samples.seed) == (2.0, "standard", 5)
    assert config.x_source == "teacher"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*DISTILL, "--endpoint-guidance", "both"])


@pytest.mark.parametrize("command", [["toy", "extract"], ["extract"]])
def test_toy_extract_has_a_flag_per_field_and_their_defaults(command):
    args = build_parser().parse_args([*command, "--out", "store"])
    assert_flags_of(args, ExtractConfig)
    assert_flags_of(args, ExtractRunOptions)
    assert ExtractConfig(**values_from_args(ExtractConfig, args)) == ExtractConfig(out=Path("store"))
    assert ExtractRunOptions(**values_from_args(ExtractRunOptions, args)) == ExtractRunOptions()


def test_media_extract_has_a_flag_per_field_and_their_defaults():
    args = build_parser().parse_args(["extract", "--out", "o", "--videos", "v", "--tsv", "t.tsv"])
    assert_flags_of(args, ExtractMediaConfig)
    given = values_from_args(ExtractMediaConfig, args)
    # a None default is "not given" (omitted); the config then takes the field's default
    assert given == {f.name: f.default for f in _flag_fields(ExtractMediaConfig) if f.default is not None}
    off = build_parser().parse_args(["extract", "--out", "o", "--audios", "a", "--no-peak-normalize"])
    assert values_from_args(ExtractMediaConfig, off)["peak_normalize"] is False


@pytest.mark.parametrize("command", [["toy", "evaluate"], ["evaluate"]])
def test_evaluate_has_a_flag_per_field_and_the_settings_defaults(command):
    args = build_parser().parse_args(command)
    assert_flags_of(args, EvaluateOptions)
    assert EvaluateOptions(**values_from_args(EvaluateOptions, args)) == EvaluateOptions()
    settings = EvalSettings()
    options = EvaluateOptions()
    for name in ("steps", "cfg", "guidance", "seed"):
        assert getattr(options, name) == getattr(settings, name), name


def test_toy_scene_has_a_flag_per_field_and_their_defaults():
    args = build_parser().parse_args(["toy", "scene"])
    assert_flags_of(args, SceneOptions)
    assert SceneOptions(**values_from_args(SceneOptions, args)) == SceneOptions()
    seeds = build_parser().parse_args(["toy", "scene", "--seed", "3", "4"])
    assert tuple(values_from_args(SceneOptions, seeds)["seed"]) == (3, 4)
