"""JobIntake without Discord: parse once with stored defaults, check, queue; buttons' follow-ups."""

from __future__ import annotations

import pytest

from bot.actions import Action
from bot.customid import ButtonRef
from bot.errors import UserFacingError
from bot.services.intake import ImagineInput
from generation.errors import OptionError
from generation.options import CommandOptions
from generation.request import Mode, Operation
from storage.types import JobStatus
from tests.bot.services.conftest import OTHER_GUILD, Bench, member


async def test_stored_defaults_apply_and_the_prepared_requests_are_what_is_queued(
    bench: Bench,
) -> None:
    await bench.ledger.prefs.update_user_settings(1, {"mode": "fast", "aspect": "2:3"})
    admitted = await bench.intake.prepare_imagine(member(), ImagineInput("a tall {tree, tower}"))
    assert [r.mode for r in admitted.requests] == [Mode.FAST, Mode.FAST]
    assert all(r.aspect == "2:3" and r.height > r.width for r in admitted.requests)
    seeds = [r.seed for r in admitted.requests]
    tickets = await bench.intake.submit(member(), admitted)
    stored = [(await bench.ledger.queue.require(t.job_id)).request for t in tickets]
    assert stored == list(admitted.requests)  # no second parse: same seeds, same everything
    assert [r.seed for r in stored] == seeds
    assert bench.checker.seen == list(admitted.requests)


async def test_native_options_override_the_defaults(bench: Bench) -> None:
    await bench.ledger.prefs.update_user_settings(1, {"mode": "fast"})
    command = ImagineInput("a fox", CommandOptions(mode=Mode.QUALITY, seed=7, aspect="3:2"))
    (request,) = (await bench.intake.prepare_imagine(member(), command)).requests
    assert (request.mode, request.seed, request.aspect) == (Mode.QUALITY, 7, "3:2")


@pytest.mark.parametrize(
    ("command", "error", "fragment"),
    [
        (ImagineInput("a fox --ar 10:1"), OptionError, "too extreme"),
        (ImagineInput("a fox", CommandOptions(seed=1, steps=999)), OptionError, "steps"),
        (ImagineInput("please refuse this"), OptionError, "too long"),
        (ImagineInput("a gory fox"), UserFacingError, "gory"),
        (ImagineInput(r"a g\ory fox"), UserFacingError, "gory"),
        (ImagineInput("a {g, st}ory fox"), UserFacingError, "gory"),
    ],
)
async def test_refusals_queue_nothing(
    bench: Bench, command: ImagineInput, error: type[Exception], fragment: str
) -> None:
    await bench.ledger.prefs.update_guild_settings(800, {"banned_terms": ["gory"]})
    with pytest.raises(error, match=fragment):
        await bench.intake.imagine(member(), command)
    assert await bench.ledger.queue.list_for_user(1) == []
    assert (await bench.ledger.queue.quota_readout(1)).reserved == 0


async def _grid(bench: Bench, owner: int = 1) -> str:
    (ticket,) = await bench.intake.imagine(member(owner), ImagineInput("a lighthouse --seed 40"))
    await bench.finish(ticket.job_id)
    return ticket.job_id


async def test_buttons_make_the_follow_up_their_action_names(bench: Bench) -> None:
    grid = await _grid(bench)
    made = {}
    for action, index in [
        (Action.SELECT, 2),
        (Action.VARY, 3),
        (Action.REROLL, 0),
    ]:
        ticket = await bench.intake.click(member(), ButtonRef(action, grid, index))
        job = await bench.ledger.queue.require(ticket.job_id)
        assert job.kind == action.spec.kind and job.parent_id == grid
        made[action] = job.request
    assert made[Action.SELECT].operation is Operation.SELECT
    assert made[Action.SELECT].seed == 41  # image 2 keeps its own seed
    assert made[Action.VARY].operation is Operation.VARY_STRONG  # the default setting
    assert made[Action.REROLL].operation is Operation.IMAGINE
    assert made[Action.REROLL].seed != 40


async def test_v_follows_the_clickers_variation_setting_and_remix_replaces_the_prompt(
    bench: Bench,
) -> None:
    grid = await _grid(bench)
    await bench.ledger.prefs.update_user_settings(1, {"variation": "subtle", "remix": True})
    ref = ButtonRef(Action.VARY, grid, 1)
    assert await bench.intake.remix_prompt(member(), ref) == "a lighthouse"
    assert await bench.intake.remix_prompt(member(2), ref) is None  # remix off for user 2
    # A forged button naming another server's job never shows its prompt (it did before).
    await bench.ledger.prefs.update_user_settings(3, {"remix": True})
    assert await bench.intake.remix_prompt(member(3, OTHER_GUILD), ref) is None
    assert await bench.intake.remix_prompt(member(3, None), ref) is None
    ticket = await bench.intake.click(member(), ref, prompt="  a  lighthouse   at night ")
    request = (await bench.ledger.queue.require(ticket.job_id)).request
    assert request.operation is Operation.VARY_SUBTLE and request.prompt == "a lighthouse at night"
    with pytest.raises(OptionError, match="empty"):
        await bench.intake.click(member(), ref, prompt="   ")
    ticket = await bench.intake.click(
        member(), ref, prompt="a\x00 lighthouse\u202e\n at\u200b dawn"
    )
    assert (await bench.ledger.queue.require(ticket.job_id)).request.prompt == (
        "a lighthouse at dawn"
    )
    with pytest.raises(OptionError, match="nested more than 20 deep"):
        await bench.intake.click(member(), ref, prompt="(" * 700 + "x" + ")" * 700)
    limit = bench.intake.settings.generation.max_prompt_chars
    with pytest.raises(OptionError, match=f"remixed prompt is {limit + 1} characters long"):
        await bench.intake.click(member(), ref, prompt="x" * (limit + 1))


async def test_clicks_are_checked_against_the_job_the_guild_and_the_clicker(bench: Bench) -> None:
    grid = await _grid(bench)
    (queued,) = await bench.intake.imagine(member(), ImagineInput("still waiting"))
    cases = [
        (member(), ButtonRef(Action.SELECT, "nosuchjob123", 1), "do not know"),
        (member(guild_id=OTHER_GUILD), ButtonRef(Action.SELECT, grid, 1), "do not know"),
        (member(guild_id=None), ButtonRef(Action.SELECT, grid, 1), "do not know"),
        (member(), ButtonRef(Action.SELECT, queued.job_id, 1), "no images"),
        (member(user_id=2), ButtonRef(Action.SELECT, grid, 1), "only the person"),
    ]
    for requester, ref, fragment in cases:
        with pytest.raises(UserFacingError, match=fragment):
            await bench.intake.click(requester, ref)
    assert await bench.ledger.queue.list_for_user(2) == []
    admin = await bench.intake.click(
        member(user_id=2, is_admin=True), ButtonRef(Action.SELECT, grid, 4)
    )
    assert (await bench.ledger.queue.require(admin.job_id)).owner_id == 2  # the clicker pays
    await bench.ledger.prefs.update_guild_settings(800, {"owner_only_buttons": False})
    anyone = await bench.intake.click(member(user_id=3), ButtonRef(Action.SELECT, grid, 1))
    assert (await bench.ledger.queue.require(anyone.job_id)).status is JobStatus.QUEUED


async def test_a_dm_jobs_buttons_work_for_its_owner_only(bench: Bench) -> None:
    """Issue 9, defect 5: a forged custom_id must not reach another user's DM job."""
    (ticket,) = await bench.intake.imagine(member(guild_id=None), ImagineInput("a secret"))
    await bench.finish(ticket.job_id)
    ref = ButtonRef(Action.SELECT, ticket.job_id, 1)
    for stranger in (member(7, guild_id=None), member(7, guild_id=None, is_admin=True)):
        with pytest.raises(UserFacingError, match="do not know"):
            await bench.intake.click(stranger, ref)
    assert (await bench.intake.click(member(guild_id=None), ref)).job_id


async def test_a_refused_term_also_stops_buttons_of_older_jobs(bench: Bench) -> None:
    grid = await _grid(bench)
    await bench.ledger.prefs.update_guild_settings(800, {"banned_terms": ["lighthouse"]})
    with pytest.raises(UserFacingError, match="lighthouse"):
        await bench.intake.click(member(), ButtonRef(Action.REROLL, grid, 0))
    assert [job.id for job in await bench.ledger.queue.list_for_user(1)] == [grid]
