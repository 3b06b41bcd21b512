"""The ``atelier`` command: the one composition root that wires config, storage, generation and bot.

Heavy modules are imported inside each subcommand so ``atelier --help`` and worker hosts stay light.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from config import ConfigError, Settings, load_settings


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Self-hosted Discord image bot.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="run the Discord bot (and, by default, one worker in-process)")
    sub.add_parser("worker", help="run a generation worker against the shared queue")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply all migrations")
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
    return _dispatch(args, settings, parser)


def _dispatch(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    parser.error(f"command {args.command!r} is not available yet")
    return 2


if __name__ == "__main__":
    sys.exit(main())
