"""Refused terms: which words a server (or the operator) does not allow in prompts.

Pure: no Discord, no database. Matching is on words, after normalising both sides the same way
(Unicode compatibility forms, case folding, combining marks and invisible characters dropped,
punctuation and weight syntax as spaces), so ``NSFW``, ``(nsfw:1.4)``, ``ｎｓｆｗ``, ``nśfw`` and
``ns\u200bfw`` all match the term ``nsfw`` while ``classic`` does not match ``ass``. Cyrillic and
Greek letters that look Latin are read as Latin inside a Latin word (``nѕfw``), and in a word made
only of such letters within an otherwise Latin prompt; a genuine Cyrillic or Greek prompt is left
as it is. A term may be a phrase (``blood bath``) and may end in ``*`` to match any word it starts
(``gor*``).

It is a deterrent, not a guarantee: spellings made to dodge a list (``n s f w``, other look-alike
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


#: Cyrillic and Greek letters (case-folded) that look like a Latin letter.
_LOOK_ALIKES = {
    **dict(zip("авеёкмнорстухѕіїјԁԛԝһӏ", "abeekmhopctyxsiijdqwhl", strict=True)),
    **dict(zip("αβεηικνορτυχγωμς", "abenikvoptuxywus", strict=True)),
}
# Combining marks and format characters (zero-width, bidi controls, soft hyphen) are dropped.
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})


def normalise(text: str, *, look_alikes: bool = True) -> str:
    """Words of ``text`` as matching sees them: compatibility forms, case-folded, without
    combining marks or invisible characters, joined by single spaces. With ``look_alikes``,
    Cyrillic and Greek letters that look Latin are read as Latin where the text is Latin."""
    folded = unicodedata.normalize("NFKD", text).casefold()
    folded = "".join(c for c in folded if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    words = _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", folded)).split()
    if look_alikes:
        words = _fold_look_alikes(words)
    return " ".join(words)


def _fold_look_alikes(words: list[str]) -> list[str]:
    """Map look-alike letters to Latin in words that mix Latin with Cyrillic or Greek, and in
    words made only of look-alikes when the text has Latin words and no genuine Cyrillic or
    Greek one (a genuine word has a letter with no Latin look-alike)."""
    latin = [any(_is_latin(c) for c in word) for word in words]
    other = [[c for c in word if _is_cyrillic_or_greek(c)] for word in words]
    genuine = any(any(c not in _LOOK_ALIKES for c in letters) for letters in other)
    latin_text = any(
        is_latin and not letters for is_latin, letters in zip(latin, other, strict=True)
    )
    folded = []
    for word, is_latin, letters in zip(words, latin, other, strict=True):
        if letters and (is_latin or (latin_text and not genuine)):
            word = "".join(_LOOK_ALIKES.get(c, c) for c in word)
        folded.append(word)
    return folded


def _is_latin(char: str) -> bool:
    return char.isalpha() and unicodedata.name(char, "").startswith("LATIN")


def _is_cyrillic_or_greek(char: str) -> bool:
    return "\u0370" <= char <= "\u052f" or "\u1f00" <= char <= "\u1fff"


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
        """The first term ``text`` contains (as stored, e.g. ``gor*``), or None.

        ``text`` is read with and without look-alike folding, so a Cyrillic term still matches
        a Cyrillic word in a mostly Latin prompt."""
        if not self.terms:
            return None
        for normalised in (normalise(text), normalise(text, look_alikes=False)):
            match = self._pattern.search(normalised)
            if match is not None and match.lastgroup is not None:
                return self.terms[int(match.lastgroup.removeprefix("t"))]
        return None

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        alternatives = []
        for index, term in enumerate(self.terms):
            body = re.escape(term.rstrip("*"))
            tail = r"\w*" if term.endswith("*") else ""
            alternatives.append(f"(?P<t{index}>(?<!\\w){body}{tail}(?!\\w))")
        return re.compile("|".join(alternatives))
