"""`collabmask COMMAND …`: start the app, import, export, run a worker, seed the demo.

Each command is one of the app's management commands (the Makefile runs the same code), with
its own arguments and `--help`. State lives in a data directory: `--data-dir`, else
COLLABMASK_VAR_DIR, else the user's data directory (config/datadir.py). `collabmask --help`
needs no Django and writes nothing; a command sets Django up only once it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from config.datadir import VAR_DIR_VARIABLE, data_dir, user_data_dir

PROG = "collabmask"


@dataclass(frozen=True)
class Command:
    management_command: str
    summary: str
    migrate_first: bool = True


# One entry per command; the arguments are the management command's own.
COMMANDS = {
    "start": Command(
        "run_embedded",
        "serve the app: embedded Redis, a worker and the web server (Ctrl-C stops them)",
        migrate_first=False,  # it migrates and seeds the demo itself
    ),
    "import": Command(
        "import_cxr", "import CXRs and manual masks from folders, zip files or single files"
    ),
    "export": Command("export_dataset", "export a dataset's ground truth as one zip"),
    "demo": Command("seed_demo", "create demo accounts for every role and a phantom dataset"),
}
WORKER_SUMMARY = "run a Celery worker for training and prediction (needs collabmask[ml])"
MANAGE_SUMMARY = "run any Django management command (createsuperuser, changepassword, shell …)"


def _package_version() -> str:
    try:
        return version(PROG)
    except PackageNotFoundError:
        return "source checkout"


def _data_dir_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument(
        "--data-dir",
        type=Path,
        # Suppressed so that a --data-dir after the command name does not reset one before it.
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"where the database, media, secrets and logs live (default: ${VAR_DIR_VARIABLE}, "
        f"else {user_data_dir()})",
    )
    return parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ground-truth COVID-19 infection masks for chest X-rays, built by networks "
        "and medical doctors together.",
        epilog=f"'{PROG} COMMAND --help' describes a command's arguments.",
        parents=[_data_dir_option()],
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    summaries = {name: c.summary for name, c in COMMANDS.items()}
    summaries |= {"worker": WORKER_SUMMARY, "manage": MANAGE_SUMMARY}
    for name, summary in summaries.items():
        # Each command's own parser (built once Django is set up) reads the rest, --help included.
        commands.add_parser(
            name, help=summary, add_help=False, parents=[_data_dir_option()], allow_abbrev=False
        )
    return parser


def _setup_django(chosen: Path | None) -> Path:
    where = data_dir(chosen, in_checkout=False)
    os.environ[VAR_DIR_VARIABLE] = str(where)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    return where


def _command_parser(name: str, command: Command) -> argparse.ArgumentParser:
    from django.core.management import load_command_class

    management = load_command_class("annotation", command.management_command)
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {name}",
        description=management.help,
        parents=[_data_dir_option()],
        allow_abbrev=False,
    )
    management.add_arguments(parser)
    return parser


def _run_management_command(name: str, command: Command, rest: list[str]) -> int:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    _command_parser(name, command).parse_args(rest)  # --help, and argument errors, exit here
    try:
        if command.migrate_first:
            call_command("migrate", interactive=False, verbosity=0)
        call_command(command.management_command, *rest)
    except CommandError as exc:
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker(rest: list[str], where: Path) -> int:
    from django.conf import settings

    from annotation.management.commands.run_embedded import (
        WORKER_QUEUES,
        embedded_redis_wanted,
        redis_answers,
    )
    from mlworker.extra import ml_missing

    parser = argparse.ArgumentParser(
        prog=f"{PROG} worker",
        description="A Celery worker that trains networks and predicts masks. It needs the ML "
        "extra (collabmask[ml]) and the broker of a running app: `collabmask start` with the "
        "same --data-dir on this machine, or REDIS_URL (and DATABASE_URL, media settings) of "
        "a shared deployment.",
        parents=[_data_dir_option()],
        allow_abbrev=False,
    )
    parser.add_argument("--queues", default=",".join(WORKER_QUEUES), help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--hostname", default="worker@%h", help="default: %(default)s")
    parser.add_argument(
        "--pool",
        choices=("prefork", "solo"),
        default="prefork",
        help="solo: one process that keeps models loaded, for `--queues interactive` "
        "(click-to-refine); default: %(default)s",
    )
    args = parser.parse_args(rest)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    missing = ml_missing()
    if missing:
        print(f"{PROG} worker: error: {missing}", file=sys.stderr)
        return 1
    if embedded_redis_wanted() and not redis_answers(settings.EMBEDDED_REDIS_SOCKET):
        print(
            f"{PROG} worker: error: no broker answers in {where}; run `{PROG} start "
            f"--data-dir {where}` first, or set REDIS_URL to a shared Redis",
            file=sys.stderr,
        )
        return 1
    from config.celery_app import app

    app.worker_main(
        [
            "worker", "--queues", args.queues, "--concurrency", str(args.concurrency),
            "--pool", args.pool, "--hostname", args.hostname, "--loglevel", "INFO",
        ]
    )  # fmt: skip
    return 0


def _manage(rest: list[str]) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line([f"{PROG} manage", *rest])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (argument errors exit with 2 from argparse)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = _parser().parse_known_args(argv)
    where = _setup_django(getattr(args, "data_dir", None))
    if args.command == "worker":
        return _worker(rest, where)
    if args.command == "manage":
        return _manage(rest)
    return _run_management_command(args.command, COMMANDS[args.command], rest)
