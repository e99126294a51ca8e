"""`netspec inspect RUN_OR_CHECKPOINT VIEW`: the views, each in its own module."""

from __future__ import annotations

import argparse

from netspec.inspect.filters import run_filters
from netspec.inspect.neighbours import run_neighbours

VIEWS = {"filters": run_filters, "neighbours": run_neighbours}


def run_inspect(args: argparse.Namespace) -> int:
    return VIEWS[args.view](args)
