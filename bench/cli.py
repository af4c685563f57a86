"""The ``ternbench`` command line: one sub-command per registry entry, declared as data.

``COMMANDS`` maps each command's name to the ``"module:attr"`` of its ``add_parser(subparsers)``,
which adds that sub-command and sets ``func(args) -> int``; another installed package adds commands
with entry points of the group ``ternbench.commands`` (``NAME = "pkg.module:add_parser"``). Both
fill one registry, so a command name declared twice is an error. Heavy imports (torch, open_clip)
happen inside the handlers so ``ternbench --help`` stays fast. User errors
(``TernbenchError``, ``ReportsError``) print one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from quant.errors import TernbenchError
from quant.registry import Registry, is_reference
from reports.errors import ReportsError

# User errors of each layer: printed as one line, exit status 2.
USER_ERRORS: tuple[type[Exception], ...] = (TernbenchError, ReportsError)

# command -> its add_parser, imported when the parser is built.
COMMANDS: dict[str, str] = {
    "report": "bench.cli_report:add_report_parser",
    "check": "bench.cli_report:add_check_parser",
    "quantize": "bench.cli_quant:add_quantize_parser",
    "inspect": "bench.cli_quant:add_inspect_parser",
    "kernels": "bench.cli_kernels:add_parser",
    "datasets": "bench.cli_datasets:add_parser",
    "run": "bench.cli_run:add_parser",
    "train": "bench.train.cli:add_parser",
}
COMMAND_GROUP = "ternbench.commands"


def command_registry() -> Registry:
    """The commands: ``COMMANDS`` and the installed packages' ``ternbench.commands`` entry points."""
    commands: Registry = Registry("command", TernbenchError)
    for name, add_parser in COMMANDS.items():
        commands.register(name, add_parser)
    for ep in entry_points(group=COMMAND_GROUP):
        if not is_reference(ep.value):
            raise TernbenchError(f"entry point {ep.name} = {ep.value!r} of the group {COMMAND_GROUP}: "
                                 "expected 'package.module:add_parser'")
        commands.register(ep.name, ep.value)  # lazy like the built-in ones
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ternbench",
        description="Evaluate and benchmark ternary (1.58-bit) CLIP models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = command_registry()
    for name in commands:
        commands[name](sub)
        if name not in sub.choices:
            raise TernbenchError(f"command {name!r}: its add_parser added no sub-command of that name "
                                 f"(there are: {', '.join(sub.choices)})")
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
