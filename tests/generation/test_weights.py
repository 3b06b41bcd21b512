"""Midjourney multi-prompts and A1111 emphasis translated to compel syntax."""

from __future__ import annotations

import pytest
from compel import Compel
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.errors import OptionError
from generation.weights import (
    check_prompt_syntax,
    encoder_text,
    parse_weighted_prompt,
    plain_prompt,
    to_compel,
)


def _compel_fragments(compel_text: str) -> list[tuple[str, float]]:
    """What compel itself makes of a prompt: (text, weight) per fragment."""
    conjunction = Compel.parse_prompt_string(compel_text)
    (prompt,) = conjunction.prompts
    return [(fragment.text, round(fragment.weight, 4)) for fragment in prompt.children]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat on a mat", "a cat on a mat"),
        ("a cat::2 a dog::1", '("a cat", " a dog").blend(2, 1)'),
        ("hot dog::1.5 animal::-0.5", '("hot dog", " animal").blend(1.5, -0.5)'),
        ("cat::dog", '("cat", "dog").blend(1, 1)'),
        ("castle::2", "castle"),
        ("(word:1.3) here", "(word)1.3 here"),
        ("a (big) cat", "a (big)1.1 cat"),
        ("a [small] cat", "a (small)0.9091 cat"),
        ("((huge))", "(huge)1.21"),
        (r"a \(literal\) paren", r"a \(literal\) paren"),
        ('say "hi"', r"say \"hi\""),
        ("c++ code", "c ++ code"),
    ],
)
def test_to_compel(prompt: str, expected: str) -> None:
    assert to_compel(prompt) == expected


def test_weighted_fragments_reach_compel_intact() -> None:
    fragments = _compel_fragments(to_compel("a (red:1.4) [dim] house, (old (stone:1.5)) walls"))
    assert fragments == [
        ("a", 1.0),
        ("red", 1.4),
        ("dim", 0.9091),
        ("house,", 1.0),
        ("old", 1.1),
        ("stone", 1.65),
        ("walls", 1.0),
    ]


def test_text_that_looks_like_compel_syntax_stays_text() -> None:
    for prompt in ["x.swap(y)", "dog- cat", "a.blend(b)", 'quote "me"', "(note: hello)"]:
        text = "".join(text for text, _ in _compel_fragments(to_compel(prompt)))
        assert text.replace(" ", "") == plain_prompt(prompt).replace(" ", "")


def test_blend_parts_keep_their_own_emphasis() -> None:
    conjunction = Compel.parse_prompt_string(to_compel("a (red:1.5) car::3 rain::1"))
    (blend,) = conjunction.prompts
    assert blend.weights == [3.0, 1.0]
    first = [(f.text, f.weight) for f in blend.prompts[0].children]
    assert ("red", 1.5) in first


def test_segments_and_plain_text() -> None:
    segments = parse_weighted_prompt("a (cat:1.2) on a mat::2 dog::-0.5")
    assert [segment.weight for segment in segments] == [2.0, -0.5]
    assert segments[0].plain_text == "a cat on a mat"
    assert plain_prompt("a (cat:1.2) on a mat::2 dog::-0.5") == "a cat on a mat dog"


def test_encoder_text_is_what_compel_receives() -> None:
    assert encoder_text(r"n\sfw (por:1.2)trait::2 a\\b [c]::1") == "nsfw portrait  ab c"
    assert encoder_text(r"n\sfw") == "".join(
        f.text for f in Compel.parse_prompt_string(to_compel(r"n\sfw")).prompts[0].children
    )


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("a::1.2.3 b", "bad multi-prompt weight `::1.2.3`"),
        ("a::- b", "bad multi-prompt weight `::-`"),
        ("a::2x b", "bad multi-prompt weight `::2x`"),
        ("(cat:1.2.3)", "bad weight `1.2.3`"),
        ("(cat:-1)", "out of range"),
        ("(cat:9)", "out of range"),
        ("a::-1 b::0.5", "add up to -1 + 0.5 = -0.5"),
        ("a::0 b::0", "must add up to more than 0"),
        ("cat::0", "must add up to more than 0"),
        ("a (cat", "`(` at character 3 is never closed"),
        ("a cat)", "`)` at character 6 has no opening `(`"),
        ("(a]", "`]` at character 3 does not close `(` at character 1"),
        ("[a", "`[` at character 1 is never closed"),
        ("::2 a", "empty prompt part"),
        ("a::" + "9" * 400 + " b", "out of range: use -10 to 10"),
        ("a::" + "9" * 400 + " b::-" + "9" * 400, "out of range: use -10 to 10"),
        ("a::11 b", "out of range: use -10 to 10"),
        ("(x:" + "9" * 400 + ")", "out of range: use 0 to 5"),
        ("((((x:5):5):5):5)", "nested weights multiply to 25"),
        ("((x:5))", "the product of nested weights may be at most 5"),
        ("(" * 21 + "x" + ")" * 21, "nested more than 20 deep"),
        ("[" * 2900 + "x" + "]" * 2900, "nested more than 20 deep"),
        ("(" * 2900 + "x" + ")" * 2900, "nested more than 20 deep"),
    ],
)
def test_syntax_errors_name_the_problem(prompt: str, fragment: str) -> None:
    with pytest.raises(OptionError) as caught:
        check_prompt_syntax(prompt)
    assert fragment in str(caught.value)


def test_valid_prompts_pass() -> None:
    for prompt in [
        "plain",
        "a::2 b::-1",
        "a::10 b::-9.5",
        "(x:0)",
        "(x:5)",
        "((x:2):2)",
        "[" * 20 + "x" + "]" * 20,
        r"\(\)",
        "ratio 3:4",
        "a (b: c) d",
    ]:
        check_prompt_syntax(prompt)


_PROMPT_CHARS = st.sampled_from(list("abc xyz,.:!?'\"+-()[]\\0123456789"))


@settings(max_examples=150, deadline=None)
@given(st.text(_PROMPT_CHARS, min_size=1, max_size=40))
def test_any_prompt_is_rejected_or_parsed_by_compel_with_the_same_words(prompt: str) -> None:
    try:
        compel_text = to_compel(prompt)
    except OptionError:
        return
    conjunction = Compel.parse_prompt_string(compel_text)
    words: list[str] = []
    for part in conjunction.prompts:
        prompts = part.prompts if hasattr(part, "weights") and hasattr(part, "prompts") else [part]
        for flat in prompts:
            words.extend(fragment.text for fragment in flat.children)
    assert "".join(words).replace(" ", "") == "".join(
        segment.plain_text for segment in parse_weighted_prompt(prompt)
    ).replace(" ", "").replace("\\", "")
