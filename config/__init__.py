"""Atelier's configuration: one pydantic-settings tree (see ``config.settings``)."""

from config.errors import ConfigError
from config.settings import (
    BotSettings,
    DiscordSettings,
    GenerationSettings,
    QueueSettings,
    QuotaSettings,
    RetentionSettings,
    Settings,
    WebSettings,
    load_settings,
)

__all__ = [
    "BotSettings",
    "ConfigError",
    "DiscordSettings",
    "GenerationSettings",
    "QueueSettings",
    "QuotaSettings",
    "RetentionSettings",
    "Settings",
    "WebSettings",
    "load_settings",
]
