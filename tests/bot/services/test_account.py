"""AccountService without Discord: /info, /queue, /cancel, /show, /settings me and /quota."""

from __future__ import annotations

import pytest

from bot.errors import UserFacingError
from bot.render import render_info, render_queue
from bot.services.account import AccountService, SettingsChange
from bot.services.intake import ImagineInput
from generation.errors import OptionError
from storage.types import JobKind, JobStatus
from tests.bot.services.conftest import OTHER_GUILD, Bench, member


async def test_info_and_queue_list_the_members_active_jobs(bench: Bench) -> None:
    first, second = await bench.intake.imagine(member(), ImagineInput("a {cat, dog}"))
    await bench.intake.imagine(member(2), ImagineInput("someone else's"))
    readout, jobs, recent = await bench.account.info(member())
    assert readout.reserved > 0 and readout.remaining < readout.allowance
    assert {job.job_id for job in jobs} == {first.job_id, second.job_id}
    assert all(job.kind is JobKind.IMAGINE and job.status is JobStatus.QUEUED for job in jobs)
    assert recent == []
    text = render_info(readout, jobs, recent)
    assert "(message pending)" in text and first.job_id in text
    assert f"holds {jobs[0].reserved:.1f}" in text

    counts, lines, worker_hung = await bench.account.queue_status(member())
    assert counts == {JobStatus.QUEUED: 3, JobStatus.RUNNING: 0}
    assert sorted(line.position or 0 for line in lines) == [1, 3]
    assert not worker_hung
    assert "3 waiting, 0 running" in render_queue(counts, lines)
    assert "stopped after a job hung" not in render_queue(counts, lines)
    assert "stopped after a job hung" in render_queue(counts, lines, worker_hung=True)


async def test_queue_says_when_the_in_process_worker_stopped_after_a_hang(bench: Bench) -> None:
    hung = False
    account = AccountService(
        bench.settings, bench.ledger.queue, bench.ledger.prefs, bench.cards, lambda: hung
    )
    assert (await account.queue_status(member()))[2] is False
    hung = True
    counts, lines, worker_hung = await account.queue_status(member())
    assert worker_hung
    assert "restarts the bot" in render_queue(counts, lines, worker_hung=worker_hung)


async def test_cancel_all_refunds_and_counts(bench: Bench) -> None:
    await bench.intake.imagine(member(), ImagineInput("a {cat, dog}"))
    assert await bench.account.cancel_all(member()) == 2
    assert await bench.account.cancel_all(member()) == 0
    assert (await bench.ledger.queue.quota_readout(1)).reserved == 0


async def test_show_is_limited_to_the_requesters_server(bench: Bench) -> None:
    (ticket,) = await bench.intake.imagine(member(), ImagineInput("a heron"))
    shown = await bench.account.show(member(5), ticket.job_id)
    assert shown.job_id == ticket.job_id and shown.card.prompt == "a heron"
    for requester in (member(guild_id=OTHER_GUILD), member(guild_id=None)):
        with pytest.raises(UserFacingError, match="no job"):
            await bench.account.show(requester, ticket.job_id)


async def test_a_dm_job_is_shown_to_its_owner_only(bench: Bench) -> None:
    """Issue 9, defect 5: the guild check passed when both guild ids were None."""
    (ticket,) = await bench.intake.imagine(member(guild_id=None), ImagineInput("a secret"))
    assert (await bench.account.show(member(guild_id=None), ticket.job_id)).job_id == ticket.job_id
    for requester in (member(7, guild_id=None), member(7), member(1)):
        with pytest.raises(UserFacingError, match="no job"):
            await bench.account.show(requester, ticket.job_id)


async def test_settings_change_nothing_when_refused(bench: Bench) -> None:
    current = await bench.account.update_settings(member(), SettingsChange(mode="fast"))
    assert current == {"mode": "fast"}
    with pytest.raises(OptionError, match="too extreme"):
        await bench.account.update_settings(member(), SettingsChange(remix=True, aspect="9:1"))
    assert await bench.ledger.prefs.get_user_settings(1) == {"mode": "fast"}
    assert await bench.account.update_settings(member(), SettingsChange()) == {"mode": "fast"}


async def test_own_settings_work_in_dms_and_touch_no_server(bench: Bench) -> None:
    current = await bench.account.update_settings(member(guild_id=None), SettingsChange(remix=True))
    assert current == {"remix": True}
    assert await bench.ledger.prefs.get_guild_settings(800) == {}


async def test_quota_overrides_are_for_admins_and_stay_in_their_server(bench: Bench) -> None:
    """Issue 9, defect 1: /quota in one server applied in every server, without a ceiling."""
    with pytest.raises(UserFacingError, match="only server admins"):
        await bench.account.set_quota_override(member(), 2, 5.0)
    admin = member(is_admin=True)
    await bench.account.set_quota_override(admin, 2, 5.0)
    quota = bench.ledger.queue
    assert (await quota.quota_readout(2, 800)).allowance == 5
    assert (await quota.quota_readout(2, OTHER_GUILD)).allowance == 1000  # not elsewhere
    assert (await quota.quota_readout(2)).allowance == 1000  # nor in DMs
    with pytest.raises(UserFacingError, match="0 to 3000"):  # 3x the default allowance
        await bench.account.set_quota_override(admin, 1, 10_000_000)
    with pytest.raises(UserFacingError, match="only server admins"):
        await bench.account.set_quota_override(member(guild_id=None, is_admin=True), 2, 5.0)
    # The operator's override (atelier quota set) wins over any server's.
    await quota.quota.set_override(2, 50.0, set_by=None, reason="operator")
    assert (await quota.quota_readout(2, 800)).allowance == 50
    assert (await quota.quota_readout(2, OTHER_GUILD)).allowance == 50
    await quota.quota.clear_override(2)
    await bench.account.set_quota_override(admin, 2, None)
    assert (await quota.quota_readout(2, 800)).allowance == 1000


async def test_usage_counts_across_servers(bench: Bench) -> None:
    await bench.account.set_quota_override(member(is_admin=True), 1, 2000.0)
    (ticket,) = await bench.intake.imagine(member(), ImagineInput("a cat"))
    await bench.finish(ticket.job_id)
    here = await bench.ledger.queue.quota_readout(1, 800)
    there = await bench.ledger.queue.quota_readout(1, OTHER_GUILD)
    assert here.used == there.used == 1.0  # one GPU budget
    assert (here.allowance, there.allowance) == (2000, 1000)


async def test_info_shows_what_each_recent_job_cost(bench: Bench) -> None:
    """The billing table as /info shows it: succeeded jobs are charged what they used,
    cancelled waiting ones are refunded, a cancelled running one pays for the time it ran."""
    done, waiting, running = await bench.intake.imagine(member(), ImagineInput("a {cat, dog, owl}"))
    await bench.finish(done.job_id)  # 1.0 GPU-second
    await bench.ledger.queue.cancel(waiting.job_id)
    claimed = await bench.ledger.queue.claim_next("w")
    assert claimed is not None and claimed.id == running.job_id
    await bench.ledger.queue.cancel(running.job_id)
    await bench.ledger.queue.fail(
        claimed.id, claimed.lease_token, error="cancelled", retryable=False, gpu_seconds=0.4
    )
    readout, active, recent = await bench.account.info(member())
    assert active == [] and readout.used == 1.4
    text = render_info(readout, active, recent)
    assert f"`{done.job_id}` imagine succeeded: charged 1.0" in text
    assert f"`{waiting.job_id}` imagine cancelled: refunded" in text
    assert f"`{running.job_id}` imagine cancelled: charged 0.4" in text
