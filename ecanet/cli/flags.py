"""Flags shared by subcommands: config fields as flags (generated from the config dataclass, whose fields
carry their help text) and small argparse types."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields

from ..training.config import C, LoopConfig, load_config_file, merge


def positive_int(value: str) -> int:
    """argparse type: an int >= 1 (argparse names the flag in its error)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def nonnegative_float(value: str) -> float:
    """argparse type: a number >= 0 (argparse names the flag in its error)."""
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


def _flag_settings(hint: object) -> dict:
    """argparse settings for a field's type: bools switch on and off, lists take several values."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]  # X | None
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is list:
        return {"type": typing.get_args(hint)[0], "nargs": "+"}
    return {"type": hint if hint in (int, float) else str}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type[LoopConfig], skip: set[str] = frozenset()):
    """``--config FILE`` and one flag per field of ``config_class``, all defaulting to None so that recipe
    and config-file values apply where a flag is not given."""
    parser.add_argument("--config", help="a saved OUT/config.json to start from (flags override it)")
    hints = typing.get_type_hints(config_class)
    for f in fields(config_class):
        if f.name in skip:
            continue
        settings = _flag_settings(hints[f.name]) | f.metadata.get("cli", {})
        parser.add_argument("--" + f.name.replace("_", "-"), default=None, help=f.metadata.get("help"), **settings)


def file_and_flags(args: argparse.Namespace, config_class: type[C]) -> C:
    """``config_class`` from its defaults, the ``--config`` file's values, then the flags given."""
    file_values = load_config_file(args.config, config_class) if args.config else {}
    return merge(config_class, file_values, config_values(args, config_class))


def config_values(args: argparse.Namespace, config_class: type[LoopConfig]) -> dict:
    """The config fields given as flags."""
    names = {f.name for f in fields(config_class)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
