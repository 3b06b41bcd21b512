"""Refused terms: normalising, parsing and matching (pure)."""

from __future__ import annotations

import re

import pytest

from bot.prompt_filter import MAX_TERM_CHARS, TermError, TermFilter, normalise, parse_term


def test_normalise_folds_case_width_and_punctuation() -> None:
    assert normalise("  A (Red::2) FOX_runs!  ") == "a red 2 fox runs"
    assert normalise("ＮＳＦＷ") == "nsfw"  # full-width letters
    assert normalise("Straße") == "strasse"  # casefold, not lower


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("NSFW", "nsfw"), ("  Blood--Bath ", "blood bath"), ("Gor*", "gor*"), ("ｇｏｒｅ", "gore")],
)
def test_parse_term(raw: str, stored: str) -> None:
    assert parse_term(raw) == stored


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("!!!", "has no letters or digits"),
        ("*", "has no letters or digits"),
        ("go*re", "* may only end a term"),
        ("x" * (MAX_TERM_CHARS + 1), f"at most {MAX_TERM_CHARS} characters"),
    ],
)
def test_bad_terms_are_refused_with_the_rule(raw: str, problem: str) -> None:
    with pytest.raises(TermError, match=re.escape(problem)):
        parse_term(raw)


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("a portrait, NSFW", "nsfw"),
        ("a portrait, (nsfw:1.4)", "nsfw"),
        ("a portrait::2 nsfw::1", "nsfw"),
        ("ｎｓｆｗ portrait", "nsfw"),
        ("a classic portrait", None),  # inside another word: no match
        ("a nsfwish portrait", None),
        ("gory scene", "gor*"),
        ("gorgeous scene", "gor*"),  # a prefix term is broad, as documented
        ("a blood  bath", "blood bath"),
        ("a blood orange bath", None),
        ("", None),
    ],
)
def test_find(prompt: str, found: str | None) -> None:
    terms = TermFilter.of(["nsfw", "blood bath"], [parse_term("gor*")])
    assert terms.find(prompt) == found


def test_union_of_lists_and_an_empty_filter() -> None:
    assert TermFilter.of(["b", "a"], ["a"]).terms == ("a", "b")
    assert TermFilter.of().find("anything at all") is None


def test_a_bad_operator_term_stops_the_start_naming_the_setting() -> None:
    from typing import Any, cast

    from bot.services.moderation import Moderation
    from config import ConfigError
    from config.settings import BotSettings, Settings

    settings = Settings(bot=BotSettings(banned_terms=["fine", "!!"]))
    with pytest.raises(ConfigError, match="ATELIER_BOT_BANNED_TERMS: '!!' has no letters"):
        Moderation(settings, cast(Any, None), cast(Any, None))
