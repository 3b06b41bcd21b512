"""Pure: how a hidden author renders (found lines, job cards), and the gallery's page buttons
with the session view (round trips within Discord's limit; only what encoding makes)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.customid import CustomIdError, split
from bot.errors import UserFacingError
from bot.features.sharing import GALLERY_CODE, GalleryRef, decode_gallery, session_id_of
from bot.render import ANONYMOUS_ENTRY, JobCard, found_line, render_card
from storage.types import CURSOR_MAX_CHARS, GalleryItem, JobKind, JobStatus, Visibility

ITEM = GalleryItem(
    job_id="abc123def456",
    owner_id=42,
    guild_id=8,
    channel_id=7,
    message_id=6,
    prompt="a harbour",
    image_ref="abc123def456/grid.png",
    like_count=3,
    created_at=datetime(2030, 1, 1, tzinfo=UTC),
    visibility=Visibility.PUBLIC,
    kind=JobKind.IMAGINE,
    mode="fast",
    model="tiny",
    aspect="1:1",
    parent_id=None,
    published_at=None,
    session_id="zzzzzzzzzzzz",
)


def test_a_hidden_author_is_named_nowhere_in_a_found_line_or_a_card() -> None:
    assert "by <@42>" in found_line("1.", ITEM, 80)
    hidden = found_line("1.", replace(ITEM, owner_id=None), 80)
    assert ANONYMOUS_ENTRY in hidden and "<@" not in hidden and "\u2764 3" in hidden
    card = JobCard("abc123def456", 42, "a harbour", "imagine", "--seed 7", JobStatus.SUCCEEDED)
    assert "<@42>" in render_card(card)
    shown = render_card(replace(card, author_hidden=True))
    assert ANONYMOUS_ENTRY in shown and "<@42>" not in shown and "done" in shown


@pytest.mark.parametrize(
    "ref",
    [
        GalleryRef("s", None, None, "0123456789ab"),
        GalleryRef("s", None, "a" + "z" * 13 + "." + "z" * 13, "zzzzzzzzzzzz"),
        GalleryRef("b", 2**63 - 1, "b1"),
        GalleryRef("r", None, None),
    ],
)
def test_gallery_buttons_round_trip_within_discords_limit(ref: GalleryRef) -> None:
    value = ref.encode()
    assert len(value) <= 100 and decode_gallery(*split(value)) == ref
    assert ref.cursor is None or len(ref.cursor) <= CURSOR_MAX_CHARS


@given(st.text(alphabet="sbrz019:.aAuU", max_size=40))
def test_gallery_buttons_accept_only_what_they_encode(payload: str) -> None:
    try:
        ref = decode_gallery(GALLERY_CODE, payload)
    except CustomIdError:
        return
    assert split(ref.encode())[1] == payload


def test_a_typed_session_id_is_checked_at_the_edge() -> None:
    assert session_id_of("  ZZZZZZZZZZZZ ") == "zzzzzzzzzzzz"
    for bad in ("", "zzz", "uuuuuuuuuuuu", "../../etc/pa", "z" * 13):
        with pytest.raises(UserFacingError, match="12 letters and digits"):
            session_id_of(bad)
