"""The web gallery's storage (``storage.webdir``) on both backends: opted-in servers, member
names, and the anonymous image-page reads (only public, unblocked jobs of an opted-in server)."""

from __future__ import annotations

from storage.models import WEB_NAME_LENGTH
from storage.types import JobKind, Visibility
from storage.webdir import MAX_CHILDREN, WebDirectory, clean_name
from tests.storage.dbfixtures import Services, new_job, owner
from tests.storage.sharefixtures import GUILD, OTHER_GUILD, finished, set_columns, set_review

OWNER, ADMIN = 1, 9


def directory(s: Services) -> WebDirectory:
    return WebDirectory(s.db, clock=s.clock)


async def test_enable_disable_get_and_list(services: Services) -> None:
    web = directory(services)
    assert await web.get(GUILD) is None
    assert await web.listed() == ()
    first = await web.enable(GUILD, "Zeta\nclub", ADMIN)
    assert (first.guild_id, first.name, first.enabled_by) == (GUILD, "Zeta club", ADMIN)
    assert first.enabled_at == services.clock()
    services.clock.advance(60)
    again = await web.enable(GUILD, "Zeta", ADMIN + 1)  # a rename; who and when stay
    assert (again.name, again.enabled_by, again.enabled_at) == ("Zeta", ADMIN, first.enabled_at)
    await web.enable(OTHER_GUILD, "x" * 500, ADMIN)
    listed = await web.listed()
    assert [g.guild_id for g in listed] == [GUILD, OTHER_GUILD]  # by name: "Zeta" < "xxx"
    assert len(listed[1].name) == WEB_NAME_LENGTH
    assert (await web.get(GUILD)) == again
    assert await web.disable(GUILD)
    assert not await web.disable(GUILD)
    assert await web.get(GUILD) is None
    assert [g.guild_id for g in await web.listed()] == [OTHER_GUILD]
    assert (await web.enable(GUILD, "   ", ADMIN)).name == f"server {GUILD}"


async def test_member_names_upsert_per_server(services: Services) -> None:
    web = directory(services)
    assert await web.names(GUILD, []) == {}
    await web.remember(GUILD, 1, "Ada")
    await web.remember(GUILD, 2, "Bob")
    await web.remember(GUILD, 1, "Ada L.")  # renamed
    await web.remember(OTHER_GUILD, 1, "Someone else")
    await web.remember(GUILD, 3, " \x00 ")  # nothing left: not recorded
    assert await web.names(GUILD, [1, 2, 3, 4, 1]) == {1: "Ada L.", 2: "Bob"}
    assert await web.names(OTHER_GUILD, [1, 2]) == {1: "Someone else"}
    assert await web.names(GUILD, range(1, 1200)) == {1: "Ada L.", 2: "Bob"}  # chunked
    assert clean_name("a\tb" + "c" * 200) == ("a b" + "c" * 200)[:WEB_NAME_LENGTH]


async def test_image_page_read_with_visible_lineage_only(services: Services) -> None:
    s = services
    web = directory(s)
    parent = await finished(s, user=OWNER, prompt="a lighthouse")
    job = await finished(
        s,
        user=OWNER,
        prompt="a lighthouse at dusk",
        kind=JobKind.VARIATION,
        parent_id=parent,
        request={"prompt": "a lighthouse at dusk", "seed": 42, "steps": 4},
    )
    shown = await finished(s, user=2, kind=JobKind.UPSCALE, parent_id=job)
    hidden = {
        "stealth": await finished(
            s, kind=JobKind.UPSCALE, parent_id=job, visibility=Visibility.STEALTH
        ),
        "held": await finished(s, kind=JobKind.UPSCALE, parent_id=job),
        "deleted": await finished(s, kind=JobKind.UPSCALE, parent_id=job),
    }
    await set_review(s, hidden["held"], "held")
    await set_columns(s, hidden["deleted"], deleted_at=s.clock())
    later = await finished(s, user=3, kind=JobKind.SELECT, parent_id=job)

    assert await web.job(GUILD, job) is None  # the server has not turned the web gallery on
    assert await web.image_refs(GUILD, job) is None
    await web.enable(GUILD, "Club", ADMIN)
    page = await web.job(GUILD, job)
    assert page is not None
    assert page.item.job_id == job and page.item.prompt == "a lighthouse at dusk"
    assert page.refs == tuple(
        f"{job}/{n}" for n in ("0.png", "1.png", "2.png", "3.png", "grid.png")
    )
    assert page.request["seed"] == 42
    assert page.parent is not None and page.parent.job_id == parent
    assert [c.job_id for c in page.children] == [shown, later]
    assert await web.image_refs(GUILD, job) == page.refs
    assert await web.job(OTHER_GUILD, job) is None  # another server's path

    # A parent that is no longer public is left out, the page stays.
    await set_columns(s, parent, visibility=Visibility.STEALTH.value)
    page = await web.job(GUILD, job)
    assert page is not None and page.parent is None
    for child in hidden.values():
        assert await web.job(GUILD, child) is None
        assert await web.image_refs(GUILD, child) is None


async def test_image_page_read_refuses_every_hidden_case(services: Services) -> None:
    s = services
    web = directory(s)
    await web.enable(GUILD, "Club", ADMIN)
    await web.enable(OTHER_GUILD, "Other", ADMIN)
    cases = {
        "stealth": await finished(s, visibility=Visibility.STEALTH),
        "held": await finished(s),
        "rejected": await finished(s),
        "deleted": await finished(s),
        "pruned": await finished(s),
        "blocked": await finished(s),
        "dm": await finished(s, guild=None),
        "other": await finished(s, guild=OTHER_GUILD),
    }
    await set_review(s, cases["held"], "held")
    await set_review(s, cases["rejected"], "rejected")
    await set_columns(s, cases["deleted"], deleted_at=s.clock())
    await set_columns(s, cases["pruned"], pruned_at=s.clock(), result_refs=[])
    await s.queue.block(cases["blocked"], "rule 1")
    cases["queued"] = (await s.queue.enqueue(owner(OWNER), new_job())).id
    for name, job_id in cases.items():
        assert await web.job(GUILD, job_id) is None, name
        assert await web.image_refs(GUILD, job_id) is None, name
    assert await web.job(GUILD, "nosuchjob000") is None
    assert await web.job(OTHER_GUILD, cases["other"]) is not None
    await web.disable(OTHER_GUILD)
    assert await web.job(OTHER_GUILD, cases["other"]) is None


async def test_children_are_bounded(services: Services) -> None:
    s = services
    web = directory(s)
    await web.enable(GUILD, "Club", ADMIN)
    job = await finished(s)
    for _ in range(MAX_CHILDREN + 2):
        await finished(s, kind=JobKind.UPSCALE, parent_id=job)
    page = await web.job(GUILD, job)
    assert page is not None and len(page.children) == MAX_CHILDREN


async def test_a_server_the_bot_left_is_not_shown(services: Services) -> None:
    s = services
    web = directory(s)
    await web.enable(GUILD, "Club", ADMIN)
    job = await finished(s)
    await s.queue.cancel_for_guild(GUILD, "removed")
    assert await web.get(GUILD) is None and await web.listed() == ()
    assert await web.job(GUILD, job) is None and await web.image_refs(GUILD, job) is None
    await s.queue.rejoin_guilds([GUILD])
    assert (await web.get(GUILD)) is not None and await web.job(GUILD, job) is not None
