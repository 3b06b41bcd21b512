"""The gateway half of the emulator: the websocket discord.py keeps open.

Implements what discord.py 2.7.1 does on the wire: ``?v=10&encoding=json&compress=zlib-stream``
(one zlib stream per connection, each frame ending in a ``Z_SYNC_FLUSH``), HELLO, heartbeats
and their ACKs, IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay + RESUMED, RECONNECT and
INVALID_SESSION. A session outlives its connection: events dispatched while the bot is
disconnected are buffered and replayed when it resumes, with their original sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .errors import EmulatorUsageError
from .models import EmuGuild
from .recorder import Recorder
from .state import EmulatorState

JSON = dict[str, Any]

# Opcodes
DISPATCH = 0
HEARTBEAT = 1
IDENTIFY = 2
PRESENCE_UPDATE = 3
VOICE_STATE_UPDATE = 4
RESUME = 6
RECONNECT = 7
REQUEST_GUILD_MEMBERS = 8
INVALID_SESSION = 9
HELLO = 10
HEARTBEAT_ACK = 11

# GUILD_MEMBERS, GUILD_PRESENCES and MESSAGE_CONTENT
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)

# Close codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes)
UNKNOWN_ERROR = 4000
UNKNOWN_OPCODE = 4001
DECODE_ERROR = 4002
NOT_AUTHENTICATED = 4003
AUTHENTICATION_FAILED = 4004
ALREADY_AUTHENTICATED = 4005
INVALID_API_VERSION = 4012
INVALID_INTENTS = 4013
DISALLOWED_INTENTS = 4014


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class GatewayConnection:
    """One websocket. Frames go out in order through a single writer task."""

    def __init__(
        self,
        connection_id: int,
        ws: web.WebSocketResponse,
        recorder: Recorder,
        gateway: Gateway,
        url: str,
    ) -> None:
        self.id = connection_id
        self.url = url
        self.ws = ws
        self.recorder = recorder
        self.gateway = gateway
        self.session: GatewaySession | None = None
        self.ready = False
        self.closing = False
        self.compressor: Any = None
        self.finished = asyncio.Event()
        self._queue: asyncio.Queue[JSON | _Close] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name=f"gateway-writer-{self.id}")

    def send(self, payload: JSON) -> None:
        self._queue.put_nowait(payload)

    def close(self, code: int, reason: str = "") -> None:
        """Send any queued frames, then close with ``code``."""
        self.ready = False
        self.closing = True
        self._queue.put_nowait(_Close(code, reason))

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Close):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                return
            text = json.dumps(item, separators=(",", ":"))
            try:
                if self.compressor is not None:
                    data = self.compressor.compress(text.encode()) + self.compressor.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return
            self.recorder.add_frame(self.gateway.state.clock.monotonic(), self.id, "sent", item)

    async def stop(self) -> None:
        """Let a requested close go out (briefly), then end the writer."""
        if self.closing:
            # asyncio.wait neither raises the writer's own end (it may have been cancelled when
            # its peer died: a killed bot) nor cancels it.
            await asyncio.wait({self._writer}, timeout=2.0)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


@dataclass
class GatewaySession:
    """A gateway session: sequence numbers and the events a RESUME may need replayed."""

    session_id: str
    intents: int
    seq: int = 0
    events: list[JSON] = field(default_factory=list)
    connection: GatewayConnection | None = None
    invalidated: bool = False

    def next_event(self, event: str, data: JSON) -> JSON:
        self.seq += 1
        payload: JSON = {"op": DISPATCH, "s": self.seq, "t": event, "d": data}
        self.events.append(payload)
        return payload


class Gateway:
    """Accepts gateway connections and routes dispatches to the bot's session."""

    def __init__(self, state: EmulatorState, recorder: Recorder) -> None:
        self.state = state
        self.recorder = recorder
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None
        self.connections: list[GatewayConnection] = []
        self.ack_heartbeats = True
        state.dispatch = self.dispatch_event

    # -- connection lifecycle ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(
            len(self.connections) + 1, ws, self.recorder, self, str(request.rel_url)
        )
        self.connections.append(conn)
        try:
            if request.query.get("v") != "10":
                conn.close(INVALID_API_VERSION, "Invalid API version")
            elif request.query.get("encoding", "json") != "json":
                conn.close(DECODE_ERROR, "Only encoding=json is emulated")
            else:
                if request.query.get("compress") == "zlib-stream":
                    conn.compressor = zlib.compressobj()
                # zstd-stream is answered with plain text frames, which discord.py also reads.
                interval_ms = int(self.state.config.heartbeat_interval * 1000)
                conn.send(
                    {"op": HELLO, "s": None, "t": None, "d": {"heartbeat_interval": interval_ms}}
                )
                await self._read_loop(conn)
        finally:
            self._detach(conn)
            await conn.stop()
            conn.finished.set()
            self.recorder.signal.changed()
        return ws

    async def _read_loop(self, conn: GatewayConnection) -> None:
        async for message in conn.ws:
            if message.type is not WSMsgType.TEXT:
                conn.close(DECODE_ERROR, "Decode error")
                return
            try:
                payload = json.loads(message.data)
            except ValueError:
                conn.close(DECODE_ERROR, "Decode error")
                return
            if not isinstance(payload, dict):
                conn.close(DECODE_ERROR, "Decode error")
                return
            self.recorder.add_frame(self.state.clock.monotonic(), conn.id, "received", payload)
            self._on_payload(conn, payload)

    def _detach(self, conn: GatewayConnection) -> None:
        conn.ready = False
        if conn.session is not None and conn.session.connection is conn:
            conn.session.connection = None

    def _on_payload(self, conn: GatewayConnection, payload: JSON) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            if self.ack_heartbeats:
                conn.send({"op": HEARTBEAT_ACK, "s": None, "t": None, "d": None})
        elif op == IDENTIFY:
            self._identify(conn, data if isinstance(data, dict) else {})
        elif op == RESUME:
            self._resume(conn, data if isinstance(data, dict) else {})
        elif conn.session is None:
            conn.close(NOT_AUTHENTICATED, "Not authenticated.")
        elif op == REQUEST_GUILD_MEMBERS:
            self._members_chunk(conn, data if isinstance(data, dict) else {})
        elif op not in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            conn.close(UNKNOWN_OPCODE, "Unknown opcode.")

    def _identify(self, conn: GatewayConnection, data: JSON) -> None:
        if conn.session is not None:
            conn.close(ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if data.get("token") != self.state.config.token:
            conn.close(AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            conn.close(INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.state.config.allowed_privileged_intents:
            conn.close(DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        session = GatewaySession(secrets.token_hex(16), intents)
        self.sessions[session.session_id] = session
        self._attach(conn, session)
        bot = self.state.bot_user.payload()
        bot.update(verified=True, mfa_enabled=False, email=None)
        ready: JSON = {
            "v": 10,
            "user": bot,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self._bot_guilds()],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.state.resume_gateway_url,
            "application": {"id": str(self.state.config.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["discord-emulator"],
        }
        if isinstance(data.get("shard"), list):
            ready["shard"] = data["shard"]
        conn.send(session.next_event("READY", ready))
        for guild in self._bot_guilds():
            conn.send(
                session.next_event("GUILD_CREATE", guild.create_payload(self.state.bot_user.id))
            )
        self._mark_ready(conn, session)

    def _bot_guilds(self) -> list[EmuGuild]:
        """The guilds READY names: those the bot is a member of."""
        return [g for g in self.state.guilds.values() if self.state.bot_is_member(g)]

    def _resume(self, conn: GatewayConnection, data: JSON) -> None:
        if data.get("token") != self.state.config.token:
            conn.close(AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or session.invalidated or not isinstance(seq, int) or seq > session.seq:
            conn.send({"op": INVALID_SESSION, "s": None, "t": None, "d": False})
            return
        old = session.connection
        if old is not None and old is not conn:
            old.close(UNKNOWN_ERROR, "Session resumed elsewhere")
        self._attach(conn, session)
        for event in session.events:
            if event["s"] > seq:
                conn.send(event)
        conn.send(session.next_event("RESUMED", {"_trace": ["discord-emulator"]}))
        self._mark_ready(conn, session)

    def _attach(self, conn: GatewayConnection, session: GatewaySession) -> None:
        conn.session = session
        session.connection = conn

    def _mark_ready(self, conn: GatewayConnection, session: GatewaySession) -> None:
        conn.ready = True
        self.current = session
        self.recorder.signal.changed()

    def _members_chunk(self, conn: GatewayConnection, data: JSON) -> None:
        guild = self.state.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or conn.session is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        members = [
            m.payload()
            for m in guild.members.values()
            if (not wanted or m.user.id in wanted) and m.user.name.lower().startswith(query)
        ]
        limit = data.get("limit") or 0
        if limit:
            members = members[:limit]
        chunk: JSON = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        conn.send(conn.session.next_event("GUILD_MEMBERS_CHUNK", chunk))

    # -- dispatching -------------------------------------------------------------------------

    def is_connected(self) -> bool:
        session = self.current
        return session is not None and session.connection is not None and session.connection.ready

    def _deliver(self, session: GatewaySession, event: str, data: JSON) -> None:
        payload = session.next_event(event, data)
        conn = session.connection
        if conn is not None and conn.ready:
            conn.send(payload)

    def dispatch_to_bot(self, event: str, data: JSON) -> None:
        """Send an event to the bot's current session (buffered if it is disconnected)."""
        if self.current is None or self.current.invalidated:
            raise EmulatorUsageError(
                "no bot session: start the bot and await wait_until_connected()"
            )
        self._deliver(self.current, event, data)

    def dispatch_event(self, event: str, data: JSON, intent: int) -> None:
        """Send an intent-gated event (MESSAGE_*) to every live session that asked for it."""
        for session in self.sessions.values():
            if not session.invalidated and session.intents & intent:
                self._deliver(session, event, data)

    # -- faults ------------------------------------------------------------------------------

    def live_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections if not c.finished.is_set()]

    async def disconnect(self, code: int, timeout: float) -> None:  # noqa: ASYNC109
        """Close every connection with ``code``; sessions stay resumable."""
        live = self.live_connections()
        for conn in live:
            self._detach(conn)
            conn.close(code, "Disconnected by the test")
        self.recorder.signal.changed()
        if live:
            await asyncio.wait_for(
                asyncio.gather(*(c.finished.wait() for c in live)), timeout=timeout
            )

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; discord.py closes and resumes on its own."""
        for conn in self.live_connections():
            conn.send({"op": RECONNECT, "s": None, "t": None, "d": None})

    def invalidate_session(self, *, resumable: bool) -> None:
        """Send op 9; unless ``resumable``, the session can no longer be resumed."""
        session = self.current
        if session is None:
            raise EmulatorUsageError("no bot session to invalidate")
        if not resumable:
            session.invalidated = True
        conn = session.connection
        if conn is not None:
            conn.send({"op": INVALID_SESSION, "s": None, "t": None, "d": resumable})

    async def close_all(self) -> None:
        for conn in self.live_connections():
            self._detach(conn)
            conn.close(UNKNOWN_ERROR, "Emulator shutting down")
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.finished.wait(), timeout=2.0)
            await conn.stop()
