"""Running one training script as several processes (``torchrun --nproc_per_node=N -m train.mnist``).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/MASTER_PORT); without them the
run is a single process and nothing here touches ``torch.distributed``. Each rank trains on
its own shard of every batch order (see ``train._data.shard``), gradients are averaged by
DistributedDataParallel, metrics are summed over ranks with :func:`all_reduce_sum`, and only
rank 0 prints and writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from train._errors import UserError


class DeviceError(UserError, ValueError):
    """A ``--device`` this machine or this way of running does not have."""


class LaunchError(UserError, ValueError):
    """torchrun's environment variables make no sense (set by hand, most likely)."""


@dataclass(frozen=True, kw_only=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(device: str = "cpu", *, timeout_s: float = 1800.0) -> DistContext:
    """Detect torchrun's environment and join the process group (gloo on CPU, nccl on CUDA).

    ``device`` is a torch device string: "cpu", "cuda", "cuda:N" or "mps". Under torchrun give
    "cuda" (each rank takes GPU LOCAL_RANK) or "cpu". Outside torchrun (or WORLD_SIZE=1) returns
    a single-process context. A device that is not there raises :class:`DeviceError`.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was asked for but torch.cuda.is_available() is False; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} was asked for but there are {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} was asked for but torch finds no MPS device; use --device cpu")
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    if world_size == 1:
        if dev.type == "cuda":
            if dev.index is not None:
                torch.cuda.set_device(dev.index)
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.type == "cpu":
            dev = torch.device("cpu")
        return DistContext(device=dev)
    if dev.index is not None and dev.type == "cuda":
        raise DeviceError(f"under torchrun give --device cuda (each process takes GPU LOCAL_RANK), not {device!r}")
    if dev.type == "mps":
        raise DeviceError("torchrun runs on cpu or cuda; --device mps is for a single process")
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"torchrun started process LOCAL_RANK={local_rank} with --device cuda, but there are "
                              f"{torch.cuda.device_count()} CUDA device(s): start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel when running distributed, else unchanged.

    DDP finds the tensors of a ZooOutput (a dataclass) for its bookkeeping. Adaptive solvers let
    ranks evaluate f a different number of times; that is fine, since every rank still produces
    a gradient for the same set of parameters. ``find_unused_parameters=True`` is needed only
    for a model whose training step may leave some parameter without a gradient.
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a list of numbers over ranks (float64, so counts and sums stay exact)."""
    if not ctx.distributed:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(values: list[float], ctx: DistContext) -> list[float]:
    if not ctx.distributed:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's ``obj`` as a list indexed by rank (used for per-rank RNG states)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
