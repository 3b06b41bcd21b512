"""The web gallery's input, parsed strictly (pure: no aiohttp, no database).

A path part that is not what the route names (an id with letters, a job id of the wrong
shape, an image number past the job's images) is a page that does not exist: ``None``, which the
handlers answer with 404. A query parameter with a bad value is the visitor's mistake:
``BadInput``, answered with 400 and a message that says what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from storage.search_syntax import MAX_QUERY_CHARS
from storage.types import CURSOR_MAX_CHARS, GalleryView

#: The largest id the database keeps (a signed 64-bit integer; Discord ids are far below it).
MAX_ID: Final = 2**63 - 1
#: The largest like count a cursor may carry (``jobs.like_count`` is a 32-bit integer).
MAX_LIKES: Final = 2**31 - 1
#: Search result pages a visitor may ask for (``storage.search.MAX_SEARCH_PAGES``).
MAX_SEARCH_PAGE: Final = 50

_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,18}")
_JOB_ID = re.compile(r"[0-9a-z]{4,16}")
#: A group session's id: 12 characters of Crockford's base32 (``storage.types.new_job_id``).
_SESSION_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{12}")
_INDEX = re.compile(r"0|[1-9][0-9]?")
_CURSOR = re.compile(r"[ab]([0-9a-z]{1,13})(?:\.([0-9a-z]{1,13}))?")
_PAGE = re.compile(r"[1-9][0-9]{0,2}")

VIEWS: Final = ("recent", "top")
WINDOWS: Final = {
    "week": GalleryView.TOP_WEEK,
    "month": GalleryView.TOP_MONTH,
    "all": GalleryView.TOP_ALL,
}


class BadInput(ValueError):
    """A query parameter the gallery cannot use; the message names what is allowed."""


def snowflake(text: str) -> int | None:
    """A server or member id from a path, or None."""
    if not _SNOWFLAKE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def job_id(text: str) -> str | None:
    """A job id from a path (lower-case letters and digits), or None."""
    return text if _JOB_ID.fullmatch(text) else None


def session_id(text: str) -> str | None:
    """A group session's id from a path, or None."""
    return text if _SESSION_ID.fullmatch(text) else None


def image_index(text: str) -> int | None:
    """Which image of a job (0, 1, ...) from a path, or None."""
    return int(text) if _INDEX.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class GalleryQuery:
    """What a gallery page shows: the view (``recent`` or ``top`` over a window) and where."""

    view: str
    window: str
    cursor: str | None

    @property
    def gallery_view(self) -> GalleryView:
        return GalleryView.RECENT if self.view == "recent" else WINDOWS[self.window]


def gallery_query(view: str | None, window: str | None, cursor: str | None) -> GalleryQuery:
    """``?view=recent|top&window=week|month|all&cursor=...`` (defaults: recent; top: week)."""
    view = "recent" if view is None else view
    if view not in VIEWS:
        raise BadInput(f"view must be one of {', '.join(VIEWS)} (got {_shown(view)})")
    if window is not None and view != "top":
        raise BadInput("window applies only to view=top")
    window = "week" if window is None else window
    if window not in WINDOWS:
        raise BadInput(f"window must be one of {', '.join(WINDOWS)} (got {_shown(window)})")
    check_cursor(cursor, width=2 if view == "top" else 1)
    return GalleryQuery(view, window, cursor)


def check_cursor(cursor: str | None, *, width: int) -> None:
    """A page link's cursor (``storage.gallery``): its shape, and numbers the database can
    hold (a cursor is untrusted; an out-of-range number must not reach a query)."""
    if cursor is None:
        return
    found = _CURSOR.fullmatch(cursor) if len(cursor) <= CURSOR_MAX_CHARS else None
    parts = [p for p in found.groups() if p is not None] if found else []
    if found is None or len(parts) != width:
        raise BadInput("this page link is not valid; open the gallery again")
    numbers = [int(p, 36) for p in parts]
    bounds = [MAX_LIKES, MAX_ID] if width == 2 else [MAX_ID]
    if any(n > bound for n, bound in zip(numbers, bounds, strict=True)):
        raise BadInput("this page link is not valid; open the gallery again")


def search_page(text: str | None) -> int:
    """``?page=N`` of search results, from 1 (the default) to MAX_SEARCH_PAGE."""
    if text is None:
        return 1
    if not _PAGE.fullmatch(text) or int(text) > MAX_SEARCH_PAGE:
        raise BadInput(f"page must be a number from 1 to {MAX_SEARCH_PAGE} (got {_shown(text)})")
    return int(text)


def search_text(text: str | None) -> str:
    """``?q=...``: at most MAX_QUERY_CHARS characters (the syntax is checked by storage)."""
    text = (text or "").strip()
    if len(text) > MAX_QUERY_CHARS:
        raise BadInput(f"a search may be at most {MAX_QUERY_CHARS} characters long")
    return text


def _shown(value: str) -> str:
    """A bad value quoted back, shortened (it is escaped where it is shown)."""
    return repr(value if len(value) <= 40 else value[:40] + "...")
