"""``ecanet search-widths``: CONet's search for every layer's channel count (Rank Average Slope)."""

from __future__ import annotations

import argparse
import json

from ..conet.config import SearchConfig
from .flags import add_config_flags, file_and_flags


def add_parser(sub) -> None:
    p = sub.add_parser("search-widths", help="CONet: search every layer's width from its Rank Average Slope")
    add_config_flags(p, SearchConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..conet import search_widths

    result = search_widths(file_and_flags(args, SearchConfig))
    print(json.dumps({k: result[k] for k in ("model", "final_widths", "params", "macs")}, indent=2))
