"""The ``atelier`` command line: parses arguments and dispatches to the composition root
(``bot.runtime``), the local generation commands and the benchmarks.

Heavy modules are imported inside each subcommand so ``atelier --help`` stays instant and a worker
host never imports discord.py.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.runtime import WORKER_HUNG_EXIT, open_ledger, run_bot, run_web, run_worker
from config import ConfigError, Settings, load_settings
from config.errors import mask_url_passwords

if TYPE_CHECKING:
    from generation.commands import CommandOutput

log = logging.getLogger("atelier")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Self-hosted Discord image bot.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the Discord bot (and, by default, one worker in-process)")
    sub.add_parser("worker", help="run a generation worker against the shared queue")
    sub.add_parser(
        "web", help="run the read-only web gallery alone (no Discord token, no model needed)"
    )

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply all migrations")
    prune = db_sub.add_parser(
        "prune", help="delete expired images and job rows now (the bot does it in the background)"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")

    quota = sub.add_parser("quota", help="the operator's quota overrides (never from Discord)")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True, metavar="ACTION")
    quota_set = quota_sub.add_parser("set", help="give a user an allowance")
    quota_clear = quota_sub.add_parser("clear", help="remove a user's override")
    for action in (quota_set, quota_clear):
        action.add_argument("--user", type=int, required=True, help="Discord user id")
        action.add_argument(
            "--guild", type=int, default=None, help="one server's id (default: every server)"
        )
    quota_set.add_argument(
        "--gpu-seconds", type=float, required=True, help="allowance per rolling window"
    )
    quota_show = quota_sub.add_parser("show", help="list overrides")
    quota_show.add_argument("--user", type=int, default=None, help="only this Discord user id")

    modlog = sub.add_parser("modlog", help="a server's moderation audit log")
    modlog_sub = modlog.add_subparsers(dest="modlog_command", required=True, metavar="ACTION")
    export = modlog_sub.add_parser("export", help="write one server's audit log, oldest first")
    export.add_argument("--guild", required=True, help="the server's id")
    export.add_argument("--format", required=True, help="csv or jsonl")
    export.add_argument(
        "--output", type=Path, default=None, help="file to write (default: standard output)"
    )

    imagine = sub.add_parser("imagine", help="generate a 2x2 grid locally, no Discord")
    imagine.add_argument("prompt", help='prompt with --options, e.g. "a lighthouse --ar 3:2"')
    imagine.add_argument("--out", type=Path, default=Path("grid.png"), help="output file")

    for name, flag, flag_help in (
        ("upscale", "--creative", "Upscale (Creative) instead of (Subtle)"),
        ("vary", "--strong", "Vary (Strong) instead of (Subtle)"),
    ):
        follow = sub.add_parser(name, help=f"{name} one image of a grid made by `imagine`")
        follow.add_argument("grid", type=Path, help="a grid file written by atelier imagine")
        follow.add_argument("--index", type=int, required=True, help="image 1-4 of the grid")
        follow.add_argument(flag, action="store_true", help=flag_help)
        follow.add_argument(
            "--out", type=Path, default=Path("."), help="output file (default: a new file here)"
        )

    bench = sub.add_parser("bench", help="benchmarks (ratios against the naive way)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    gen = bench_sub.add_parser("generation", help="batched grids vs four single calls; load time")
    gen.add_argument("--gpu", action="store_true", help="full-size SDXL geometry on CUDA")
    gen.add_argument("--compile", action="store_true", help="torch.compile the UNet (with --gpu)")
    gen.add_argument("--grids", type=int, default=5)
    upscale = bench_sub.add_parser("upscale", help="2x upscale, VAE tiled vs whole: time, memory")
    upscale.add_argument("--gpu", action="store_true", help="full-size SDXL geometry on CUDA")
    upscale.add_argument("--size", type=int, default=None, help="source side (default: native)")
    upscale.add_argument("--runs", type=int, default=3)
    queue = bench_sub.add_parser("queue", help="queue overhead and jobs/s, 1 vs 4 workers")
    queue.add_argument(
        "--url",
        action="append",
        help="database URL (repeatable); default: "
        "a scratch SQLite file, plus ATELIER_BENCH_POSTGRES_URL if set",
    )
    queue.add_argument("--jobs", type=int, default=400)
    gallery = bench_sub.add_parser(
        "gallery",
        help="search, gallery pages, contact sheet and web TTFB on a seeded 100,000-job server",
    )
    gallery.add_argument("--jobs", type=int, default=100_000, help="jobs to seed (default 100000)")
    gallery.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    gallery.add_argument(
        "--postgres-url",
        default=None,
        help="a scratch PostgreSQL database (default: ATELIER_TEST_POSTGRES_URL, else "
        "ATELIER_DATABASE_URL when it is PostgreSQL); it must hold no jobs",
    )
    gallery.add_argument("--samples", type=int, default=200, help="searches, and pages per view")
    gallery.add_argument("--sheet-runs", type=int, default=20, help="contact sheet renders")
    gallery.add_argument(
        "--web-requests", type=int, default=400, help="web pages fetched by the 20 clients"
    )
    batching = bench_sub.add_parser(
        "batching", help="tiny-model grids/s, cross-job batching on/off"
    )
    batching.add_argument("--jobs", type=int, default=16)
    bot = bench_sub.add_parser("bot", help="/imagine acknowledgement latency against the emulator")
    bot.add_argument("--interactions", type=int, default=1000)
    bot.add_argument("--users", type=int, default=50)
    bot.add_argument("--seconds", type=float, default=60.0)
    bot.add_argument(
        "--queued",
        type=int,
        default=0,
        help="instead: N queued jobs in one channel want position edits while one result is "
        "ready; the naive publisher against the edit budget, with Discord's rate limits on",
    )
    bot.add_argument(
        "--cap", type=float, default=60.0, help="with --queued: most seconds to wait for a result"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic lists its plugins at INFO on every start: noise next to the migrations it runs.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # aiosqlite logs every statement at DEBUG: hundreds of lines a second that drown the bot's.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    from generation.errors import GenerationError
    from storage.errors import StorageError

    try:
        return _dispatch(args, settings)
    except (GenerationError, StorageError, ConfigError) as exc:
        # Storage masks its URLs already; this catches any other error that quotes one.
        print(f"atelier: {mask_url_passwords(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "db" and args.db_command == "prune":
        return asyncio.run(_prune(settings, dry_run=args.dry_run))
    if command == "db":
        from storage.migrate import upgrade

        revision = asyncio.run(upgrade(settings.resolved_database_url))
        print(f"database at revision {revision}")
        return 0
    if command == "quota":
        return asyncio.run(_quota(settings, args))
    if command == "modlog":
        return asyncio.run(_modlog_export(settings, args))
    if command == "imagine":
        return _imagine(settings, args.prompt, args.out)
    if command in ("upscale", "vary"):
        return _follow_up(settings, args)
    if command == "bench":
        return _bench(settings, args)
    if command == "worker":
        status = asyncio.run(run_worker(settings))
        if status == WORKER_HUNG_EXIT:
            # A hung engine thread may sit in a driver call that interpreter shutdown (atexit
            # hooks of CUDA libraries) would wait on: leave without running them.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    if command == "run":
        asyncio.run(run_bot(settings))
        return 0
    if command == "web":
        asyncio.run(run_web(settings))
        return 0
    raise AssertionError(command)


# -- the operator's quota overrides ------------------------------------------------------------


async def _quota(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier quota set|clear|show`: overrides only the operator can make, for one server or
    (without --guild) for every server, where they win over what a server's admins set."""
    async with open_ledger(settings) as ledger:
        quota = ledger.queue.quota
        where = f"in server {args.guild}" if getattr(args, "guild", None) else "everywhere"
        if args.quota_command == "set":
            if not 0 <= args.gpu_seconds < float("inf"):
                print("atelier: --gpu-seconds must be a number of 0 or more", file=sys.stderr)
                return 2
            await quota.set_override(
                args.user, args.gpu_seconds, guild_id=args.guild, reason="atelier quota set"
            )
            print(f"user {args.user}: {args.gpu_seconds:g} GPU-seconds per window {where}")
        elif args.quota_command == "clear":
            found = await quota.clear_override(args.user, guild_id=args.guild)
            print(
                f"user {args.user}: "
                + ("override removed" if found else "no override")
                + f" {where}"
            )
        else:
            overrides = await quota.list_overrides(user_id=args.user)
            if not overrides:
                print("no quota overrides")
            for override in overrides:
                scope = "everywhere" if override.guild_id is None else f"server {override.guild_id}"
                print(
                    f"user {override.user_id}  {scope}  {override.allowance:g} GPU-seconds  "
                    f"set by {override.set_by or 'operator'}  {override.reason}"
                )
    return 0


# -- the moderation audit log -----------------------------------------------------------------

#: A CSV cell starting with one of these is a formula to a spreadsheet: prefixed with ``'``.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MODLOG_FIELDS = (
    "id",
    "created_at",
    "guild_id",
    "actor_id",
    "action",
    "target_user_id",
    "target_job_id",
    "reason",
    "details",
)


def csv_cell(value: object) -> str:
    """One CSV cell, safe to open in a spreadsheet: prompts and reasons are user text, and a
    cell such as ``=HYPERLINK(...)`` would run as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


async def _modlog_export(settings: Settings, args: argparse.Namespace) -> int:
    """`atelier modlog export --guild ID --format csv|jsonl [--output FILE]`: one server's
    audit log, oldest first. Written to FILE only once complete (a failure leaves no half
    file)."""
    guild = args.guild.strip()
    if not guild.isdigit() or not 0 < int(guild) < 2**63:
        print(f"atelier: --guild must be a server id (digits), not {args.guild!r}", file=sys.stderr)
        return 2
    if args.format not in ("csv", "jsonl"):
        print(f"atelier: --format must be csv or jsonl, not {args.format!r}", file=sys.stderr)
        return 2
    output: Path | None = args.output
    partial = None if output is None else output.with_name(output.name + ".part")
    try:
        out = sys.stdout if partial is None else partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        print(f"atelier: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    count = 0
    try:
        # RFC 4180 line ends: the writer then quotes a cell holding either \r or \n.
        writer = csv.writer(out) if args.format == "csv" else None
        async with open_ledger(settings) as ledger:
            if writer is not None:
                writer.writerow(MODLOG_FIELDS)
            async for entry in ledger.modlog.export(int(guild)):
                row = {
                    "id": entry.id,
                    "created_at": entry.created_at.isoformat(),
                    "guild_id": entry.guild_id,
                    "actor_id": entry.actor_id,
                    "action": str(entry.action),
                    "target_user_id": entry.target_user_id,
                    "target_job_id": entry.target_job_id,
                    "reason": entry.reason,
                    "details": dict(entry.details),
                }
                if writer is None:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:
                    row["details"] = json.dumps(row["details"], ensure_ascii=False)
                    writer.writerow([csv_cell(row[name]) for name in MODLOG_FIELDS])
                count += 1
    except BaseException:
        if partial is not None:
            out.close()
            partial.unlink(missing_ok=True)
        raise
    if partial is not None and output is not None:
        out.close()
        partial.replace(output)
        print(f"wrote {count} audit log row(s) of server {guild} to {output}", file=sys.stderr)
    return 0


# -- retention ---------------------------------------------------------------------------------


async def _prune(settings: Settings, *, dry_run: bool) -> int:
    """`atelier db prune [--dry-run]`: what the bot's background retention does, all of it now."""
    keep = settings.retention
    async with open_ledger(settings) as ledger:
        print(
            f"retention: images {_days(keep.images_days)}, job rows {_days(keep.rows_days)}, "
            f"blocked jobs' images {_days(settings.bot.appeal_days)} after the block, "
            f"audit log rows {_days(keep.modlog_days)}; liked and published jobs are kept"
        )
        report = await ledger.retention.prune(dry_run=dry_run)
    print(
        f"{'would delete' if dry_run else 'deleted'}: {report.jobs} job row(s) with "
        f"{report.ledger_lines} quota ledger line(s); the images of {report.image_jobs} more "
        f"job(s) and of {report.blocked} blocked job(s); {report.image_files} file(s), "
        f"{_size(report.image_bytes)}; {report.modlog_rows} audit log row(s); "
        f"{report.saved_queries} expired saved search(es); {report.sessions} ended group "
        "session(s)"
    )
    return 0


def _days(days: float) -> str:
    return "kept forever" if not days else f"kept {days:g} day(s)"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


# -- local generation ---------------------------------------------------------------------------


def _imagine(settings: Settings, prompt: str, out: Path) -> int:
    from generation.commands import imagine_to_file
    from generation.options import parse_imagine_prompt

    requests = parse_imagine_prompt(prompt, settings=settings.generation, model=settings.model)
    for output in imagine_to_file(settings, requests, out):
        _print_output(output)
    return 0


def _follow_up(settings: Settings, args: argparse.Namespace) -> int:
    from generation.commands import upscale_from_file, vary_from_file

    if args.command == "upscale":
        output = upscale_from_file(settings, args.grid, args.index, args.creative, args.out)
    else:
        output = vary_from_file(settings, args.grid, args.index, args.strong, args.out)
    _print_output(output)
    return 0


def _print_output(output: CommandOutput) -> None:
    r = output.request
    print(f"wrote {output.path} ({output.width}x{output.height} per image)")
    print(
        f"  prompt: {r.prompt!r}  negative: {r.negative_prompt!r}  operation: {r.operation.value}"
    )
    print(
        f"  model {r.model}, {r.mode.value}, {r.steps} steps, cfg {r.guidance:g}, "
        f"chaos {r.chaos}, stop {r.stop}, tile {r.tile}, aspect {r.aspect}"
    )
    print(f"  seeds: {', '.join(str(seed) for seed in output.seeds)}")
    print(f"  time: {output.timings.total:.2f} s (gpu {output.gpu_seconds:.2f} s)")


# -- benchmarks -------------------------------------------------------------------------------


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    """The benchmarks. Their modules are imported here, not at the top: they pull in torch, the
    Discord emulator and aiohttp's server, which `atelier worker` and `atelier run` must not
    load (a worker host never imports discord.py). No import cycle is involved; the import-graph
    test counts these imports too."""
    what = args.bench_command
    if what == "generation":
        from generation.bench import bench_generation

        print(bench_generation(settings, args.gpu, args.compile, args.grids).to_table())
        return 0
    if what == "upscale":
        from generation.bench import bench_upscale

        print(bench_upscale(settings, args.gpu, args.size, args.runs).to_table())
        return 0
    if what == "queue":
        return _bench_queue(settings, args)
    if what == "gallery":
        return _bench_gallery(args)
    if what == "batching":
        from bot.devtools.bench import bench_batching

        print(asyncio.run(bench_batching(settings, args.jobs)))
        return 0
    if what == "bot" and args.queued:
        from bot.devtools.bench_edits import bench_edits

        print(asyncio.run(bench_edits(settings, args.queued, args.cap)))
        return 0
    if what == "bot":
        from bot.devtools.bench import bench_bot

        print(asyncio.run(bench_bot(settings, args.interactions, args.users, args.seconds)))
        return 0
    raise AssertionError(what)


def _bench_queue(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import tempfile

    from storage.bench import bench_queue

    urls = list(args.url or [])
    with tempfile.TemporaryDirectory() as scratch:
        if not urls:
            urls.append(f"sqlite+aiosqlite:///{scratch}/bench.db")
            if os.environ.get("ATELIER_BENCH_POSTGRES_URL"):
                urls.append(os.environ["ATELIER_BENCH_POSTGRES_URL"])
        for url in urls:
            print(asyncio.run(bench_queue(url, jobs=args.jobs)).table())
    return 0


def _bench_gallery(args: argparse.Namespace) -> int:
    """`atelier bench gallery`: SQLite in a scratch file, PostgreSQL at --postgres-url (or the
    environment's test or configured URL; a database with jobs is refused)."""
    import tempfile

    from bot.devtools.bench_gallery import bench_gallery, default_web_wiring

    if min(args.jobs, args.samples, args.sheet_runs, args.web_requests) < 1:
        print(
            "atelier: --jobs, --samples, --sheet-runs and --web-requests must be at least 1",
            file=sys.stderr,
        )
        return 2
    notes = []
    pg_url = args.postgres_url or os.environ.get("ATELIER_TEST_POSTGRES_URL")
    configured = os.environ.get("ATELIER_DATABASE_URL", "")
    if pg_url is None and configured.startswith("postgresql"):
        pg_url = configured
    if args.backend == "postgres" and not pg_url:
        print(
            "atelier: bench gallery --backend postgres needs --postgres-url "
            "(or ATELIER_TEST_POSTGRES_URL)",
            file=sys.stderr,
        )
        return 2
    if args.backend == "both" and not pg_url:
        notes.append("postgresql: skipped, no --postgres-url or ATELIER_TEST_POSTGRES_URL")
    wiring, note = default_web_wiring()
    if wiring is None:
        notes.append(note)
    with tempfile.TemporaryDirectory() as scratch:
        sqlite_url = f"sqlite+aiosqlite:///{scratch}/gallery.db"
        urls = [sqlite_url] if args.backend in ("sqlite", "both") else []
        if args.backend in ("postgres", "both") and pg_url:
            urls.append(pg_url)
        report = asyncio.run(
            bench_gallery(
                urls,
                args.jobs,
                samples=args.samples,
                sheet_runs=args.sheet_runs,
                web_requests=args.web_requests,
                wiring=wiring,
                notes=notes,
                clean=lambda url: url != sqlite_url,
            )
        )
        print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
