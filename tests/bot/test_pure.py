"""Pure bot logic: custom_id encoding and message rendering. Plain values, no Discord."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.customid import (
    Action,
    ButtonRef,
    CustomIdError,
    ModlogPageRef,
    decode,
    decode_modlog_page,
    split,
)
from bot.render import JobCard, escape, grid_buttons, job_buttons, render_card, single_buttons
from storage.types import JobStatus


def test_round_trip_and_length() -> None:
    for rows in (grid_buttons("abc123def456"), single_buttons("abc123def456")):
        for row in rows:
            assert len(row) <= 5
            for label, ref in row:
                custom_id = ref.encode()
                assert len(custom_id) <= 100 and len(label) <= 80
                assert decode(custom_id) == ref


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "atl:1:u:abc123def456:5",
        "atl:2:u:abc123def456:1",
        "atl:1:zz:abc123def456:1",
        "atl:1:u:ABC123DEF456:1",
        "atl:1:r:abc123def456:1",
        "atl:1:u:abc123def456:0",
        "atl:1:u:abc/../x:1",
        "atl:1:u:abc123def456:1 ",
        "atl:1:u:" + "a" * 40 + ":1",
    ],
)
def test_forged_ids_are_refused(forged: str) -> None:
    with pytest.raises(CustomIdError):
        decode(forged)


@given(st.text(max_size=120))
def test_decode_never_crashes(text: str) -> None:
    try:
        ref = decode(text)
    except CustomIdError:
        return
    assert ref.encode() == text


def test_encode_refuses_bad_refs() -> None:
    with pytest.raises(CustomIdError):
        ButtonRef(Action.SELECT, "x/y", 1).encode()


def test_everyone_cannot_ping() -> None:
    text = escape("hi @everyone and @here and <@123456789012345678> **bold**")
    assert "@everyone" not in text and "@here" not in text
    assert "<@123456789012345678>" not in text and "**" not in text


def test_cards_for_every_status() -> None:
    base = JobCard(
        job_id="abc123def456",
        owner_id=42,
        prompt="a cat @everyone",
        label="imagine",
        options="--ar 3:2 --seed 7",
        status=JobStatus.QUEUED,
    )
    queued = render_card(replace(base, status=JobStatus.QUEUED, position=3, eta_seconds=40))
    assert "position 3" in queued and "about 40 s" in queued and "<@42>" in queued
    assert "@everyone" not in queued
    running = render_card(replace(base, status=JobStatus.RUNNING, step=5, total_steps=10))
    assert "50%" in running
    assert "done" in render_card(replace(base, status=JobStatus.SUCCEEDED))
    failed = render_card(replace(base, status=JobStatus.FAILED, error="out of memory"))
    assert "out of memory" in failed and "nothing was charged" in failed
    long = render_card(replace(base, prompt="x" * 5000, status=JobStatus.QUEUED))
    assert len(long) <= 2000


def test_the_action_table_defines_every_button_once() -> None:
    from bot.actions import Action, Layout

    assert len(Action.codes()) == len(Action)
    for layout in Layout:
        rows = job_buttons("abc123def456", layout)
        shown = [ref.action for row in rows for _, ref in row]
        assert set(shown) == {a for a in Action if a.spec.layout is layout}
        assert all(len(row) <= 5 for row in rows) and len(rows) <= 5


def test_info_renders_links_timestamps_and_no_raw_status_strings() -> None:
    from datetime import UTC, datetime

    from bot.render import JobLine, render_info
    from storage.types import JobKind, JobStatus, QuotaReadout

    readout = QuotaReadout(
        scope="user",
        allowance=100,
        used=10,
        reserved=5,
        remaining=85,
        resets_at=datetime(2030, 1, 1, tzinfo=UTC),
        window_seconds=86400,
    )
    job = JobLine("abc123def456", JobKind.IMAGINE, JobStatus.RUNNING, 8, 7, 6)
    text = render_info(readout, [job])
    assert f"<t:{int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())}:R>" in text
    assert "https://discord.com/channels/8/7/6" in text and "imagine running" in text
    assert "per 24 h" in text


@pytest.mark.parametrize(
    "ref",
    [
        ModlogPageRef(800, older=True, anchor=12),
        ModlogPageRef(2**63 - 1, older=False, anchor=2**63 - 1, member=2**63 - 1, job="a" * 16),
    ],
)
def test_modlog_page_buttons_round_trip_within_discords_limit(ref: ModlogPageRef) -> None:
    value = ref.encode()
    assert len(value) <= 100 and decode_modlog_page(*split(value)) == ref


@pytest.mark.parametrize(
    "payload",
    [
        "800:o:0::",
        "800:o:1:0:",
        "800:x:1::",
        "800:o:1::ABC",
        "800:o:1::" + "a" * 17,
        "9" * 20 + ":o:1::",
    ],
)
def test_modlog_page_buttons_accept_only_what_they_encode(payload: str) -> None:
    with pytest.raises(CustomIdError):
        decode_modlog_page("ml", payload)
