"""What every training script shares around its experiment: the run options (where a run reads and
writes, how it runs), their command-line flags, and opening a run in the order that loses nothing.

``train.mnist`` and ``train.cifar`` each extend ``RunOptions`` with their experiment's settings and
a ``stop_after_*`` field in their own unit (epochs, evaluation rounds).
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from train import _cli, _data, _distributed, _trainer
from train._errors import UserError

__all__ = ["RunOptions", "RESUME_IGNORES", "add_run_args", "run_options", "opened_run"]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The fields of a run's config that every training script has. A subclass overrides ``out``'s
    default with its own folder."""

    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    download: bool = False
    out: str = "runs"
    checkpoint_dir: str | None = None
    run_name: str | None = None
    resume: bool = False
    overwrite: bool = False
    threads: int = 0
    progress: bool | None = None

    @property
    def name(self) -> str:
        """The file stem of the run's record and checkpoint; each script names its runs."""
        raise NotImplementedError


# the run options an interrupted run's --resume may change: none changes what is computed (seed and
# device do, so they must match); each script adds its stop_after_* field
RESUME_IGNORES = ("resume", "overwrite", "threads", "progress", "data_dir", "download", "out", "checkpoint_dir")


def add_run_args(p: argparse.ArgumentParser, *, dataset: str, data_help: str, download_help: str,
                 default_out: str, run_name_default: str) -> None:
    """The flags of ``RunOptions``, worded the same for every script; ``dataset`` names the data in
    the help text, ``data_help`` what --data-dir holds."""
    p.add_argument("--seed", type=_cli.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=_cli.device, default="cpu",
                   help="a torch device: cpu, cuda, cuda:N or mps; under torchrun cuda gives each process GPU "
                        "LOCAL_RANK (default: cpu)")
    p.add_argument("--data-dir", default=None,
                   help=f"folder holding {data_help} (default: ${_data.ENV_VAR}, else ./data)")
    p.add_argument("--download", action="store_true", help=f"download {dataset} {download_help} (needs internet)")
    _cli.add_run_output_args(p, default_out=default_out, run_name_default=run_name_default)
    p.add_argument("--threads", type=_cli.nonneg_int, default=0, help="torch CPU threads per process; 0 = torch's default")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show the progress bar (default: only on a terminal, not under CI)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar")


def run_options(args: argparse.Namespace) -> dict:
    """The ``RunOptions`` fields of parsed ``add_run_args`` flags, as keyword arguments."""
    return {name: getattr(args, name) for name in RunOptions.__dataclass_fields__}


@contextlib.contextmanager
def opened_run(config: RunOptions, *, dataset: str, batch_size: int) -> Iterator[_distributed.DistContext]:
    """Set threads and the process group up, then refuse what would fail later before any data
    loads: a batch the processes cannot share, a run in the way, an unwritable --out. Under
    torchrun one process downloads ``dataset`` while the others wait. The process group is torn
    down however the run ends."""
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = _distributed.setup(config.device)
    try:
        if batch_size % ctx.world_size:
            raise UserError(f"--batch-size {batch_size} must be divisible by the number of processes ({ctx.world_size})")
        note = _trainer.prepare_run(_trainer.run_paths(config.out, config.name, config.checkpoint_dir),
                                    resume=config.resume, overwrite=config.overwrite, ctx=ctx, replace=False)
        if note and ctx.is_main:
            print(note, flush=True)
        if config.download and ctx.distributed:
            if ctx.is_main:
                _data.load(dataset, config.data_dir, train=True, download=True)
            _distributed.barrier(ctx)
        yield ctx
    finally:
        _distributed.teardown(ctx)
