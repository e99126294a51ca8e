"""Processes for one run: torch's elastic launcher, the process group and the device mesh.

`netspec train --nproc N` starts N local workers through torch.distributed's elastic agent
(the engine behind `torchrun`) with a c10d rendezvous on 127.0.0.1 and a free port. Each
worker runs the same `netspec train` command and learns its place from the environment the
agent sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT), so
`torchrun … -m netspec train …` works unchanged, on one machine or several.

The agent watches its workers: when one dies it stops the others at once (no survivor waits
in a collective), then either gives up or, with restarts left, starts them all again.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from netspec.errors import WORKER_ERRORS, UsageError, told
from netspec.interrupt import die_with_parent

if TYPE_CHECKING:
    from torch.distributed.launcher.api import LaunchConfig

# How long a collective may wait for the slowest process before it fails. Generous, since
# rank 0 alone fits the data statistics and writes checkpoints while the others wait; a
# dead process is noticed sooner, by the agent, which ends the job.
COLLECTIVE_TIMEOUT = timedelta(minutes=15)
# Set in the workers `launch` starts: their launcher reports how the job ended, they need not.
OWN_LAUNCHER = "NETSPEC_LAUNCHED"
LAUNCHER_PID = "NETSPEC_LAUNCHER_PID"  # the process whose death ends the workers
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the workers a launcher started."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    restarts: int  # how often the launcher has restarted the workers so far
    max_restarts: int
    own_launcher: bool  # started by `netspec train --nproc`, which reports the outcome

    @classmethod
    def from_env(cls) -> World | None:
        """The launcher's environment, or None when no launcher started this process."""
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return None
        return cls(
            rank=int(env["RANK"]),
            size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            local_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
            restarts=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
            max_restarts=int(env.get("TORCHELASTIC_MAX_RESTARTS", 0)),
            own_launcher=env.get(OWN_LAUNCHER) == "1",
        )


def tie_to_launcher() -> None:
    """Die with the launcher that started this worker, however it dies (kill -9 included):
    netspec's own, whose pid it was given, or torchrun's agent, the parent. A worker left
    behind would go on writing into a run folder whose lock died with the launcher."""
    die_with_parent(int(os.environ.get(LAUNCHER_PID) or os.getppid()))


def check_devices(device: torch.device, local_processes: int) -> None:
    """Several processes need a backend for the device, and on CUDA one GPU each."""
    if device.type not in BACKENDS:
        raise UsageError(
            f"--device {device.type} runs in one process; use --device cpu or cuda for --nproc"
        )
    if device.type == "cuda" and torch.cuda.device_count() < local_processes:
        raise UsageError(
            f"{local_processes} processes need one GPU each, but this machine has "
            f"{torch.cuda.device_count()}: lower --nproc"
        )


def join(world: World, device: torch.device) -> torch.device:
    """Join the process group (nccl with one GPU per local rank, gloo on the CPU) and return
    this process's device."""
    check_devices(device, world.local_size)
    if isinstance(sys.stdout, io.TextIOWrapper):  # a line reaches the log before a kill can
        sys.stdout.reconfigure(line_buffering=True)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        # the processes share the machine's cores rather than each taking all of them
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world.local_size))
    dist.init_process_group(
        BACKENDS[device.type],
        timeout=COLLECTIVE_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    return device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mesh(device: torch.device, shape: tuple[int, ...], dims: tuple[str, ...]) -> DeviceMesh:
    """The processes laid out as a named grid, e.g. ("towers", "data") = (2, 4)."""
    return init_device_mesh(device.type, shape, mesh_dim_names=dims)


def agree(value: T) -> T:
    """Rank 0's `value`, in every process (e.g. a run folder named after the time)."""
    if not dist.is_initialized():
        return value
    box: list[object] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block before the others do, so that what it caches (the built-in data
    set, the training-set statistics) is there for them to read rather than to rebuild."""
    first = not dist.is_initialized() or dist.get_rank() == 0
    if not first:
        dist.barrier()
    yield
    if first and dist.is_initialized():
        dist.barrier()


class WorkersFailed(Exception):
    """A worker process failed, and the launcher stopped the others; `said` holds the
    distinct one-line errors the workers reported (a mistake they all found says it once)."""

    def __init__(self, message: str, status: int, said: list[str]) -> None:
        super().__init__(message)
        self.status, self.said = status, said


def launch(argv: list[str], nproc: int, max_restarts: int) -> None:
    """Run `python -m netspec *argv` in `nproc` local workers and wait for all of them.

    Raises WorkersFailed naming the worker that failed first (not the ones the agent then
    stopped), with the exit status this command should return.
    """
    from torch.distributed.launcher.api import LaunchConfig

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # port 0: the rendezvous store takes a free port
        max_restarts=max_restarts,
    )
    # Restarted workers must not share the agent's store with the ones they replace: torch
    # keeps it across attempts, and a new worker can read a dead one's address from it and
    # fail to connect. Without sharing, each attempt's rank 0 hosts a fresh store.
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    os.environ[OWN_LAUNCHER] = "1"
    os.environ[LAUNCHER_PID] = str(os.getpid())
    with tempfile.TemporaryDirectory(prefix="netspec-errors-") as errors:
        os.environ[WORKER_ERRORS] = errors
        try:
            _run_workers(config, argv, nproc, Path(errors))
        finally:
            del os.environ[WORKER_ERRORS]


def _run_workers(config: LaunchConfig, argv: list[str], nproc: int, errors: Path) -> None:
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    try:
        elastic_launch(config, sys.executable)("-m", "netspec", *argv)
    except SignalException as exc:  # the agent has stopped the workers
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise WorkersFailed(f"stopped by {exc.sigval.name}", 128 + exc.sigval, []) from None
    except ChildFailedError as exc:
        stopped = -signal.SIGTERM
        rank, failure = min(
            exc.failures.items(), key=lambda kv: (kv[1].exitcode == stopped, kv[1].timestamp)
        )
        if failure.exitcode < 0:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        else:
            how = f"exited with status {failure.exitcode}"
        status = failure.exitcode if failure.exitcode > 0 else 1
        raise WorkersFailed(f"process {rank} of {nproc} {how}", status, told(errors)) from None
