"""Run a function in several gloo processes on the CPU, bounded by a timeout.

Each rank gets a process group through a file store in a fresh folder (no ports to collide)
and its own result file; a rank that fails or hangs fails the test, never the test run.
"""

from __future__ import annotations

import datetime
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

Worker = Callable[..., Any]


def _rank_main(rank: int, fn: Worker, size: int, folder: str, args: tuple) -> None:
    torch.set_num_threads(1)
    store = Path(folder) / "store"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        result = fn(rank, size, *args)
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    except Exception:
        (Path(folder) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Worker, size: int, folder: Path, *args: Any, timeout: float = 120) -> list[Any]:
    """`fn(rank, size, *args)` in `size` processes; each rank's return value, in rank order.

    `fn` must be importable (defined at a module's top level); its results must be tensors,
    numbers, strings, or lists and dicts of them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(
        _rank_main, (fn, size, str(folder), args), nprocs=size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{size} ranks did not finish in {timeout:g} s")
    except ProcessException as exc:
        errors = sorted(folder.glob("rank*.err"))
        raise AssertionError("\n".join(e.read_text() for e in errors) or str(exc)) from None
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(size)]
