"""Group sessions (issue 13), the bot's side: who may host, entries parsed and screened like
any new job, host decisions, votes and host controls. No discord.py.

Every call is checked here at the server level, whatever a custom_id or a channel claims: the
session must belong to the requester's server, hosting needs the server's host role (``/settings
server session_host_role``) or, without one, Manage Events (or Manage Server); decisions and
controls need the session's host, a member who may host, or a moderator. The session's state
and its rules live in ``storage.sessions.SessionStore``; this service turns a member's input
into its calls and its refusals into member-facing text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot.errors import UserFacingError
from bot.render_sessions import render_session_card
from bot.requester import Requester
from bot.services.moderation import Moderation
from bot.services.new_job import job_for
from bot.services.review import ReviewService
from bot.services.server_settings import SESSION_HOST_ROLE_KEY, session_lane_minutes
from config.settings import Settings
from generation.errors import OptionError
from generation.options import PromptDefaults, SeedSource, parse_imagine_prompt, random_seed
from generation.request import GenerationRequest, Mode
from storage.errors import JobNotFound
from storage.preferences import PreferenceStore
from storage.sessions import SessionStore
from storage.types import (
    ACTIVE_STATUSES,
    EntryDecision,
    EntryView,
    JobKind,
    JobStatus,
    PoolKind,
    QueuePlace,
    SessionPhase,
    SessionSpec,
    SessionView,
    VoteResult,
)
from storage.webdir import WebDirectory

#: The server setting naming the role that may host sessions (absent: Manage Events).
HOST_ROLE_KEY = SESSION_HOST_ROLE_KEY
#: The server's private host-panel thread, by parent channel (used without a review channel).
PANEL_THREADS_KEY = "session_panel_threads"
#: How long voting waits at most for the round's entries to generate.
VOTING_WAIT_SECONDS = 600
MODES = tuple(mode.value for mode in Mode)


@dataclass(frozen=True)
class StartInput:
    """/session start as Discord delivered it (ranges already applied by Discord)."""

    theme: str
    rounds: int = 1
    themes: str = ""
    round_minutes: float = 10
    voting_minutes: float = 5
    entries_per_member: int = 1
    votes_per_member: int = 1
    approval: bool = False
    anonymous: bool = False
    pool: str = "members"
    pool_gpu_seconds: float = 0.0
    mode: str | None = None
    aspect: str | None = None


@dataclass(frozen=True)
class MyEntries:
    """What ``/session mine`` shows: one member's entries in one session (theirs only), the
    queue places of those still waiting, and their votes used this round (None: not voting)."""

    session: SessionView
    entries: tuple[EntryView, ...]
    places: Mapping[str, QueuePlace]
    votes_used: int | None


class SessionService:
    """Group sessions for the Discord edge: start, submit, decide, vote, host controls."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        prefs: PreferenceStore,
        moderation: Moderation,
        review: ReviewService,
        checker: Any = None,
        seed_source: SeedSource = random_seed,
        names: WebDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.prefs = prefs
        self.moderation = moderation
        self.review = review
        self.checker = checker
        self.seed_source = seed_source
        #: Members' display names (recorded with each entry; the boards credit them by it).
        self.names = names

    # -- who -------------------------------------------------------------------------------

    async def may_host(self, requester: Requester) -> bool:
        """The server's host role, else Manage Events; server admins always."""
        if requester.guild_id is None:
            return False
        if requester.is_admin:
            return True
        role = (await self.prefs.get_guild_settings(requester.guild_id)).get(HOST_ROLE_KEY)
        if role:
            return int(role) in requester.role_ids
        return requester.manage_events

    async def check_control(self, requester: Requester, session: SessionView) -> None:
        if session.guild_id != requester.guild_id:
            raise UserFacingError("that session belongs to another server")
        if (
            requester.user_id == session.host_id
            or requester.is_moderator
            or await self.may_host(requester)
        ):
            return
        raise UserFacingError("only the session's host, hosts and moderators may do that")

    async def host_role(self, guild_id: int) -> int | None:
        role = (await self.prefs.get_guild_settings(guild_id)).get(HOST_ROLE_KEY)
        return int(role) if role else None

    # -- starting --------------------------------------------------------------------------

    async def start(self, requester: Requester, command: StartInput) -> SessionView:
        """Store a new session in the requester's channel (its thread comes next)."""
        if requester.guild_id is None:
            raise UserFacingError("group sessions run in a server's channel, not in DMs")
        if not await self.may_host(requester):
            role = await self.host_role(requester.guild_id)
            who = f"members with <@&{role}>" if role else "members with Manage Events"
            raise UserFacingError(f"only {who} (and server admins) may host a group session here")
        limits: dict[str, Any] = {}
        if command.mode is not None:
            if command.mode not in MODES:
                raise UserFacingError(f"mode must be one of {', '.join(MODES)}")
            limits["modes"] = [command.mode]
        if command.aspect is not None:
            limits["aspect"] = self._check_aspect(command.aspect)
        if command.pool not in (PoolKind.MEMBERS.value, PoolKind.SERVER.value):
            raise UserFacingError("pool must be members or server")
        for name in ("round_minutes", "voting_minutes", "pool_gpu_seconds"):
            if not math.isfinite(getattr(command, name)):
                raise UserFacingError(f"{name} must be a number")
        themes = tuple(t.strip() for t in command.themes.split(";") if t.strip())
        stored = await self.prefs.get_guild_settings(requester.guild_id)
        spec = SessionSpec(
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            host_id=requester.user_id,
            theme=command.theme,
            rounds=len(themes) if themes and command.rounds == 1 else command.rounds,
            themes=themes,
            round_seconds=round(command.round_minutes * 60),
            voting_seconds=round(command.voting_minutes * 60),
            voting_wait_seconds=VOTING_WAIT_SECONDS,
            entries_per_member=command.entries_per_member,
            votes_per_member=command.votes_per_member,
            approval=command.approval,
            anonymous=command.anonymous,
            pool=PoolKind(command.pool),
            pool_seconds=command.pool_gpu_seconds,
            limits=limits,
            lane_seconds=session_lane_minutes(stored) * 60,
        )
        try:
            return await self.store.start(spec)
        except ValueError as exc:
            raise UserFacingError(str(exc)) from exc

    def _check_aspect(self, aspect: str) -> str:
        text = aspect.strip()
        try:
            (request,) = self._parse(f"x --ar {text}", PromptDefaults())
        except (OptionError, ValueError) as exc:
            raise UserFacingError(f"aspect: {exc}") from exc
        return request.aspect

    # -- entries ---------------------------------------------------------------------------

    async def session_here(self, requester: Requester) -> SessionView:
        """The live session of the requester's thread (or channel)."""
        if requester.guild_id is None:
            raise UserFacingError("group sessions run in servers; there is none in DMs")
        session = await self.store.running_in(requester.channel_id)
        if session is None or session.guild_id != requester.guild_id:
            raise UserFacingError("there is no group session running here")
        return session

    async def mine(self, requester: Requester) -> MyEntries:
        """The requester's own entries in the session of their thread or channel (the live one,
        else the latest that ended), every round, with where each queued one stands and their
        votes while voting. Nobody else's entries, whatever the session's anonymity: the answer
        is the author's alone. A member the host removed may still look."""
        if requester.guild_id is None:
            raise UserFacingError(
                "group sessions run in servers: use `/session mine` in a session's thread"
            )
        session = await self.store.latest_in(requester.channel_id)
        if session is None or session.guild_id != requester.guild_id:
            raise UserFacingError(
                "there is no group session here: use `/session mine` in a session's thread "
                "or in the channel it was started in"
            )
        entries = await self.store.entries(session.id, member_id=requester.user_id)
        places: dict[str, QueuePlace] = {}
        for entry in entries:
            if entry.job_id is not None and entry.job_status is JobStatus.QUEUED:
                try:
                    places[entry.id] = await self.store.queue.place(entry.job_id)
                except JobNotFound:
                    continue  # deleted since the read: it shows as queued, without a place
        votes_used: int | None = None
        if session.live and session.phase is SessionPhase.VOTE:
            votes_used = len(await self.store.votes_of(session.id, requester.user_id))
        return MyEntries(session, tuple(entries), places, votes_used)

    async def find(self, requester: Requester, session_id: str) -> SessionView:
        """A session of the requester's server (a custom_id's claim, checked)."""
        session = await self.store.find(session_id)
        if session is None or requester.guild_id is None or session.guild_id != requester.guild_id:
            raise UserFacingError("this button belongs to a session I do not know here")
        return session

    async def submit(self, requester: Requester, session: SessionView, prompt: str) -> EntryView:
        """Enter ``prompt`` (with the usual options, within the host's limits) in ``session``'s
        current round. Bans, the prompt filter and review terms apply as to any job."""
        if session.guild_id != requester.guild_id:
            raise UserFacingError("that session belongs to another server")
        if session.thread_id is not None and requester.channel_id not in (
            session.thread_id,
            session.channel_id,
        ):
            raise UserFacingError(f"enter in the session's thread, <#{session.thread_id}>")
        request = await self._entry_request(requester, session, prompt)
        await self.review.check_not_banned(requester)
        restricted = await self.review.age_restricted(requester)
        if self.checker is not None:
            self.checker.check(request)
        hold = await self.moderation.screen(requester, [request])
        job = replace(
            job_for(self.settings.quota, JobKind.IMAGINE, request),
            hold_reason=hold,
            age_restricted=restricted,
        )
        entry = await self.store.submit(
            session.id, requester.user_id, job, role_ids=requester.role_ids
        )
        if self.names is not None and requester.display_name:
            await self.names.remember(session.guild_id, requester.user_id, requester.display_name)
        return entry

    async def display_names(self, guild_id: int, member_ids: list[int]) -> dict[int, str]:
        """The names the boards credit members by (their display names when recorded)."""
        found = {} if self.names is None else await self.names.names(guild_id, member_ids)
        return {m: found.get(m) or f"member {m}" for m in member_ids}

    async def _entry_request(
        self, requester: Requester, session: SessionView, prompt: str
    ) -> GenerationRequest:
        limits = session.limits
        modes = [str(m) for m in limits.get("modes") or ()]
        stored = await self.prefs.get_user_settings(requester.user_id)
        mode = modes[0] if len(modes) == 1 else stored.get("mode")
        defaults = PromptDefaults(
            mode=Mode(mode) if mode in MODES else None,
            aspect=limits.get("aspect") or stored.get("aspect"),
        )
        requests = self._parse(prompt, defaults)
        if len(requests) != 1:
            raise UserFacingError(
                "an entry is one image: no {a|b} permutations or --repeat; nothing was entered"
            )
        (request,) = requests
        if modes and request.mode.value not in modes:
            raise UserFacingError(
                f"this session allows mode {' or '.join(modes)} only (not {request.mode.value})"
            )
        aspect = limits.get("aspect")
        if aspect and request.aspect != aspect:
            raise UserFacingError(
                f"this session allows aspect {aspect} only (not {request.aspect})"
            )
        if request.stealth:
            raise UserFacingError("session entries are public: leave --stealth out")
        # An entry is one image, made alone and charged as one, not a grid.
        return request.model_copy(update={"single": True})

    def _parse(self, text: str, defaults: PromptDefaults) -> list[GenerationRequest]:
        return parse_imagine_prompt(
            text,
            settings=self.settings.generation,
            model=self.settings.model,
            defaults=defaults,
            seed_source=self.seed_source,
        )

    async def decide(
        self, requester: Requester, entry_id: str, approve: bool, reason: str = ""
    ) -> tuple[EntryDecision, SessionView]:
        """The host panel: approve (queued now) or reject with a reason."""
        entry = await self.store.entry(entry_id)
        session = await self.store.get(entry.session_id)
        await self.check_control(requester, session)
        if not approve and not reason.strip():
            raise UserFacingError("a rejection needs a reason: the member is told it")
        decision = await self.store.decide(entry_id, requester.user_id, approve, reason.strip())
        return decision, session

    async def vote(self, requester: Requester, entry_id: str) -> tuple[VoteResult, SessionView]:
        """Toggle the requester's vote for an entry of their server's session."""
        entry = await self.store.entry(entry_id)
        session = await self.store.get(entry.session_id)
        if requester.guild_id is None or session.guild_id != requester.guild_id:
            raise UserFacingError("this button belongs to a session I do not know here")
        return await self.store.vote(entry_id, requester.user_id), session

    # -- host controls ---------------------------------------------------------------------

    async def control(
        self,
        requester: Requester,
        action: str,
        *,
        minutes: float = 0,
        entry_id: str = "",
        member_id: int = 0,
        reason: str = "",
    ) -> str:
        """pause, resume, extend, skip, end, remove_entry, remove_member on the session here."""
        session = await self.session_here(requester)
        await self.check_control(requester, session)
        actions: dict[str, Callable[[], Any]] = {
            "pause": lambda: self.store.pause(session.id),
            "resume": lambda: self.store.resume(session.id),
            "extend": lambda: self.store.extend(session.id, round(minutes * 60)),
            "skip": lambda: self.store.skip_to_voting(session.id),
            "end": lambda: self.store.end(session.id, requester.user_id, reason),
            "remove_member": lambda: self.store.remove_participant(
                session.id, member_id, requester.user_id, reason
            ),
        }
        if action == "remove_entry":
            entry = await self.store.entry(entry_id)
            if entry.session_id != session.id:
                raise UserFacingError(f"entry `{entry_id}` is not in this session")
            await self.store.remove_entry(entry_id, requester.user_id, reason or "removed by host")
            return f"Entry `{entry_id}` was removed (logged in the audit log)."
        if action not in actions:
            raise UserFacingError(f"unknown session action {action[:20]!r}")
        try:
            await actions[action]()
        except ValueError as exc:
            raise UserFacingError(str(exc)) from exc
        done = {
            "pause": "The session is paused.",
            "resume": "The session runs again.",
            "extend": f"The current phase has {minutes:g} more minute(s).",
            "skip": "Submissions are closed; voting opens once the entries are posted.",
            "end": "The session has ended; its boards follow.",
            "remove_member": f"<@{member_id}> was removed from the session (audit-logged).",
        }
        return done[action]

    # -- texts -----------------------------------------------------------------------------

    async def card(self, session_id: str) -> tuple[SessionView, str]:
        """The session and its card's text now (counts and pool from the database)."""
        session = await self.store.get(session_id)
        counts = await self.store.counts(session_id)
        pool = await self.store.pool(session_id)
        eta = await self._eta(session) if counts.outstanding else None
        return session, render_session_card(session, counts, pool, eta)

    async def _eta(self, session: SessionView) -> float | None:
        """When the round's last outstanding entry should be done: the latest ETA the fair
        queue gives its waiting and running entries (None when it cannot say)."""
        latest: float | None = None
        for entry in await self.store.entries(session.id, session.round):
            if entry.job_id is None or entry.job_status not in ACTIVE_STATUSES:
                continue
            place = await self.store.queue.place(entry.job_id)
            if place.eta_seconds is not None:
                latest = max(latest or 0.0, place.eta_seconds)
        return latest
