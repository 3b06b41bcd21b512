"""Sharing through the emulator: /search (words, phrases, prefixes, member filter, pages,
Open), /delete (owner only; every post of it says so; found nowhere after), and the stored
queries' buttons against forgery."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from bot.devtools.emulator import DiscordEmulator
from bot.devtools.emulator.models import EmuUser, StoredMessage
from tests.bot.conftest import CHANNEL_ID, GUILD_ID, OTHER_CHANNEL_ID, Atelier, job_id_of
from tests.bot.test_moderation_e2e import button, say

LIGHTHOUSES = [f"a lighthouse number {n}" for n in range(1, 6)]


async def make(emu: DiscordEmulator, prompt: str, user: EmuUser) -> StoredMessage:
    handle = await emu.send_slash_command("imagine", {"prompt": prompt}, user=user)
    assert await handle.wait_for_ack() in (4, 5)
    text = prompt.split(" --")[0]  # the card shows the options apart
    return await emu.wait_for_message(
        lambda m: (
            m.channel_id == CHANNEL_ID
            and text in m.content
            and m.content.endswith(" - done")
            and bool(m.attachments)
        ),
        timeout=60,
    )


async def results(emu: DiscordEmulator, options: dict[str, object], user: EmuUser) -> StoredMessage:
    handle = await emu.send_slash_command("search", options, user=user)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    assert reply.ephemeral, reply.content
    return reply


async def test_search_and_delete(atelier: Atelier, emu: DiscordEmulator) -> None:
    runtime = await atelier.start()
    owner = emu.make_user(name="owner")
    member = emu.make_user(name="member")
    red = await make(emu, "a red lighthouse at dusk", owner)
    red_id = job_id_of(red)  # read now: the message's content changes when it is deleted
    # Spread over members: each stays within the new-jobs rate limit.
    for number, prompt in enumerate(LIGHTHOUSES):
        await make(emu, prompt, owner if number < 2 else member)
    meadow = await make(emu, "a quiet meadow", member)

    found = await results(emu, {"query": "lighthouse"}, member)
    assert "page 1" in found.content and found.content.count("job `") == 5
    assert "Next" in [c.get("label") for c in found.walk_components()]
    page_two = await emu.click_button(found.id, button(found, "Next"), user=member)
    await page_two.wait_for_ack()
    second = emu.message(found.id)
    assert "page 2" in second.content and second.content.count("job `") == 1
    assert "Previous" in [c.get("label") for c in second.walk_components()]

    phrase = await results(emu, {"query": '"red lighthouse"'}, member)
    assert phrase.content.count("job `") == 1 and red_id in phrase.content
    prefix = await results(emu, {"query": "light*"}, member)
    assert prefix.content.count("job `") == 5  # a page of the six
    mine = await results(emu, {"query": "lighthouse", "member": owner}, member)
    assert mine.content.count("job `") == 3 and red_id in mine.content
    nothing = await results(emu, {"query": "submarine"}, member)
    assert "nothing found" in nothing.content
    odd = await results(emu, {"query": 'NEAR( " ) OR * : lighthouse'}, member)
    assert "job `" in odd.content or "nothing found" in odd.content

    # Open reposts a found job with working buttons, as /show does.
    handle = await emu.click_button(phrase.id, button(phrase, "Open 1"), user=member)
    await handle.wait_for_original(lambda m: not m.loading)
    copy = await emu.wait_for_message(
        lambda m: m.id != red.id and f"job `{red_id}`" in m.content and bool(m.attachments)
    )
    assert not copy.ephemeral and "U1" in [c.get("label") for c in copy.walk_components()]

    # A stored query answers only its creator.
    forged = emu.post_message(
        CHANNEL_ID,
        content="forged",
        author=emu.bot_user,
        components=[
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": 2, "label": "Next", "custom_id": button(found, "Previous")}
                ],
            }
        ],
    )
    stolen = await emu.click_button(forged.id, button(forged, "Next"), user=owner)
    refusal = await stolen.wait_for_original(lambda m: not m.loading)
    assert refusal.ephemeral and "search" in refusal.content.lower()

    # /delete: not someone else's; the owner's goes from every post and from search.
    assert "only the member who made" in await say(emu, "delete", {"job": red_id}, member)
    text = await say(emu, "delete", {"job": red_id}, owner)
    assert "Deleted job" in text and "2 message(s)" in text
    for message_id in (red.id, copy.id):
        gone = emu.message(message_id)
        assert "deleted by its owner" in gone.content
        assert not gone.attachments and not list(gone.walk_components())
    after = await results(emu, {"query": '"red lighthouse"'}, member)
    assert "nothing found" in after.content
    assert "deleted by its owner" in await say(emu, "show", {"job": red_id}, member)
    reopen = await emu.click_button(phrase.id, button(phrase, "Open 1"), user=member)
    assert "not available" in (await reopen.wait_for_original(lambda m: not m.loading)).content
    assert "deleted already" in await say(emu, "delete", {"job": red_id}, owner)
    job = await runtime.ledger.queue.require(red_id)
    assert job.deleted_at is not None and job.result_refs == () and (job.charged or 0) > 0
    assert job_id_of(meadow) not in found.content
    emu.assert_no_violations()


async def test_stealth_jobs_are_found_only_by_their_owner(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    owner = emu.make_user(name="owner")
    member = emu.make_user(name="member")
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    hidden = await make(emu, "a secret garden --stealth", owner)
    hidden_id = job_id_of(hidden)
    shown = await make(emu, "an open garden --public", owner)
    job = await runtime.ledger.queue.require(hidden_id)
    assert job.visibility.value == "stealth" and job.request.stealth is True

    # Others never find it; its owner and the moderators do, in their private lists.
    others = await results(emu, {"query": "garden"}, member)
    assert hidden_id not in others.content and job_id_of(shown) in others.content
    assert hidden_id in (await results(emu, {"query": "garden"}, owner)).content
    assert hidden_id in (await results(emu, {"query": "garden"}, mod)).content
    # /show, its buttons, its remix: not for others; /show not even for its owner (it would
    # post it for everyone).
    assert "there is no job" in await say(emu, "show", {"job": hidden_id}, member)
    assert "is stealth" in await say(emu, "show", {"job": hidden_id}, owner)
    click = await emu.click_button(hidden.id, button(hidden, "U1"), user=member)
    refusal = await click.wait_for_original(lambda m: not m.loading)
    assert "is stealth" in refusal.content
    # Its follow-ups stay stealth: the flag travels with the request.
    await emu.click_button(hidden.id, button(hidden, "U2"), user=owner)
    single = await emu.wait_for_message(
        lambda m: (
            "Image 2" in m.content
            and "secret garden" in m.content
            and m.content.endswith(" - done")
        )
    )
    child = await runtime.ledger.queue.require(job_id_of(single))
    assert child.visibility.value == "stealth"
    assert "contradict" in await say(emu, "imagine", {"prompt": "x --stealth --public"}, owner)


async def test_visibility_defaults_of_members_and_servers(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    queue = runtime.ledger.queue
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=1 << 5)])
    member = emu.make_user(name="member")

    async def visibility_of(prompt: str) -> str:
        job = await queue.require(job_id_of(await make(emu, prompt, member)))
        return job.visibility.value

    assert "visibility: stealth" in await say(emu, "settings me", {"visibility": "stealth"}, member)
    assert await visibility_of("a hidden pond") == "stealth"
    assert await visibility_of("a shown pond --public") == "public"
    # The server forbids stealth: the member's default gives way, the flag is refused.
    text = await say(emu, "settings server", {"allow_stealth": False}, admin)
    assert "no longer make stealth jobs" in text and "may not make stealth jobs" in text
    assert await visibility_of("a plain pond") == "public"
    refused = await say(emu, "imagine", {"prompt": "a pond --stealth"}, member)
    assert "does not allow stealth" in refused and "Nothing was queued" in refused
    assert "only server admins" in await say(
        emu, "settings server", {"default_visibility": "stealth"}, member
    )


async def test_likes_toggle_and_the_count_follows_in_coalesced_edits(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    owner = emu.make_user(name="owner")
    fans = [emu.make_user(name=f"fan{n}") for n in range(3)]
    grid = await make(emu, "a much liked lighthouse", owner)
    job_id = job_id_of(grid)

    def count(message: StoredMessage) -> str:
        return next(
            str(c["label"]) for c in message.walk_components() if "\u2764" in str(c.get("label"))
        )

    assert count(grid) == "\u2764 0"
    handles = [await emu.click_button(grid.id, button(grid, "\u2764 0"), user=f) for f in fans]
    for handle in handles:
        assert await handle.wait_for_ack() == 6  # a deferred update: acknowledged at once
    await emu.wait_for_message(lambda m: m.id == grid.id and count(m) == "\u2764 3", timeout=30)
    again = await emu.click_button(grid.id, button(emu.message(grid.id), "\u2764 3"), user=fans[0])
    assert await again.wait_for_ack() == 6
    await emu.wait_for_message(lambda m: m.id == grid.id and count(m) == "\u2764 2", timeout=30)
    store = runtime.ledger.queue
    assert (await store.require(job_id)).like_count == 2

    # However many likes arrive before the edit, the message is edited once for them.
    sharing = runtime.bot.publisher
    from storage.sharing import SharingStore

    likes = SharingStore(runtime.ledger.db)
    for fan in range(100, 120):
        await likes.toggle_like(job_id, fan, grid.guild_id or 0)
    versions = len(emu.message(grid.id).versions)
    for _ in range(20):
        sharing.likes_changed(job_id)
    done = await emu.wait_for_message(
        lambda m: m.id == grid.id and count(m) == "\u2764 22", timeout=30
    )
    assert len(done.versions) == versions + 1

    # A stealth job cannot be liked by others; DM jobs have no like button.
    hidden = await make(emu, "a hidden lighthouse --stealth", owner)
    refused = await emu.click_button(hidden.id, button(hidden, "\u2764 0"), user=fans[1])
    reply = await refused.wait_for_followups(1)
    assert reply[0].ephemeral and "not available" in reply[0].content

    # /profile: what a viewer may find of a member's work, and the likes it received.
    seen = await say(emu, "profile", {"member": owner}, fans[1])
    assert "1 job(s) you can find here" in seen and "\u2764 22 received" in seen
    assert f"job `{job_id}`" in seen and "much liked lighthouse" in seen
    assert "2 job(s)" in await say(emu, "profile", {}, owner)  # their own stealth one too


async def test_prompt_card_and_remix_of_another_members_job(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    owner = emu.make_user(name="owner")
    member = emu.make_user(name="member")
    grid = await make(emu, "a copper lighthouse --ar 3:2", owner)
    job_id = job_id_of(grid)

    handle = await emu.click_button(grid.id, button(grid, "Prompt"), user=member)
    card = await handle.wait_for_original(lambda m: not m.loading)
    assert card.ephemeral and f"Prompt of job `{job_id}`" in card.content
    assert "a copper lighthouse --ar 3:2" in card.content and "seed" in card.content

    handle = await emu.click_button(grid.id, button(grid, "Remix"), user=member)
    await handle.wait_for_ack()
    assert handle.modal is not None
    prefilled = str(handle.modal["components"][0]["components"][0].get("value", ""))
    assert prefilled.startswith("a copper lighthouse --ar 3:2")
    submitted = await emu.submit_modal(
        handle, {"prompt": "a silver lighthouse --ar 3:2 --fast"}, user=member
    )
    answer = await submitted.wait_for_original(lambda m: not m.loading)
    assert f"Remix of job `{job_id}`" in answer.content
    remixed = await make_done(emu, "a silver lighthouse")
    child = await runtime.ledger.queue.require(job_id_of(remixed))
    assert child.owner_id == member.id and child.parent_id == job_id and child.kind == "imagine"
    assert child.request.mode.value == "fast" and child.visibility.value == "public"

    # A stealth job: neither its prompt nor a remix for anyone but its owner.
    hidden = await make(emu, "a secret lighthouse --stealth", owner)
    for label in ("Prompt", "Remix"):
        refused = await emu.click_button(hidden.id, button(hidden, label), user=member)
        reply = await refused.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral and "not available" in reply.content, label
    mine = await emu.click_button(hidden.id, button(hidden, "Prompt"), user=owner)
    assert "a secret lighthouse" in (await mine.wait_for_original(lambda m: not m.loading)).content

    # Lineage: the member's remix hangs under the grid; the owner's stealth remix of it shows
    # to others only as "hidden"; ancestors lead back to the original prompt.
    handle = await emu.click_button(grid.id, button(grid, "Remix"), user=owner)
    await handle.wait_for_ack()
    await emu.submit_modal(handle, {"prompt": "a golden lighthouse --stealth"}, user=owner)
    await make_done(emu, "a golden lighthouse")
    tree = await say(emu, "lineage", {"job": job_id}, member)
    assert f"`{job_id}` imagine" in tree and "this job" in tree
    assert f"`{child.id}` imagine by <@{member.id}>" in tree and "hidden" in tree
    assert "golden" not in tree
    body = (await say(emu, "lineage", {"job": child.id}, member)).split("\n", 1)[1]
    assert body.index(f"`{job_id}`") < body.index(f"`{child.id}`")
    assert "not available" in await say(emu, "lineage", {"job": job_id_of(hidden)}, member)
    assert "golden" in await say(emu, "lineage", {"job": job_id}, owner)


async def make_done(emu: DiscordEmulator, text: str) -> StoredMessage:
    return await emu.wait_for_message(
        lambda m: text in m.content and m.content.endswith(" - done") and bool(m.attachments),
        timeout=60,
    )


async def test_gallery_pages_with_a_contact_sheet(atelier: Atelier, emu: DiscordEmulator) -> None:
    await atelier.start()
    members = [emu.make_user(name=f"artist{n}") for n in range(3)]
    made = []
    for number in range(10):  # one more than a page
        made.append(await make(emu, f"a gallery piece {number}", members[number % 3]))
    hidden = await make(emu, "a gallery secret --stealth", members[0])
    viewer = members[1]
    like = await emu.click_button(made[3].id, button(made[3], "\u2764 0"), user=viewer)
    assert await like.wait_for_ack() == 6

    async def open_gallery(options: dict[str, object], user: EmuUser) -> StoredMessage:
        handle = await emu.send_slash_command("gallery", options, user=user)
        return await handle.wait_for_original(lambda m: not m.loading)

    recent = await open_gallery({"view": "r"}, viewer)
    assert recent.ephemeral and recent.attachments[0].filename == "gallery.webp"
    assert recent.content.count("job `") == 9 and job_id_of(hidden) not in recent.content
    assert "a gallery piece 9" in recent.content  # newest first
    labels_ = [str(c.get("label")) for c in recent.walk_components() if c.get("type") == 2]
    assert labels_[:9] == [f"Open {n}" for n in range(1, 10)] and "Next" in labels_
    nxt = await emu.click_button(recent.id, button(recent, "Next"), user=viewer)
    await nxt.wait_for_ack()
    second = await emu.wait_for_message(
        lambda m: m.id == recent.id and "a gallery piece 0" in m.content
    )
    assert second.content.count("job `") == 1 and "Previous" in [
        str(c.get("label")) for c in second.walk_components()
    ]
    # Top: only liked jobs; mine: the owner's own stealth job too; a member's: public only.
    top = await open_gallery({"view": "a"}, viewer)
    assert top.content.count("job `") == 1 and job_id_of(made[3]) in top.content
    mine = await open_gallery({"view": "i"}, members[0])
    assert job_id_of(hidden) in mine.content
    theirs = await open_gallery({"member": members[0]}, viewer)
    assert "by member" in theirs.content and job_id_of(hidden) not in theirs.content
    assert theirs.content.count("job `") == 4
    # A forged page button: malformed, or the member view without a member.
    for custom_id in ("atl:1:gl:b::", "atl:1:gl:r::zz", "atl:1:gl:x::"):
        forged = emu.post_message(
            CHANNEL_ID,
            content="forged",
            author=emu.bot_user,
            components=[
                {
                    "type": 1,
                    "components": [{"type": 2, "style": 2, "label": "X", "custom_id": custom_id}],
                }
            ],
        )
        handle = await emu.click_button(forged.id, custom_id, user=viewer)
        reply = await handle.wait_for_original(lambda m: not m.loading)
        assert reply.ephemeral and "not made by this version" in reply.content, custom_id


async def test_showcase_publish_feature_auto_and_unpublish(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    runtime = await atelier.start()
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=1 << 5)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    owner = emu.make_user(name="owner")
    member = emu.make_user(name="member")
    first = await make(emu, "a showcase sunrise", owner)
    first_id = job_id_of(first)
    assert "no showcase channel" in await click_answer(emu, first, "Publish", owner)
    showcase = emu.guild().channels[OTHER_CHANNEL_ID]
    text = await say(
        emu, "settings server", {"showcase_channel": showcase, "auto_feature_likes": 2}, admin
    )
    assert "Published images now go to" in text and "2 likes are featured" in text

    assert "only the member who made" in await click_answer(emu, first, "Publish", member)
    assert "Published job" in await click_answer(emu, first, "Publish", owner)
    post = await emu.wait_for_message(
        lambda m: m.channel_id == OTHER_CHANNEL_ID and "a showcase sunrise" in m.content
    )
    assert post.attachments and f"by <@{owner.id}>" in post.content and "original:" in post.content
    assert "already" in await click_answer(emu, first, "Publish", owner)

    second = await make(emu, "a showcase sunset", member)
    assert "Featured job" in await click_answer(emu, second, "Publish", mod)
    featured = await emu.wait_for_message(
        lambda m: m.channel_id == OTHER_CHANNEL_ID and "a showcase sunset" in m.content
    )
    assert f"featured by <@{mod.id}>" in featured.content

    # Two likes feature a job on their own.
    third = await make(emu, "a showcase noon", member)
    for fan in (owner, mod):
        like = await emu.click_button(third.id, button(third, "\u2764 0"), user=fan)
        assert await like.wait_for_ack() == 6
    await emu.wait_for_message(
        lambda m: m.channel_id == OTHER_CHANNEL_ID and "a showcase noon" in m.content, timeout=30
    )

    # Moderators unpublish; members may not; deleting a published job reaches its post.
    assert "only moderators" in await click_answer(emu, featured, "Unpublish", member)
    assert "off the showcase" in await click_answer(emu, featured, "Unpublish", mod)
    assert emu.message(featured.id).deleted
    await say(emu, "delete", {"job": first_id}, owner)
    assert "deleted by its owner" in emu.message(post.id).content
    page = await runtime.ledger.modlog.page(GUILD_ID, limit=20)
    actions = [e.action.value for e in reversed(page.entries)]
    assert actions.count("published") == 3 and actions.count("unpublished") == 1


async def click_answer(
    emu: DiscordEmulator, message: StoredMessage, label: str, user: EmuUser
) -> str:
    handle = await emu.click_button(message.id, button(emu.message(message.id), label), user=user)
    reply = await handle.wait_for_original(lambda m: not m.loading)
    return reply.content


async def test_like_counts_reach_show_copies_and_the_showcase_post(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    """A like edits every message that shows the count: the job's post, its /show copy (the
    job's buttons) and its showcase post (its ❤ and Unpublish), whichever one was clicked."""
    await atelier.start()
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=1 << 5)])
    owner = emu.make_user(name="owner")
    fans = [emu.make_user(name=f"fan{n}") for n in range(2)]
    grid = await make(emu, "a counted harbour", owner)
    job_id = job_id_of(grid)
    showcase = emu.guild().channels[OTHER_CHANNEL_ID]
    await say(emu, "settings server", {"showcase_channel": showcase}, admin)
    assert "Published job" in await click_answer(emu, grid, "Publish", owner)
    post = await emu.wait_for_message(
        lambda m: m.channel_id == OTHER_CHANNEL_ID and "a counted harbour" in m.content
    )
    shown = await emu.send_slash_command("show", {"job": job_id}, user=fans[0])
    assert await shown.wait_for_ack() in (4, 5)
    copy = await emu.wait_for_message(
        lambda m: (
            m.channel_id == CHANNEL_ID
            and m.id != grid.id
            and bool(m.attachments)
            and job_id in m.content
        )
    )

    def labels(message: StoredMessage) -> list[str]:
        return [str(c.get("label")) for c in message.walk_components() if c.get("label")]

    # A like on the showcase post, then one on the /show copy.
    like = await emu.click_button(post.id, button(post, "\u2764 0"), user=fans[0])
    assert await like.wait_for_ack() == 6
    await counted(emu, (grid, copy, post), "\u2764 1")
    like = await emu.click_button(copy.id, button(emu.message(copy.id), "\u2764 1"), user=fans[1])
    assert await like.wait_for_ack() == 6
    await counted(emu, (grid, copy, post), "\u2764 2")
    # Each kept its own buttons: the post its ❤ and Unpublish, the copy the job's row.
    assert labels(emu.message(post.id)) == ["\u2764 2", "Unpublish"]
    assert labels(emu.message(copy.id)) == labels(emu.message(grid.id))
    assert "U1" in labels(emu.message(copy.id))


async def counted(emu: DiscordEmulator, messages: Sequence[StoredMessage], label: str) -> None:
    """Until each message's ❤ button reads ``label``."""
    for message in messages:
        await emu.wait_for_message(partial(_shows, message.id, label), timeout=30)


def _shows(message_id: int, label: str, message: StoredMessage) -> bool:
    return message.id == message_id and like_count(message) == label


def like_count(message: StoredMessage) -> str:
    return next(
        str(c["label"]) for c in message.walk_components() if "\u2764" in str(c.get("label"))
    )
