"""A Discord API emulator (REST + gateway) for end-to-end tests of the real discord.py client.

See README.md in this directory for how to point a bot at it and what it enforces.
"""

from .clock import Clock, EmulatorClock
from .errors import DiscordHTTPError, EmulatorUsageError
from .faults import FaultRule
from .interactions import InteractionHandle, Upload
from .models import (
    EmuChannel,
    EmuGuild,
    EmuOverwrite,
    EmuRole,
    EmuThreadMember,
    EmuUser,
    StoredAttachment,
    StoredMessage,
)
from .ratelimits import RateLimits
from .recorder import GatewayFrame, RecordedFile, RecordedRequest, Violation
from .server import (
    DEFAULT_APPLICATION_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_TOKEN,
    DiscordEmulator,
)
from .validation import Limits

__all__ = [
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_GUILD_ID",
    "DEFAULT_TOKEN",
    "Clock",
    "DiscordEmulator",
    "DiscordHTTPError",
    "EmuChannel",
    "EmuGuild",
    "EmuOverwrite",
    "EmuRole",
    "EmuThreadMember",
    "EmuUser",
    "EmulatorClock",
    "EmulatorUsageError",
    "FaultRule",
    "GatewayFrame",
    "InteractionHandle",
    "Limits",
    "RateLimits",
    "RecordedFile",
    "RecordedRequest",
    "StoredAttachment",
    "StoredMessage",
    "Upload",
    "Violation",
]
