"""``ecanet report``: a training output folder (classification or detection) as one HTML page."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="a training output folder as one self-contained HTML page")
    p.add_argument("run", help="the output folder of ecanet train or ecanet detect train")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..studies.report import build_report

    print(build_report(args.run))
