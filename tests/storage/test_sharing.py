"""Sharing: the visibility rule (SQL and Python agree), likes (exact under concurrency), owner
deletion, gallery pages, saved searches and retention's kept rule, on both backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import RetentionSettings
from storage import JobKind, JobStatus, audit
from storage.errors import BadSearchQuery, JobUnavailable, SavedQueryGone, SharingRefused
from storage.models import JOB_COPIES, JOBS, LIKES, SEARCH_QUERIES
from storage.retention import Retention
from storage.types import (
    CURSOR_MAX_CHARS,
    GalleryView,
    SearchFilters,
    SharedMessage,
    Visibility,
)
from storage.visibility import visible, visible_clause
from tests.storage.dbfixtures import Services, new_job, owner
from tests.storage.sharefixtures import (
    GUILD,
    OTHER_GUILD,
    finished,
    image_store,
    set_columns,
    set_review,
    sharing,
)

OWNER, MEMBER, MOD = 1, 2, 3
DAY = 86_400.0

# -- visibility ------------------------------------------------------------------------------


async def _matrix_jobs(s: Services) -> dict[str, str]:
    """One job per case the rule distinguishes, by name."""
    jobs = {
        "public": await finished(s, user=OWNER),
        "stealth": await finished(s, user=OWNER, visibility=Visibility.STEALTH),
        "held": await finished(s, user=OWNER),
        "approved": await finished(s, user=OWNER),
        "rejected": await finished(s, user=OWNER),
        "deleted": await finished(s, user=OWNER),
        "pruned": await finished(s, user=OWNER),
        "blocked": await finished(s, user=OWNER),
        "other_guild": await finished(s, user=OWNER, guild=OTHER_GUILD),
        "dm": await finished(s, user=OWNER, guild=None),
        "stealth_other_owner": await finished(s, user=MEMBER, visibility=Visibility.STEALTH),
    }
    await set_review(s, jobs["held"], "held")
    await set_review(s, jobs["approved"], "approved")
    await set_review(s, jobs["rejected"], "rejected")
    await set_columns(s, jobs["deleted"], deleted_at=s.clock())
    await set_columns(s, jobs["pruned"], pruned_at=s.clock(), result_refs=[])
    await s.queue.block(jobs["blocked"], "rule 1")
    queued = await s.queue.enqueue(owner(OWNER), new_job())
    jobs["queued"] = queued.id
    return jobs


async def test_the_visibility_rule_in_sql_and_in_python_agree(services: Services) -> None:
    s = services
    jobs = await _matrix_jobs(s)
    expected_public = {"public", "approved"}
    for viewer in (OWNER, MEMBER, MOD, None):
        for is_moderator in (False, True):
            if viewer is None and is_moderator:
                continue

            async def work(
                session: AsyncSession, v: int | None = viewer, m: bool = is_moderator
            ) -> set[str]:
                stmt = select(JOBS.c.id).where(visible_clause(v, GUILD, is_moderator=m))
                return set((await session.execute(stmt)).scalars())

            in_sql = await s.db.read(work)
            for name, job_id in jobs.items():
                view = await s.queue.require(job_id)
                assert visible(view, viewer, GUILD, is_moderator=is_moderator) == (
                    job_id in in_sql
                ), (name, viewer, is_moderator)
            names = {name for name, job_id in jobs.items() if job_id in in_sql}
            if is_moderator:
                assert names == expected_public | {"stealth", "stealth_other_owner"}
            elif viewer == OWNER:
                assert names == expected_public | {"stealth"}
            elif viewer == MEMBER:
                assert names == expected_public | {"stealth_other_owner"}
            else:
                assert names == expected_public


async def test_dm_jobs_are_stored_stealth_and_cannot_be_made_public(services: Services) -> None:
    s = services
    job_id = await finished(s, guild=None, visibility=Visibility.PUBLIC)
    assert (await s.queue.require(job_id)).visibility is Visibility.STEALTH
    with pytest.raises(SharingRefused, match="direct messages"):
        await sharing(s).set_visibility(job_id, OWNER, Visibility.PUBLIC)


async def test_the_owner_changes_visibility(services: Services) -> None:
    s, share = services, sharing(services)
    job_id = await finished(s)
    with pytest.raises(SharingRefused, match="only the member"):
        await share.set_visibility(job_id, MEMBER, Visibility.STEALTH)
    await share.set_visibility(job_id, OWNER, Visibility.STEALTH)
    assert (await s.queue.require(job_id)).visibility is Visibility.STEALTH
    with pytest.raises(JobUnavailable):
        await share.toggle_like(job_id, MEMBER, GUILD)


# -- likes -----------------------------------------------------------------------------------


async def test_a_like_toggles_and_counts_once_per_member(services: Services) -> None:
    s, share = services, sharing(services)
    job_id = await finished(s)
    assert await share.toggle_like(job_id, MEMBER, GUILD) == (True, 1)
    assert await share.toggle_like(job_id, MOD, GUILD) == (True, 2)
    assert await share.toggle_like(job_id, MEMBER, GUILD) == (False, 1)
    assert await share.likes(job_id, MOD) == (True, 1)
    assert await share.likes(job_id, MEMBER) == (False, 1)
    assert (await s.queue.require(job_id)).like_count == 1


async def test_likes_follow_visibility(services: Services) -> None:
    s, share = services, sharing(services)
    jobs = await _matrix_jobs(s)
    for name in ("stealth", "held", "rejected", "deleted", "pruned", "blocked", "queued", "dm"):
        with pytest.raises(JobUnavailable, match="not available"):
            await share.toggle_like(jobs[name], MEMBER, GUILD)
    with pytest.raises(JobUnavailable):
        await share.toggle_like(jobs["public"], MEMBER, OTHER_GUILD)
    with pytest.raises(JobUnavailable):
        await share.toggle_like("nosuchjob000", MEMBER, GUILD)
    assert (await share.toggle_like(jobs["stealth"], MOD, GUILD, is_moderator=True)).liked
    assert (await share.toggle_like(jobs["stealth"], OWNER, GUILD)).like_count == 2


async def _count_rows(s: Services, job_id: str) -> int:
    async def work(session: AsyncSession) -> int:
        stmt = select(func.count()).select_from(LIKES).where(LIKES.c.job_id == job_id)
        return int((await session.execute(stmt)).scalar_one())

    return await s.db.read(work)


async def test_concurrent_likes_keep_the_count_exact(services: Services) -> None:
    s, share = services, sharing(services)
    job_id = await finished(s)
    users = range(10, 40)
    results = await asyncio.gather(*(share.toggle_like(job_id, u, GUILD) for u in users))
    assert all(r.liked for r in results)
    assert sorted(r.like_count for r in results) == list(range(1, 31))
    # Half take theirs back while others like it, and one member double-clicks.
    await asyncio.gather(
        *(share.toggle_like(job_id, u, GUILD) for u in range(10, 25)),
        *(share.toggle_like(job_id, u, GUILD) for u in range(100, 110)),
        share.toggle_like(job_id, 500, GUILD),
        share.toggle_like(job_id, 500, GUILD),
    )
    view = await s.queue.require(job_id)
    assert view.like_count == 30 - 15 + 10 == await _count_rows(s, job_id)
    assert (await audit(s.db)).ok


# -- deleting --------------------------------------------------------------------------------


async def test_the_owner_deletes_a_job_images_likes_and_all(
    services: Services, tmp_path: Path
) -> None:
    s = services
    images = image_store(tmp_path)
    share = sharing(s, images)
    job_id = await finished(s, images=images, prompt="unique zebra")
    await share.toggle_like(job_id, MEMBER, GUILD)

    async def copy(session: AsyncSession) -> None:
        await session.execute(
            insert(JOB_COPIES).values(
                job_id=job_id, channel_id=7, message_id=8, created_at=s.clock()
            )
        )

    await s.db.write(copy)
    with pytest.raises(SharingRefused, match="only the member"):
        await share.delete_job(job_id, MEMBER)
    with pytest.raises(JobUnavailable):
        await share.delete_job("nosuchjob000", OWNER)
    before = await s.quota.ledger(job_id=job_id)
    done = await share.delete_job(job_id, OWNER)
    assert not done.already and len(done.refs) == 5 and done.refs[-1].endswith("grid.png")
    assert done.messages[-1] == SharedMessage(7, 8) and len(done.messages) == 2
    assert await images.job_usage(job_id) == (0, 0)
    view = await s.queue.require(job_id)
    assert view.deleted_at == s.clock() and view.result_refs == () and view.like_count == 0
    assert view.status is JobStatus.SUCCEEDED and view.charged == 1.0 and view.prompt == ""
    assert await _count_rows(s, job_id) == 0
    assert await s.quota.ledger(job_id=job_id) == before
    assert (await audit(s.db)).ok
    # Gone from every list and search, for everyone.
    for viewer, mod in ((OWNER, False), (MOD, True)):
        page = await share.gallery(GalleryView.RECENT, GUILD, viewer, is_moderator=mod)
        assert job_id not in [i.job_id for i in page.items]
        assert (await share.search(GUILD, viewer, "zebra", is_moderator=mod)).items == ()
    again = await share.delete_job(job_id, OWNER)
    assert again.already and again.refs == () and again.messages == done.messages


async def test_deleting_refuses_active_held_and_removed_jobs(services: Services) -> None:
    s, share = services, sharing(services)
    queued = await s.queue.enqueue(owner(OWNER), new_job())
    with pytest.raises(SharingRefused, match="cancel it first"):
        await share.delete_job(queued.id, OWNER)
    await s.queue.cancel(queued.id)
    assert not (await share.delete_job(queued.id, OWNER)).already  # a cancelled job: fine
    held = await finished(s)
    await set_review(s, held, "held")
    with pytest.raises(SharingRefused, match="held for review"):
        await share.delete_job(held, OWNER)
    blocked = await finished(s)
    await s.queue.block(blocked, "rule 1", keep_images=timedelta(days=14))
    with pytest.raises(SharingRefused, match="removed by moderators"):
        await share.delete_job(blocked, OWNER)
    parent = await finished(s)
    await s.queue.enqueue(owner(OWNER), new_job(JobKind.UPSCALE, parent_id=parent))
    with pytest.raises(SharingRefused, match="follow-up"):
        await share.delete_job(parent, OWNER)
    assert (await audit(s.db)).ok


async def test_deleting_an_undelivered_job_gives_its_delivery_up(services: Services) -> None:
    s, share = services, sharing(services)
    view = await s.queue.enqueue(owner(OWNER), new_job())
    claimed = await s.queue.claim_next("w")
    assert claimed is not None
    await s.queue.complete(view.id, claimed.lease_token, result_refs=["x/0.png"], gpu_seconds=1)
    done = await share.delete_job(view.id, OWNER)
    assert done.refs == ("x/0.png",) and done.messages == ()
    deleted = await s.queue.require(view.id)
    assert deleted.given_up_at == s.clock() and deleted.give_up_reason == "deleted by its owner"


# -- the gallery -----------------------------------------------------------------------------


async def test_gallery_lists_follow_visibility_and_owners(services: Services) -> None:
    s, share = services, sharing(services)
    mine_public = await finished(s, user=OWNER, prompt="one")
    mine_stealth = await finished(s, user=OWNER, prompt="two", visibility=Visibility.STEALTH)
    theirs = await finished(s, user=MEMBER, prompt="three")
    theirs_stealth = await finished(s, user=MEMBER, visibility=Visibility.STEALTH)
    await finished(s, user=MEMBER, guild=OTHER_GUILD)

    async def ids(view: GalleryView, viewer: int | None, **kw: object) -> list[str]:
        page = await share.gallery(view, GUILD, viewer, size=9, **kw)  # type: ignore[arg-type]
        return [i.job_id for i in page.items]

    assert await ids(GalleryView.RECENT, MEMBER) == [theirs_stealth, theirs, mine_public]
    assert await ids(GalleryView.RECENT, None) == [theirs, mine_public]
    assert await ids(GalleryView.RECENT, MOD, is_moderator=True) == [
        theirs_stealth,
        theirs,
        mine_stealth,
        mine_public,
    ]
    assert await ids(GalleryView.MINE, OWNER) == [mine_stealth, mine_public]
    assert await ids(GalleryView.MEMBER, MEMBER, member_id=OWNER) == [mine_public]
    assert await ids(GalleryView.MEMBER, OWNER, member_id=OWNER) == [mine_stealth, mine_public]
    page = await share.gallery(GalleryView.RECENT, GUILD, None, size=4)
    item = page.items[0]
    assert item.image_ref == f"{theirs}/grid.png" and item.prompt == "three"
    assert item.owner_id == MEMBER and item.message_id is not None and item.like_count == 0
    assert item.kind is JobKind.IMAGINE and item.visibility is Visibility.PUBLIC
    with pytest.raises(ValueError, match="4 to 9"):
        await share.gallery(GalleryView.RECENT, GUILD, None, size=3)
    with pytest.raises(ValueError, match="member_id"):
        await share.gallery(GalleryView.MEMBER, GUILD, OWNER)


async def test_top_lists_rank_by_likes_then_recency_within_their_window(
    services: Services,
) -> None:
    s, share = services, sharing(services)
    old = await finished(s, prompt="old")
    s.clock.advance(20 * DAY)
    month = await finished(s, prompt="month")
    s.clock.advance(12 * DAY)
    a = await finished(s, prompt="a")
    b = await finished(s, prompt="b")
    c = await finished(s, prompt="c")
    await finished(s, prompt="unliked")
    for job_id, likers in ((old, 5), (month, 4), (a, 1), (b, 2), (c, 1)):
        for user in range(likers):
            await share.toggle_like(job_id, 100 + user, GUILD)

    async def ids(view: GalleryView) -> list[str]:
        return [i.job_id for i in (await share.gallery(view, GUILD, MEMBER)).items]

    assert await ids(GalleryView.TOP_WEEK) == [b, c, a]  # equal likes: newest first
    assert await ids(GalleryView.TOP_MONTH) == [month, b, c, a]
    assert await ids(GalleryView.TOP_ALL) == [old, month, b, c, a]


async def test_liked_by_me_lists_my_likes_newest_first(services: Services) -> None:
    s, share = services, sharing(services)
    first, second, third = [await finished(s, user=OWNER) for _ in range(3)]
    for job_id in (second, first, third):
        s.clock.advance(1)
        await share.toggle_like(job_id, MEMBER, GUILD)
    await share.toggle_like(third, MEMBER, GUILD)  # taken back
    page = await share.gallery(GalleryView.LIKED, GUILD, MEMBER, size=4)
    assert [i.job_id for i in page.items] == [first, second]
    assert not page.has_next and not page.has_prev


async def test_keyset_pages_stay_put_while_jobs_and_likes_arrive(services: Services) -> None:
    s, share = services, sharing(services)
    jobs = [await finished(s, prompt=f"job {n}") for n in range(11)]  # oldest first
    newest_first = list(reversed(jobs))
    one = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, size=4)
    assert [i.job_id for i in one.items] == newest_first[:4]
    assert one.has_next and not one.has_prev and one.next_cursor is not None
    await finished(s, prompt="arrived meanwhile")
    two = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=one.next_cursor, size=4)
    assert [i.job_id for i in two.items] == newest_first[4:8]
    assert two.prev_cursor is not None and two.next_cursor is not None
    three = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=two.next_cursor, size=4)
    assert [i.job_id for i in three.items] == newest_first[8:]
    assert not three.has_next and three.has_prev
    back = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=three.prev_cursor, size=4)
    assert back.items == two.items
    # Back from the second page: the page seen first, with the new job before it now.
    assert back.prev_cursor is not None
    seen = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=back.prev_cursor, size=4)
    assert seen.items == one.items and seen.has_prev
    # Back once more reaches the start: the first page comes back full.
    first = await share.gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=seen.prev_cursor, size=4)
    assert len(first.items) == 4 and not first.has_prev
    assert [i.job_id for i in first.items][1:] == newest_first[:3]
    # Top lists page by (likes, seq): a like on a row already seen moves nothing after it.
    for n, job_id in enumerate(jobs):
        for user in range(n % 3 + 1):
            await share.toggle_like(job_id, 100 + user, GUILD)
    top1 = await share.gallery(GalleryView.TOP_ALL, GUILD, MEMBER, size=4)
    await share.toggle_like(top1.items[0].job_id, 999, GUILD)
    top2 = await share.gallery(GalleryView.TOP_ALL, GUILD, MEMBER, cursor=top1.next_cursor, size=4)
    top_seen = {i.job_id for i in top1.items}
    assert not top_seen & {i.job_id for i in top2.items}
    assert all(len(c) <= CURSOR_MAX_CHARS for c in (top1.next_cursor or "", two.prev_cursor))


@pytest.mark.parametrize("cursor", ["", "x1", "a", "a1.2", "a-1", "b" + "z" * 40, "a1;drop"])
async def test_forged_cursors_are_refused(services: Services, cursor: str) -> None:
    with pytest.raises(BadSearchQuery, match="page link"):
        await sharing(services).gallery(GalleryView.RECENT, GUILD, MEMBER, cursor=cursor)


@pytest.mark.parametrize(
    ("view", "cursor"),
    [
        (GalleryView.RECENT, "a" + "z" * 13),  # past a 64-bit jobs.seq
        (GalleryView.TOP_ALL, "azzzzzzz.1"),  # past a 32-bit like_count
        (GalleryView.LIKED, "b" + "z" * 13 + ".1"),  # past the year 9999
    ],
)
async def test_cursor_numbers_past_their_columns_are_refused(
    services: Services, view: GalleryView, cursor: str
) -> None:
    """Not an overflow in the driver (a 500, "This interaction failed"): a bad page link."""
    with pytest.raises(BadSearchQuery, match="page link"):
        await sharing(services).gallery(view, GUILD, MEMBER, cursor=cursor)
    largest = "a1y2p0ij32e8e7" if view is GalleryView.RECENT else "a" + "zik0zj.1y2p0ij32e8e7"
    if view is not GalleryView.LIKED:
        await sharing(services).gallery(view, GUILD, MEMBER, cursor=largest)  # fits: a page


# -- saved searches --------------------------------------------------------------------------


async def test_saved_queries_belong_to_their_creator_until_they_expire(
    services: Services,
) -> None:
    s, share = services, sharing(services)
    since = s.clock() - timedelta(days=3)
    filters = SearchFilters(member_id=OWNER, model="sdxl", mode="fast", aspect="16:9", since=since)
    saved = await share.save_query(GUILD, MEMBER, '"red fox" lig*', filters)
    assert len(saved.id) == 12 and saved.expires_at == s.clock() + timedelta(days=1)
    loaded = await share.load_query(saved.id, MEMBER, GUILD)
    assert loaded == saved
    for user, guild, query_id in (
        (OWNER, GUILD, saved.id),
        (MEMBER, OTHER_GUILD, saved.id),
        (MEMBER, GUILD, "nosuchquery0"),
        (MEMBER, GUILD, "../../etc"),
        (MEMBER, GUILD, "x" * 200),
    ):
        with pytest.raises(SavedQueryGone, match="expired"):
            await share.load_query(query_id, user, guild)
    again, page = await share.search_saved(saved.id, MEMBER, GUILD)
    assert again == saved and page.items == ()
    s.clock.advance(DAY)
    with pytest.raises(SavedQueryGone):
        await share.load_query(saved.id, MEMBER, GUILD)
    with pytest.raises(BadSearchQuery):
        await share.save_query(GUILD, MEMBER, "x" * 1001)


async def _saved_rows(s: Services) -> int:
    async def work(session: AsyncSession) -> int:
        return int(
            (await session.execute(select(func.count()).select_from(SEARCH_QUERIES))).scalar_one()
        )

    return await s.db.read(work)


async def test_each_member_keeps_a_bounded_number_of_saved_queries(services: Services) -> None:
    s = services
    store = sharing(s)
    store.max_saved_per_user = 3
    saved = []
    for n in range(5):
        s.clock.advance(1)
        saved.append(await store.save_query(GUILD, MEMBER, f"cat {n}"))
    await store.save_query(GUILD, OWNER, "dog")
    assert await _saved_rows(s) == 4
    with pytest.raises(SavedQueryGone):
        await store.load_query(saved[1].id, MEMBER, GUILD)
    assert (await store.load_query(saved[4].id, MEMBER, GUILD)).text == "cat 4"


async def test_retention_prunes_expired_queries_and_reports_them(
    services: Services, tmp_path: Path
) -> None:
    s, share = services, sharing(services)
    for n in range(3):
        await share.save_query(GUILD, MEMBER + n, "cat")
    s.clock.advance(DAY / 2)
    fresh = await share.save_query(GUILD, OWNER, "dog")
    s.clock.advance(DAY / 2)
    settings = RetentionSettings(images_days=0, rows_days=0, modlog_days=0)
    retention = Retention(s.queue, image_store(tmp_path), settings, batch=2)
    assert (await retention.prune(dry_run=True)).saved_queries == 3
    report = await retention.prune()
    assert report.saved_queries == 3 and not report.more
    assert await _saved_rows(s) == 1
    assert (await share.load_query(fresh.id, OWNER, GUILD)).text == "dog"


# -- retention keeps what is shared ----------------------------------------------------------


async def test_liked_and_published_jobs_keep_their_images(
    services: Services, tmp_path: Path
) -> None:
    s = services
    images = image_store(tmp_path)
    share = sharing(s, images)
    liked = await finished(s, images=images)
    published = await finished(s, images=images)
    plain = await finished(s, images=images)
    unliked = await finished(s, images=images)
    deleted = await finished(s, images=images)
    await share.toggle_like(liked, MEMBER, GUILD)
    await share.toggle_like(unliked, MEMBER, GUILD)
    await share.toggle_like(unliked, MEMBER, GUILD)
    await share.toggle_like(deleted, MEMBER, GUILD)
    await share.delete_job(deleted, OWNER)
    await set_columns(s, published, published_at=s.clock())
    s.clock.advance(40 * DAY)
    retention = Retention(s.queue, images, RetentionSettings(images_days=30, rows_days=0))
    report = await retention.prune()
    assert report.image_jobs == 3  # plain, unliked, and the deleted job's (already empty) row
    for job_id in (liked, published):
        view = await s.queue.require(job_id)
        assert view.pruned_at is None and len(view.result_refs) == 5
        assert await images.job_usage(job_id) == (5, 50)
    for job_id in (plain, unliked):
        assert (await s.queue.require(job_id)).pruned_at is not None
        assert await images.job_usage(job_id) == (0, 0)
    # Rows too: a liked job's row outlives rows_days.
    s.clock.advance(400 * DAY)
    rows = Retention(s.queue, images, RetentionSettings(images_days=30, rows_days=180))
    assert (await rows.prune()).jobs == 3
    assert await s.queue.get(liked) is not None and await s.queue.get(plain) is None
    assert (await audit(s.db)).ok


async def test_a_profile_counts_what_the_viewer_may_find(services: Services) -> None:
    s = services
    share = sharing(s)
    public = await finished(s, user=OWNER)
    hidden = await finished(s, user=OWNER, visibility=Visibility.STEALTH)
    await finished(s, user=MEMBER)
    for fan in (10, 11, 12):
        await share.toggle_like(public, fan, GUILD)
    await share.toggle_like(hidden, OWNER, GUILD)
    seen = await share.profile(GUILD, OWNER, MEMBER)
    assert (seen.jobs, seen.likes) == (1, 3)
    assert [item.job_id for item in seen.top] == [public]
    own = await share.profile(GUILD, OWNER, OWNER)
    assert (own.jobs, own.likes) == (2, 4)
    assert [item.job_id for item in own.top] == [public, hidden]
    assert (await share.profile(OTHER_GUILD, OWNER, MEMBER)).jobs == 0


async def test_a_job_is_published_once_by_its_owner_or_a_moderator(services: Services) -> None:
    s = services
    share = sharing(s)
    job = await finished(s, user=OWNER)
    other = await finished(s, user=OWNER)
    hidden = await finished(s, user=OWNER, visibility=Visibility.STEALTH)
    with pytest.raises(SharingRefused, match="or a moderator"):
        await share.publish(job, GUILD, MEMBER)
    assert await share.publish(job, GUILD, OWNER)
    assert not await share.publish(job, GUILD, OWNER)  # once
    assert await share.publish(other, GUILD, MOD, is_moderator=True)
    with pytest.raises(JobUnavailable):
        await share.publish(hidden, GUILD, OWNER)  # stealth: never on the showcase
    with pytest.raises(JobUnavailable):
        await share.publish(job, OTHER_GUILD, OWNER)
    assert (await s.queue.require(job)).published_at is not None
    await share.unpublish(other, GUILD, MOD, "off-topic")
    with pytest.raises(SharingRefused, match="not on this server's showcase"):
        await share.unpublish(hidden, GUILD, MOD, "x")
    assert not await share.publish(other, GUILD, MOD, is_moderator=True)  # still once
