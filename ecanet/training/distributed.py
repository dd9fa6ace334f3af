"""torch.distributed set-up for runs started by torchrun (single or multi node), and the few collective
helpers the engine needs. One process per device; gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> Dist:
    """Join the process group torchrun describes in the environment, or run as a single process. A CUDA
    device this machine does not have is one line naming the flag."""
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if device is not None:
        check_device(device)
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(device=torch.device(device or ("cuda" if want_cuda else "cpu")))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if want_cuda:  # CUDA only
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        store = this_start_store(rank)
        dist.init_process_group("nccl" if want_cuda else "gloo", store=store, rank=rank, world_size=world)
    return Dist(rank, world, local, dev)


def this_start_store(rank: int) -> dist.Store:
    """The env:// store, with this start of the group's keys under a prefix of their own.

    torchrun (``--max-restarts``) keeps one store across restarts and nothing clears it, so a restarted group
    can read a dead peer's address from the first start and hang connecting to it (pytorch/pytorch#135712;
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` is torchrun's own way out). Each rank counts its starts in the
    store; the group of the n-th start meets under ``ecanet/start{n}``. (TORCHELASTIC_RESTART_COUNT is not
    the same on every node, so it cannot serve.)"""
    store = next(dist.rendezvous("env://"))[0]
    start = store.add(f"ecanet/starts/rank{rank}", 1)
    return dist.PrefixStore(f"ecanet/start{start}", store)


def check_device(device: str) -> None:
    """``--device``'s value, if this machine has it: cpu, cuda, cuda:N (N below the GPU count), mps."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: {device!r} is not a device name (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():  # CUDA only
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")


@contextmanager
def process_group(device: str | None = None) -> Iterator[Dist]:
    """This process's place in the torchrun group (or a single process), left cleanly however the block ends."""
    proc = init_distributed(device)
    try:
        yield proc
    finally:
        cleanup(proc)


def all_reduce_sum(values: list[float], proc: Dist) -> list[float]:
    """Sum a few scalars over all processes (float64, on the process's device)."""
    if not proc.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor, proc: Dist) -> torch.Tensor:
    """The sum of ``t`` (e.g. a confusion matrix) over all processes, exact for integer counts."""
    if not proc.enabled:
        return t
    t = t.to(proc.device, torch.float64 if t.is_floating_point() else torch.int64)
    dist.all_reduce(t)
    return t


def barrier(proc: Dist) -> None:
    if proc.enabled:
        dist.barrier()


def cleanup(proc: Dist) -> None:
    if proc.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: object, proc: Dist) -> list:
    """``obj`` of every process, in rank order (e.g. RNG states, so a resumed run draws the same numbers)."""
    if not proc.enabled:
        return [obj]
    gathered: list = [None] * proc.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
