"""The web gallery end to end: an admin turns it on through Discord, members make jobs through
the emulator, and a real headless Chromium browses the gallery, searches, opens an image,
follows its lineage, and cannot reach a stealth, a blocked or a deleted job. Also makes the
README's screenshot (``ATELIER_TEST_SCREENSHOT_DIR``: where to copy it)."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image
from selenium.webdriver.chrome.webdriver import WebDriver as Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from bot.devtools.emulator import DiscordEmulator
from bot.web import build_app
from storage.db import Database
from storage.images import FileImageStore
from tests.bot.conftest import GUILD_ID, Atelier, job_id_of
from tests.bot.test_moderation_e2e import button, say
from tests.bot.test_sharing_e2e import counted, make
from tests.browser import console_errors, save_screenshot, serve

PROMPTS = (
    "a lighthouse at dusk, oil painting",
    "a fox in a snowy forest, watercolor",
    "a neon city street in the rain",
)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def browse(browser: Chrome, url: str) -> None:
    """Load a page (Selenium blocks: in a thread, so the bot and the emulator keep running)."""
    await asyncio.to_thread(browser.get, url)


def texts(browser: Chrome, selector: str) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, selector)]


def thumbnails_loaded(browser: Chrome) -> bool:
    """Every thumbnail on the page has arrived and decoded (a WebP the server made)."""
    return bool(
        browser.execute_script(
            "const all = [...document.querySelectorAll('a.item img')];"
            "return all.length > 0 && all.every(i => i.complete && i.naturalWidth > 0);"
        )
    )


def jobs_on(browser: Chrome) -> list[str]:
    found = browser.find_elements(By.CSS_SELECTOR, "a.item[data-job]")
    return [str(e.get_attribute("data-job")) for e in found]


async def test_the_web_gallery_in_a_real_browser(
    atelier: Atelier, emu: DiscordEmulator, chrome: Chrome, tmp_path: Path
) -> None:
    runtime = await atelier.start()
    admin = emu.make_user(name="admin", roles=[emu.make_role("admins", permissions=1 << 5)])
    mod = emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)])
    ada = emu.make_user(name="Ada")
    ada.global_name = "Ada Lovelace"
    grace = emu.make_user(name="grace")

    # Only admins turn it on; moderators and members are told so.
    refused = await say(emu, "settings server", {"web_gallery": True}, mod)
    assert "only server admins" in refused
    text = await say(emu, "settings server", {"web_gallery": True}, admin)
    assert f"/s/{GUILD_ID}>" in text and "Web gallery: on" in text

    made = [await make(emu, PROMPTS[0], ada)]
    made.append(await make(emu, PROMPTS[1], grace))
    made.append(await make(emu, PROMPTS[2], ada))
    ids = [job_id_of(m) for m in made]
    variation = await emu.click_button(made[0].id, button(made[0], "V1"), user=ada)
    await variation.wait_for_ack()
    child_message = await emu.wait_for_message(
        lambda m: (
            m.id not in {x.id for x in made}
            and m.content.endswith(" - done")
            and bool(m.attachments)
            and PROMPTS[0] in m.content
        ),
        timeout=60,
    )
    child = job_id_of(child_message)
    stealth = job_id_of(await make(emu, "a secret garden --stealth", ada))
    blocked = job_id_of(await make(emu, "an unwelcome picture", grace))
    deleted = job_id_of(await make(emu, "a deleted sketch", grace))
    assert "Removed job" in await say(emu, "block", {"job": blocked, "reason": "spam"}, mod)
    assert "Deleted job" in await say(emu, "delete", {"job": deleted}, grace)
    await runtime.bot.publisher.wait_posted(blocked)

    for count, fan in enumerate((grace, mod)):  # likes show on the web too
        label = f"\u2764 {count}"
        like = await emu.click_button(made[0].id, button(emu.message(made[0].id), label), user=fan)
        assert await like.wait_for_ack() == 6
        await counted(emu, [made[0]], f"\u2764 {count + 1}")
    settings = atelier.settings()
    db = Database(settings.resolved_database_url)  # its own engine: used on the server's loop
    app = build_app(settings, db, FileImageStore(settings.data_dir / "images"))

    async def dispose(_: Any) -> None:
        await db.dispose()

    app.on_cleanup.append(dispose)
    with serve(app) as base:
        gallery = f"{base}/s/{GUILD_ID}"
        await browse(chrome, gallery)
        assert chrome.title and emu.guild().name in chrome.title
        listed = jobs_on(chrome)
        assert set(listed) == {*ids, child}  # newest first: the three, and the variation
        assert listed[0] == child
        assert "Ada Lovelace" in texts(chrome, "a.credit")  # the name recorded with her job
        await asyncio.to_thread(WebDriverWait(chrome, 30).until, thumbnails_loaded)
        save_screenshot(chrome, tmp_path / "web-gallery.png")

        # Search through the form.
        box = chrome.find_element(By.ID, "q")
        box.send_keys('"snowy forest"')
        await asyncio.to_thread(chrome.find_element(By.ID, "search-form").submit)
        assert jobs_on(chrome) == [ids[1]]

        # Open the first image: its prompt, parameters and its child; then back up the lineage.
        await browse(chrome, gallery)
        await asyncio.to_thread(
            chrome.find_element(By.CSS_SELECTOR, f'a.item[data-job="{ids[0]}"]').click
        )
        assert chrome.find_element(By.ID, "prompt").text == PROMPTS[0]
        assert chrome.find_element(By.ID, "member-link").text == "Ada Lovelace"
        assert chrome.find_element(By.ID, "param-seed").text
        assert "2" in chrome.find_element(By.ID, "likes").text
        children = chrome.find_elements(By.CSS_SELECTOR, "a.child-link")
        assert len(children) == 1
        await asyncio.to_thread(children[0].click)
        assert chrome.find_element(By.ID, "job").get_attribute("data-job") == child
        await asyncio.to_thread(chrome.find_element(By.ID, "parent-link").click)
        assert chrome.find_element(By.ID, "job").get_attribute("data-job") == ids[0]
        picture = chrome.find_element(By.ID, "picture")
        loaded = chrome.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", picture
        )
        assert loaded and int(loaded) > 0  # the WebP was served and decoded
        assert console_errors(chrome) == []  # nothing broke, and the CSP blocked nothing

        # A stealth, a blocked and a deleted job: listed nowhere, searched nowhere, 404 everywhere.
        for hidden in (stealth, blocked, deleted):
            assert hidden not in listed
            for path in (f"/i/{hidden}", f"/t/{hidden}.webp", f"/img/{hidden}/4.webp"):
                assert status_of(f"{gallery}{path}") == 404, (hidden, path)
        for words in ("secret garden", "unwelcome", "deleted sketch"):
            await browse(chrome, f"{gallery}/search?q={words.replace(' ', '+')}")
            assert jobs_on(chrome) == [], words
        await browse(chrome, f"{gallery}/i/{stealth}")
        assert chrome.find_element(By.ID, "error-title").text
        assert "secret" not in chrome.page_source

        # Turned off again: the whole server is a 404.
        await say(emu, "settings server", {"web_gallery": False}, admin)
        assert status_of(gallery) == 404
        assert status_of(f"{gallery}/i/{ids[0]}") == 404
    target = os.environ.get("ATELIER_TEST_SCREENSHOT_DIR")
    if target:  # the README's picture: the page's top, where the gallery is
        with Image.open(tmp_path / "web-gallery.png") as shot:
            top = shot.convert("RGB").crop((0, 0, shot.width, 600)).quantize(colors=256)
            top.save(Path(target) / "web-gallery.png", optimize=True)
    emu.assert_no_violations()


async def test_only_admins_of_a_server_turn_the_web_gallery_on(
    atelier: Atelier, emu: DiscordEmulator
) -> None:
    await atelier.start()
    member = emu.make_user(name="member")
    assert "only server admins" in await say(emu, "settings server", {"web_gallery": True}, member)
    shown = await say(
        emu,
        "settings server",
        {},
        emu.make_user(name="mod", roles=[emu.make_role("mods", permissions=1 << 13)]),
    )
    assert "Web gallery: off" in shown
    emu.assert_no_violations()
