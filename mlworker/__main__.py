"""`python -m mlworker COMMAND ...`: each command lives in mlworker/cli/<command>.py
(a hyphen in the command is an underscore in the module name).

A command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `phantoms` never pays for importing Keras.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "phantoms": "write synthetic chest X-rays with infection masks (QaTa-COV19 layout)",
    "train": "train a segmentation network on a QaTa-COV19-layout folder",
    "predict": "predict infection masks and probability maps with a trained network",
    "evaluate": "evaluate a trained network on a QaTa-COV19-layout folder",
    "maps": "write infection maps for a folder of CXRs",
    "interactive-train": "train the click-refinement network on a folder's masks",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlworker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"mlworker.cli.{args.command.replace('-', '_')}")
    command_parser = argparse.ArgumentParser(
        prog=f"python -m mlworker {args.command}", description=COMMANDS[args.command]
    )
    module.add_arguments(command_parser)
    return int(module.run(command_parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
