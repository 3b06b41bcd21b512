"""The audit log without Discord: what moderation records, and who may read it."""

from __future__ import annotations

import pytest

from bot.errors import UserFacingError
from bot.render import render_modlog
from bot.requester import Requester
from bot.services.intake import ImagineInput
from storage.types import ModAction
from tests.bot.services.conftest import GUILD, OTHER_GUILD, Bench, member


def moderator(guild_id: int | None = GUILD) -> Requester:
    return Requester(user_id=50, guild_id=guild_id, channel_id=700, is_moderator=True)


async def test_filter_edits_refusals_and_blocks_are_recorded(bench: Bench) -> None:
    await bench.moderation.add_banned_term(moderator(), "red fox")
    prompt = "a red fox @everyone " + "in the snow " * 40
    with pytest.raises(UserFacingError, match="does not allow"):
        await bench.intake.imagine(member(7), ImagineInput(prompt))
    (ticket,) = await bench.intake.imagine(member(), ImagineInput("a lighthouse"))
    await bench.moderation.block(moderator(), ticket.job_id, "=spam", keep_charge=True)
    await bench.moderation.remove_banned_term(moderator(), "red fox")

    page = await bench.moderation.modlog_page(moderator(), GUILD)
    _removed, blocked, refused, added = page.entries
    assert [e.action for e in page.entries] == [
        ModAction.FILTER_REMOVED,
        ModAction.BLOCKED,
        ModAction.REFUSED,
        ModAction.FILTER_ADDED,
    ]
    assert (added.actor_id, added.reason) == (50, "red fox")
    # The bot refused; the reason is the term, and only a shortened prompt is kept.
    assert refused.actor_id is None and refused.target_user_id == 7
    assert refused.reason == "red fox" and prompt not in str(refused.details)
    assert (
        refused.details["prompt"].startswith("a red fox") and len(refused.details["prompt"]) <= 120
    )
    assert (blocked.actor_id, blocked.target_user_id, blocked.target_job_id) == (
        50,
        1,
        ticket.job_id,
    )
    assert blocked.reason == "=spam" and blocked.details["keep_charge"] is True
    assert blocked.details["followups"] is False and blocked.details["was"] == "queued"
    by_job = await bench.moderation.modlog_page(moderator(), GUILD, job=ticket.job_id)
    assert by_job.entries == (blocked,)
    by_member = await bench.moderation.modlog_page(moderator(), GUILD, member=7)
    assert by_member.entries == (refused,)
    # Another server's log is its own.
    assert (await bench.moderation.modlog_page(moderator(OTHER_GUILD), OTHER_GUILD)).entries == ()

    text = render_modlog(page, member=None, job=None)
    assert "the bot refused a prompt of <@7>: `red fox`" in text
    assert f"<@50> blocked job `{ticket.job_id}` of <@1>: =spam (charge kept)" in text
    assert "@everyone" not in text and "@\u200beveryone" in text


async def test_a_refusal_in_dms_is_not_in_any_servers_log(bench: Bench) -> None:
    bot = bench.settings.bot.model_copy(update={"banned_terms": ["gore"]})
    from bot.services.moderation import Moderation

    moderation = Moderation(
        bench.settings.model_copy(update={"bot": bot}),
        bench.ledger.queue,
        bench.ledger.prefs,
        bench.ledger.modlog,
    )
    from generation.options import parse_imagine_prompt

    requests = parse_imagine_prompt(
        "gore", settings=bench.settings.generation, model="tiny", seed_source=lambda: 1
    )
    with pytest.raises(UserFacingError):
        await moderation.screen(member(guild_id=None), requests)
    with pytest.raises(UserFacingError):
        await moderation.screen(member(), requests)
    assert [e.guild_id async for e in bench.ledger.modlog.export(GUILD)] == [GUILD]


@pytest.mark.parametrize(
    ("who", "guild", "fragment"),
    [
        (member(), GUILD, "only moderators"),
        (moderator(OTHER_GUILD), GUILD, "another server"),
        (moderator(None), GUILD, "belongs to a server"),
    ],
)
async def test_only_a_moderator_of_the_server_reads_its_log(
    bench: Bench, who: Requester, guild: int, fragment: str
) -> None:
    await bench.moderation.add_banned_term(moderator(), "red fox")
    with pytest.raises(UserFacingError, match=fragment):
        await bench.moderation.modlog_page(who, guild)
