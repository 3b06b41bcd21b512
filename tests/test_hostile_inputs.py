"""Hostile input, gathered in one place (issue 9, "Measure and show").

Five families of cases, each a table: prompts, options, custom_ids, files and settings. Every
case goes through the entry point a real attacker or a careless operator reaches:

- prompts and options: the intake (``JobIntake.imagine``) and the account and moderation
  services, over a real SQLite ledger made by the composition root's ``open_ledger``;
- custom_ids: the wired bot's one button router (``wire_bot``), so decoding, the job lookup and
  the clicker's rights are the product's own, answered through ``reply_error``;
- files: the ``atelier upscale``/``vary`` command line, in process;
- settings: the ``atelier`` command line reading the environment (and ``ATELIER_CONFIG``).

Each case must end in exactly one clear message, the one the product shows, containing a
per-case fragment that names the problem (and the allowed values where there are some), with no
traceback, no job queued and no quota ledger line written. The model is never loaded.

Count the cases of a family with, for example::

    pytest --collect-only -q tests/test_hostile_inputs.py | grep -c '::test_prompts'

(the families: ``test_prompts``, ``test_options``, ``test_custom_ids``, ``test_files``,
``test_settings``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sqlite3
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import discord
import pytest
import pytest_asyncio
from PIL import Image

from bot.app import AtelierBot
from bot.cli import main
from bot.errors import USER_ERRORS, UserFacingError, user_message
from bot.requester import Requester
from bot.runtime import Ledger, open_ledger, wire_bot
from bot.services.account import AccountService, SettingsChange
from bot.services.intake import ImagineInput, JobIntake
from bot.services.job_cards import JobCards
from bot.services.moderation import Moderation
from bot.services.review import ReviewService
from bot.services.server_settings import ServerChange, ServerSettings
from bot.services.sessions import StartInput
from config.settings import BotSettings, GenerationSettings, QueueSettings, QuotaSettings, Settings
from generation.grid import encode_image
from generation.options import CommandOptions, parse_imagine_prompt
from generation.request import Mode
from storage.errors import InvalidImageRef
from storage.images import FileImageStore, make_ref, parse_ref
from storage.types import SessionSpec
from storage.webdir import WebDirectory

GUILD = 800
OTHER_GUILD = 801
CHANNEL = 700
OWNER = 1  # makes the jobs the custom_id cases aim at
STRANGER = 2  # another member of GUILD
OUTSIDER = 3  # owns a job in OTHER_GUILD
SERVER_TERMS = ["nsfw", "gor*", "blood bath"]
OPERATOR_TERM = "forbidden"
REFUSED = "a term this server does not allow; nothing was queued or charged"

SECRET_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GaBcDe.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8"
SECRET_PASSWORD = "hunter2-correct-horse"

Interaction = discord.Interaction[Any]


def member(
    user_id: int = OWNER,
    guild_id: int | None = GUILD,
    *,
    is_admin: bool = False,
    is_moderator: bool = False,
    channel_id: int = CHANNEL,
) -> Requester:
    return Requester(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        is_admin=is_admin,
        is_moderator=is_moderator or is_admin,
    )


def assert_clear(text: str, expected: str) -> None:
    """One message that names the problem: the case's fragment, no traceback, no internals."""
    assert expected in text, f"{expected!r} is not in the message {text!r}"
    assert "Traceback" not in text and 'File "' not in text, text
    assert "Something went wrong on our side" not in text, text
    assert len(text) <= 2000, f"Discord refuses a message of {len(text)} characters"


def ledger_counts(database: Path) -> tuple[int, int]:
    """(jobs, quota ledger lines), read straight from the SQLite file."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        jobs = connection.execute("SELECT count(*) FROM jobs").fetchone()[0]
        lines = connection.execute("SELECT count(*) FROM quota_ledger").fetchone()[0]
    return int(jobs), int(lines)


def case(id: str, *values: Any) -> Any:
    return pytest.param(*values, id=id)


# -- the services over one real ledger, shared by the module ----------------------------------


@dataclass
class Desk:
    """The Discord-free services over a real SQLite ledger, with refused terms configured."""

    settings: Settings
    ledger: Ledger
    intake: JobIntake
    account: AccountService
    moderation: Moderation
    server: ServerSettings
    database: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def desk(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Desk]:
    data_dir = tmp_path_factory.mktemp("hostile-desk")
    settings = Settings(
        data_dir=data_dir,
        model="tiny",
        queue=QueueSettings(run_worker_in_process=False),
        quota=QuotaSettings(user_daily_gpu_seconds=1000),
        bot=BotSettings(banned_terms=[OPERATOR_TERM]),
    )
    async with open_ledger(settings) as ledger:
        cards = JobCards(settings, ledger.queue, ledger.delivery, ledger.images)
        moderation = Moderation(settings, ledger.queue, ledger.prefs, ledger.modlog)
        intake = JobIntake(settings, ledger.queue, ledger.prefs, cards, moderation)
        account = AccountService(settings, ledger.queue, ledger.prefs, cards)
        review = ReviewService(
            settings, ledger.review, ledger.queue, ledger.delivery, ledger.prefs, ledger.images
        )
        server = ServerSettings(settings, ledger.prefs, review, WebDirectory(ledger.db))
        await ledger.prefs.update_guild_settings(GUILD, {"banned_terms": SERVER_TERMS})
        yield Desk(settings, ledger, intake, account, moderation, server, data_dir / "atelier.db")


async def refused_by_intake(desk: Desk, requester: Requester, command: ImagineInput) -> str:
    with pytest.raises(USER_ERRORS) as info:
        await desk.intake.imagine(requester, command)
    text = user_message(info.value)
    assert text is not None, f"{info.value!r} is not a user-facing error"
    assert ledger_counts(desk.database) == (0, 0), "a refused prompt queued or charged"
    return text


# -- prompts -----------------------------------------------------------------------------------

EMPTY = "the prompt is empty; describe the image"
TOO_LONG = "characters long; at most 1500 are allowed"
TOO_DEEP = "nested more than 20 deep"
TOO_MANY = "at most 4 are allowed per prompt"
PART_RANGE = "is out of range: use -10 to 10"
GROUP_RANGE = "is out of range: use 0 to 5"

PROMPTS = [
    # empty, or empty once cleaned
    case("empty", "", EMPTY),
    case("spaces only", "     ", EMPTY),
    case("tabs and line breaks only", "\t\n\r\u2028", EMPTY),
    case("NUL only", "\x00\x00\x00", EMPTY),
    case("C1 controls only", "\x85\x9b\x9c", EMPTY),
    case("zero-width only", "\u200b\u200c\u200d\ufeff", EMPTY),
    case("bidi overrides only", "\u202e\u2066\u2069", EMPTY),
    case("options only", "--ar 3:2 --seed 5", EMPTY),
    case("phone dash option only", "\u2014fast", EMPTY),
    case("empty permutation", "{,}", EMPTY),
    case("empty braces", "{}", EMPTY),
    # length
    case("1501 characters", "x" * 1501, f"the prompt is 1501 {TOO_LONG}"),
    case("long words", "a " * 800, f"the prompt is 1600 {TOO_LONG}"),
    case("long after cleaning", "\x00" * 5 + "y" * 1501, f"the prompt is 1501 {TOO_LONG}"),
    # permutations
    case("five alternatives", "{a, b, c, d, e} cat", "permutations make more than 4 prompts"),
    case("nested alternatives", "{a, {b, {c, {d, {e, f}}}}}", "permutations make more than 4"),
    case("permutation product", "{a, b} {c, d} {e, f}", TOO_MANY),
    case("500 alternatives", "{" + ",".join(map(str, range(300))) + "}", TOO_MANY),
    case("unclosed brace", "a {cat, dog", "a '{' without a matching '}'"),
    case("stray closing brace", "a cat} dog", "a '}' without a matching '{'"),
    case("unclosed nested brace", "{a, {b, c}", "a '{' without a matching '}'"),
    # weights
    case("huge part weight", "a::" + "9" * 400 + " b", PART_RANGE),
    case("huge weights both ways", "a::" + "9" * 400 + " b::-" + "9" * 400, PART_RANGE),
    case("part weight 11", "a::11 b", PART_RANGE),
    case("part weight -11", "a::-11 b::20", PART_RANGE),
    case("weights sum to zero", "a::0 b::0", "must add up to more than 0"),
    case("weights sum negative", "a::-1 b::0.5", "add up to -1 + 0.5 = -0.5"),
    case("single zero weight", "cat::0", "must add up to more than 0"),
    case("empty part", "::2 a", "empty prompt part before `::`"),
    case("two dots weight", "a::1.2.3 b", "bad multi-prompt weight `::1.2.3`"),
    case("exponent weight", "a::1e5 b", "bad multi-prompt weight `::1e5`"),
    case("sign-only weight", "a::- b", "bad multi-prompt weight `::-`"),
    case("nested emphasis 5^4", "((((x:5):5):5):5)", "nested weights multiply to 25"),
    case("nested emphasis 5*1.1", "((x:5))", "the product of nested weights may be at most 5"),
    case("negative emphasis", "(x:-1)", GROUP_RANGE),
    case("emphasis above 5", "(x:5.01)", GROUP_RANGE),
    case("overflowing emphasis", "(x:1e309)", "bad weight `1e309`"),
    case("21 nested groups", "(" * 21 + "x" + ")" * 21, TOO_DEEP),
    case("700 nested brackets", "[" * 700 + "x" + "]" * 700, TOO_DEEP),
    case("700 open groups", "(" * 700 + "x", TOO_DEEP),
    # refused terms and their disguises
    case("plain term", "a portrait, nsfw", f"`nsfw`, {REFUSED}"),
    case("upper case", "a portrait, NSFW", f"`nsfw`, {REFUSED}"),
    case("A1111 escape", r"a portrait, n\sfw", f"`nsfw`, {REFUSED}"),
    case("zero-width inside", "a portrait, ns\u200bfw", f"`nsfw`, {REFUSED}"),
    case("combining mark", "a portrait, n\u0301sfw", f"`nsfw`, {REFUSED}"),
    case("cyrillic look-alike", "a portrait, n\u0455fw", f"`nsfw`, {REFUSED}"),
    case("greek look-alike", "a g\u03bfry scene", f"`gor*`, {REFUSED}"),
    case("full-width letters", "a portrait, \uff4e\uff53\uff46\uff57", f"`nsfw`, {REFUSED}"),
    case("weighted", "a portrait, (nsfw:1.4)", f"`nsfw`, {REFUSED}"),
    case("split by emphasis", "a portrait, ns(fw:1.2)", f"`nsfw`, {REFUSED}"),
    case("split by permutation", "a portrait, {n, x}sfw", f"`nsfw`, {REFUSED}"),
    case("multi-prompt part", "a portrait::2 nsfw::1", f"`nsfw`, {REFUSED}"),
    case("prefix term", "a GORY scene", f"`gor*`, {REFUSED}"),
    case("phrase across spaces", "a blood   bath", f"`blood bath`, {REFUSED}"),
    case("phrase across a line break", "a blood\nbath", f"`blood bath`, {REFUSED}"),
    case("operator term", "something forbidden here", f"`{OPERATOR_TERM}`, {REFUSED}"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("prompt", "expected"), PROMPTS)
async def test_prompts(desk: Desk, prompt: str, expected: str) -> None:
    assert_clear(await refused_by_intake(desk, member(), ImagineInput(prompt)), expected)


# -- options -------------------------------------------------------------------------------------

ALLOWED = "allowed: --ar, --no, --seed, --steps, --cfg, --chaos, --fast, --quality, --tile"
DIGITS = "written with the digits 0-9"

OPTIONS_IN_PROMPT = [
    case("unknown option", "a cat --foo", f"unknown option --foo; {ALLOWED}"),
    case("misspelt option", "a cat --aspec 3:2", "unknown option --aspec (did you mean --ar?)"),
    case("unknown long option", "a cat --" + "z" * 300, ALLOWED),
    case("repeated option", "a cat --ar 3:2 --ar 1:1", "--ar is given twice"),
    case("repeated through alias", "a cat --seed 1 --s 2", "--seed is given twice"),
    case("option without value", "a cat --ar", "--ar needs a value (aspect ratio W:H)"),
    case("steps without value", "a cat --steps", "--steps needs a value"),
    case("no without value", "a cat --no", "--no needs a value"),
    case("flag with a value", "a cat --fast yes", "--fast takes no value, but 'yes' follows it"),
    case("tile with a value", "a cat --tile 1", "--tile takes no value"),
    case("fast and quality", "a cat --fast --quality", "contradict each other; choose one"),
    case("text after a value", "a cat --ar 3:2 at dusk", "unexpected text 'at dusk' after --ar"),
    case("steps 0", "a cat --steps 0", "--steps must be from 1 to 60; got 0"),
    case("steps -5", "a cat --steps -5", "--steps must be from 1 to 60; got -5"),
    case("steps 61", "a cat --steps 61", "--steps must be from 1 to 60; got 61"),
    case("steps huge", "a cat --steps " + "9" * 1400, "--steps must be from 1 to 60; got 999"),
    case("steps upper case flag", "a cat --STEPS 5000", "--STEPS must be from 1 to 60"),
    case("steps arabic digits", "a cat --steps \u0663\u0660", f"{DIGITS}; got '\u0663\u0660'"),
    case("steps full-width digits", "a cat --steps \uff13\uff10", DIGITS),
    case("steps underscore", "a cat --steps 1_0", f"{DIGITS}; got '1_0'"),
    case("steps fraction", "a cat --steps 30.5", "--steps must be a whole number from 1 to 60"),
    case("steps exponent", "a cat --steps 3e1", "--steps must be a whole number from 1 to 60"),
    case("steps sign only", "a cat --steps +", "--steps must be a whole number"),
    case("seed -1", "a cat --seed -1", "--seed must be from 0 to 4294967295; got -1"),
    case("seed 2^32", "a cat --seed 4294967296", "--seed must be from 0 to 4294967295"),
    case("seed hex", "a cat --seed 0x10", f"{DIGITS}; got '0x10'"),
    case("seed float", "a cat --seed 1.0", "--seed must be a whole number"),
    case("cfg nan", "a cat --cfg nan", "--cfg must be a number from 0 to 20"),
    case("cfg NaN", "a cat --cfg NaN", "--cfg must be a number from 0 to 20"),
    case("cfg inf", "a cat --cfg inf", "--cfg must be a number from 0 to 20"),
    case("cfg -Infinity", "a cat --cfg -Infinity", "--cfg must be a number from 0 to 20"),
    case("cfg overflows", "a cat --cfg 1e999", "--cfg must be a number from 0 to 20"),
    case("cfg 1e308", "a cat --cfg 1e308", "--cfg must be from 0 to 20; got 1e+308"),
    case("cfg negative", "a cat --cfg -0.1", "--cfg must be from 0 to 20; got -0.1"),
    case("cfg just above", "a cat --guidance 20.0001", "--guidance must be from 0 to 20"),
    case("cfg words", "a cat --cfg abc", "--cfg must be a number from 0 to 20"),
    case("chaos 101", "a cat --chaos 101", "--chaos must be from 0 to 100; got 101"),
    case("chaos -1 through alias", "a cat --c -1", "--c must be from 0 to 100; got -1"),
    case("stop 9", "a cat --stop 9", "--stop must be from 10 to 100; got 9"),
    case("stop percent sign", "a cat --stop 50%", "--stop must be a whole number from 10 to 100"),
    case("repeat 5", "a cat --repeat 5", "--repeat must be from 1 to 4; got 5"),
    case("repeat 0", "a cat --r 0", "--r must be from 1 to 4; got 0"),
    case("permutations times repeat", "{a, b} cat --repeat 3", "this prompt makes 6 jobs"),
    case("ar 10:1", "a cat --ar 10:1", "--ar 10:1 is too extreme; the long side may be at most 4"),
    case("ar 10:1 with a phone dash", "a cat \u2014ar 10:1", "--ar 10:1 is too extreme"),
    case("ar 0:1", "a cat --ar 0:1", "--ar sides must be at least 1"),
    case("ar 1:0", "a cat --ar 1:0", "--ar sides must be at least 1"),
    case("ar five digits", "a cat --ar 99999:1", "--ar must be two whole numbers like 3:2"),
    case("ar slash", "a cat --ar 3/2", "--ar must be two whole numbers like 3:2 or 16:9"),
    case("ar negative", "a cat --ar -3:2", "--ar must be two whole numbers"),
    case("ar three parts", "a cat --ar 3:2:1", "--ar must be two whole numbers"),
    case("ar full-width digits", "a cat --ar \uff13:\uff12", "--ar must be two whole numbers"),
    case("model not enabled", "a cat --model sdxl", "--model sdxl is not enabled here; allowed"),
    case("model path traversal", "a cat --model ../../etc/passwd", "is not enabled here"),
    case("negative too deep", "a cat --no " + "(" * 700 + "x" + ")" * 700, TOO_DEEP),
    case("negative bad weight", "a cat --no x::99 y", PART_RANGE),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("prompt", "expected"), OPTIONS_IN_PROMPT)
async def test_options_in_the_prompt(desk: Desk, prompt: str, expected: str) -> None:
    assert_clear(await refused_by_intake(desk, member(), ImagineInput(prompt)), expected)


NATIVE_OPTIONS = [
    case("native steps -1", "a cat", CommandOptions(steps=-1), "--steps must be from 1 to 60"),
    case("native steps huge", "a cat", CommandOptions(steps=10**30), "--steps must be from 1"),
    case("native cfg nan", "a cat", CommandOptions(guidance=math.nan), "--cfg must be a number"),
    case("native cfg inf", "a cat", CommandOptions(guidance=math.inf), "--cfg must be a number"),
    case("native cfg -1", "a cat", CommandOptions(guidance=-1.0), "--cfg must be from 0 to 20"),
    case("native seed -5", "a cat", CommandOptions(seed=-5), "--seed must be from 0 to 4294967295"),
    case("native seed 2^64", "a cat", CommandOptions(seed=2**64), "--seed must be from 0 to"),
    case("native chaos 1000", "a cat", CommandOptions(chaos=1000), "--chaos must be from 0 to 100"),
    case("native aspect words", "a cat", CommandOptions(aspect="wide"), "--ar must be two whole"),
    case("native aspect smuggles", "a cat", CommandOptions(aspect="3:2 --steps 99"), "unexpected"),
    case("native aspect 2000", "a cat", CommandOptions(aspect="x" * 2000), "the aspect option is"),
    case(
        "native negative 1501", "a cat", CommandOptions(negative="y" * 1501), "the negative option"
    ),
    case("native negative NUL", "a cat", CommandOptions(negative="\x00" * 5), "--no needs a value"),
    case("native negative deep", "a cat", CommandOptions(negative="(" * 1400 + "x"), TOO_DEEP),
    case("native and typed seed", "a cat --seed 2", CommandOptions(seed=1), "--seed is given both"),
    case(
        "native and typed mode", "a cat --fast", CommandOptions(mode=Mode.FAST), "--fast is given"
    ),
    case("native and typed no", "a cat --no x", CommandOptions(negative="y"), "--no is given both"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("prompt", "options", "expected"), NATIVE_OPTIONS)
async def test_options_native(
    desk: Desk, prompt: str, options: CommandOptions, expected: str
) -> None:
    command = ImagineInput(prompt, options)
    assert_clear(await refused_by_intake(desk, member(), command), expected)


# Other commands' options: /settings me and server, /quota, /filter, with who may use them.
ACCOUNT_OPTIONS: list[Any] = [
    case("settings aspect 10:1", "settings", member(), "10:1", "--ar 10:1 is too extreme"),
    case("settings aspect words", "settings", member(), "wide", "--ar must be two whole numbers"),
    case("settings aspect 0:0", "settings", member(), "0:0", "--ar sides must be at least 1"),
    case("settings aspect 6000", "settings", member(), "9" * 6000, "got '999"),
    case("settings buttons, member", "buttons", member(), "anyone", "only server admins"),
    case("settings buttons in DMs", "buttons", member(guild_id=None), "anyone", "run /settings"),
    case(
        "settings buttons, moderator", "buttons", member(is_moderator=True), "anyone", "only server"
    ),
    case("settings buttons forged", "buttons", member(is_admin=True), "all", "owner or anyone"),
    case("settings server, member looks", "server", member(), None, "only moderators"),
    case("session lane, member", "lane", member(), 5, "only server admins"),
    case("session lane, moderator", "lane", member(is_moderator=True), 5, "only server admins"),
    case("session lane above 60", "lane", member(is_admin=True), 61, "is 0 (off) to 60"),
    case("session lane negative", "lane", member(is_admin=True), -1, "is 0 (off) to 60"),
    case("quota by a member", "quota", member(), 10.0, "only server admins (Manage Server)"),
    case("quota in DMs", "quota", member(guild_id=None, is_admin=True), 10.0, "only server"),
    case("quota above ceiling", "quota", member(is_admin=True), 1e9, "allows 0 to 3000"),
    case("quota negative", "quota", member(is_admin=True), -5.0, "allows 0 to 3000 per member"),
    case("quota nan", "quota", member(is_admin=True), float("nan"), "allows 0 to 3000"),
    case("quota inf", "quota", member(is_admin=True), float("inf"), "allows 0 to 3000"),
    case("filter add by a member", "filter", member(), "cats", "only moderators"),
    case("filter add in DMs", "filter", member(guild_id=None), "cats", "belong to a server"),
    case("filter add star", "filter", member(is_moderator=True), "*", "has no letters or digits"),
    case("filter add inner star", "filter", member(is_moderator=True), "go*re", "may only end"),
    case("filter add 1000 chars", "filter", member(is_moderator=True), "x" * 1000, "at most"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("command", "requester", "value", "expected"), ACCOUNT_OPTIONS)
async def test_options_of_other_commands(
    desk: Desk, command: str, requester: Requester, value: Any, expected: str
) -> None:
    before_settings = await desk.ledger.prefs.get_user_settings(requester.user_id)
    before_guild = await desk.ledger.prefs.get_guild_settings(GUILD)
    with pytest.raises(USER_ERRORS) as info:
        if command == "settings":
            await desk.account.update_settings(requester, SettingsChange(aspect=value))
        elif command == "buttons":
            await desk.server.update(requester, ServerChange(buttons=value))
        elif command == "server":
            await desk.server.show(requester)
        elif command == "lane":
            await desk.server.update(requester, ServerChange(session_lane_minutes=value))
        elif command == "quota":
            await desk.account.set_quota_override(requester, STRANGER, value)
        else:
            await desk.moderation.add_banned_term(requester, value)
    text = user_message(info.value)
    assert text is not None
    assert_clear(text, expected)
    assert await desk.ledger.prefs.get_user_settings(requester.user_id) == before_settings
    assert await desk.ledger.prefs.get_guild_settings(GUILD) == before_guild
    assert await desk.ledger.queue.quota.list_overrides(user_id=STRANGER) == []
    assert ledger_counts(desk.database) == (0, 0)


# -- custom_ids ----------------------------------------------------------------------------------


class _Response:
    def __init__(self, sent: list[tuple[str, bool]]) -> None:
        self.sent = sent
        self.deferred = False

    def is_done(self) -> bool:
        return self.deferred or bool(self.sent)

    async def send_message(self, content: str, *, ephemeral: bool = False) -> None:
        self.sent.append((content, ephemeral))

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self.deferred = True

    async def send_modal(self, modal: object) -> None:
        raise AssertionError("a click that must be refused opened the remix editor")


class _Followup:
    def __init__(self, sent: list[tuple[str, bool]]) -> None:
        self.sent = sent

    async def send(self, content: str, *, ephemeral: bool = False) -> None:
        self.sent.append((content, ephemeral))


@dataclass
class _User:
    id: int
    display_name: str = "someone"


class Click:
    """What the router reads of a button interaction, and every answer it gets."""

    def __init__(self, user_id: int, guild_id: int | None) -> None:
        self.id = 1
        self.token = "forged-click-token"
        self.created_at = datetime.now(UTC)
        self.user = _User(user_id)  # not a discord.Member: no roles, no rights
        self.guild_id = guild_id
        self.channel_id = CHANNEL
        self.channel = None  # not an age-restricted channel (discord.py: a partial channel)
        self.sent: list[tuple[str, bool]] = []
        self.response = _Response(self.sent)
        self.followup = _Followup(self.sent)


@dataclass
class Buttons:
    """The wired bot (never connected) over a ledger holding jobs to aim forged buttons at."""

    bot: AtelierBot
    ledger: Ledger
    database: Path
    moderation: Moderation
    account: AccountService
    jobs: dict[str, str] = field(default_factory=dict)
    baseline: tuple[int, int] = (0, 0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def buttons(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Buttons]:
    data_dir = tmp_path_factory.mktemp("hostile-buttons")
    settings = Settings(
        data_dir=data_dir,
        model="tiny",
        queue=QueueSettings(run_worker_in_process=False),
        quota=QuotaSettings(user_daily_gpu_seconds=1000),
    )
    async with open_ledger(settings) as ledger:
        bot = wire_bot(settings, ledger, None)
        cards = JobCards(settings, ledger.queue, ledger.delivery, ledger.images)
        moderation = Moderation(settings, ledger.queue, ledger.prefs, ledger.modlog)
        intake = JobIntake(settings, ledger.queue, ledger.prefs, cards, moderation)
        account = AccountService(settings, ledger.queue, ledger.prefs, cards)
        jobs: dict[str, str] = {}
        for name, requester, finish in [
            ("grid", member(), True),
            ("other", member(OUTSIDER, OTHER_GUILD), True),
            ("dm", member(guild_id=None), True),
            ("queued", member(), False),
        ]:
            (ticket,) = await intake.imagine(requester, ImagineInput(f"a {name} --seed 40"))
            jobs[name] = ticket.job_id
            if finish:
                claimed = await ledger.queue.claim_next("hostile-worker")
                assert claimed is not None and claimed.id == ticket.job_id
                await ledger.queue.complete(
                    claimed.id,
                    claimed.lease_token,
                    result_refs=[f"{claimed.id}/grid.png"],
                    gpu_seconds=1.0,
                )
        # A group session in GUILD hosted by OWNER, approval on, with one pending entry.
        sessions = bot.session_runner
        assert sessions is not None
        session = await sessions.store.start(
            SessionSpec(guild_id=GUILD, channel_id=CHANNEL, host_id=OWNER, theme="x", approval=True)
        )
        entry = await sessions.service.submit(member(STRANGER), session, "a cat")
        jobs["session"], jobs["entry"] = session.id, entry.id
        database = data_dir / "atelier.db"
        yield Buttons(bot, ledger, database, moderation, account, jobs, ledger_counts(database))
        await bot.close()


# Who clicks: (user, guild); None is a DM.
AS_OWNER = (OWNER, GUILD)
AS_STRANGER = (STRANGER, GUILD)
FROM_OTHER_SERVER = (OWNER, OTHER_GUILD)
IN_DMS = (OWNER, None)
STRANGER_IN_DMS = (7, None)

NOT_OURS = "this button was not made by this version of Atelier"
UNKNOWN_ACTION = "this button asks for an action Atelier does not know"
BAD_INDEX = "this button names an image that does not fit its action"
UNKNOWN_JOB = "this button belongs to a job I do not know here"
OWNER_ONLY = "only the person who made this job may use its buttons in this server"
SESSION = "this button belongs to a session I do not know here"
HOSTS_ONLY = "only the session's host, hosts and moderators may do that"

CUSTOM_IDS = [
    # shapes Atelier never makes
    case("empty", "", AS_OWNER, NOT_OURS),
    case("prefix only", "atl", AS_OWNER, NOT_OURS),
    case("prefix and colon", "atl:", AS_OWNER, NOT_OURS),
    case("version only", "atl:1", AS_OWNER, NOT_OURS),
    case("no payload", "atl:1:u", AS_OWNER, NOT_OURS),
    case("empty payload", "atl:1:u:", AS_OWNER, NOT_OURS),
    case("no index", "atl:1:u:{grid}", AS_OWNER, NOT_OURS),
    case("empty index", "atl:1:u:{grid}:", AS_OWNER, NOT_OURS),
    case("extra field", "atl:1:u:{grid}:1:2", AS_OWNER, NOT_OURS),
    case("version 0", "atl:0:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("version 2", "atl:2:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("version 01", "atl:01:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("version 999", "atl:999:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("version 1000", "atl:1000:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("negative version", "atl:-1:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("full-width version", "atl:\uff11:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("upper-case prefix", "ATL:1:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("cyrillic prefix", "\u0430tl:1:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("other prefix", "evil:payload", AS_OWNER, NOT_OURS),
    case("emoji", "\U0001f504", AS_OWNER, NOT_OURS),
    case("upper-case code", "atl:1:U:{grid}:1", AS_OWNER, NOT_OURS),
    case("four-letter code", "atl:1:abcd:{grid}:1", AS_OWNER, NOT_OURS),
    case("unknown code", "atl:1:zz:{grid}:1", AS_OWNER, UNKNOWN_ACTION),
    case("unrouted code", "atl:1:zq:{grid}:1", AS_OWNER, UNKNOWN_ACTION),
    case("like: with an index", "atl:1:lk:{grid}:1", AS_OWNER, NOT_OURS),
    case("like: traversal", "atl:1:lk:../../x", AS_OWNER, NOT_OURS),
    case("like: from DMs", "atl:1:lk:{grid}", IN_DMS, "use it there"),
    case("like: another server's job", "atl:1:lk:{other}", AS_OWNER, "not available"),
    case("prompt: another server's job", "atl:1:pc:{other}", AS_OWNER, "not available"),
    case("prompt: a DM job by a stranger", "atl:1:pc:{dm}", STRANGER_IN_DMS, "use it there"),
    case("remix: another server's job", "atl:1:rx:{other}", AS_OWNER, "not available"),
    case("remix: with an index", "atl:1:rx:{grid}:1", AS_OWNER, NOT_OURS),
    case("publish: another server's job", "atl:1:pb:{other}", AS_OWNER, "showcase channel"),
    case("unpublish by a member", "atl:1:ub:{grid}", AS_STRANGER, "only moderators"),
    # the gallery's page buttons: the session view carries a session id, nothing else does
    case("gallery: session view, no session", "atl:1:gl:s::", AS_OWNER, NOT_OURS),
    case("gallery: session id on another view", "atl:1:gl:r:zzzzzzzzzzzz:", AS_OWNER, NOT_OURS),
    case(
        "gallery: member id on the session view", "atl:1:gl:s:" + "9" * 18 + ":", AS_OWNER, NOT_OURS
    ),
    case("gallery: session id on the member view", "atl:1:gl:b:zzzzzzzzzzzz:", AS_OWNER, NOT_OURS),
    case("gallery: upper-case session id", "atl:1:gl:s:ZZZZZZZZZZZZ:", AS_OWNER, NOT_OURS),
    case("gallery: 11-character session id", "atl:1:gl:s:" + "z" * 11 + ":", AS_OWNER, NOT_OURS),
    case("gallery: 13-character session id", "atl:1:gl:s:" + "z" * 13 + ":", AS_OWNER, NOT_OURS),
    case("gallery: session id not in base32", "atl:1:gl:s:uuuuuuuuuuuu:", AS_OWNER, NOT_OURS),
    case("gallery: session traversal", "atl:1:gl:s:../../etc/pa:", AS_OWNER, NOT_OURS),
    case("gallery: session, bad cursor", "atl:1:gl:s:zzzzzzzzzzzz:zz", AS_OWNER, NOT_OURS),
    case("gallery: unknown session", "atl:1:gl:s:zzzzzzzzzzzz:", AS_OWNER, "no session"),
    case("gallery: a session from DMs", "atl:1:gl:s:zzzzzzzzzzzz:", IN_DMS, "use it there"),
    case("index 0 of U", "atl:1:u:{grid}:0", AS_OWNER, BAD_INDEX),
    case("index 5 of U", "atl:1:u:{grid}:5", AS_OWNER, BAD_INDEX),
    case("index 9 of V", "atl:1:v:{grid}:9", AS_OWNER, BAD_INDEX),
    case("index 1 of re-roll", "atl:1:r:{grid}:1", AS_OWNER, BAD_INDEX),
    case("index 2 of upscale", "atl:1:us:{grid}:2", AS_OWNER, BAD_INDEX),
    case("index -1", "atl:1:u:{grid}:-1", AS_OWNER, NOT_OURS),
    case("index 10", "atl:1:u:{grid}:10", AS_OWNER, NOT_OURS),
    case("arabic digit index", "atl:1:u:{grid}:\u0661", AS_OWNER, NOT_OURS),
    case("upper-case job id", "atl:1:u:{GRID}:1", AS_OWNER, NOT_OURS),
    case("space in job id", "atl:1:u:{grid} :1", AS_OWNER, NOT_OURS),
    case("trailing space", "atl:1:u:{grid}:1 ", AS_OWNER, NOT_OURS),
    case("leading space", " atl:1:u:{grid}:1", AS_OWNER, NOT_OURS),
    case("trailing newline", "atl:1:u:{grid}:1\n", AS_OWNER, NOT_OURS),
    case("NUL in job id", "atl:1:u:{grid}\x00:1", AS_OWNER, NOT_OURS),
    case("zero-width in job id", "atl:1:u:{grid}\u200b:1", AS_OWNER, NOT_OURS),
    case("bidi override", "atl:1:u:{grid}:1\u202e", AS_OWNER, NOT_OURS),
    case("path traversal", "atl:1:u:../../etc/passwd:1", AS_OWNER, NOT_OURS),
    case("encoded traversal", "atl:1:u:..%2f..%2fdata:1", AS_OWNER, NOT_OURS),
    case("traversal to another job", "atl:1:u:{grid}/../{other}:1", AS_OWNER, NOT_OURS),
    case("SQL injection", "atl:1:u:x' OR '1'='1:1", AS_OWNER, NOT_OURS),
    case("format string", "atl:1:u:%s%s%n:1", AS_OWNER, NOT_OURS),
    case("5-character job id", "atl:1:u:abc12:1", AS_OWNER, NOT_OURS),
    case("33-character job id", "atl:1:u:" + "a" * 33 + ":1", AS_OWNER, NOT_OURS),
    case("101 characters", "atl:1:u:" + "a" * 91 + ":1", AS_OWNER, NOT_OURS),
    case("4000 characters", "atl:1:u:" + "9" * 4000 + ":1", AS_OWNER, NOT_OURS),
    # well-formed, but the job is not there, not here, or not the clicker's
    case("unknown job", "atl:1:u:nosuchjob123:1", AS_OWNER, UNKNOWN_JOB),
    case("32-character unknown job", "atl:1:u:" + "a" * 32 + ":1", AS_OWNER, UNKNOWN_JOB),
    case("truncated job id", "atl:1:u:{grid_truncated}:1", AS_OWNER, UNKNOWN_JOB),
    case("another server's job", "atl:1:u:{other}:1", AS_OWNER, UNKNOWN_JOB),
    case("another server's re-roll", "atl:1:r:{other}:0", AS_OWNER, UNKNOWN_JOB),
    case("another server's variation", "atl:1:v:{other}:2", AS_OWNER, UNKNOWN_JOB),
    case("this job from another server", "atl:1:u:{grid}:1", FROM_OTHER_SERVER, UNKNOWN_JOB),
    case("a server's job from DMs", "atl:1:u:{grid}:1", IN_DMS, UNKNOWN_JOB),
    case("a DM job from a server", "atl:1:u:{dm}:1", AS_OWNER, UNKNOWN_JOB),
    case("a DM job by a stranger", "atl:1:u:{dm}:1", STRANGER_IN_DMS, UNKNOWN_JOB),
    case("a DM job's re-roll by a stranger", "atl:1:r:{dm}:0", STRANGER_IN_DMS, UNKNOWN_JOB),
    case("a job still queued", "atl:1:u:{queued}:1", AS_OWNER, "has no images to work from"),
    case("U by a stranger", "atl:1:u:{grid}:1", AS_STRANGER, OWNER_ONLY),
    case("V by a stranger", "atl:1:v:{grid}:3", AS_STRANGER, OWNER_ONLY),
    case("re-roll by a stranger", "atl:1:r:{grid}:0", AS_STRANGER, OWNER_ONLY),
    # the review queue's buttons and the DM's Appeal button
    case("review: unknown action", "atl:1:rv:z:1", AS_OWNER, NOT_OURS),
    case("review: item 0", "atl:1:rv:a:0", AS_OWNER, NOT_OURS),
    case("review: negative item", "atl:1:rv:a:-1", AS_OWNER, NOT_OURS),
    case("review: 20-digit item", "atl:1:rv:a:" + "9" * 20, AS_OWNER, NOT_OURS),
    case("review: extra field", "atl:1:rv:a:1:2", AS_OWNER, NOT_OURS),
    case("review: job id for item", "atl:1:rv:a:{grid}", AS_OWNER, NOT_OURS),
    case("review: approve by a member", "atl:1:rv:a:1", AS_STRANGER, "only moderators"),
    case("review: reject by a member", "atl:1:rv:r:1", AS_STRANGER, "only moderators"),
    case("review: lineage by a member", "atl:1:rv:l:1", AS_STRANGER, "only moderators"),
    case("review: approve in DMs", "atl:1:rv:a:1", IN_DMS, "belongs to a server"),
    case("appeal: another's job", "atl:1:ap:{grid}", AS_STRANGER, "you have no job"),
    case("appeal: a job never rejected", "atl:1:ap:{grid}", AS_OWNER, "was not rejected"),
    case("appeal: a DM job by a stranger", "atl:1:ap:{dm}", STRANGER_IN_DMS, "you have no job"),
    case("appeal: traversal", "atl:1:ap:../../etc/passwd", AS_OWNER, NOT_OURS),
    case("appeal: upper-case job id", "atl:1:ap:{GRID}", AS_OWNER, NOT_OURS),
    # group sessions: the card's Submit, an entry's vote, the host panel
    case("session: submit from another server", "atl:1:ss:{session}", FROM_OTHER_SERVER, SESSION),
    case("session: submit from DMs", "atl:1:ss:{session}", IN_DMS, SESSION),
    case("session: unknown session", "atl:1:ss:000000000000", AS_OWNER, SESSION),
    case("session: extra field", "atl:1:ss:{session}:1", AS_OWNER, NOT_OURS),
    case("session: upper-case id", "atl:1:ss:{SESSION}", AS_OWNER, NOT_OURS),
    case("session: letter u in id", "atl:1:ss:uuuuuuuuuuuu", AS_OWNER, NOT_OURS),
    case("session: 11-character id", "atl:1:ss:00000000000", AS_OWNER, NOT_OURS),
    case("vote: outside voting", "atl:1:sv:{entry}", AS_STRANGER, "voting is not open"),
    case("vote: from another server", "atl:1:sv:{entry}", FROM_OTHER_SERVER, SESSION),
    case("vote: from DMs", "atl:1:sv:{entry}", IN_DMS, SESSION),
    case("vote: unknown entry", "atl:1:sv:000000000000", AS_OWNER, "there is no entry"),
    case("vote: traversal", "atl:1:sv:../../x", AS_OWNER, NOT_OURS),
    case("panel: approve by a member", "atl:1:sp:a:{entry}", AS_STRANGER, HOSTS_ONLY),
    case("panel: reject by a member", "atl:1:sp:r:{entry}", AS_STRANGER, HOSTS_ONLY),
    case("panel: unknown action", "atl:1:sp:x:{entry}", AS_OWNER, NOT_OURS),
    case("panel: no action", "atl:1:sp:{entry}", AS_OWNER, NOT_OURS),
    case("panel: from another server", "atl:1:sp:a:{entry}", FROM_OTHER_SERVER, "another server"),
    case("panel: from DMs", "atl:1:sp:a:{entry}", IN_DMS, "another server"),
]


def _custom_id(template: str, jobs: dict[str, str]) -> str:
    values = {
        **jobs,
        "GRID": jobs["grid"].upper(),
        "SESSION": jobs["session"].upper(),
        "grid_truncated": jobs["grid"][:-1],
    }
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("template", "who", "expected"), CUSTOM_IDS)
async def test_custom_ids(
    buttons: Buttons, template: str, who: tuple[int, int | None], expected: str
) -> None:
    click = Click(*who)
    await buttons.bot.router.dispatch(cast(Interaction, click), _custom_id(template, buttons.jobs))
    assert len(click.sent) == 1, click.sent
    text, ephemeral = click.sent[0]
    assert ephemeral, "a refusal must be private"
    assert_clear(text, expected)
    assert ledger_counts(buttons.database) == buttons.baseline, "a forged click queued a job"


# /session start and /submit: options past Discord's own ranges (a hostile client sends any).
SESSION_STARTS = [
    case("session: 0 rounds", {"rounds": 0}, "rounds must be 1..10"),
    case("session: 11 rounds", {"rounds": 11}, "rounds must be 1..10"),
    case("session: themes and rounds", {"rounds": 3, "themes": "a; b"}, "one theme per round"),
    case("session: 0 round minutes", {"round_minutes": 0}, "round_minutes must be 1..1440"),
    case("session: NaN minutes", {"voting_minutes": math.nan}, "voting_minutes must be a number"),
    case("session: 2 days voting", {"voting_minutes": 2880}, "voting_minutes must be 1..1440"),
    case("session: 0 entries", {"entries_per_member": 0}, "entries_per_member must be 1..10"),
    case("session: 26 votes", {"votes_per_member": 26}, "votes_per_member must be 1..25"),
    case("session: pool of 0", {"pool": "server"}, "pool_gpu_seconds must be 1..1e+06"),
    case("session: pool kind", {"pool": "everyone"}, "pool must be members or server"),
    case("session: members' pool", {"pool_gpu_seconds": 5.0}, "only for pool:server"),
    case("session: mode", {"mode": "turbo"}, "mode must be one of fast, quality"),
    case("session: aspect words", {"aspect": "wide"}, "--ar must be two whole numbers"),
    case("session: aspect 10:1", {"aspect": "10:1"}, "too extreme"),
    case("session: empty theme", {"theme": "   "}, "a theme cannot be empty"),
    case("session: long theme", {"theme": "t" * 1001}, "at most 1000 characters"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("options", "expected"), SESSION_STARTS)
async def test_options_session_start(
    buttons: Buttons, options: dict[str, Any], expected: str
) -> None:
    assert buttons.bot.session_runner is not None
    service = buttons.bot.session_runner.service
    command = StartInput(**{"theme": "x", **options})
    with pytest.raises(USER_ERRORS) as refused:
        await service.start(member(is_admin=True), command)
    assert_clear(user_message(refused.value) or "", expected)
    assert ledger_counts(buttons.database) == buttons.baseline


SESSION_ENTRIES = [
    case("entry: permutations", "a {red, blue} cat", "an entry is one image"),
    case("entry: repeat", "a cat --repeat 2", "an entry is one image"),
    case("entry: stealth", "a cat --stealth", "session entries are public"),
    case("entry: empty", "   ", "empty"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("prompt", "expected"), SESSION_ENTRIES)
async def test_options_session_entry(buttons: Buttons, prompt: str, expected: str) -> None:
    assert buttons.bot.session_runner is not None
    service = buttons.bot.session_runner.service
    session = await service.store.get(buttons.jobs["session"])
    with pytest.raises(USER_ERRORS) as refused:
        await service.submit(member(OUTSIDER), session, prompt)
    assert_clear(user_message(refused.value) or "", expected)
    assert ledger_counts(buttons.database) == buttons.baseline


# /session mine where it has nothing to show: refused with where it works, and nothing else.
SESSION_MINE = [
    case("mine in DMs", member(STRANGER, None), "group sessions run in servers"),
    case("mine without a session", member(STRANGER, channel_id=CHANNEL + 5), "no group session"),
    case("mine, another server's", member(OUTSIDER, OTHER_GUILD), "there is no group session here"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("requester", "expected"), SESSION_MINE)
async def test_options_session_mine(buttons: Buttons, requester: Requester, expected: str) -> None:
    assert buttons.bot.session_runner is not None
    service = buttons.bot.session_runner.service
    with pytest.raises(USER_ERRORS) as refused:
        await service.mine(requester)
    assert_clear(user_message(refused.value) or "", expected)
    # The member whose entry it is sees it; another member of the server does not.
    entry = buttons.jobs["entry"]
    theirs = await service.mine(member(STRANGER))
    assert [e.id for e in theirs.entries] == [entry]
    assert (await service.mine(member(OWNER))).entries == ()
    assert ledger_counts(buttons.database) == buttons.baseline


# A job id typed into /show or /block: the same lookups, guarded the same way.
JOB_REFS = [
    case("show another server's job", "show", "{other}", member(), "there is no job"),
    case("show a DM job in a server", "show", "{dm}", member(), "there is no job"),
    case("show a DM job by a stranger", "show", "{dm}", member(7, None), "there is no job"),
    case("show a traversal", "show", "../../etc/passwd", member(), "there is no job"),
    case("show an id of 40 nines", "show", "9" * 40, member(), "there is no job"),
    case("block by a member", "block", "{queued}", member(STRANGER), "only moderators"),
    case(
        "block from another server",
        "block",
        "{queued}",
        member(OUTSIDER, OTHER_GUILD, is_moderator=True),
        "there is no job",
    ),
    case("block a DM job", "block", "{dm}", member(STRANGER, is_moderator=True), "there is no job"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("command", "template", "requester", "expected"), JOB_REFS)
async def test_custom_ids_typed_job_refs(
    buttons: Buttons, command: str, template: str, requester: Requester, expected: str
) -> None:
    job_id = _custom_id(template, buttons.jobs)
    with pytest.raises(UserFacingError) as info:
        if command == "show":
            await buttons.account.show(requester, job_id)
        else:
            await buttons.moderation.block(requester, job_id, "hostile")
    assert_clear(str(info.value), expected)
    queued = await buttons.ledger.queue.require(buttons.jobs["queued"])
    assert queued.status.value == "queued"
    assert ledger_counts(buttons.database) == buttons.baseline


# -- files ---------------------------------------------------------------------------------------


def _request(**changes: Any) -> dict[str, Any]:
    (request,) = parse_imagine_prompt(
        "a lighthouse --seed 7", settings=GenerationSettings(), model="tiny"
    )
    return {**request.to_json(), **changes}


def _metadata(request: Any, **changes: Any) -> dict[str, Any]:
    sizes = request if isinstance(request, dict) else {}
    return {
        "atelier": 1,
        "kind": "grid",
        "request": request,
        "seeds": [7, 8, 9, 10],
        "cell": [sizes.get("width"), sizes.get("height")],
        **changes,
    }


def _grid(path: Path, request: Any = None, **changes: Any) -> None:
    """A 2x2 grid of noise whose metadata carries ``request`` (``changes`` replace keys)."""
    base = _request()
    request = request if request is not None else base
    size = (base["width"] * 2, base["height"] * 2)
    pixels = random.Random(0).randbytes(size[0] * size[1] * 3)
    image = Image.frombytes("RGB", size, pixels)
    path.write_bytes(encode_image(image, sys.maxsize, _metadata(request, **changes)).data)


def _forged(**changes: Any) -> Callable[[Path], None]:
    return lambda path: _grid(path, _request(**changes))


def _raw_metadata(text: str) -> Callable[[Path], None]:
    return lambda path: _png(path, 256, 256, text.encode())


def _png(path: Path, width: int, height: int, text: bytes | None = None) -> None:
    """A PNG claiming ``width`` x ``height`` pixels with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    text = text if text is not None else json.dumps(_metadata(_request())).encode()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"atelier\0" + text)
        + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * min(width, 4096))))
        + chunk(b"IEND", b"")
    )


def _truncated(path: Path) -> None:
    _grid(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _plain_image(fmt: str) -> Callable[[Path], None]:
    return lambda path: Image.new("RGB", (64, 64)).save(path, format=fmt)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path)


def _nothing(path: Path) -> None:
    pass


def _text(path: Path) -> None:
    path.write_text("hello, not an image")


def _directory(path: Path) -> None:
    path.mkdir()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


PARAMETERS = "carries parameters a typed command could not use"

FILES = [
    # the file itself
    case("missing", _nothing, "upscale", "1", "cannot be read: No such file"),
    case("directory", _directory, "vary", "1", "cannot be read"),
    case("named pipe", _fifo, "upscale", "1", "cannot be read: it is not a regular file"),
    case("symlink loop", _symlink_loop, "upscale", "1", "cannot be read"),
    case("empty file", _empty, "vary", "1", "is not an image Atelier can read"),
    case("text file", _text, "upscale", "1", "is not an image Atelier can read"),
    case("truncated PNG", _truncated, "vary", "1", "is damaged"),
    case("decompression bomb", lambda p: _png(p, 20_000, 20_000), "upscale", "1", "too large"),
    case("81 megapixels", lambda p: _png(p, 9_000, 9_000), "vary", "1", "81,000,000 pixels"),
    case("JPEG without metadata", _plain_image("JPEG"), "upscale", "1", "no Atelier parameters"),
    case("PNG without metadata", _plain_image("PNG"), "vary", "1", "no Atelier parameters"),
    # the metadata
    case("metadata not JSON", _raw_metadata("{not json"), "upscale", "1", "no Atelier parameters"),
    case("metadata null", _raw_metadata("null"), "upscale", "1", "no Atelier parameters"),
    case("metadata nested", _raw_metadata("[" * 100_000), "vary", "1", "no Atelier parameters"),
    case("request a list", lambda p: _grid(p, request=[1, 2]), "vary", "1", "parameters"),
    case("request empty", lambda p: _grid(p, request={}), "upscale", "1", "invalid parameters"),
    case("steps -5", _forged(steps=-5), "upscale", "1", "steps"),
    case("steps 100000", _forged(steps=100_000), "vary", "1", "--steps must be from 1 to 60"),
    case("steps as text", _forged(steps="thirty"), "upscale", "1", "invalid parameters: steps"),
    case("cfg 1e308", _forged(guidance=1e308), "upscale", "1", "--cfg must be from 0 to 20"),
    case("cfg NaN", _forged(guidance=float("nan")), "vary", "1", "cfg"),
    case("cfg Infinity", _forged(guidance=float("inf")), "upscale", "1", "cfg"),
    case("seed -1", _forged(seed=-1), "upscale", "1", "seed"),
    case("seed 2^64", _forged(seed=2**64), "vary", "1", "seed"),
    case("chaos 1000", _forged(chaos=1000), "upscale", "1", "chaos"),
    case("stop 5", _forged(stop=5), "vary", "1", "stop"),
    case("aspect 50:1", _forged(aspect="50:1"), "upscale", "1", "--ar 50:1 is too extreme"),
    case("aspect traversal", _forged(aspect="../../x"), "vary", "1", "--ar must be two whole"),
    case("unknown model", _forged(model="someone/else"), "upscale", "1", "is not enabled"),
    case("model traversal", _forged(model="../../etc"), "vary", "1", "is not enabled"),
    case("prompt 2000 chars", _forged(prompt="x" * 2000), "upscale", "1", "characters long"),
    case("prompt permutations", _forged(prompt="{a, b} cat"), "vary", "1", "makes 2 jobs"),
    case("prompt refused weight", _forged(prompt="a::99 b"), "upscale", "1", PART_RANGE),
    case("negative too deep", _forged(negative_prompt="(" * 30 + "x"), "vary", "1", TOO_DEEP),
    case("size beyond its aspect", _forged(width=384, height=384), "upscale", "1", "not a size"),
    case("cell 0x0", lambda p: _grid(p, cell=[0, 0]), "vary", "1", "cell size"),
    case("cell of text", lambda p: _grid(p, cell="wide"), "upscale", "1", "cell size"),
    case("pixels not the grid", lambda p: _png(p, 100, 100), "vary", "1", "but its parameters"),
    # the arguments
    case("index 0", _grid, "upscale", "0", "image 0 does not exist; this job has images 1 to 4"),
    case("index 5", _grid, "vary", "5", "image 5 does not exist; this job has images 1 to 4"),
    case("index -1", _grid, "upscale", "-1", "image -1 does not exist"),
]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The tiny model's settings, and a model load that fails the test: a refused file must be
    refused before anything is generated."""
    from generation.engine import Engine

    def refuse(self: Engine) -> float:
        pytest.fail("a model was loaded for a file that must be refused")

    monkeypatch.setattr(Engine, "load", refuse)
    monkeypatch.setenv("ATELIER_MODEL", "tiny")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert not captured.out.strip(), captured.out
    err = captured.err
    assert err.startswith("atelier: ") and err.count("\n") == 1 and err.endswith("\n"), err
    return err


@pytest.mark.parametrize(("make", "command", "index", "expected"), FILES)
def test_files(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], None],
    command: str,
    index: str,
    expected: str,
) -> None:
    grid = cli_env / "grid.png"
    out = cli_env / "out.png"
    make(grid)
    assert main([command, str(grid), "--index", index, "--out", str(out)]) == 2
    err = one_line(capsys)
    assert_clear(err, expected)
    assert not out.exists()
    assert not (cli_env / "data" / "atelier.db").exists(), "a file command touched the ledger"


ARGUMENTS = [
    case("index not a number", ["upscale", "{grid}", "--index", "x"], "invalid int value: 'x'"),
    case("index exponent", ["vary", "{grid}", "--index", "1e3"], "invalid int value: '1e3'"),
    case("index missing", ["upscale", "{grid}"], "the following arguments are required: --index"),
    case("unknown flag", ["vary", "{grid}", "--index", "1", "--evil"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "expected"), ARGUMENTS)
def test_files_arguments(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    grid = cli_env / "grid.png"
    _grid(grid)
    with pytest.raises(SystemExit) as info:
        main([part.replace("{grid}", str(grid)) for part in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert_clear(err.splitlines()[-1], expected)
    assert "error:" in err.splitlines()[-1]


def _output_under_a_file(tmp: Path) -> list[str]:
    (tmp / "a-file").write_text("not a folder")
    return ["imagine", "a cat", "--out", str(tmp / "a-file" / "grid.png")]


OUTPUTS = [
    case("imagine into a file", _output_under_a_file, "cannot write"),
    case(
        "imagine a refused prompt",
        lambda tmp: ["imagine", "a cat --ar 11:1", "--out", str(tmp / "x.png")],
        "--ar 11:1 is too extreme",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), OUTPUTS)
def test_files_outputs(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    argv: Callable[[Path], list[str]],
    expected: str,
) -> None:
    assert main(argv(cli_env)) == 2
    assert_clear(one_line(capsys), expected)


# Image refs come from the ledger, not from users, but are paths on disk: only what the store
# made is accepted, so a forged row cannot read or write outside the image folder.
IMAGE_REFS = [
    case("parent traversal", "parse", "../../etc/passwd", "bad job id in image ref"),
    case("absolute path", "parse", "/etc/passwd", "bad job id in image ref"),
    case("traversal after the job", "parse", "abc123def456/../../x.png", "bad image name"),
    case("backslashes", "parse", "abc123def456\\..\\x.png", "bad image ref"),
    case("make with traversal", "make", "../x.png", "bad image name"),
    case("make with NUL", "make", "grid\x00.png", "bad image name"),
    case("read a traversal", "get", "../../etc/passwd", "bad job id in image ref"),
    case("read an absolute path", "get", "/etc/passwd", "bad job id in image ref"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("how", "ref", "expected"), IMAGE_REFS)
async def test_files_image_refs(tmp_path: Path, how: str, ref: str, expected: str) -> None:
    with pytest.raises(InvalidImageRef) as info:
        if how == "parse":
            parse_ref(ref)
        elif how == "make":
            make_ref("abc123def456", ref)
        else:
            await FileImageStore(tmp_path / "images").get(ref)
    assert_clear(str(info.value), expected)


# -- settings ------------------------------------------------------------------------------------

NOT_SHOWN = "(unknown setting: check its spelling; its value is not shown)"

SETTINGS = [
    case("running 0", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": "0"}, "greater than or equal to 1"),
    case("running -1", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": "-1"}, "greater than or equal"),
    case("running words", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": "many"}, "valid integer"),
    case("running empty", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": ""}, "valid integer"),
    case("running fraction", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": "2.5"}, "valid integer"),
    case("running arabic", {"ATELIER_QUEUE_MAX_RUNNING_PER_USER": "\u0663"}, "valid integer"),
    case("lease 0", {"ATELIER_QUEUE_LEASE_SECONDS": "0"}, "greater than 0; got '0'"),
    case("lease nan", {"ATELIER_QUEUE_LEASE_SECONDS": "nan"}, "finite number; got 'nan'"),
    case("lease inf", {"ATELIER_QUEUE_LEASE_SECONDS": "inf"}, "finite number; got 'inf'"),
    case("lease 1e999", {"ATELIER_QUEUE_LEASE_SECONDS": "1e999"}, "finite number"),
    case("window Infinity", {"ATELIER_QUOTA_WINDOW_SECONDS": "Infinity"}, "finite number"),
    case("allowance -5", {"ATELIER_QUOTA_USER_DAILY_GPU_SECONDS": "-5"}, "greater than or equal"),
    case("allowance inf", {"ATELIER_QUOTA_USER_DAILY_GPU_SECONDS": "inf"}, "finite number"),
    case("ceiling -1", {"ATELIER_QUOTA_ADMIN_OVERRIDE_MAX_GPU_SECONDS": "-1"}, "greater than"),
    case("max steps 0", {"ATELIER_GENERATION_MAX_STEPS": "0"}, "greater than or equal to 1"),
    case(
        "min steps above max",
        {"ATELIER_GENERATION_MIN_STEPS": "10", "ATELIER_GENERATION_MAX_STEPS": "5"},
        "min_steps must not exceed max_steps",
    ),
    case("max cfg inf", {"ATELIER_GENERATION_MAX_GUIDANCE": "inf"}, "finite number"),
    case("strength 1.5", {"ATELIER_GENERATION_VARY_STRONG_STRENGTH": "1.5"}, "less than or equal"),
    case("strength 0", {"ATELIER_GENERATION_VARY_SUBTLE_STRENGTH": "0"}, "greater than 0"),
    case("aspect ratio 0.5", {"ATELIER_GENERATION_MAX_ASPECT_RATIO": "0.5"}, "greater than or"),
    case("device gpu", {"ATELIER_GENERATION_DEVICE": "gpu"}, "'auto', 'cpu', 'cuda' or 'mps'"),
    case("dtype float64", {"ATELIER_GENERATION_DTYPE": "float64"}, "'float16' or 'bfloat16'"),
    case("log level TRACE", {"ATELIER_LOG_LEVEL": "TRACE"}, "'DEBUG', 'INFO', 'WARNING' or"),
    case("batching maybe", {"ATELIER_QUEUE_BATCHING": "maybe"}, "valid boolean"),
    case("guild id exponent", {"ATELIER_DISCORD_GUILD_ID": "1e3"}, "valid integer"),
    case("multipliers not JSON", {"ATELIER_QUOTA_ROLE_MULTIPLIERS": "x"}, "must be a JSON object"),
    case("multipliers a list", {"ATELIER_QUOTA_ROLE_MULTIPLIERS": "[1, 2]"}, "valid dictionary"),
    case(
        "multiplier negative",
        {"ATELIER_QUOTA_ROLE_MULTIPLIERS": '{"123": -3}'},
        "entry '123': Input should be greater than or equal to 0",
    ),
    case(
        "multiplier words",
        {"ATELIER_QUOTA_ROLE_MULTIPLIERS": '{"123": "x"}'},
        "entry '123': Input should be a valid number",
    ),
    case(
        "multiplier overflows",
        {"ATELIER_QUOTA_ROLE_MULTIPLIERS": '{"123": 1e999}'},
        "entry '123': Input should be a finite number",
    ),
    case(
        "multiplier key not a role",
        {"ATELIER_QUOTA_ROLE_MULTIPLIERS": '{"admins": 3}'},
        "key 'admins'",
    ),
    case("models not JSON", {"ATELIER_GENERATION_ENABLED_MODELS": "[x"}, "must be a JSON list"),
    case("models a string", {"ATELIER_GENERATION_ENABLED_MODELS": '"tiny"'}, "valid list"),
    case("models numbers", {"ATELIER_GENERATION_ENABLED_MODELS": "[1]"}, "entry '0'"),
    case("terms not JSON", {"ATELIER_BOT_BANNED_TERMS": "nsfw, gore"}, "must be a JSON list"),
    case("section not JSON", {"ATELIER_QUEUE": "{"}, "setting queue (ATELIER_QUEUE): must be"),
    case("unknown key", {"ATELIER_QUEUE_MAX_RUNING": "3"}, NOT_SHOWN),
    case("misspelt token", {"ATELIER_DISCORD_TOKN": SECRET_TOKEN}, NOT_SHOWN),
    case(
        "token with a bad guild id",
        {"ATELIER_DISCORD_TOKEN": SECRET_TOKEN, "ATELIER_DISCORD_GUILD_ID": "x"},
        "valid integer",
    ),
    case(
        "token-like value of a known setting",
        {"ATELIER_GENERATION_DEVICE": SECRET_TOKEN},
        "'auto', 'cpu', 'cuda' or 'mps'",
    ),
    case(
        "database URL without a scheme",
        {"ATELIER_DATABASE_URL": f"postgresql//atelier:{SECRET_PASSWORD}@db/atelier"},
        "must be an SQLAlchemy URL",
    ),
    case(
        "unreachable database",
        {"ATELIER_DATABASE_URL": f"postgresql+asyncpg://atelier:{SECRET_PASSWORD}@127.0.0.1:1/a"},
        "database",
    ),
    case(
        "database under a file",
        {"ATELIER_DATABASE_URL": "sqlite+aiosqlite:///{file}/x.db"},
        "database",
    ),
    case("config file missing", {"ATELIER_CONFIG": "/nonexistent/atelier.toml"}, "not a readable"),
    case("config file a folder", {"ATELIER_CONFIG": "{tmp}"}, "not a readable file"),
    case("config file not TOML", {"ATELIER_CONFIG": "{bad_toml}"}, "invalid configuration"),
    case("config file binary", {"ATELIER_CONFIG": "{binary}"}, "invalid configuration"),
    case("config unknown key", {"ATELIER_CONFIG": "{secret_toml}"}, NOT_SHOWN),
]


def _settings_files(tmp: Path) -> dict[str, str]:
    (tmp / "bad.toml").write_text("[queue\nmax_running_per_user = ")
    (tmp / "binary.toml").write_bytes(bytes(range(256)))
    (tmp / "secret.toml").write_text(f'[queue]\nwebhook = "{SECRET_TOKEN}"\n')
    (tmp / "a-file").write_text("not a folder")
    return {
        "{tmp}": str(tmp),
        "{bad_toml}": str(tmp / "bad.toml"),
        "{binary}": str(tmp / "binary.toml"),
        "{secret_toml}": str(tmp / "secret.toml"),
        "{file}": str(tmp / "a-file"),
    }


@pytest.mark.parametrize(("env", "expected"), SETTINGS)
def test_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    expected: str,
) -> None:
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    files = _settings_files(tmp_path)
    for name, value in env.items():
        for placeholder, path in files.items():
            value = value.replace(placeholder, path)
        monkeypatch.setenv(name, value)
    assert main(["db", "upgrade"]) == 2
    captured = capsys.readouterr()
    assert "database at revision" not in captured.out
    err = captured.err
    assert err.startswith("atelier: "), err
    assert_clear(err, expected)
    for secret in (SECRET_TOKEN, SECRET_PASSWORD, "q1w2e3r4t5y6"):
        assert secret not in err, "a secret was echoed"
    named = [name for name in env if name in err]
    assert named or "ATELIER_CONFIG" in env or "database" in err, f"no setting named: {err}"


# -- the counts the README reports ---------------------------------------------------------------

FAMILIES = {
    "prompts": [PROMPTS],
    "options": [OPTIONS_IN_PROMPT, NATIVE_OPTIONS, ACCOUNT_OPTIONS],
    "custom_ids": [CUSTOM_IDS, JOB_REFS],
    "files": [FILES, ARGUMENTS, OUTPUTS, IMAGE_REFS],
    "settings": [SETTINGS],
}
AT_LEAST = {"prompts": 50, "options": 80, "custom_ids": 60, "files": 50, "settings": 45}


def test_every_family_has_its_cases() -> None:
    """The README's numbers: ``pytest --collect-only -q tests/test_hostile_inputs.py | grep -c
    '::test_<family>'`` counts the same cases (56, 90, 72, 55 and 48 when this was written)."""
    counts = {family: sum(map(len, tables)) for family, tables in FAMILIES.items()}
    for family, minimum in AT_LEAST.items():
        assert counts[family] >= minimum, (family, counts[family])
    assert sum(counts.values()) >= 300
    for tables in FAMILIES.values():
        for table in tables:
            ids = [param.id for param in table]
            assert len(ids) == len(set(ids)), "two cases share an id"
