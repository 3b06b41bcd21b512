"""Checking that the ledger adds up: every job's money and state tell the same story.

For every job: exactly one RESERVE equal to its reservation. A finished job then took one of
two paths. Charged (every succeeded job; a cancelled or blocked one that ran): exactly one
CHARGE and one RELEASE of its reservation, its charge plus any WAIVE equals the measured cost,
and at most one CREDIT (a blocked job, or one an appeal restored after its rejection: the refund
stands) giving the whole charge back; what the job says it was
charged is the charge less the credit. Refunded (failed and dead jobs; cancelled or blocked ones
that used nothing): exactly one REFUND of its whole reservation and nothing else. A waiting or
running job has neither. Running jobs hold a
lease and queued ones do not.

Who pays: every line of a job names its payer, the owner, or ``SERVER_PAYER`` for a job its
server pays for (``guild_paid``: a group session's pool entry, which must name its session).
No server-pool session has committed more than its pool (``storage.pools``).

Retention (``storage.retention``) deletes a job's lines together with its row, so a line without
a job is still a violation, and the totals below cover the jobs that are still kept.

It reads every job and ledger line: meant for tests and for an operator's occasional check.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import GROUP_SESSIONS, JOBS, LEDGER, SERVER_PAYER
from storage.pools import committed_ms
from storage.types import AuditReport, JobStatus, LedgerKind, PoolKind, to_seconds


async def audit(db: Database) -> AuditReport:
    """Check every job against its ledger lines; ``report.violations`` lists what is wrong."""

    async def work(session: AsyncSession) -> AuditReport:
        lines: dict[str | None, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        payers: dict[str | None, set[int]] = defaultdict(set)
        for job_id, kind, amount, user_id in (
            await session.execute(
                select(
                    LEDGER.c.job_id, LEDGER.c.kind, LEDGER.c.amount_ms, LEDGER.c.user_id
                ).order_by(LEDGER.c.id)
            )
        ).all():
            lines[job_id][kind].append(amount)
            payers[job_id].add(int(user_id))
        jobs = (
            (
                await session.execute(
                    select(
                        JOBS.c.id,
                        JOBS.c.status,
                        JOBS.c.reserved_ms,
                        JOBS.c.charged_ms,
                        JOBS.c.gpu_ms,
                        JOBS.c.lease_token,
                        JOBS.c.lease_expires_at,
                        JOBS.c.owner_id,
                        JOBS.c.guild_paid,
                        JOBS.c.session_id,
                    ).order_by(JOBS.c.seq)
                )
            )
            .mappings()
            .all()
        )
        totals = {
            kind: int(total or 0)
            for kind, total in await session.execute(
                select(LEDGER.c.kind, func.sum(LEDGER.c.amount_ms)).group_by(LEDGER.c.kind)
            )
        }
        violations: list[str] = []
        by_status: Counter[JobStatus] = Counter()
        for job in jobs:
            by_status[JobStatus(job["status"])] += 1
            violations.extend(_check_job(job, lines.pop(job["id"], {})))
            violations.extend(_check_payer(job, payers.get(job["id"], set())))
        for job_id in lines:
            violations.append(f"ledger lines for unknown job {job_id}")
        violations.extend(await _check_pools(session))
        return AuditReport(
            jobs=len(jobs),
            by_status=dict(by_status),
            charged=to_seconds(
                totals.get(LedgerKind.CHARGE.value, 0) - totals.get(LedgerKind.CREDIT.value, 0)
            ),
            refunded=to_seconds(totals.get(LedgerKind.REFUND.value, 0)),
            violations=tuple(violations),
        )

    return await db.read(work)


def _check_payer(row: RowMapping, payers: set[int]) -> list[str]:
    job_id = row["id"]
    problems: list[str] = []
    payer = SERVER_PAYER if row["guild_paid"] else row["owner_id"]
    if payers - {payer}:
        whom = "its server" if row["guild_paid"] else "its owner"
        problems.append(f"job {job_id} has ledger lines that do not name {whom} as the payer")
    if row["guild_paid"] and row["session_id"] is None:
        problems.append(f"job {job_id} is billed to its server but belongs to no session")
    return problems


async def _check_pools(session: AsyncSession) -> list[str]:
    """No server-pool session has committed more than its pool."""
    pools = dict(
        (
            await session.execute(
                select(GROUP_SESSIONS.c.id, GROUP_SESSIONS.c.pool_ms).where(
                    GROUP_SESSIONS.c.pool == PoolKind.SERVER.value
                )
            )
        ).all()
    )
    committed = await committed_ms(session, list(pools))
    return [
        f"session {sid} committed {committed[sid]} ms of a {pool} ms pool"
        for sid, pool in pools.items()
        if committed[sid] > pool
    ]


def _check_job(row: RowMapping, lines: dict[str, list[int]]) -> list[str]:
    job_id, status = row["id"], JobStatus(row["status"])
    reserved = row["reserved_ms"]
    count = {kind: len(lines.get(kind, [])) for kind in LedgerKind}
    total = {kind: sum(lines.get(kind, [])) for kind in LedgerKind}
    problems: list[str] = []

    def expect(kind: LedgerKind, n: int) -> None:
        if count[kind] != n:
            problems.append(
                f"job {job_id} ({status}) has {count[kind]} {kind} line(s), expected {n}"
            )

    expect(LedgerKind.RESERVE, 1)
    if count[LedgerKind.RESERVE] == 1 and total[LedgerKind.RESERVE] != reserved:
        problems.append(f"job {job_id} reserved {reserved} ms but its RESERVE line differs")
    charged_path = count[LedgerKind.CHARGE] > 0 or status is JobStatus.SUCCEEDED
    if not status.terminal:
        for kind in CLOSING_KINDS:
            expect(kind, 0)
    elif charged_path:
        problems.extend(_check_charged(row, count, total))
    else:
        expect(LedgerKind.REFUND, 1)
        for kind in (LedgerKind.RELEASE, LedgerKind.WAIVE, LedgerKind.CREDIT):
            expect(kind, 0)
        if count[LedgerKind.REFUND] == 1 and total[LedgerKind.REFUND] != reserved:
            problems.append(f"job {job_id} refunded a different amount than it reserved")
    if status is JobStatus.RUNNING and (
        row["lease_token"] is None or row["lease_expires_at"] is None
    ):
        problems.append(f"job {job_id} is running without a lease")
    if status is JobStatus.QUEUED and row["lease_token"] is not None:
        problems.append(f"job {job_id} is queued but still has a lease token")
    return problems


#: The lines that close a job's reservation or follow its close.
CLOSING_KINDS = (
    LedgerKind.CHARGE,
    LedgerKind.RELEASE,
    LedgerKind.REFUND,
    LedgerKind.WAIVE,
    LedgerKind.CREDIT,
)


def _check_charged(
    row: RowMapping, count: dict[LedgerKind, int], total: dict[LedgerKind, int]
) -> list[str]:
    """A finished job that was charged for GPU time: it succeeded, or was cancelled or blocked
    after running (``_check_job`` decided which path)."""
    job_id, status = row["id"], JobStatus(row["status"])
    problems: list[str] = []
    if status in (JobStatus.FAILED, JobStatus.DEAD):
        problems.append(f"job {job_id} is {status} but was charged; such jobs are refunded")
    for kind, expected in ((LedgerKind.CHARGE, 1), (LedgerKind.RELEASE, 1), (LedgerKind.REFUND, 0)):
        if count[kind] != expected:
            problems.append(
                f"job {job_id} ({status}) has {count[kind]} {kind} line(s), expected {expected}"
            )
    if count[LedgerKind.CREDIT] > 1 or (
        count[LedgerKind.CREDIT] and status not in (JobStatus.BLOCKED, JobStatus.SUCCEEDED)
    ):
        problems.append(f"job {job_id} ({status}) has {count[LedgerKind.CREDIT]} credit line(s)")
    if count[LedgerKind.CREDIT] and total[LedgerKind.CREDIT] != total[LedgerKind.CHARGE]:
        problems.append(f"job {job_id} was credited a different amount than it was charged")
    net = total[LedgerKind.CHARGE] - total[LedgerKind.CREDIT]
    if net != row["charged_ms"]:
        problems.append(f"job {job_id} says it was charged {row['charged_ms']} ms, ledger {net}")
    if total[LedgerKind.CHARGE] + total[LedgerKind.WAIVE] != row["gpu_ms"]:
        problems.append(
            f"job {job_id} measured {row['gpu_ms']} ms but charged+waived "
            f"{total[LedgerKind.CHARGE] + total[LedgerKind.WAIVE]}"
        )
    if total[LedgerKind.RELEASE] != row["reserved_ms"] * count[LedgerKind.RELEASE]:
        problems.append(f"job {job_id} released a different amount than it reserved")
    return problems
