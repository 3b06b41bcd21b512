"""Pure bot logic: custom_id encoding and message rendering. Plain values, no Discord."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.customid import Action, ButtonRef, CustomIdError, decode
from bot.render import JobCard, escape, grid_buttons, render_card, single_buttons


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
    base = dict(
        job_id="abc123def456",
        owner_id=42,
        prompt="a cat @everyone",
        label="imagine",
        options="--ar 3:2 --seed 7",
    )
    queued = render_card(JobCard(**base, status="queued", position=3, eta_seconds=40))
    assert "position 3" in queued and "about 40 s" in queued and "<@42>" in queued
    assert "@everyone" not in queued
    running = render_card(JobCard(**base, status="running", step=5, total_steps=10))
    assert "50%" in running
    assert "done" in render_card(JobCard(**base, status="succeeded"))
    failed = render_card(JobCard(**base, status="failed", error="out of memory"))
    assert "out of memory" in failed and "nothing was charged" in failed
    long = render_card(JobCard(**{**base, "prompt": "x" * 5000}, status="queued"))
    assert len(long) <= 2000
