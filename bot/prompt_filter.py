"""Refused terms: which words a server (or the operator) does not allow in prompts.

Pure: no Discord, no database. Matching is on words, after normalising both sides the same way
(Unicode NFKC, case folding, punctuation and weight syntax as spaces), so ``NSFW``, ``(nsfw:1.4)``
and ``ｎｓｆｗ`` all match the term ``nsfw`` while ``classic`` does not match ``ass``. A term may be
a phrase (``blood bath``) and may end in ``*`` to match any word it starts (``gor*``).

It is a deterrent, not a guarantee: spellings made to dodge a list (``n s f w``, look-alike
letters) pass, which is why moderators also have /block.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

MAX_TERM_CHARS = 60
_NOT_WORD = re.compile(r"[\W_]+")


class TermError(ValueError):
    """A term that cannot be added; the message says why and what is allowed."""


def normalise(text: str) -> str:
    """Words of ``text`` as matching sees them: NFKC, case-folded, joined by single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def parse_term(raw: str) -> str:
    """A term as stored: normalised, with its trailing ``*`` kept. Raises TermError."""
    text = raw.strip()
    prefix = text.endswith("*")
    words = normalise(text.rstrip("*"))
    if not words:
        raise TermError(
            f"{raw.strip()!r} has no letters or digits to match; a term is a word or phrase, "
            "optionally ending in * to match words that start with it"
        )
    if "*" in text.rstrip("*"):
        raise TermError(f"{raw.strip()!r}: * may only end a term (as in gor*)")
    if len(words) > MAX_TERM_CHARS:
        raise TermError(
            f"a term may have at most {MAX_TERM_CHARS} characters; this one has {len(words)}"
        )
    return words + ("*" if prefix else "")


@dataclass(frozen=True)
class TermFilter:
    """A set of parsed terms, compiled into one pattern over normalised text."""

    terms: tuple[str, ...]

    @classmethod
    def of(cls, *term_lists: Iterable[str]) -> TermFilter:
        """The union of already-parsed term lists (operator's and server's)."""
        return cls(tuple(sorted({term for terms in term_lists for term in terms})))

    def find(self, text: str) -> str | None:
        """The first term ``text`` contains (as stored, e.g. ``gor*``), or None."""
        if not self.terms:
            return None
        match = self._pattern.search(normalise(text))
        if match is None or match.lastgroup is None:
            return None
        return self.terms[int(match.lastgroup.removeprefix("t"))]

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        alternatives = []
        for index, term in enumerate(self.terms):
            body = re.escape(term.rstrip("*"))
            tail = r"\w*" if term.endswith("*") else ""
            alternatives.append(f"(?P<t{index}>(?<!\\w){body}{tail}(?!\\w))")
        return re.compile("|".join(alternatives))
