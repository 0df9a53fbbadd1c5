"""`natlens` command line: one module per subcommand, each with `register(subparsers)`.

Every subcommand turns bad input into one line on stderr and exit code 2
(NatlensError); an unexpected exception keeps its traceback, since that is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from natlens import __version__
from natlens.errors import NatlensError

# Subcommand modules under natlens.cli, in the order `natlens --help` lists them.
COMMANDS = [
    "ingest",
    "explain",
    "analyze",
    "lab",
    "report",
    "batch",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natlens",
        description="Post-incident analysis of Kubernetes service networking.",
    )
    parser.add_argument("--version", action="version", version=f"natlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"natlens.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's "command"
    try:
        return int(args.func(args) or 0)
    except NatlensError as exc:
        print(f"natlens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("natlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
