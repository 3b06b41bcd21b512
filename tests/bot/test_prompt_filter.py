"""Refused terms: normalising, parsing and matching (pure)."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from bot.errors import UserFacingError
from bot.prompt_filter import MAX_TERM_CHARS, TermError, TermFilter, normalise, parse_term
from bot.requester import Requester
from bot.services.moderation import Moderation
from config.settings import BotSettings, GenerationSettings, Settings
from generation.options import parse_imagine_prompt


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
    from config import ConfigError

    settings = Settings(bot=BotSettings(banned_terms=["fine", "!!"]))
    with pytest.raises(ConfigError, match="ATELIER_BOT_BANNED_TERMS: '!!' has no letters"):
        Moderation(settings, cast(Any, None), cast(Any, None), cast(Any, None))


def test_normalise_drops_invisible_characters_and_combining_marks() -> None:
    assert normalise("n\u200bs\u200cf\u200dw \u2060x\ufeffy s\u00adoft") == "nsfw xy soft"
    assert normalise("n\u0301s\u0327f\u0308w") == "nsfw"
    assert normalise("nśfw café") == "nsfw cafe"


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("nѕfw portrait", "nsfw portrait"),  # Cyrillic ѕ inside a Latin word
        ("nsfw bаth", "nsfw bath"),  # Cyrillic а
        ("nsfω ρortrait", "nsfw portrait"),  # Greek ω and ρ
        ("a ѕех scene", "a sex scene"),  # only look-alikes, in a Latin prompt
        ("кот на крыше", "кот на крыше"),  # genuine Cyrillic: left alone
        ("a кот на крыше", "a кот на крыше"),  # Cyrillic words with genuine letters
        ("γάτα στη στέγη", "γατα στη στεγη"),  # genuine Greek (accents only dropped)
    ],
)
def test_look_alikes_are_folded_only_where_the_text_is_latin(text: str, folded: str) -> None:
    assert normalise(text) == folded


@pytest.mark.parametrize(
    "prompt",
    [
        "NsFw portrait",
        "nsfw::2 portrait",
        "(nsfw:1.2) portrait",
        "((nsfw)) portrait",
        "[nsfw] portrait",
        "ｎｓｆｗ portrait",
        "n\u200bsfw portrait",
        "n\u200dsfw portrait",
        "n\u00adsfw portrait",
        "ns\u0301fw portrait",
        "nѕfw portrait",
        "nsfw pоrtrait",
        "ηsfw portrait",
        "ＮѕＦw portrait",
    ],
)
def test_spelling_tricks_match_the_term(prompt: str) -> None:
    assert TermFilter.of(["nsfw"]).find(prompt) == "nsfw"


@pytest.mark.parametrize(
    ("prompt", "terms"),
    [
        ("кот на крыше", ["kot"]),  # Cyrillic words read as Latin would be "kot"
        ("μια γάτα στη στέγη", ["mia"]),
        ("a classic portrait", ["ass"]),
        ("a nsfwish portrait", ["nsfw"]),
        ("a photo of an ocean", ["осеан"]),
    ],
)
def test_genuine_cyrillic_greek_and_innocent_words_pass(prompt: str, terms: list[str]) -> None:
    assert TermFilter.of([parse_term(t) for t in terms]).find(prompt) is None


def test_a_cyrillic_term_matches_cyrillic_words() -> None:
    terms = TermFilter.of([parse_term("сор")])
    assert terms.find("мусор и сор на полу") == "сор"
    assert terms.find("a painting, сор") == "сор"
    assert terms.find("a cop") is None


def _moderation(*terms: str) -> Moderation:
    settings = Settings(bot=BotSettings(banned_terms=list(terms)))
    return Moderation(settings, cast(Any, None), cast(Any, None), cast(Any, None))


@pytest.mark.parametrize(
    "prompt",
    [
        r"n\sfw portrait",  # A1111 escape: the model gets "nsfw"
        r"n\\sfw portrait",  # a literal backslash, which compel drops too
        r"\nsfw portrait",
        "ns(fw:1.2) portrait",
        "ns[]fw portrait",
        "n(s)f[w] portrait",
        "{ns, x}fw portrait",  # one of the expanded prompts is "nsfw portrait"
        "portrait::2 n\\sfw::1",
        "n\u200bsfw portrait",
        "nѕfw portrait",
    ],
)
async def test_every_new_job_is_checked_as_the_model_reads_it(prompt: str) -> None:
    requests = parse_imagine_prompt(
        prompt, settings=GenerationSettings(), model="sdxl", seed_source=lambda: 1
    )
    dm = Requester(user_id=1, guild_id=None, channel_id=2)
    with pytest.raises(UserFacingError, match="contains `nsfw`"):
        await _moderation("nsfw").screen(dm, requests)


async def test_innocent_prompts_pass_the_moderation_check() -> None:
    requests = parse_imagine_prompt(
        r"a cla\ssic (portrait:1.2) {of, by} кот и кошка::2 nsfwish::1",
        settings=GenerationSettings(),
        model="sdxl",
        seed_source=lambda: 1,
    )
    dm = Requester(user_id=1, guild_id=None, channel_id=2)
    await _moderation("nsfw", "ass", "kot").screen(dm, requests)
