"""Checkpoints that survive a crash mid-write and refuse to resume a different experiment.

A checkpoint holds the model, optimizer and scheduler states, every RNG state (torch CPU and
CUDA, NumPy, Python; one set per rank), the position in training (epoch, step), the metrics
history and the run's config. It is written to a temporary file in the same folder, fsynced,
and moved over the old one with ``os.replace``, so a reader sees either the old or the new
checkpoint, never half of one.
"""

from __future__ import annotations

import glob
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from train._errors import UserError

FORMAT = "implicit-checkpoint"
VERSION = 1


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, or not a checkpoint of ours)."""


class ConfigMismatchError(UserError, ValueError):
    """``--resume`` was asked for a checkpoint written by a run with a different config."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """A checkpoint to resume from is not there."""


# --- RNG states -----------------------------------------------------------------------------


def rng_state() -> dict:
    """This process's RNG states in plain types and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    random.setstate(_tuplify(state["python"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    # random.setstate wants tuples; a round trip through some serializers turns them into lists
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


# --- files ------------------------------------------------------------------------------------


def temporary_of(path: str | os.PathLike) -> Path:
    """The temporary file :func:`atomic_write_bytes` writes before moving it over ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` that killed writers left; return them. Only ``path``'s
    own, so runs sharing a folder do not touch each other's writes in flight, and only those whose
    writer (the process id in the name) no longer runs on this machine, so a second launch of the
    same run cannot pull a file from under a live one."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        middle = tmp.name[len(path.name) + 2: -len(".tmp")]
        if middle.isdigit() and tmp.is_file() and _process_gone(int(middle)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    tmp = temporary_of(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        # name the file asked for, not the hidden temporary the error arose on
        message = f"cannot write {str(path)!r}: {e.strerror or e}"
        raise (type(e)(e.errno, message) if e.errno is not None else OSError(message)) from e
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable; not possible on every OS/filesystem
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    epoch: int,
    step: int,
    history: list,
    config: Mapping,
    rng_states: list,
    extra: Mapping | None = None,
) -> None:
    """Write a checkpoint atomically. ``rng_states`` holds one :func:`rng_state` per rank;
    ``config`` is the run's config as plain types; ``extra`` any plain-typed loop state."""
    import io

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": list(history),
        "config": dict(config),
        "rng": list(rng_states),
        "extra": dict(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` with
    the path and a remedy when the file is truncated, corrupt or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise MissingCheckpointError(f"checkpoint not found: {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for bad files
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable (truncated or corrupt: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start afresh, or run without --resume"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a checkpoint written by implicit's training scripts")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {payload.get('version')!r}; this code reads version {VERSION}"
        )
    return payload


def check_config(saved: Mapping, current: Mapping, *, ignore: Iterable[str] = (),
                 added: Mapping[str, Callable[[Mapping], Any]] | None = None,
                 renamed: Mapping[str, Callable[[Mapping], Any]] | None = None, path: str | os.PathLike = "") -> None:
    """Raise :class:`ConfigMismatchError` naming every field that differs between the config
    saved in a checkpoint and the current one (fields in ``ignore`` may differ). ``added`` maps a
    field introduced after older checkpoints were written to what its absence meant, given the
    saved config, so those checkpoints still resume when the run asks for the old behaviour.
    ``renamed`` maps a field whose values were renamed to its saved value in today's names, given
    the saved config; a mismatch still names the value as the checkpoint wrote it."""
    ignore = set(ignore)
    added = added or {}
    renamed = renamed or {}
    keys = (set(saved) | set(current)) - ignore
    missing = object()
    diffs = []
    for k in sorted(keys):
        a, b = saved.get(k, missing), current.get(k, missing)
        if a is missing and k in added:
            a = added[k](saved)
        if a != b and not (a is not missing and k in renamed and renamed[k](saved) == b):
            fmt = lambda v: "<absent>" if v is missing else repr(v)  # noqa: E731
            diffs.append(f"{k}: checkpoint {fmt(a)} vs now {fmt(b)}")
    if diffs:
        raise ConfigMismatchError(
            f"cannot resume from {str(path)!r}: it was written with a different config ("
            + "; ".join(diffs)
            + "). Use the same options as the interrupted run, or a different --out to start a new run."
        )


def restore(payload: Mapping, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any | None) -> None:
    """Load model, optimizer and scheduler states from a checkpoint payload (RNG is separate,
    because each rank restores its own)."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        if payload["scheduler"] is None:
            raise CheckpointError("checkpoint has no scheduler state but this run uses a scheduler")
        scheduler.load_state_dict(payload["scheduler"])
