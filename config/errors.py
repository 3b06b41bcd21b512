"""Errors raised while reading configuration."""


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and what is allowed."""
