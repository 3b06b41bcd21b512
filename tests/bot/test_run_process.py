"""`atelier run` as a real process: configured only through ATELIER_* variables, it serves an
/imagine through the emulator and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.devtools.emulator import DiscordEmulator
from tests.bot.conftest import APP_ID, CHANNEL_ID, GUILD_ID, TOKEN, labels, wait_final


async def test_atelier_run_serves_and_stops_on_sigterm(data_dir: Path) -> None:
    async with DiscordEmulator(
        token=TOKEN, application_id=APP_ID, guild_id=GUILD_ID, channel_ids=[CHANNEL_ID]
    ) as emu:
        env = {
            **os.environ,
            "ATELIER_DISCORD_TOKEN": TOKEN,
            "ATELIER_DISCORD_API_BASE_URL": emu.api_base_url,
            "ATELIER_DISCORD_GATEWAY_URL": emu.gateway_url,
            "ATELIER_DISCORD_GUILD_ID": str(GUILD_ID),
            "ATELIER_DATA_DIR": str(data_dir),
            "ATELIER_MODEL": "tiny",
            "ATELIER_LOG_LEVEL": "DEBUG",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        # Read the output while it runs: a full pipe would block the process's logging.
        reader = asyncio.create_task(process.stdout.read())
        try:
            await emu.wait_until_connected(timeout=120)
            handle = await emu.send_slash_command("imagine", {"prompt": "a real process"})
            message = (await handle.wait_for_followups(1, timeout=30))[0]
            final = await wait_final(emu, lambda m: m.id == message.id, timeout=60)
            assert labels(final)[:4] == ["U1", "U2", "U3", "U4"]
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=60)
            output = await reader
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            reader.cancel()
        assert process.returncode == 0, output.decode()[-3000:]
        assert TOKEN.encode() not in output  # DEBUG logs of a whole run
        emu.assert_no_violations()
