"""The ``ternbench`` command line: one sub-command per module, registered from data.

Each module in ``COMMAND_MODULES`` has ``add_parser(subparsers)``, which adds its
sub-command and sets ``func(args) -> int``; another installed package adds commands with an
entry point of the group ``ternbench.commands`` naming its ``add_parser``. Heavy imports (torch, open_clip) happen
inside the handlers so ``ternbench --help`` stays fast. User errors
(``TernbenchError``, ``ReportsError``) print one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

from quant.errors import TernbenchError
from reports.errors import ReportsError

# User errors of each layer: printed as one line, exit status 2.
USER_ERRORS: tuple[type[Exception], ...] = (TernbenchError, ReportsError)

COMMAND_MODULES: tuple[str, ...] = (
    "bench.cli_report",
    "bench.cli_quant",
    "bench.cli_kernels",
    "bench.cli_datasets",
    "bench.cli_run",
    "bench.train.cli",
)
COMMAND_GROUP = "ternbench.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ternbench",
        description="Evaluate and benchmark ternary (1.58-bit) CLIP models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    for ep in entry_points(group=COMMAND_GROUP):
        ep.load()(sub)  # another package's add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `ternbench` with no command runs the default job when `run` exists.
        if "run" in sub_commands(parser):
            args = parser.parse_args(["run", *argv])
        else:
            parser.print_help()
            return 0
    # What provenance records: these arguments, not the host process's (pytest's, a notebook's).
    args.invocation = ("ternbench", *argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"ternbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ternbench {args.command}: interrupted", file=sys.stderr)
        return 130


def sub_commands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


if __name__ == "__main__":
    sys.exit(main())
