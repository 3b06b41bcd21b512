"""A session's board image: layout, places, shortening, bounds."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.board import BOARD_CELL, MAX_CELLS, BoardCell, render_board


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (512, 384)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_round_board_shows_each_entry_with_its_picture_and_place() -> None:
    cells = [
        BoardCell(_png((200, 30, 30)), 1, "ada", 5),
        BoardCell(_png((30, 200, 30)), 2, "grace", 3),
        BoardCell(None, 3, "linus", 3),
    ]
    data = render_board("Round 1: lighthouses", cells, "Ties: the earlier entry ranks higher.")
    with Image.open(io.BytesIO(data)) as board:
        assert board.format == "PNG"
        image = board.convert("RGB")
    width, height = image.size
    assert height > BOARD_CELL and width >= 3 * BOARD_CELL
    # The first picture's centre is red, the second's green; the missing one stays the card's.
    left = (width - (3 * (BOARD_CELL + 16) - 16)) // 2
    top = 16 * 2 + 30 + 12
    centre = top + BOARD_CELL // 2
    red = image.getpixel((left + BOARD_CELL // 2, centre))
    green = image.getpixel((left + BOARD_CELL + 16 + BOARD_CELL // 2, centre))
    empty = image.getpixel((left + 2 * (BOARD_CELL + 16) + BOARD_CELL // 2, centre))
    assert isinstance(red, tuple) and red[0] > 150 and red[1] < 80
    assert isinstance(green, tuple) and green[1] > 150 and green[0] < 80
    assert empty == (40, 40, 46)


def test_long_text_is_shortened_and_an_empty_board_says_so() -> None:
    long = "a very long member name " * 20
    data = render_board("t" * 500, [BoardCell(_png((9, 9, 9)), 1, long, 1, detail=long)])
    assert Image.open(io.BytesIO(data)).size[0] < 1000
    empty = render_board("Round 2", [])
    assert Image.open(io.BytesIO(empty)).size[1] > 100


def test_bounds_are_named() -> None:
    too_many = [BoardCell(None, n + 1, "x", 0) for n in range(MAX_CELLS + 1)]
    with pytest.raises(ValueError, match="at most 10"):
        render_board("x", too_many)
    with pytest.raises(ValueError, match="start at 1"):
        render_board("x", [BoardCell(None, 0, "x", 0)])
