"""GenerationRequest.validate: one check for the pipeline, the CLI and the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfmjt.model_dir import SamplingSettings
from mfmjt.request import GenerationRequest, Limits, RequestError, Sampling, recommended_settings

LIMITS = Limits(max_steps=25, max_cfg=10.0, max_prompt_chars=100)


def test_a_good_request_is_normalised():
    checked = GenerationRequest(
        video="clip.mp4",
        prompt="a ball",
        duration="2.5",
        steps=2.0,
        cfg_strength="3",
        guidance="both",
        seed=7.0,
    ).validate(LIMITS)
    assert checked.video == "clip.mp4" and checked.prompt == "a ball"
    assert (checked.duration, checked.steps, checked.cfg_strength, checked.seed) == (2.5, 2, 3.0, 7)
    assert type(checked.steps) is int and type(checked.seed) is int


def test_zero_or_empty_duration_means_the_default():
    for value in (0, 0.0, "", None):
        assert GenerationRequest(prompt="a", duration=value).validate(LIMITS).duration is None


@pytest.mark.parametrize(
    ("objective", "steps", "expected"),
    [("meanflow", 1, 1.5), ("meanflow", 4, 4.5), ("flow_matching", 1, 1.5), ("flow_matching", 25, 4.5)],
)
def test_an_unset_omega_follows_the_model_and_the_steps(objective, steps, expected):
    # the model's ω at its own steps, else 1.5 at one step and 4.5 above (SamplingSettings.cfg_for)
    checked = GenerationRequest(prompt="a", steps=steps, cfg_strength=None).validate(LIMITS, objective)
    assert checked.cfg_strength == expected


@pytest.mark.parametrize(
    ("recommended", "expected"),
    [
        ("meanflow", (1, 1.5, "scaled")),
        ("flow_matching", (25, 4.5, "scaled")),
        (SamplingSettings(2, 2.0, "standard"), (2, 2.0, "standard")),
    ],
)
def test_unset_sampling_settings_are_the_models(recommended, expected):
    checked = GenerationRequest(prompt="a").validate(LIMITS, recommended)
    assert (checked.steps, checked.cfg_strength, checked.guidance) == expected
    assert checked.sampling == Sampling(*expected) == Sampling().resolve(recommended)


def test_given_sampling_settings_win_over_the_models():
    own = SamplingSettings(2, 2.0, "standard")
    assert Sampling(steps=4).resolve(own) == Sampling(4, 4.5, "standard")  # ω for 4 steps, not the model's 2
    assert Sampling(cfg_strength=3.0).resolve(own) == Sampling(2, 3.0, "standard")
    assert Sampling(guidance="both").resolve(own).modes == ("standard", "scaled")
    checked = GenerationRequest(prompt="a", steps=3, cfg_strength=0, guidance="both").validate(LIMITS, own)
    assert checked.sampling == Sampling(3, 0.0, "both")


def test_a_recommendation_beyond_the_callers_limits_is_capped():
    checked = GenerationRequest(prompt="a").validate(Limits(max_steps=10, max_cfg=3.0), "flow_matching")
    assert (checked.steps, checked.cfg_strength) == (10, 3.0)


def test_the_largest_seed_named_in_the_message_is_accepted():
    top = LIMITS.max_seed
    assert GenerationRequest(prompt="a", seed=top).validate(LIMITS).seed == top
    assert GenerationRequest(prompt="a", seed=str(top)).validate(LIMITS).seed == top
    with pytest.raises(RequestError, match=f"from 0 to {top}, got {top + 1}"):
        GenerationRequest(prompt="a", seed=top + 1).validate(LIMITS)
    with pytest.raises(RequestError, match="seed must be a whole number"):
        GenerationRequest(prompt="a", seed=float(top)).validate(LIMITS)  # 2**63 once a float


def test_a_huge_duration_is_refused_in_a_sentence():
    with pytest.raises(RequestError, match=r"duration must be .* up to 86400, got 1e\+308"):
        GenerationRequest(prompt="a", duration=1e308).validate(LIMITS)
    assert GenerationRequest(prompt="a", duration=86400).validate(LIMITS).duration == 86400


def test_recommended_settings_per_objective():
    assert (
        recommended_settings("flow_matching").steps,
        recommended_settings("flow_matching").cfg_strength,
    ) == (
        25,
        4.5,
    )
    assert (recommended_settings("meanflow").steps, recommended_settings("meanflow").cfg_strength) == (1, 1.5)


def test_an_unset_seed_is_drawn():
    seeds = {GenerationRequest(prompt="a", seed=None).validate(LIMITS).seed for _ in range(5)}
    assert all(0 <= s < 2**31 for s in seeds) and len(seeds) > 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(steps=10**400), r"steps must be a whole number from 1 to 25, got a 401-digit number"),
        (dict(steps=26), "steps must be a whole number from 1 to 25, got 26"),
        (dict(steps=True), "steps must be"),
        (dict(steps="1" * 500), r"got '1111.*… \(500 characters\)"),
        (dict(cfg_strength=float("nan")), r"ω \(cfg_strength\) must be a number from 0 to 10"),
        (dict(cfg_strength=10.5), r"ω \(cfg_strength\) must be a number from 0 to 10, got 10.5"),
        (dict(seed=-1), "seed must be a whole number from 0 to"),
        (dict(seed=0.5), "seed must be a whole number"),
        (dict(duration=-1), "duration must be 0 .* got -1"),
        (dict(duration=float("inf")), "duration must be"),
        (dict(guidance="loud"), "guidance must be one of .*'loud'"),
        (dict(prompt="p" * 101), "prompt is 101 characters long; at most 100 are accepted"),
        (dict(negative_prompt=["x"]), "negative prompt must be text, got list"),
        (dict(prompt="a\x00b"), "NUL character"),
        (dict(prompt=""), "give a video, a prompt, or both"),
        (dict(prompt="", video=""), "give a video, a prompt, or both"),
        (dict(video=3), "video must be a file path, got int"),
    ],
)
def test_a_bad_field_is_named_in_a_plain_sentence(fields, message):
    with pytest.raises(RequestError, match=message) as info:
        GenerationRequest(**{"prompt": "a", **fields}).validate(LIMITS)
    assert len(str(info.value)) < 200


def test_a_video_alone_is_enough():
    assert GenerationRequest(video=Path("x.mp4")).validate(LIMITS).video == Path("x.mp4")
