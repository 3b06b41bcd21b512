"""Search text as members type it, parsed into terms, and written out for each backend.

The syntax is small: words (all must match), ``"quoted phrases"`` (words next to each other,
in order) and a trailing ``*`` for a prefix (``lig*``, ``"neon li"*``). Everything else is text:
operators (AND, OR, NOT, NEAR), parentheses, colons, carets and stray quotes carry no meaning,
and never reach FTS5's MATCH or PostgreSQL's ``to_tsquery`` as syntax. A word is a run of
letters and digits (``[^\\W_]+``): punctuation splits words, and a word with punctuation inside
(``sci-fi``) is searched as the phrase of its parts, as the index split it.

Pure: no database. The writers emit only quoted tokens made of letters and digits, so no
input can change the structure of the query they build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.errors import BadSearchQuery

#: The longest search text accepted, and the most terms (words or phrases) it may hold.
MAX_QUERY_CHARS = 1000
MAX_TERMS = 16
#: The most words in one phrase (a longer one would be an unselective full scan anyway).
MAX_PHRASE_WORDS = 16

_WORD = re.compile(r"[^\W_]+")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\uff02": '"'})


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear next to each other in this order (one word: anywhere); with
    ``prefix`` the last one may be the start of a longer word."""

    words: tuple[str, ...]
    prefix: bool = False


def parse_query(text: str) -> tuple[Term, ...]:
    """The terms of ``text`` (empty when it holds no words). Raises BadSearchQuery when it is
    longer than MAX_QUERY_CHARS or holds more than MAX_TERMS terms."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadSearchQuery(
            f"a search is at most {MAX_QUERY_CHARS} characters (this one has {len(text)})"
        )
    if "\x00" in text or not _encodable(text):
        raise BadSearchQuery("a search cannot contain that character")
    terms: list[Term] = []
    text = text.translate(_QUOTES)
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] == '"':
            end = text.find('"', i + 1)
            body = text[i + 1 :] if end < 0 else text[i + 1 : end]
            i = len(text) if end < 0 else end + 1
            prefix = i < len(text) and text[i] == "*"
            i += 1 if prefix else 0
            _add(terms, body, prefix)
            continue
        end = i
        while end < len(text) and not text[end].isspace() and text[end] != '"':
            end += 1
        chunk = text[i:end]
        i = end
        _add(terms, chunk, chunk.endswith("*") and _WORD.search(chunk[-2:-1] or "") is not None)
    if len(terms) > MAX_TERMS:
        raise BadSearchQuery(f"a search has at most {MAX_TERMS} words or phrases")
    return tuple(terms)


def _encodable(text: str) -> bool:
    """False for text UTF-8 cannot carry (a lone surrogate from a JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _add(terms: list[Term], text: str, prefix: bool) -> None:
    words = tuple(_WORD.findall(text))
    if not words:
        return
    if len(words) > MAX_PHRASE_WORDS:
        raise BadSearchQuery(f"a quoted phrase has at most {MAX_PHRASE_WORDS} words")
    terms.append(Term(words, prefix))


def fts5_match(terms: tuple[Term, ...]) -> str:
    """An FTS5 MATCH expression: each term a quoted string (a phrase), ``*`` for a prefix,
    joined by spaces (FTS5's implicit AND). Tokens hold no quotes, so nothing escapes."""
    return " ".join('"' + " ".join(t.words) + '"' + ("*" if t.prefix else "") for t in terms)


def pg_tsquery(terms: tuple[Term, ...]) -> str:
    """``to_tsquery`` text: each word a quoted lexeme, words of a phrase joined by ``<->``,
    ``:*`` on a prefix's last word, terms joined by ``&``."""
    parts = []
    for term in terms:
        lexemes = [f"'{word}'" for word in term.words]
        if term.prefix:
            lexemes[-1] += ":*"
        phrase = " <-> ".join(lexemes)
        parts.append(f"({phrase})" if len(lexemes) > 1 else phrase)
    return " & ".join(parts)
