"""One router for every button Atelier posts.

discord.py runs every ``DynamicItem`` whose template matches a click, so two catch-all templates
would answer the same click twice. Atelier therefore registers exactly one: a template that
matches any custom_id, so a forged or stale one still reaches us and gets an ephemeral explanation
instead of Discord's "This interaction failed". The router then dispatches on the custom_id's code
(``atl:1:<code>:...``) to the route a feature registered for it. A feature's buttons are one
registration::

    router.add(Route(codes=frozenset({"lk"}), decode=decode_like, handle=self.on_like))

Every button is stateless: its state is looked up in the database when it is clicked, so buttons
work after a restart and days later. Errors raised by a route go through ``reply_error``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import discord

from bot.actions import ButtonStyle
from bot.customid import CustomIdError, split
from bot.errors import reply_error

log = logging.getLogger(__name__)

RefT = TypeVar("RefT")
Interaction = discord.Interaction[Any]


@dataclass(frozen=True)
class Route(Generic[RefT]):
    """Buttons whose custom_id code is in ``codes``: how to parse them and what a click does."""

    codes: frozenset[str]
    #: (code, payload) -> a typed reference; raises CustomIdError for anything it did not make.
    decode: Callable[[str, str], RefT]
    handle: Callable[[Interaction, RefT], Awaitable[None]]

    async def dispatch(self, interaction: Interaction, code: str, payload: str) -> None:
        await self.handle(interaction, self.decode(code, payload))


@dataclass(frozen=True)
class ModalRoute(Generic[RefT]):
    """Modals (forms) whose custom_id code is ``code``: how to parse the custom_id's payload and
    what a submit does with the fields' values (input custom_id -> text)."""

    code: str
    decode: Callable[[str], RefT]
    handle: Callable[[Interaction, RefT, dict[str, str]], Awaitable[None]]


class ButtonRouter:
    """custom_id code -> route, and the one DynamicItem class that feeds it; modal submits too.

    Modals are stateless like buttons: everything a submit needs is in its custom_id and the
    database, and discord.py never holds them (``send_modal``), so a form opened before a
    restart, or an hour ago, still submits.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route[Any]] = {}
        self._modals: dict[str, ModalRoute[Any]] = {}
        self.item_class = self._make_item_class()

    def add_modal(self, route: ModalRoute[Any]) -> None:
        """Register a feature's forms; a code may belong to one route only."""
        if route.code in self._modals or route.code in self._routes:
            raise ValueError(f"code already routed: {route.code}")
        self._modals[route.code] = route

    async def send_modal(self, interaction: Interaction, modal: discord.ui.Modal) -> None:
        """Open ``modal`` as the answer to ``interaction`` without discord.py keeping it (a
        stopped modal is not stored): its submit reaches ``dispatch_modal`` through the bot's
        ``on_interaction``, whenever it comes."""
        modal.stop()
        await interaction.response.send_modal(modal)

    async def dispatch_modal(self, interaction: Interaction) -> None:
        """Answer one modal submit: the route's handler, or an explanation."""
        data: dict[str, Any] = dict(interaction.data or {})
        try:
            code, payload = split(str(data.get("custom_id", "")))
            route = self._modals.get(code)
            if route is None:
                raise CustomIdError("this form was not made by this version of Atelier")
            await route.handle(interaction, route.decode(payload), modal_values(data))
        except Exception as exc:  # noqa: BLE001 - reply_error logs what is not a user error
            await reply_error(interaction, exc)

    def add(self, route: Route[Any]) -> None:
        """Register a feature's buttons; a code may belong to one route only."""
        taken = route.codes & self._routes.keys()
        if taken:
            raise ValueError(f"button codes already routed: {sorted(taken)}")
        for code in route.codes:
            self._routes[code] = route

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(self._routes)

    async def dispatch(self, interaction: Interaction, custom_id: str) -> None:
        """Answer one click: the route's handler, or an explanation for a custom_id we did not
        make. Every error is answered through ``reply_error``."""
        try:
            code, payload = split(custom_id)
            route = self._routes.get(code)
            if route is None:
                raise CustomIdError("this button asks for an action Atelier does not know")
            await route.dispatch(interaction, code, payload)
        except Exception as exc:  # noqa: BLE001 - reply_error logs what is not a user error
            await reply_error(interaction, exc)

    def button(
        self, label: str, custom_id: str, *, style: ButtonStyle = "secondary", row: int = 0
    ) -> discord.ui.DynamicItem[discord.ui.Button[Any]]:
        """A button to post. It is an instance of the router's DynamicItem class, so discord.py
        keeps no per-message view for it and routes its clicks here, now and after a restart."""
        item = self.item_class(
            discord.ui.Button(label=label, custom_id=custom_id, style=discord.ButtonStyle[style])
        )
        item.item.row = row
        return item

    def view(self, rows: Iterable[Iterable[tuple[str, str]]]) -> discord.ui.View:
        """A timeout-free view of ``(label, custom_id)`` buttons, laid out row by row."""
        view = discord.ui.View(timeout=None)
        for index, row in enumerate(rows):
            for label, custom_id in row:
                view.add_item(self.button(label, custom_id, row=index))
        return view

    def _make_item_class(self) -> type[discord.ui.DynamicItem[discord.ui.Button[Any]]]:
        router = self

        class RoutedButton(
            discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(r".{1,100}")
        ):
            """Any button of ours; a click is dispatched by the router that made this class."""

            def __init__(self, item: discord.ui.Button[Any]) -> None:
                super().__init__(item)

            @classmethod
            async def from_custom_id(
                cls,
                interaction: Interaction,
                item: discord.ui.Item[Any],
                match: re.Match[str],
                /,
            ) -> RoutedButton:
                label = getattr(item, "label", None) or "?"
                return cls(discord.ui.Button(label=label, custom_id=match.group(0)))

            async def callback(self, interaction: Interaction) -> None:
                await router.dispatch(interaction, self.item.custom_id or "")

        return RoutedButton


def modal_values(data: dict[str, Any]) -> dict[str, str]:
    """A modal submit's text values by input custom_id (inputs come inside action rows, or
    inside labels in Discord's newer layout)."""
    values: dict[str, str] = {}
    stack = list(data.get("components") or [])
    while stack:
        component = stack.pop()
        if not isinstance(component, dict):
            continue
        if "value" in component and "custom_id" in component:
            values[str(component["custom_id"])] = str(component["value"])
        stack.extend(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            stack.append(component["component"])
    return values
