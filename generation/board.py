"""A session's board as one image: a title, the ranked entries (picture, place, author, votes)
and a footer line (the tie rule). Torch-free (PIL only), like ``generation.grid``.

Used for a round's board (its top entries) and the best-of board (every round's winner). The
text is drawn with Pillow's bundled font (FreeType), so nothing is read from the system; any
text is shortened to its cell, never wrapped past it. Characters the font lacks show as boxes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

#: The most entries one board shows (the best-of of ten rounds; a round shows its top few).
MAX_CELLS = 10
#: Columns of cells, and each picture's side in pixels.
BOARD_COLUMNS = 5
BOARD_CELL = 240
_PAD = 16
_TITLE = 30
_TEXT = 18
_SMALL = 15
_BACKGROUND = (24, 24, 28)
_CARD = (40, 40, 46)
_GOLD, _SILVER, _BRONZE = (232, 186, 60), (192, 192, 200), (205, 127, 50)
_WHITE, _GREY = (240, 240, 240), (160, 160, 170)


@dataclass(frozen=True)
class BoardCell:
    """One ranked entry: its picture (encoded bytes; None: missing), its place (1-based), a
    caption (the author, or the round for the best-of) and its votes."""

    image: bytes | None
    place: int
    caption: str
    votes: int
    #: A second line (e.g. the round's theme on the best-of board).
    detail: str = ""


def render_board(title: str, cells: Sequence[BoardCell], footer: str = "") -> bytes:
    """The board as a PNG. An empty ``cells`` is a board that says no entry was made.
    Raises ValueError for more than ``MAX_CELLS`` cells or a place below 1."""
    if len(cells) > MAX_CELLS:
        raise ValueError(f"a board shows at most {MAX_CELLS} entries (got {len(cells)})")
    if any(cell.place < 1 for cell in cells):
        raise ValueError("places start at 1")
    title_font = ImageFont.load_default(size=_TITLE)
    text_font = ImageFont.load_default(size=_TEXT)
    small_font = ImageFont.load_default(size=_SMALL)
    columns = max(1, min(BOARD_COLUMNS, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    caption_height = _TEXT + _SMALL * 2 + 26
    cell_height = BOARD_CELL + caption_height
    width = max(columns * (BOARD_CELL + _PAD) + _PAD, 560)
    height = _PAD * 2 + _TITLE + 12 + rows * (cell_height + _PAD) + (_SMALL + _PAD if footer else 0)
    board = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(board)
    draw.text((_PAD, _PAD), _fit(draw, title, title_font, width - 2 * _PAD), _WHITE, title_font)
    top = _PAD * 2 + _TITLE + 12
    if not cells:
        draw.text((_PAD, top + BOARD_CELL // 2), "No entries this time.", _GREY, text_font)
    left_margin = (width - (columns * (BOARD_CELL + _PAD) - _PAD)) // 2
    for index, cell in enumerate(cells):
        x = left_margin + (index % columns) * (BOARD_CELL + _PAD)
        y = top + (index // columns) * (cell_height + _PAD)
        draw.rectangle((x, y, x + BOARD_CELL - 1, y + cell_height - 1), fill=_CARD)
        if cell.image is not None:
            with Image.open(io.BytesIO(cell.image)) as image:
                small = image.convert("RGB")
                small.thumbnail((BOARD_CELL, BOARD_CELL))
                board.paste(
                    small,
                    (x + (BOARD_CELL - small.width) // 2, y + (BOARD_CELL - small.height) // 2),
                )
        colour = {1: _GOLD, 2: _SILVER, 3: _BRONZE}.get(cell.place, _GREY)
        badge = f"#{cell.place}"
        badge_width = int(draw.textlength(badge, font=text_font)) + 14
        draw.rectangle((x + 6, y + 6, x + 6 + badge_width, y + 6 + _TEXT + 10), fill=colour)
        draw.text((x + 13, y + 10), badge, (0, 0, 0), text_font)
        text_x, text_y = x + 8, y + BOARD_CELL + 6
        inner = BOARD_CELL - 16
        draw.text((text_x, text_y), _fit(draw, cell.caption, text_font, inner), _WHITE, text_font)
        votes = f"{cell.votes} vote" + ("" if cell.votes == 1 else "s")
        draw.text((text_x, text_y + _TEXT + 6), votes, colour, small_font)
        if cell.detail:
            detail = _fit(draw, cell.detail, small_font, inner)
            draw.text((text_x, text_y + _TEXT + _SMALL + 10), detail, _GREY, small_font)
    if footer:
        draw.text(
            (_PAD, height - _PAD - _SMALL),
            _fit(draw, footer, small_font, width - 2 * _PAD),
            _GREY,
            small_font,
        )
    buffer = io.BytesIO()
    board.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> str:
    """``text`` on one line, shortened with an ellipsis to ``width`` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "\u2026"
