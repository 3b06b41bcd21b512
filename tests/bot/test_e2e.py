"""End to end: users drive the real bot through the Discord API emulator; we assert on what
Discord (the emulator) recorded."""

from __future__ import annotations

from tests.bot.conftest import CHANNEL_ID, Atelier, custom_ids, labels, wait_final
from tests.discord_emulator import DiscordEmulator


async def test_imagine_posts_one_grid_with_buttons(atelier: Atelier, emu: DiscordEmulator) -> None:
    await atelier.start()
    handle = await emu.send_slash_command("imagine", {"prompt": "a lighthouse at dusk --ar 3:2"})
    assert await handle.wait_for_ack() == 5  # deferred at once, before any database work
    final = await wait_final(emu, lambda m: "U1" in labels(m))
    assert final.channel_id == CHANNEL_ID and not final.ephemeral
    assert len(final.attachments) == 1
    assert labels(final) == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4", "\U0001f504"]
    assert all(len(cid) <= 100 for cid in custom_ids(final))
    assert "a lighthouse at dusk" in final.content and "done" in final.content
    emu.assert_no_violations()
