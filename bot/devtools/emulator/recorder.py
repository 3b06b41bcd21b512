"""What the bot sent and received, kept for tests to query and await.

Every REST request, every gateway frame in either direction and every broken Discord rule is
appended here. Waiting is event-driven: each change fires ``ChangeSignal`` and waiters re-check
their predicate, so nothing polls on a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

JSON = dict[str, Any]
T = TypeVar("T")

AuthState = Literal["valid", "invalid", "missing"]
Direction = Literal["sent", "received"]


class ChangeSignal:
    """Wakes every waiter whenever the emulator's state changes.

    ``changed()`` is synchronous so any code path can call it; waiters hold the current event,
    which ``changed()`` sets and replaces.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(
        self,
        probe: Callable[[], T | None],
        timeout: float,  # noqa: ASYNC109
        describe: Callable[[], str],
    ) -> T:
        """Return the first non-``None`` result of ``probe``, re-checked after each change.

        The waits take a ``timeout`` (rather than leaving it to ``asyncio.timeout``) so that a
        failure says what was awaited, which is most of what a failing end-to-end test needs.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = probe()
                    if result is not None:
                        return result
                    await self._event.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {describe()}") from None


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    content_type: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def index(self) -> int | None:
        """``n`` of a ``files[n]`` field, else ``None``."""
        if self.field.startswith("files[") and self.field.endswith("]"):
            try:
                return int(self.field[6:-1])
            except ValueError:
                return None
        return None


@dataclass
class RecordedRequest:
    """One HTTP request the bot made, with the emulator's answer filled in once sent.

    ``headers`` keeps every header but hides the Authorization value; ``auth`` tells whether
    it was the expected ``Bot <token>``. ``json`` is the JSON body, or the parsed ``payload_json``
    of a multipart body.
    """

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, str]
    route: str | None
    template: str | None
    params: dict[str, str]
    headers: dict[str, str]
    auth: AuthState
    json: Any
    files: list[RecordedFile]
    status: int = 0
    response: Any = None
    fault_injected: bool = False
    #: Refused with a 429 by the emulator's rate limits (not an injected fault).
    rate_limited: bool = False

    @property
    def authorized(self) -> bool:
        return self.auth == "valid"

    @property
    def error_code(self) -> int | None:
        if self.status < 400 or not isinstance(self.response, dict):
            return None
        code = self.response.get("code")
        return code if isinstance(code, int) else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class GatewayFrame:
    """One gateway payload, decoded; ``sent`` means emulator to bot."""

    seq: int
    at: float
    connection_id: int
    direction: Direction
    payload: JSON

    @property
    def op(self) -> int | None:
        op = self.payload.get("op")
        return op if isinstance(op, int) else None

    @property
    def t(self) -> str | None:
        t = self.payload.get("t")
        return t if isinstance(t, str) else None

    @property
    def s(self) -> int | None:
        s = self.payload.get("s")
        return s if isinstance(s, int) else None

    @property
    def d(self) -> Any:
        return self.payload.get("d")


@dataclass(frozen=True)
class Violation:
    """A Discord rule the bot broke (or an emulator gap it hit, kind ``unknown_route``)."""

    kind: str
    message: str
    code: int | None = None
    request_seq: int | None = None
    interaction_id: int | None = None


@dataclass
class Recorder:
    """Append-only logs of requests, frames and violations, plus the signal that wakes waiters."""

    signal: ChangeSignal = field(default_factory=ChangeSignal)
    requests: list[RecordedRequest] = field(default_factory=list)
    frames: list[GatewayFrame] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    _request_counter: int = 0

    def next_request_seq(self) -> int:
        """Number a request when it arrives; it joins ``requests`` once answered."""
        self._request_counter += 1
        return self._request_counter

    def add_request(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        self.signal.changed()

    def add_frame(
        self, at: float, connection_id: int, direction: Direction, payload: JSON
    ) -> GatewayFrame:
        frame = GatewayFrame(len(self.frames) + 1, at, connection_id, direction, payload)
        self.frames.append(frame)
        self.signal.changed()
        return frame

    def add_violation(self, violation: Violation) -> None:
        self.violations.append(violation)
        self.signal.changed()

    def find_requests(
        self,
        *,
        route: str | None = None,
        method: str | None = None,
        status: int | None = None,
        since: int = 0,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Requests with ``seq > since`` matching every filter (``route``: name or template)."""
        return [
            r
            for r in self.requests
            if r.seq > since
            and (route is None or route in (r.route, r.template))
            and (method is None or r.method == method.upper())
            and (status is None or r.status == status)
            and (predicate is None or predicate(r))
        ]

    def find_frames(
        self,
        *,
        direction: Direction | None = None,
        op: int | None = None,
        t: str | None = None,
        since: int = 0,
        predicate: Callable[[GatewayFrame], bool] | None = None,
    ) -> list[GatewayFrame]:
        """Frames with ``seq > since`` matching every given filter."""
        return [
            f
            for f in self.frames
            if f.seq > since
            and (direction is None or f.direction == direction)
            and (op is None or f.op == op)
            and (t is None or f.t == t)
            and (predicate is None or predicate(f))
        ]
