"""The ``ecanet`` command (also ``python -m ecanet``): one module per subcommand. Building the parser
imports no optional package; a subcommand that needs a missing extra says which, in one line."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import USER_ERRORS, MissingExtraError
from ..training.preemption import Preempted
from . import (
    ablate,
    bench,
    compare,
    detect,
    evaluate,
    export,
    info,
    predict,
    prune,
    report,
    search,
    segment,
    train,
    viz,
)

SUBCOMMANDS = (
    info,
    bench,
    train,
    evaluate,
    predict,
    compare,
    ablate,
    viz,
    report,
    detect,
    segment,
    export,
    prune,
    search,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecanet", description="ECA-Net: Efficient Channel Attention toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MissingExtraError as e:
        print(f"ecanet {args.command}: {e}", file=sys.stderr)
        return 2
    except Preempted as e:  # a mid-epoch checkpoint is written: a job script requeues on this code
        print(f"ecanet {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except USER_ERRORS as e:
        print(f"ecanet {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
