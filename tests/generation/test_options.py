"""The option parser: plain values in, requests or precise errors out. No model, no mocks."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import GenerationSettings
from generation.errors import OptionError
from generation.followups import followup_request, reroll_request
from generation.options import (
    CommandOptions,
    PromptDefaults,
    aspect_size,
    clean_text,
    cleaning_note,
    expand_permutations,
    parse_imagine_prompt,
)
from generation.presets import PRESETS
from generation.request import MAX_SEED, GenerationRequest, Mode, Operation

GEN = GenerationSettings()


def counter_seeds(start: int = 100) -> itertools.count[int]:
    return itertools.count(start)


def parse(
    text: str,
    model: str = "sdxl",
    *,
    gen: GenerationSettings = GEN,
    options: CommandOptions | None = None,
    defaults: PromptDefaults | None = None,
) -> list[GenerationRequest]:
    seeds = counter_seeds()
    return parse_imagine_prompt(
        text,
        settings=gen,
        model=model,
        options=options,
        defaults=defaults,
        seed_source=lambda: next(seeds),
    )


def one(
    text: str,
    model: str = "sdxl",
    *,
    gen: GenerationSettings = GEN,
    options: CommandOptions | None = None,
    defaults: PromptDefaults | None = None,
) -> GenerationRequest:
    (request,) = parse(text, model, gen=gen, options=options, defaults=defaults)
    return request


def test_plain_prompt_takes_preset_defaults() -> None:
    r = one("a lighthouse at dusk")
    assert r.prompt == "a lighthouse at dusk"
    assert (r.width, r.height) == (1024, 1024)
    assert r.mode is Mode.QUALITY and r.steps == 30 and r.guidance == 7.0
    assert r.seed == 100 and r.operation is Operation.IMAGINE and r.model == "sdxl"


def test_every_option() -> None:
    r = one(
        "a lighthouse at dusk --ar 3:2 --no fog, boats --seed 7 --steps 20 --cfg 5.5 "
        "--chaos 40 --tile --stop 50"
    )
    assert (r.width, r.height, r.aspect) == (1216, 832, "3:2")
    assert r.negative_prompt == "fog, boats"
    assert (r.seed, r.steps, r.guidance, r.chaos, r.tile, r.stop) == (7, 20, 5.5, 40, True, 50)
    assert r.denoise_steps == 10


def test_aliases_and_phone_dashes() -> None:
    r = one("a cat \u2014aspect 16:9 \u2013guidance 3 --c 10 --s 5")
    assert (r.width, r.height) == (1344, 768)
    assert (r.guidance, r.chaos, r.seed) == (3.0, 10, 5)


def test_fast_mode_defaults_to_lcm_steps() -> None:
    r = one("a cat --fast")
    assert (r.mode, r.steps, r.guidance) == (Mode.FAST, 4, 1.0)
    assert one("a cat", model="sdxl-lcm").mode is Mode.FAST
    assert one("a cat --quality", model="sdxl-lcm").mode is Mode.QUALITY


def test_user_defaults_apply_but_flags_win() -> None:
    defaults = PromptDefaults(mode=Mode.FAST, aspect="2:3")
    r = one("a cat", defaults=defaults)
    assert r.mode is Mode.FAST and r.aspect == "2:3"
    r = one("a cat --quality --ar 1:1", defaults=defaults)
    assert r.mode is Mode.QUALITY and r.aspect == "1:1"


def test_tiny_sizes_are_proportional() -> None:
    preset = PRESETS["tiny"]
    assert aspect_size("1:1", preset, 4) == (128, 128)
    w, h = aspect_size("3:2", preset, 4)
    assert w > h and w % 16 == 0 and h % 16 == 0


@pytest.mark.parametrize(
    ("aspect", "size"),
    [("1:1", (1024, 1024)), ("16:9", (1344, 768)), ("9:16", (768, 1344)), ("4:1", (2048, 512))],
)
def test_sdxl_aspect_buckets(aspect: str, size: tuple[int, int]) -> None:
    assert aspect_size(aspect, PRESETS["sdxl"], 4) == size


def test_permutations_and_repeat() -> None:
    rs = parse("a {red, blue} car --seed 9")
    assert [r.prompt for r in rs] == ["a red car", "a blue car"]
    assert [r.seed for r in rs] == [9, 9]
    rs = parse("a car --repeat 3")
    assert [r.seed for r in rs] == [100, 101, 102]
    rs = parse("a car --seed 1 --repeat 2")
    assert [r.seed for r in rs] == [1, 5]
    assert [r.aspect for r in parse("a car --ar {1:1, 2:3}")] == ["1:1", "2:3"]
    assert expand_permutations("{a, {b, c}} x", 10) == ["a x", "b x", "c x"]


def test_native_options_merge_with_flags() -> None:
    r = one("a cat --seed 3", options=CommandOptions(aspect="2:1", mode=Mode.FAST, negative="dogs"))
    assert (r.aspect, r.mode, r.negative_prompt, r.seed) == ("2:1", Mode.FAST, "dogs", 3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "prompt is empty"),
        ("--ar 3:2", "prompt is empty"),
        ("a cat --foo 3", "unknown option --foo"),
        ("a cat --seeds 3", "did you mean --seed"),
        ("a cat --seed -1", "--seed must be from 0 to 4294967295"),
        ("a cat --seed 4294967296", "--seed must be from 0 to 4294967295"),
        ("a cat --seed x", "--seed must be a whole number from 0 to 4294967295"),
        ("a cat --steps 0", "--steps must be from 1 to 60"),
        ("a cat --steps 61", "--steps must be from 1 to 60"),
        ("a cat --cfg 21", "--cfg must be from 0 to 20"),
        ("a cat --cfg nan", "--cfg must be a number from 0 to 20"),
        ("a cat --chaos 101", "--chaos must be from 0 to 100"),
        ("a cat --stop 5", "--stop must be from 10 to 100"),
        ("a cat --ar wide", "--ar must be two whole numbers like 3:2"),
        ("a cat --ar 0:1", "--ar sides must be at least 1"),
        ("a cat --ar 10:1", "at most 4 times the short side"),
        ("a cat --seed 1 --seed 2", "--seed is given twice"),
        ("a cat --fast --quality", "contradict"),
        ("a cat --tile yes", "--tile takes no value"),
        ("a cat --seed", "--seed needs a value"),
        ("a cat --seed 5 more words", "unexpected text 'more words' after --seed 5"),
        ("a {red, blue car", "'{' without a matching '}'"),
        ("a red} car", "'}' without a matching '{'"),
        ("a {a,b,c} car --repeat 2", "makes 6 jobs"),
        ("{a,b,c,d,e} car", "more than 4 prompts"),
        ("a car --repeat 5", "--repeat must be from 1 to 4"),
        ("a car --model other", "--model other is not enabled here; allowed: sdxl"),
    ],
)
def test_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(OptionError) as info:
        parse(text)
    assert fragment in str(info.value)


def test_duplicate_between_native_and_inline() -> None:
    with pytest.raises(OptionError, match="both as a command option and in the prompt"):
        parse("a cat --seed 1", options=CommandOptions(seed=2))


def test_prompt_length_limit() -> None:
    with pytest.raises(OptionError, match="at most 1500"):
        parse("a" * 1501)


def test_every_text_option_has_a_length_limit() -> None:
    with pytest.raises(OptionError, match="the negative option is 1501 characters long; at most"):
        parse("a cat", options=CommandOptions(negative="b" * 1501))
    with pytest.raises(OptionError, match="the aspect option is 1501 characters long"):
        parse("a cat", options=CommandOptions(aspect="1" * 1501))
    assert one("a cat", options=CommandOptions(negative="d" * 1500)).negative_prompt == "d" * 1500


@pytest.mark.parametrize(
    "negative", ["(" * 2900 + "x" + ")" * 2900, "[" * 700 + "x" + "]" * 700, "(" * 2900]
)
def test_deeply_nested_negative_is_a_clear_error(negative: str) -> None:
    big = GenerationSettings(max_prompt_chars=10_000)
    with pytest.raises(OptionError, match="nested more than 20 deep"):
        parse("a cat", gen=big, options=CommandOptions(negative=negative))


def test_deeply_nested_permutations_are_not_a_recursion_error() -> None:
    big = GenerationSettings(max_prompt_chars=10_000)
    assert [r.prompt for r in parse("{" * 1500 + "cat" + "}" * 1500, gen=big)] == ["cat"]
    assert [r.prompt for r in parse("a{}" * 1500 + " cat", gen=big)] == ["a" * 1500 + " cat"]
    assert expand_permutations("{a, {b, {c, d}}} {x, y}", 10) == [
        "a x",
        "a y",
        "b x",
        "b y",
        "c x",
        "c y",
        "d x",
        "d y",
    ]


def test_control_bidi_and_zero_width_characters_are_removed_at_the_edge() -> None:
    request = one(
        "a\x00 red\tcar\r\nin \u202erain\u202c\u2066 \x07at\u200b night\x9b\ufeff",
        options=CommandOptions(negative="fog\x00\u200d\nsmoke\u2069"),
    )
    assert request.prompt == "a red car in rain at night"
    assert request.negative_prompt == "fog smoke"
    assert "\\u0000" not in json.dumps(request.to_json())
    assert one("a cat --no dog\x00s").negative_prompt == "dogs"
    with pytest.raises(OptionError, match="prompt is empty"):
        parse("\u200b\x00 \u202e")


def test_clean_text_says_what_it_removed() -> None:
    cleaned = clean_text("a\x00\x01b\u200bc\u202e\td")
    assert cleaned.text == "abc d"
    assert cleaned.note == (
        "removed 2 control characters, 1 zero-width character and 1 bidirectional control character"
    )
    assert clean_text("plain text, Ελληνικά, кириллица").note == ""
    assert cleaning_note("a\x00b", CommandOptions(negative="c\x00")) == (
        "removed 2 control characters"
    )
    assert cleaning_note("a\tb\nc") == ""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a cat --steps \u0663\u0660", "--steps must be a whole number from 1 to 60, written with"),
        ("a cat --seed \uff13", "digits 0-9; got '\uff13'"),
        ("a cat --steps 1_0", "digits 0-9; got '1_0'"),
        ("a cat --cfg \u0663", "--cfg must be a number from 0 to 20, written with the digits 0-9"),
        ("a cat --cfg 1_0", "digits 0-9"),
        ("a cat --ar \u0663:\u0662", "--ar must be two whole numbers like 3:2"),
        ("a (cat:1\u0663)", "bad weight"),
    ],
)
def test_options_take_ascii_digits_only(text: str, fragment: str) -> None:
    with pytest.raises(OptionError) as info:
        parse(text)
    assert fragment in str(info.value)
    assert one("a cat --cfg 7.5 --steps +30").guidance == 7.5


def test_enabled_models_selectable() -> None:
    gen = GenerationSettings(enabled_models=["tiny"])
    r = one("a cat --model tiny", gen=gen)
    assert (r.model, r.width) == ("tiny", 128)


def test_followups() -> None:
    parent = one("a cat --seed 10 --ar 3:2 --stop 50")
    up = followup_request(
        parent, Operation.UPSCALE_SUBTLE, 3, parent_job_id="J1", settings=GEN, seed=999
    )
    assert (up.width, up.height, up.seed, up.stop) == (2432, 1664, 12, 100)
    assert up.strength == GEN.upscale_subtle_strength and up.source is not None
    assert (up.source.job_id, up.source.index) == ("J1", 3)
    vary = followup_request(
        parent, Operation.VARY_STRONG, 1, parent_job_id="J1", settings=GEN, seed=5
    )
    assert (vary.seed, vary.strength, vary.width) == (5, GEN.vary_strong_strength, parent.width)
    with pytest.raises(OptionError, match="largest allowed output"):
        followup_request(up, Operation.UPSCALE_SUBTLE, 1, parent_job_id="J2", settings=GEN, seed=1)
    with pytest.raises(OptionError, match="image 5 does not exist"):
        followup_request(parent, Operation.SELECT, 5, parent_job_id="J1", settings=GEN, seed=1)
    assert reroll_request(parent, 77).seed == 77


def test_request_json_round_trip() -> None:
    r = one("a cat --ar 2:3 --fast --seed 4")
    assert GenerationRequest.from_json(r.to_json()) == r
    assert r.image_seeds == (4, 5, 6, 7)


_flag = st.sampled_from(
    [
        "--ar",
        "--no",
        "--seed",
        "--steps",
        "--cfg",
        "--chaos",
        "--fast",
        "--quality",
        "--tile",
        "--stop",
        "--repeat",
        "--model",
        "--foo",
        "\u2014ar",
        "{",
        "}",
        ",",
        "::",
        "(",
        ")",
    ]
)
_word = st.one_of(
    st.text(alphabet="abcxyz :0123456789.-", min_size=0, max_size=8),
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["3:2", "1:1", "0:0", "99:1", "nan", "inf", "1e9", "2.5"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_flag, _word), max_size=12))
def test_parser_never_crashes_and_accepts_only_bounded(tokens: list[str]) -> None:
    try:
        requests = parse(" ".join(tokens))
    except OptionError:
        return
    assert 1 <= len(requests) <= GEN.max_jobs_per_prompt
    for r in requests:
        assert r.prompt.strip()
        assert GEN.min_steps <= r.steps <= GEN.max_steps
        assert GEN.min_guidance <= r.guidance <= GEN.max_guidance
        assert 0 <= r.seed <= MAX_SEED and 0 <= r.chaos <= 100 and 10 <= r.stop <= 100
        assert r.width % 64 == 0 and r.height % 64 == 0
        assert max(r.width / r.height, r.height / r.width) <= GEN.max_aspect_ratio + 0.5
