"""GPU-second quotas over a rolling window, with an auditable ledger.

Life of a job's money: reserve the estimate at enqueue (``check_room`` then
``record_reservations``, in the same transaction as the insert and under the user's account
lock, so concurrent enqueues cannot overdraw); at the end either ``settle`` (charge the GPU time
used, at most the job's estimate beyond the allowance, and release the reservation) or
``refund`` (give the reservation back); a moderator may later ``credit`` a settled charge back.
The README's billing table says which end each outcome takes. Every step is a ``quota_ledger``
row written in the same transaction as the job's transition, so the ledger and the jobs always
agree.

Who pays: a job's owner, except for the entries of a group session with a server pool
(``jobs.guild_paid``, ``storage.pools``). Those are billed to their server: their ledger lines
carry ``SERVER_PAYER`` (0) as the user and their guild, so they count in the server's scope and
never in the member's (usage sums lines by user, reservations leave them out). Their admission
is the pool's (``storage.sessions``), and the live sessions' uncommitted pools count as reserved
in the server's scope. Settling one caps its charge against the server's room only; whatever it
costs beyond its estimate is the server's, never the pool's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, delete, func, insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from config.settings import QuotaSettings
from storage.db import Database
from storage.errors import QuotaExceededError
from storage.models import EVERYWHERE, JOBS, LEDGER, QUOTA_OVERRIDES, SERVER_PAYER
from storage.pools import unspent_pools_ms
from storage.quota_policy import (
    Balance,
    allowance_ms,
    capped_charge,
    frees_enough_at,
    guild_allowance_ms,
)
from storage.sql import lock_guild, lock_user, upsert, utc_now
from storage.types import (
    ACTIVE_STATUSES,
    LedgerEntry,
    LedgerKind,
    Owner,
    QuotaOverride,
    QuotaReadout,
    to_ms,
    to_seconds,
)

Clock = Callable[[], datetime]


class QuotaService:
    """Allowances, readouts, admin overrides and the ledger's reservation/charge/refund steps.

    ``check_room``, ``record_reservations``, ``settle`` and ``refund`` run inside the job
    queue's unit of work (they take its session); everything else is a unit of work of its own.
    """

    def __init__(self, db: Database, settings: QuotaSettings, *, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.window = timedelta(seconds=settings.window_seconds)

    # -- readouts and admin -------------------------------------------------------------------

    async def readout(
        self, user_id: int, guild_id: int | None = None, role_ids: Sequence[int] = ()
    ) -> QuotaReadout:
        """The user's used/reserved/remaining GPU-seconds and when the oldest charge ages out."""
        now = self.clock()

        async def work(session: AsyncSession) -> QuotaReadout:
            allowance = await self._user_allowance(session, user_id, guild_id, role_ids)
            user = await self._readout(session, "user", user_id, allowance, now)
            guild_allowance = guild_allowance_ms(self.settings)
            if guild_id is None or guild_allowance is None:
                return user
            guild = await self._readout(session, "guild", guild_id, guild_allowance, now)
            return QuotaReadout(**{**_fields(user), "guild": guild})

        return await self.db.read(work)

    async def set_override(
        self,
        user_id: int,
        allowance_seconds: float,
        *,
        guild_id: int | None = None,
        set_by: int | None = None,
        reason: str = "",
    ) -> QuotaOverride:
        """Give one user an allowance of their own in ``guild_id`` (replacing the settings and
        role tiers there), or everywhere when ``guild_id`` is None (the operator's, which wins
        over any server's)."""
        now = self.clock()
        allowance = to_ms(allowance_seconds)
        values = {
            "user_id": user_id,
            "guild_id": _scope(guild_id),
            "allowance_ms": allowance,
            "set_by": set_by,
            "reason": reason,
            "updated_at": now,
        }

        async def work(session: AsyncSession) -> None:
            await session.execute(upsert(session, QUOTA_OVERRIDES, values, ["user_id", "guild_id"]))

        await self.db.write(work)
        return QuotaOverride(user_id, guild_id, to_seconds(allowance), set_by, reason, now)

    async def clear_override(self, user_id: int, *, guild_id: int | None = None) -> bool:
        """Back to the settings' allowance in ``guild_id`` (everywhere: None). False when there
        was no such override."""

        async def work(session: AsyncSession) -> bool:
            result = await session.execute(
                delete(QUOTA_OVERRIDES).where(
                    QUOTA_OVERRIDES.c.user_id == user_id,
                    QUOTA_OVERRIDES.c.guild_id == _scope(guild_id),
                )
            )
            return bool(getattr(result, "rowcount", 0))

        return await self.db.write(work)

    async def get_override(
        self, user_id: int, *, guild_id: int | None = None
    ) -> QuotaOverride | None:
        found = await self.list_overrides(user_id=user_id)
        return next((o for o in found if o.guild_id == guild_id), None)

    async def list_overrides(self, *, user_id: int | None = None) -> list[QuotaOverride]:
        """Every override (of one user), operator overrides first."""

        async def work(session: AsyncSession) -> list[QuotaOverride]:
            stmt = select(QUOTA_OVERRIDES).order_by(
                QUOTA_OVERRIDES.c.guild_id, QUOTA_OVERRIDES.c.user_id
            )
            if user_id is not None:
                stmt = stmt.where(QUOTA_OVERRIDES.c.user_id == user_id)
            return [
                QuotaOverride(
                    row["user_id"],
                    None if row["guild_id"] == EVERYWHERE else row["guild_id"],
                    to_seconds(row["allowance_ms"]),
                    row["set_by"],
                    row["reason"],
                    row["updated_at"],
                )
                for row in (await session.execute(stmt)).mappings()
            ]

        return await self.db.read(work)

    async def ledger(
        self, *, user_id: int | None = None, job_id: str | None = None, limit: int = 200
    ) -> list[LedgerEntry]:
        """Ledger lines, newest first, for one user or one job (or everyone)."""

        async def work(session: AsyncSession) -> list[LedgerEntry]:
            stmt = select(LEDGER).order_by(LEDGER.c.id.desc()).limit(limit)
            if user_id is not None:
                stmt = stmt.where(LEDGER.c.user_id == user_id)
            if job_id is not None:
                stmt = stmt.where(LEDGER.c.job_id == job_id)
            rows = (await session.execute(stmt)).mappings().all()
            return [
                LedgerEntry(
                    id=r["id"],
                    job_id=r["job_id"],
                    user_id=r["user_id"],
                    guild_id=r["guild_id"],
                    kind=LedgerKind(r["kind"]),
                    amount=to_seconds(r["amount_ms"]),
                    created_at=r["created_at"],
                    note=r["note"],
                )
                for r in rows
            ]

        return await self.db.read(work)

    # -- steps inside the queue's unit of work ------------------------------------------------

    async def check_room(
        self,
        session: AsyncSession,
        owner: Owner,
        needed_ms: int,
        role_ids: Sequence[int],
        now: datetime,
    ) -> int:
        """Raise QuotaExceededError unless ``needed_ms`` more fits the user's (and the guild's)
        allowance. The caller holds the user's account lock; the guild's is taken here, after it.
        Returns the user's allowance (ms), which the caller records on the new jobs."""
        allowance = await self._user_allowance(session, owner.user_id, owner.guild_id, role_ids)
        await self._check(session, "user", owner.user_id, allowance, needed_ms, now)
        guild_allowance = guild_allowance_ms(self.settings)
        if owner.guild_id is not None and guild_allowance is not None:
            await lock_guild(session, owner.guild_id, now)
            await self._check(session, "guild", owner.guild_id, guild_allowance, needed_ms, now)
        return allowance

    async def record_reservations(
        self,
        session: AsyncSession,
        owner: Owner,
        reservations: Sequence[tuple[str, int]],
        now: datetime,
        *,
        guild_paid: bool = False,
    ) -> None:
        """Write the RESERVE lines of just-inserted jobs (job id, ms); ``guild_paid``: the
        server pays (a session's pool)."""
        payer = SERVER_PAYER if guild_paid else owner.user_id
        await session.execute(
            insert(LEDGER),
            [
                _entry(job_id, payer, owner.guild_id, LedgerKind.RESERVE, amount, now)
                for job_id, amount in reservations
            ],
        )

    async def settle(
        self,
        session: AsyncSession,
        job: RowMapping,
        measured_ms: int,
        now: datetime,
        note: str | None = None,
    ) -> int:
        """Charge the GPU time a job used (it succeeded, or was cancelled or blocked after
        running) and release its reservation. ``job`` is its row, locked by the caller and still
        active. The measured cost is charged in full, except that it may take the owner at most
        the job's own estimate beyond the allowance: that part is written off as a WAIVE line.
        Returns the charged milliseconds. A job its server pays for (``guild_paid``) is capped
        by the server's room alone, and charged in full when the server has no allowance."""
        user_id, guild_id = payer(job), job["guild_id"]
        if job["guild_paid"]:
            room = measured_ms
        else:
            # The job's row lock is taken before the account lock here, and enqueue never
            # waits on job rows while holding an account lock, so the orders cannot deadlock.
            await lock_user(session, user_id, now)
            allowance = job["allowance_ms"]
            if allowance is None:
                allowance = await self._user_allowance(session, user_id, guild_id, ())
            room = allowance - await self._used(session, "user", user_id, now)
            room -= await self._reserved(session, "user", user_id, exclude=[job["id"]])
        guild_allowance = guild_allowance_ms(self.settings)
        if guild_id is not None and guild_allowance is not None:
            await lock_guild(session, guild_id, now)
            guild_room = guild_allowance - await self._used(session, "guild", guild_id, now)
            guild_room -= await self._reserved(session, "guild", guild_id, exclude=[job["id"]])
            room = guild_room if job["guild_paid"] else min(room, guild_room)
        charged, waived = capped_charge(measured_ms, room, job["estimated_ms"])
        lines = [
            _entry(job["id"], user_id, guild_id, LedgerKind.CHARGE, charged, now, note),
            _entry(job["id"], user_id, guild_id, LedgerKind.RELEASE, job["reserved_ms"], now),
        ]
        if waived:
            lines.append(
                _entry(
                    job["id"],
                    user_id,
                    guild_id,
                    LedgerKind.WAIVE,
                    waived,
                    now,
                    "beyond the overdraft one job may make",
                )
            )
        await session.execute(insert(LEDGER), lines)
        return charged

    async def credit(self, session: AsyncSession, job: RowMapping, now: datetime, note: str) -> int:
        """Give a settled job's charge back (a moderator blocked it and chose a refund). The
        credit offsets the charge in whichever window the charge falls. Returns the credited
        milliseconds (0 when nothing was charged)."""
        amount = int(job["charged_ms"] or 0)
        if amount:
            await session.execute(
                insert(LEDGER).values(
                    _entry(
                        job["id"],
                        payer(job),
                        job["guild_id"],
                        LedgerKind.CREDIT,
                        amount,
                        now,
                        note,
                    )
                )
            )
        return amount

    async def refund(
        self, session: AsyncSession, job: RowMapping, now: datetime, note: str
    ) -> None:
        """Give a job's whole reservation back (it failed, was cancelled, blocked or died)."""
        await session.execute(
            insert(LEDGER).values(
                _entry(
                    job["id"],
                    payer(job),
                    job["guild_id"],
                    LedgerKind.REFUND,
                    job["reserved_ms"],
                    now,
                    note,
                )
            )
        )

    # -- sums -----------------------------------------------------------------------------------

    async def _user_allowance(
        self, session: AsyncSession, user_id: int, guild_id: int | None, role_ids: Sequence[int]
    ) -> int:
        """The operator's override for the user if any, else this server's, else the settings
        and role tiers. In DMs (no guild) only the operator's override and the defaults apply."""
        rows = (
            await session.execute(
                select(QUOTA_OVERRIDES.c.guild_id, QUOTA_OVERRIDES.c.allowance_ms).where(
                    QUOTA_OVERRIDES.c.user_id == user_id,
                    QUOTA_OVERRIDES.c.guild_id.in_({EVERYWHERE, _scope(guild_id)}),
                )
            )
        ).all()
        by_scope = {scope: allowance for scope, allowance in rows}
        override = by_scope.get(EVERYWHERE, by_scope.get(_scope(guild_id)))
        return allowance_ms(self.settings, override_ms=override, role_ids=role_ids)

    async def _used(self, session: AsyncSession, scope: str, subject: int, now: datetime) -> int:
        """GPU-milliseconds charged in the window, net of credits (one indexed sum)."""
        net = LEDGER.c.amount_ms - _credited()
        stmt = select(func.coalesce(func.sum(net), 0)).where(
            self._window_charges(scope, subject, now)
        )
        return int((await session.execute(stmt)).scalar_one())

    def _window_charges(self, scope: str, subject: int, now: datetime) -> ColumnElement[bool]:
        column = LEDGER.c.user_id if scope == "user" else LEDGER.c.guild_id
        return and_(
            column == subject,
            LEDGER.c.kind == LedgerKind.CHARGE,
            LEDGER.c.created_at > now - self.window,
        )

    async def _reserved(
        self, session: AsyncSession, scope: str, subject: int, exclude: Sequence[str] = ()
    ) -> int:
        """Held by waiting and running jobs: the user's own (not those their server pays for),
        or the guild's (all of them, plus its live sessions' uncommitted pools)."""
        if scope == "user":
            which = and_(JOBS.c.owner_id == subject, JOBS.c.guild_paid.is_(False))
        else:
            which = JOBS.c.guild_id == subject
        stmt = select(func.coalesce(func.sum(JOBS.c.reserved_ms), 0)).where(
            which, JOBS.c.status.in_(ACTIVE_STATUSES)
        )
        if exclude:
            stmt = stmt.where(JOBS.c.id.not_in(list(exclude)))
        reserved = int((await session.execute(stmt)).scalar_one())
        if scope == "guild":
            reserved += await unspent_pools_ms(session, subject)
        return reserved

    async def check_guild_room(
        self, session: AsyncSession, guild_id: int, needed_ms: int, now: datetime
    ) -> None:
        """Raise QuotaExceededError (scope ``guild``) unless ``needed_ms`` more fits the guild's
        allowance; nothing to check when guilds have no allowance. Takes the guild's lock."""
        allowance = guild_allowance_ms(self.settings)
        if allowance is None:
            return
        await lock_guild(session, guild_id, now)
        await self._check(session, "guild", guild_id, allowance, needed_ms, now)

    async def _balance(
        self,
        session: AsyncSession,
        scope: str,
        subject: int,
        allowance: int,
        now: datetime,
        exclude: Sequence[str] = (),
    ) -> Balance:
        used = await self._used(session, scope, subject, now)
        reserved = await self._reserved(session, scope, subject, exclude)
        return Balance(allowance, used, reserved)

    async def _charges(
        self, session: AsyncSession, scope: str, subject: int, now: datetime
    ) -> list[tuple[datetime, int]]:
        """The window's charges, oldest first, each net of any credit given back for its job
        (a credit counts in the window of the charge it offsets)."""
        rows = await session.execute(
            select(LEDGER.c.created_at, LEDGER.c.amount_ms - _credited())
            .where(self._window_charges(scope, subject, now))
            .order_by(LEDGER.c.created_at)
        )
        return [(at, max(0, int(amount))) for at, amount in rows.all()]

    async def _check(
        self,
        session: AsyncSession,
        scope: str,
        subject: int,
        allowance: int,
        needed: int,
        now: datetime,
    ) -> None:
        balance = await self._balance(session, scope, subject, allowance, now)
        if balance.fits(needed):
            return
        charges = await self._charges(session, scope, subject, now)
        raise QuotaExceededError(
            scope=scope,
            allowance=to_seconds(balance.allowance_ms),
            used=to_seconds(balance.used_ms),
            reserved=to_seconds(balance.reserved_ms),
            needed=to_seconds(needed),
            resets_at=frees_enough_at(balance, charges, self.window, needed),
        )

    async def _readout(
        self, session: AsyncSession, scope: str, subject: int, allowance: int, now: datetime
    ) -> QuotaReadout:
        balance = await self._balance(session, scope, subject, allowance, now)
        oldest = (
            await session.execute(
                select(func.min(LEDGER.c.created_at)).where(
                    (LEDGER.c.user_id if scope == "user" else LEDGER.c.guild_id) == subject,
                    LEDGER.c.kind == LedgerKind.CHARGE,
                    LEDGER.c.created_at > now - self.window,
                )
            )
        ).scalar()
        return QuotaReadout(
            scope=scope,
            allowance=to_seconds(balance.allowance_ms),
            used=to_seconds(balance.used_ms),
            reserved=to_seconds(balance.reserved_ms),
            remaining=to_seconds(balance.remaining_ms),
            resets_at=None if oldest is None else oldest + self.window,
            window_seconds=self.settings.window_seconds,
        )


def _credited() -> ScalarSelect[int]:
    """For a CHARGE line of the outer query: what its job was credited back since."""
    credits = aliased(LEDGER)
    return (
        select(func.coalesce(func.sum(credits.c.amount_ms), 0))
        .where(credits.c.job_id == LEDGER.c.job_id, credits.c.kind == LedgerKind.CREDIT)
        .correlate(LEDGER)
        .scalar_subquery()
    )


def _fields(readout: QuotaReadout) -> dict[str, Any]:
    return {name: getattr(readout, name) for name in QuotaReadout.__slots__}


def _entry(
    job_id: str,
    user_id: int,
    guild_id: int | None,
    kind: LedgerKind,
    amount_ms: int,
    now: datetime,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "user_id": user_id,
        "guild_id": guild_id,
        "kind": kind.value,
        "amount_ms": amount_ms,
        "created_at": now,
        "note": note,
    }


def payer(job: RowMapping) -> int:
    """The ledger's user of a job's lines: its owner, or ``SERVER_PAYER`` when its server
    pays (a session's pool)."""
    return SERVER_PAYER if job["guild_paid"] else int(job["owner_id"])


def _scope(guild_id: int | None) -> int:
    return EVERYWHERE if guild_id is None else guild_id
