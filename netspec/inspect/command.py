"""`netspec inspect RUN_OR_CHECKPOINT VIEW`: the views, each in its own module."""

from __future__ import annotations

import argparse

from netspec.inspect.filters import run_filters

VIEWS = {"filters": run_filters}


def run_inspect(args: argparse.Namespace) -> int:
    return VIEWS[args.view](args)
