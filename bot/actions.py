"""Job button actions: the one table. Pure.

Each action is defined once, here: its custom_id code, label, style, the kind of job it makes,
the operation that job runs, whether the remix editor applies, and which job messages show it
(where, in which row, for which images). Everything else (the button layouts, custom_id parsing,
the acknowledgement text, the intake's follow-up request) reads this table. Adding an action is
one member here plus, if its job is made differently, a branch in the intake.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Literal

from generation.request import GRID_SIZE, Operation
from storage.types import JobKind

ButtonStyle = Literal["primary", "secondary", "success", "danger"]


class Layout(StrEnum):
    """Which job messages show an action: a 2x2 grid, or one image alone."""

    GRID = "grid"
    SINGLE = "single"


GRID_INDEXES = tuple(range(1, GRID_SIZE + 1))


@dataclass(frozen=True)
class ActionSpec:
    """One button action. ``label`` and ``announce`` may use ``{index}`` (the image number)."""

    code: str  # in the custom_id: atl:1:<code>:<job>:<index>
    label: str
    announce: str  # the clicker's acknowledgement: "<announce>: job `...`."
    kind: JobKind
    #: The follow-up's operation; None: the clicker's variation setting (subtle or strong).
    #: IMAGINE: the same request with a new seed (re-roll).
    operation: Operation | None
    remix: bool  # with remix on, the editor opens before the job is queued
    layout: Layout
    row: int
    indexes: tuple[int, ...]  # one button per index; 0 is the whole job
    style: ButtonStyle = "secondary"


class Action(Enum):
    """Every job button Atelier posts, in display order."""

    SELECT = ActionSpec(
        code="u",
        label="U{index}",
        announce="Image {index}",
        kind=JobKind.SELECT,
        operation=Operation.SELECT,
        remix=False,
        layout=Layout.GRID,
        row=0,
        indexes=GRID_INDEXES,
    )
    VARY = ActionSpec(
        code="v",
        label="V{index}",
        announce="Variations of image {index}",
        kind=JobKind.VARIATION,
        operation=None,
        remix=True,
        layout=Layout.GRID,
        row=1,
        indexes=GRID_INDEXES,
    )
    REROLL = ActionSpec(
        code="r",
        label="\U0001f504",
        announce="Re-roll",
        kind=JobKind.REROLL,
        operation=Operation.IMAGINE,
        remix=False,
        layout=Layout.GRID,
        row=1,
        indexes=(0,),
    )
    UPSCALE_SUBTLE = ActionSpec(
        code="us",
        label="Upscale (Subtle)",
        announce="Upscale (Subtle)",
        kind=JobKind.UPSCALE,
        operation=Operation.UPSCALE_SUBTLE,
        remix=False,
        layout=Layout.SINGLE,
        row=0,
        indexes=(1,),
    )
    UPSCALE_CREATIVE = ActionSpec(
        code="uc",
        label="Upscale (Creative)",
        announce="Upscale (Creative)",
        kind=JobKind.UPSCALE,
        operation=Operation.UPSCALE_CREATIVE,
        remix=False,
        layout=Layout.SINGLE,
        row=0,
        indexes=(1,),
    )
    VARY_SUBTLE = ActionSpec(
        code="vs",
        label="Vary (Subtle)",
        announce="Vary (Subtle)",
        kind=JobKind.VARIATION,
        operation=Operation.VARY_SUBTLE,
        remix=True,
        layout=Layout.SINGLE,
        row=0,
        indexes=(1,),
    )
    VARY_STRONG = ActionSpec(
        code="vg",
        label="Vary (Strong)",
        announce="Vary (Strong)",
        kind=JobKind.VARIATION,
        operation=Operation.VARY_STRONG,
        remix=True,
        layout=Layout.SINGLE,
        row=0,
        indexes=(1,),
    )

    @property
    def spec(self) -> ActionSpec:
        value: ActionSpec = self.value
        return value

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def indexes(self) -> tuple[int, ...]:
        return self.spec.indexes

    def label(self, index: int) -> str:
        return self.spec.label.format(index=index)

    def announce(self, index: int) -> str:
        return self.spec.announce.format(index=index)

    @classmethod
    def by_code(cls, code: str) -> Action | None:
        return _BY_CODE.get(code)

    @classmethod
    def codes(cls) -> frozenset[str]:
        return frozenset(_BY_CODE)


_BY_CODE = {action.code: action for action in Action}
assert len(_BY_CODE) == len(Action), "two job actions share a custom_id code"


def layout_of(image_count: int) -> Layout:
    """Grids (imagine, variations) get the grid's buttons; single images (selects, upscales, a
    session's entries) the single ones."""
    return Layout.GRID if image_count == GRID_SIZE else Layout.SINGLE
