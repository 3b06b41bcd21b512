"""ServerSettings without Discord: who may see and change /settings server, and what it shows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.errors import UserFacingError
from bot.render_settings import ServerSettingsView, render_server_change, render_server_settings
from bot.requester import Requester
from bot.services.review import ModerationChange, ReviewService
from bot.services.server_settings import ServerChange, ServerSettings
from storage.webdir import WebDirectory
from tests.bot.services.conftest import CHANNEL, GUILD, OTHER_GUILD, Bench


def server_of(bench: Bench) -> ServerSettings:
    ledger = bench.ledger
    review = ReviewService(
        bench.settings, ledger.review, ledger.queue, ledger.delivery, ledger.prefs, ledger.images
    )
    return ServerSettings(bench.settings, ledger.prefs, review, WebDirectory(ledger.db))


def who(*, admin: bool = False, moderator: bool = False, guild_id: int | None = GUILD) -> Requester:
    return Requester(
        user_id=5,
        guild_id=guild_id,
        channel_id=CHANNEL,
        is_admin=admin,
        is_moderator=moderator or admin,
    )


CLICKS = ServerChange(buttons="anyone")
STRIKES = ServerChange(moderation=ModerationChange(auto_ban_strikes=3))


async def test_moderators_and_admins_see_the_settings_members_do_not(bench: Bench) -> None:
    server = server_of(bench)
    for requester in (who(moderator=True), who(admin=True)):
        view = await server.show(requester)
        assert view.owner_only_buttons  # the operator's default
        assert view.review_channel is None and view.age_restricted_channels == ()
        assert not view.appeal_same_moderator and view.auto_ban_strikes == 0
    with pytest.raises(UserFacingError, match=r"only moderators .* may see"):
        await server.show(who())
    with pytest.raises(UserFacingError, match=r"only moderators .* may see"):
        await server.update(who(), ServerChange())  # no change: a look, so the same rule


async def test_only_admins_change_and_a_refusal_changes_nothing(bench: Bench) -> None:
    server = server_of(bench)
    with pytest.raises(UserFacingError, match="only server admins") as refused:
        await server.update(who(moderator=True), CLICKS)
    assert "no options" in str(refused.value)  # a moderator is told how to look instead
    for change in (CLICKS, STRIKES):
        with pytest.raises(UserFacingError, match="only server admins"):
            await server.update(who(), change)
    assert await bench.ledger.prefs.get_guild_settings(GUILD) == {}


async def test_in_dms_it_says_where_to_run_it(bench: Bench) -> None:
    server = server_of(bench)
    for call in (
        server.show(who(admin=True, guild_id=None)),
        server.update(who(admin=True, guild_id=None), CLICKS),
        server.update(who(guild_id=None), ServerChange()),
    ):
        with pytest.raises(UserFacingError, match="run /settings server there"):
            await call


async def test_an_admin_changes_the_server_and_sees_the_result(bench: Bench) -> None:
    server = server_of(bench)
    change = ServerChange(
        buttons="anyone",
        moderation=ModerationChange(
            review_channel=CHANNEL + 1,
            age_restricted=True,
            appeals="any",
            auto_ban_strikes=2,
            auto_ban_hours=6,
        ),
        review_channel_guild=GUILD,
    )
    lines, view = await server.update(who(admin=True), change)
    assert lines[0] == "Anyone in this server may now click a job's buttons."
    assert "Automatic ban: 2 rejections or refusals within 24 h ban for 6 h." in lines
    assert not view.owner_only_buttons and view.review_channel == CHANNEL + 1
    assert view.age_restricted_channels == (CHANNEL,) and view.appeal_same_moderator
    assert (view.auto_ban_strikes, view.auto_ban_duration) == (2, timedelta(hours=6))
    assert await server.show(who(moderator=True)) == view
    text = render_server_change(lines, view)
    assert text.index("may now click") < text.index("**This server's settings**")
    _, back = await server.update(who(admin=True), ServerChange(buttons="owner"))
    assert back.owner_only_buttons
    assert (await bench.ledger.prefs.get_guild_settings(GUILD))["owner_only_buttons"] is True


async def test_a_review_channel_of_another_server_or_a_forged_rule_is_refused(
    bench: Bench,
) -> None:
    server = server_of(bench)
    elsewhere = ServerChange(
        moderation=ModerationChange(review_channel=9), review_channel_guild=OTHER_GUILD
    )
    with pytest.raises(UserFacingError, match="a channel of this server"):
        await server.update(who(admin=True), elsewhere)
    with pytest.raises(UserFacingError, match="owner or anyone"):
        await server.update(who(admin=True), ServerChange(buttons="everyone"))
    assert await bench.ledger.prefs.get_guild_settings(GUILD) == {}


async def test_the_summary_names_every_rule(bench: Bench) -> None:
    text = render_server_settings(await server_of(bench).show(who(moderator=True)))
    for fragment in (
        "Who may click a job's buttons: its owner (and admins)",
        "Review channel: not set",
        "Age-restricted channels: none marked",
        "Appeals are decided by: a moderator other than the one who rejected",
        "Automatic bans are off.",
    ):
        assert fragment in text, text


def test_a_hundred_age_restricted_channels_fit_in_one_message() -> None:
    view = ServerSettingsView(
        owner_only_buttons=False,
        review_channel=123,
        age_restricted_channels=tuple(range(10**18, 10**18 + 100)),
        appeal_same_moderator=True,
        auto_ban_strikes=3,
        auto_ban_window=timedelta(hours=1.5),
        auto_ban_duration=timedelta(hours=48),
    )
    text = render_server_change(["Review items now go to <#123>."], view)
    assert len(text) <= 2000 and text.endswith("moderators may look.")
    assert "and 80 more (and channels Discord marks NSFW)" in text
    assert "Who may click a job's buttons: anyone" in text and "Review channel: <#123>" in text
    assert "any moderator, even the one who rejected" in text
    assert "Automatic ban: 3 rejections or refusals within 1.5 h ban for 48 h." in text
