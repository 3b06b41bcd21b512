"""Errors raised while reading configuration, and the masking that keeps secrets out of them."""

from __future__ import annotations

import re

MASK = "***"
#: A setting whose name says it holds a secret: its value is never shown.
_SECRET_NAME = re.compile(r"key|secret|pass|token", re.IGNORECASE)
#: ``scheme://user:password@``: the password is everything up to the last ``@`` of the word.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):\S*@")
#: ``SOME_KEY=value`` or ``password: value`` in free text.
_SECRET_PAIR = re.compile(
    r"(?P<name>\b\w*(?:key|secret|pass|token)\w*)(?P<sep>\s*[=:]\s*)(?P<value>[^\s,;'\"]+)",
    re.IGNORECASE,
)
#: Long runs of token characters (API keys, bot tokens, hex digests). Slashes split a run, so
#: paths and URLs stay readable; their passwords are handled by ``_URL_PASSWORD``.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+=_.-]{20,}")


def looks_secret_name(name: str) -> bool:
    """Whether a setting or variable name says it holds a secret (key, secret, pass, token)."""
    return bool(_SECRET_NAME.search(name))


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)


def mask_secrets(text: str) -> str:
    """``text`` with whatever looks secret masked: URL passwords, the values of ``NAME=value``
    pairs whose name says secret, and long token-like runs that mix letters and digits."""
    text = mask_url_passwords(text)
    text = _SECRET_PAIR.sub(rf"\g<name>\g<sep>{MASK}", text)
    return _TOKEN_RUN.sub(_mask_token_run, text)


def _mask_token_run(match: re.Match[str]) -> str:
    run = match.group(0)
    has_letter = any(ch.isalpha() for ch in run)
    has_digit = any(ch.isdigit() for ch in run)
    return MASK if has_letter and has_digit else run


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and what is allowed.

    The message is passed through :func:`mask_secrets`, whoever raises it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(mask_secrets(message))
