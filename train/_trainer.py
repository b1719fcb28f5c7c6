"""One training loop for every zoo model (ODE, SDE and DEQ alike), on one process or under torchrun.

A zoo model's ``forward(x)`` returns a :class:`models._base.ZooOutput`. The loss is::

    cross_entropy(logits, y) + sum over name in weights: weights[name](progress) * regularizers[name]

where ``progress`` in [0, 1) is the fraction of training done, so a weight can be a constant
(:class:`Constant`) or a schedule (:class:`ExponentialAnneal`, ERNODE's 100 -> 10).
Regularizers a model reports without a weight are logged, not trained on.

Training is cut into *rounds* of ``eval_every`` optimizer steps (one epoch by default). After
each round the loop evaluates on the test set, prints one fixed-width row, writes a checkpoint
and rewrites the run's JSON record. A run resumed from its checkpoint draws the same batches
(batch order is a function of seed and epoch) and restores every RNG, so it ends with the same
parameters and metrics as an uninterrupted run.

Timing: training time sums the wall time of the optimizer steps only (data slicing, forward,
backward, update), apart from evaluation; prediction time is the median wall time of one test
batch forward. CUDA work is synchronized before each clock read.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from models._base import ZooOutput
from train import _checkpoint, _data, _distributed, _results
from train._distributed import DistContext
from train._errors import UserError


# --- schedules ------------------------------------------------------------------------------


class WeightSchedule:
    """A regularizer weight as a function of training progress in [0, 1]."""

    def __call__(self, progress: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Constant(WeightSchedule):
    value: float

    def __post_init__(self):
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"Constant(value=...) must be finite and >= 0, got {self.value!r}")

    def __call__(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True, kw_only=True)
class ExponentialAnneal(WeightSchedule):
    """``start * (end / start) ** progress``: geometric interpolation from start to end."""

    start: float
    end: float

    def __post_init__(self):
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"ExponentialAnneal needs start > 0 and end > 0, got start={self.start!r}, end={self.end!r}")

    def __call__(self, progress: float) -> float:
        return self.start * (self.end / self.start) ** progress


@dataclass(frozen=True, kw_only=True)
class EpochwiseExponential(WeightSchedule):
    """``start · exp(−k·e)``, k = ln(start/end)/epochs, constant within epoch e = 0, 1, ...

    The ERNODE authors' schedule (``λ_func(epoch − 1)`` per epoch; the last epoch gets
    start·(end/start)^((epochs−1)/epochs), not quite ``end``), compressed to ``epochs``.
    """

    start: float
    end: float
    epochs: int

    def __post_init__(self):
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"EpochwiseExponential needs start > 0 and end > 0, got {self.start!r}, {self.end!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"EpochwiseExponential needs a positive int epochs, got {self.epochs!r}")

    def __call__(self, progress: float) -> float:
        e = min(int(progress * self.epochs + 1e-9), self.epochs - 1)
        return self.start * math.exp(-math.log(self.start / self.end) / self.epochs * e)


@dataclass(frozen=True, kw_only=True)
class InverseDecay:
    """Learning-rate factor ``1 / (1 + decay * step)`` for ``torch.optim.lr_scheduler.LambdaLR``
    (Flux's InvDecay, used by the ERNODE paper with decay 1e-5). A dataclass rather than a
    lambda so the scheduler's state can be checkpointed."""

    decay: float

    def __post_init__(self):
        if not (self.decay >= 0 and math.isfinite(self.decay)):
            raise ValueError(f"InverseDecay(decay=...) must be finite and >= 0, got {self.decay!r}")

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + self.decay * step)


# --- loop configuration -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """How long and how to train; the script's own config (model, lr, ...) is separate.

    Exactly one of ``epochs`` and ``steps`` (optimizer steps) sets the budget. ``eval_every``
    is the round length in steps (default: one epoch). ``stop_after_round`` ends this process
    after that many rounds in total, with a checkpoint, as if interrupted (``--resume`` goes on).
    """

    batch_size: int
    epochs: int | None = None
    steps: int | None = None
    eval_batch_size: int | None = None
    eval_every: int | None = None
    seed: int = 0
    progress: bool | None = None
    stop_after_round: int | None = None
    clip_grad_norm: float | None = None
    find_unused_parameters: bool = False
    augment: _data.Augment | None = None

    def __post_init__(self):
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"give exactly one of epochs and steps, got epochs={self.epochs!r}, steps={self.steps!r}")
        for name in ("batch_size", "epochs", "steps", "eval_batch_size", "eval_every", "stop_after_round"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What the run record says about the run beyond its config (see ``train._results``)."""

    name: str
    script: str
    model: str
    baseline: str | None = None
    paper: Mapping[str, float] | None = None
    notes: str = ""


# --- accumulation -------------------------------------------------------------------------


@dataclass
class _Sums:
    """Sums over the batches of one round on this rank; reduced over ranks before use."""

    n: float = 0.0
    batches: float = 0.0
    loss: float = 0.0
    ce: float = 0.0
    correct: float = 0.0
    nfe_f: float = 0.0
    nfe_b: float = 0.0
    nfe_b_batches: float = 0.0
    seconds: float = 0.0
    named: dict = field(default_factory=dict)  # "reg/<name>" or "metric/<name>" -> [sum, count]

    def add_step(self, out: ZooOutput, ce: torch.Tensor, loss_value: float, y: torch.Tensor, seconds: float) -> None:
        n = len(y)
        self.seconds += seconds
        self.n += n
        self.batches += 1
        self.loss += loss_value * n
        self.ce += float(ce.detach()) * n
        self.correct += float((out.logits.detach().argmax(1) == y).sum())
        self.nfe_f += float(out.nfe_forward)
        nb = _backward_nfe(out.stats)
        if nb is not None:
            self.nfe_b += nb
            self.nfe_b_batches += 1
        self.add_named("reg", out.regularizers)
        self.add_named("metric", out.metrics)

    def add_named(self, prefix: str, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            v = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            s = self.named.setdefault(f"{prefix}/{k}", [0.0, 0.0])
            s[0] += v
            s[1] += 1.0


def _train_step(model, x, y, *, weights: Mapping[str, WeightSchedule], progress: float, optimizer, scheduler,
                clip_grad_norm: float | None) -> tuple[ZooOutput, torch.Tensor, float]:
    """One optimizer step on the batch: cross-entropy plus the weighted regularizers the model reports."""
    out = model(x)
    if not isinstance(out, ZooOutput):
        raise TypeError(f"a zoo model's forward must return ZooOutput, got {type(out).__name__}")
    ce = F.cross_entropy(out.logits, y)
    loss = ce
    for name, w in weights.items():
        if name in out.regularizers:
            loss = loss + w(progress) * out.regularizers[name]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return out, ce, float(loss.detach())


def _reduce(sums: _Sums, ctx: DistContext) -> _Sums:
    if not ctx.distributed:
        return sums
    keys = sorted(set().union(*_distributed.gather_objects(sorted(sums.named), ctx)))
    flat = [sums.n, sums.batches, sums.loss, sums.ce, sums.correct, sums.nfe_f, sums.nfe_b, sums.nfe_b_batches]
    for k in keys:
        flat += sums.named.get(k, [0.0, 0.0])
    tot = _distributed.all_reduce_sum(flat, ctx)
    # wall time of a round is the slowest rank's
    seconds = _distributed.all_reduce_max([sums.seconds], ctx)[0]
    out = _Sums(*tot[:8], seconds=seconds)
    for i, k in enumerate(keys):
        out.named[k] = tot[8 + 2 * i: 10 + 2 * i]
    return out


def _backward_nfe(stats: object) -> float | None:
    # ODE/SDE/DEQ stats records all carry nfe_backward (filled in by backward); a model may
    # also return no stats at all.
    if stats is None:
        return None
    value = getattr(stats, "nfe_backward", None)
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (NumPy takes seeds below 2**32 only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _show_progress(setting: bool | None, ctx: DistContext) -> bool:
    if not ctx.is_main:
        return False
    if setting is not None:
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


# --- evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: _data.InMemoryDataset, *, batch_size: int, ctx: DistContext) -> dict:
    """Test loss, accuracy (%), mean forward NFE per batch and median seconds per batch.

    Runs on the plain module (not the DDP wrapper), each rank on its share of the test set
    without padding, so every item counts once.
    """
    model = _distributed.unwrap_model(model)
    was_training = model.training
    model.eval()
    order = torch.arange(len(data))[ctx.rank :: ctx.world_size]
    loss = correct = nfe = n = 0.0
    times = []
    for lo in range(0, len(order), batch_size):
        sel = order[lo : lo + batch_size]
        x, y = data.x[sel].to(ctx.device, non_blocking=True), data.y[sel].to(ctx.device, non_blocking=True)
        _sync(ctx.device)
        t0 = time.perf_counter()
        out = model(x)
        _sync(ctx.device)
        times.append(time.perf_counter() - t0)
        if not isinstance(out, ZooOutput):
            raise TypeError(f"a zoo model's forward must return ZooOutput, got {type(out).__name__}")
        loss += float(F.cross_entropy(out.logits, y, reduction="sum"))
        correct += float((out.logits.argmax(1) == y).sum())
        nfe += float(out.nfe_forward)
        n += len(y)
    model.train(was_training)
    local_median = statistics.median(times) if times else 0.0
    tot = _distributed.all_reduce_sum([loss, correct, nfe, n, float(len(times)), local_median], ctx)
    loss, correct, nfe, n, batches, median_sum = tot
    return {
        "test_loss": loss / max(n, 1),
        "test_acc": 100.0 * correct / max(n, 1),
        "test_nfe": nfe / max(batches, 1),
        "predict_s_per_batch": median_sum / ctx.world_size,
        "test_items": int(n),
        "test_batches": int(batches),
    }


# --- the run's files ----------------------------------------------------------------------


class OutputFolderError(UserError, OSError):
    """The folder for the record or the checkpoint cannot be created or written."""


class RunInTheWayError(UserError, FileExistsError):
    """A run of the same name is already in the output folder and neither --resume nor --overwrite was given."""


@dataclass(frozen=True)
class RunPaths:
    json: Path
    checkpoint: Path
    checkpoint_option: str  # the option that chose the checkpoint's folder, for messages


def run_paths(out_dir: str | os.PathLike, name: str, checkpoint_dir: str | os.PathLike | None = None) -> RunPaths:
    """Where a run's record (``<out>/<name>.json``) and checkpoint (``<checkpoint_dir or
    out/checkpoints>/<name>.pt``) go."""
    out_dir = Path(out_dir)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir / "checkpoints"
    return RunPaths(json=out_dir / f"{name}.json", checkpoint=folder / f"{name}.pt",
                    checkpoint_option="--checkpoint-dir" if checkpoint_dir is not None else "--out")


def _check_writable(folder: Path, option: str) -> None:
    # a folder not there yet is made at the first write; until then the run (which may still stop
    # on missing data) leaves nothing behind, so only its nearest existing parent is looked at
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{str(probe)!r} is a file")
        if probe == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        elif not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(f"{str(probe)!r} is not writable")
    except OSError as e:
        raise OutputFolderError(
            f"cannot write to the {option} folder {str(folder)!r} ({e.strerror or e}); choose a writable {option}"
        ) from None


def _read_record(path: Path) -> dict | None:
    """The run record at ``path``; None when absent; ``{}`` when the file is not a run record."""
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) and rec.get("format") == _results.FORMAT else {}


def _in_the_way(paths: RunPaths, record: dict | None) -> str | None:
    """Why a fresh run must not start over what is at ``paths``, with the options that go on; None if nothing is there."""
    has_ckpt = paths.checkpoint.is_file()
    where = f"{str(paths.json)!r}"
    other = "or pick another --out or --run-name"
    if record == {}:
        return f"{where} exists and is not a run record; move it away, pass --overwrite to replace it, {other}"
    if record is not None and record.get("complete"):
        return (f"{where} holds a finished run ({_progress(record)}); pass --overwrite to replace it and its "
                f"checkpoint, {other}")
    if record is not None and has_ckpt:
        return (f"{where} holds an unfinished run ({_progress(record)}); continue it with --resume, start it "
                f"afresh with --overwrite, {other}")
    if record is not None:
        why = f": {record['failure'].get('error')}" if isinstance(record.get("failure"), dict) else ""
        return (f"{where} holds a run that stopped before its first checkpoint{why}; start it afresh with "
                f"--overwrite, {other}")
    if has_ckpt:
        return (f"checkpoint {str(paths.checkpoint)!r} of an earlier run of this name is in the way; continue it "
                f"with --resume, start afresh with --overwrite, {other}")
    return None


def _progress(record: dict) -> str:
    done = (record.get("summary") or {}).get("steps", 0)
    total = (record.get("loop") or {}).get("steps_total")
    return f"step {done} of {total}" if total else f"step {done}"


def prepare_run(paths: RunPaths, *, resume: bool = False, overwrite: bool = False,
                ctx: DistContext | None = None, replace: bool = True) -> str | None:
    """Make sure a run may start at ``paths`` before it loads data or trains, and tidy up.

    The folders must be writable. Without ``resume`` or ``overwrite``, a record or checkpoint
    of the same name already there (finished or not) is refused with the options that go on
    (:class:`RunInTheWayError`); ``resume`` needs the checkpoint; ``overwrite`` deletes both, or
    with ``replace=False`` (the scripts' early check, before data and model are ready) leaves
    them until the run is about to train, so a run that fails to start loses nothing.
    Temporaries that killed atomic writes of this run left behind are removed. Rank 0 looks;
    every rank raises the same error, so no rank trains on alone. Returns a note for the log
    (what was replaced or removed), or None. Calling it again is harmless."""
    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite replaces it: give one of them")
    ctx = ctx or DistContext()
    outcome: tuple[BaseException | None, str | None] = (None, None)
    if ctx.is_main:
        try:
            outcome = (None, _prepare(paths, resume=resume, overwrite=overwrite, replace=replace))
        except UserError as e:
            outcome = (e, None)
    error, note = _distributed.broadcast_object(outcome, ctx)
    if error is not None:
        raise error
    return note


def _prepare(paths: RunPaths, *, resume: bool, overwrite: bool, replace: bool) -> str | None:
    _check_writable(paths.json.parent, "--out")
    _check_writable(paths.checkpoint.parent, paths.checkpoint_option)
    record = _read_record(paths.json)
    notes = []
    if resume:
        if not paths.checkpoint.is_file():
            finished = record is not None and record.get("complete")
            raise _checkpoint.MissingCheckpointError(
                f"--resume given but no checkpoint at {str(paths.checkpoint)!r}; "
                + (f"{str(paths.json)!r} is a finished run: nothing to resume (--overwrite runs it again)" if finished
                   else "run without --resume to start, or pass the --out (and --checkpoint-dir) of the interrupted run"))
    elif overwrite:
        for p in (paths.json, paths.checkpoint):
            if p.is_file() and replace:
                p.unlink()
                notes.append(f"replaced {p}")
    else:
        why = _in_the_way(paths, record)
        if why is not None:
            raise RunInTheWayError(why)
    for p in (paths.json, paths.checkpoint):
        removed = _checkpoint.remove_stale_temporaries(p)
        if removed:
            notes.append(f"removed {len(removed)} temporary file(s) an interrupted write of {p.name} left")
    return "; ".join(notes) or None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


# --- the loop -----------------------------------------------------------------------------


_FIXED = (
    ("epoch", "{:>7.2f}", 7),
    ("step", "{:>7d}", 7),
    ("train_loss", "{:>10.4f}", 10),
    ("train_acc", "{:>9.2f}", 9),
    ("test_acc", "{:>8.2f}", 8),
    ("nfe_forward", "{:>7.1f}", 7),
    ("nfe_backward", "{:>7.1f}", 7),
    ("test_nfe", "{:>8.1f}", 8),
)
_TAIL = (("lr", "{:>9.2e}", 9), ("train_s", "{:>8.1f}", 8), ("eval_s", "{:>7.1f}", 7))


def _row_columns(row: Mapping) -> list[tuple[str, str, int, str]]:
    """(key, format, width, header) for one log row; regularizer and metric columns follow the row."""
    cols = [(k, f, w, {"train_acc": "train%", "test_acc": "test%", "nfe_forward": "nfe_f",
                        "nfe_backward": "nfe_b", "train_loss": "loss"}.get(k, k)) for k, f, w in _FIXED]
    for k in sorted(row.get("regularizers", {})):
        cols.append((f"regularizers/{k}", "{:>11.4g}", 11, ("R_" + k)[:11]))
    for k in sorted(row.get("metrics", {})):
        cols.append((f"metrics/{k}", "{:>11.4g}", 11, k[:11]))
    for k in sorted(row.get("probes", {})):
        cols.append((f"probes/{k}", "{:>11.4g}", 11, k[:11]))
    cols += [(k, f, w, k) for k, f, w in _TAIL]
    return cols


def _lookup(row: Mapping, key: str):
    if "/" in key:
        a, b = key.split("/", 1)
        return row.get(a, {}).get(b)
    return row.get(key)


def format_header(cols) -> str:
    return " ".join(f"{h:>{w}}" for _, _, w, h in cols)


def format_row(row: Mapping, cols) -> str:
    cells = []
    for key, fmt, w, _ in cols:
        v = _lookup(row, key)
        cells.append(f"{'–':>{w}}" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v))
    return " ".join(cells)


@dataclass
class _Cursor:
    step: int


def _train_round(ddp_model, train_data: _data.InMemoryDataset, *, loop: LoopConfig, ctx: DistContext,
                 cursor: _Cursor, round_end: int, spe: int, total: int, weights: Mapping[str, WeightSchedule],
                 optimizer, scheduler, bar_cls) -> tuple[_Sums, set[str]]:
    """Optimizer steps from ``cursor.step`` to ``round_end``, advancing the cursor after each; returns
    this process's sums and the names of the regularizers the model reported. Batches follow (seed,
    epoch, position), so a round resumed mid-epoch sees the batches the uninterrupted run would have."""
    step = cursor.step
    ddp_model.train()
    sums = _Sums()
    seen: set[str] = set()
    bar = bar_cls(total=round_end - step, desc=f"epoch {step / spe:.2f}", leave=False, dynamic_ncols=True) \
        if bar_cls is not None else None
    it, it_epoch = None, -1
    while step < round_end:
        epoch, b = divmod(step, spe)
        if epoch != it_epoch:
            it = _data.batches(train_data, batch_size=loop.batch_size, seed=loop.seed, epoch=epoch, shuffle=True,
                               rank=ctx.rank, world_size=ctx.world_size, start=b, augment=loop.augment)
            it_epoch = epoch
        _sync(ctx.device)
        t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        out, ce, loss_value = _train_step(ddp_model, x, y, weights=weights, progress=step / total,
                                          optimizer=optimizer, scheduler=scheduler,
                                          clip_grad_norm=loop.clip_grad_norm)
        _sync(ctx.device)
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"training loss became {loss_value} at step {step} (epoch {epoch}); lower the learning rate, "
                f"clip gradients (clip_grad_norm), or lower the regularizer weights"
            )
        sums.add_step(out, ce, loss_value, y, dt)
        seen.update(out.regularizers)
        step += 1
        cursor.step = step
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", nfe=out.nfe_forward, refresh=False)
    if bar is not None:
        bar.close()
    return sums, seen


def _evaluate_round(ddp_model, test_data: _data.InMemoryDataset, *, batch_size: int, ctx: DistContext,
                    probes) -> tuple[dict, dict | None, float]:
    """The test pass and the probes (model in eval mode, no grad) after a round, and their seconds."""
    _sync(ctx.device)
    t_eval = time.perf_counter()
    ev = evaluate(ddp_model, test_data, batch_size=batch_size, ctx=ctx)
    probed = None
    if probes is not None:
        plain = _distributed.unwrap_model(ddp_model)
        plain.eval()
        with torch.no_grad():
            probed = dict(probes(plain))
        plain.train()
    _sync(ctx.device)
    return ev, probed, time.perf_counter() - t_eval


def fit(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    train_data: _data.InMemoryDataset,
    test_data: _data.InMemoryDataset,
    loop: LoopConfig,
    weights: Mapping[str, WeightSchedule],
    ctx: DistContext,
    out_dir: str | os.PathLike,
    run: RunInfo,
    config: Any,
    resume: bool = False,
    overwrite: bool = False,
    resume_ignore: Iterable[str] = (),
    resume_added: Mapping[str, Callable[[Mapping], Any]] | None = None,
    resume_renamed: Mapping[str, Callable[[Mapping], Any]] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    probes: Callable[[torch.nn.Module], Mapping[str, float]] | None = None,
) -> dict:
    """Train ``model`` (already on ``ctx.device``; wrapped in DDP here when distributed) and
    return the run record (also written to ``out_dir/<run.name>.json`` by rank 0).

    ``scheduler`` (may be None) is stepped once per optimizer step. ``config`` is the script's
    config dataclass; it is stored in checkpoints and the record, and on ``resume`` must equal
    the checkpoint's except for fields named in ``resume_ignore`` (and fields newer than the
    checkpoint, which ``resume_added`` maps to what their absence meant, and renamed values, which
    ``resume_renamed`` reads in today's names); resuming a run that finished
    returns its record untouched. Without ``resume`` or ``overwrite`` a run of the same name in
    the way is refused (see :func:`prepare_run`). ``probes(model)``, if given, runs
    after each round's evaluation (model in eval mode, no grad) and its numbers go into the row's
    ``probes`` (e.g. the NFE on a fixed batch).
    """
    for name, w in weights.items():
        if not isinstance(w, WeightSchedule):
            raise TypeError(f"weights[{name!r}] must be a WeightSchedule (Constant, ExponentialAnneal), got {type(w).__name__}")
    paths = run_paths(out_dir, run.name, checkpoint_dir)
    ckpt_path, json_path = paths.checkpoint, paths.json
    say = log if ctx.is_main else (lambda _msg: None)
    note = prepare_run(paths, resume=resume, overwrite=overwrite, ctx=ctx)
    if note:
        say(note)
    started = _distributed.broadcast_object(_now(), ctx)

    plain_config = _results.to_plain(config)
    compared = {**plain_config, "world_size": ctx.world_size}
    spe = _data.num_batches(len(train_data), batch_size=loop.batch_size, world_size=ctx.world_size)
    total = loop.steps if loop.steps is not None else loop.epochs * spe
    eval_every = loop.eval_every or spe
    eval_bs = loop.eval_batch_size or loop.batch_size

    history: list[dict] = []
    step = 0
    train_time = 0.0
    if resume:
        payload = _checkpoint.load_checkpoint(ckpt_path, map_location=ctx.device)
        _checkpoint.check_config(payload["config"], compared, ignore=resume_ignore, added=resume_added,
                                 renamed=resume_renamed, path=ckpt_path)
        finished = _finished_record(payload, paths, total, ctx) if payload["step"] >= total else None
        if finished is not None:
            say(f"{run.name} finished already ({json_path}, step {payload['step']} of {total}); nothing to do")
            return finished
        step, history, train_time = _restore(payload, model=model, optimizer=optimizer, scheduler=scheduler, ctx=ctx)
        say(f"resumed {run.name} from {ckpt_path} at step {step}/{total} (epoch {step / spe:.2f})")

    ddp_model = _distributed.wrap_model(model, ctx, find_unused_parameters=loop.find_unused_parameters)
    record = _new_record(run=run, config=plain_config, loop=loop, ctx=ctx, train_data=train_data, test_data=test_data,
                         total=total, spe=spe, eval_every=eval_every, history=history, started=started)

    show_bar = _show_progress(loop.progress, ctx)
    cursor = _Cursor(step)  # advanced step by step inside a round, so a failure record names its step
    warned_missing = False
    cols = None
    rounds_done = len(history)
    bar_cls = None
    if show_bar:
        from tqdm.auto import tqdm as bar_cls  # noqa: N813

    try:
        while step < total:
            round_end = min(total, (step // eval_every + 1) * eval_every)
            sums, seen = _train_round(ddp_model, train_data, loop=loop, ctx=ctx, cursor=cursor,
                                      round_end=round_end, spe=spe, total=total, weights=weights,
                                      optimizer=optimizer, scheduler=scheduler, bar_cls=bar_cls)
            step = cursor.step

            red = _reduce(sums, ctx)
            train_time += red.seconds
            if not warned_missing:
                never = sorted(set(weights) - set().union(*_distributed.gather_objects(sorted(seen), ctx)))
                if never:
                    say(f"warning: weighted regularizers {never} never appeared in the model's output this round; "
                        f"their weights have no effect")
                warned_missing = True
            ev, probed, eval_s = _evaluate_round(ddp_model, test_data, batch_size=eval_bs, ctx=ctx, probes=probes)
            row = _round_row(red, ev, step=step, spe=spe, total=total, weights=weights, optimizer=optimizer,
                             probed=probed, train_time=train_time, eval_s=eval_s)
            history.append(row)
            rounds_done += 1
            new_cols = _row_columns(row)
            if cols is None or [c[0] for c in new_cols] != [c[0] for c in cols]:
                cols = new_cols
                say(format_header(cols))
            say(format_row(row, cols))

            rng_states = _distributed.gather_objects(_checkpoint.rng_state(), ctx)
            done = step >= total
            record["history"] = history
            record["summary"] = _summary(history, train_time)
            record["complete"] = done
            if ctx.is_main:
                _checkpoint.save_checkpoint(
                    ckpt_path, model=_distributed.unwrap_model(ddp_model), optimizer=optimizer, scheduler=scheduler,
                    epoch=step // spe, step=step, history=history, config=compared, rng_states=rng_states,
                    extra={"train_time_s": train_time},
                )
                _results.write_json(json_path, record)
            _distributed.barrier(ctx)
            if not done and loop.stop_after_round is not None and rounds_done >= loop.stop_after_round:
                say(f"stopped after round {rounds_done} (step {step}/{total}) as asked; continue with --resume")
                break
    except Exception as e:
        step = cursor.step
        # the record says how the run ended, next to the last finished epoch it keeps (the checkpoint
        # of that epoch stays too); without this a diverged run looks like one still in progress
        record["failure"] = {"rank": ctx.rank, "world_size": ctx.world_size, "step": step, "epoch": step / spe,
                             "error": _results.portable_text(f"{type(e).__name__}: {e}")}
        _record_failure(json_path, record, ctx)
        raise

    if step >= total and not record["complete"]:
        # resumed a run that had already finished: refresh the record
        record["summary"] = _summary(history, train_time)
        record["complete"] = True
        if ctx.is_main:
            _results.write_json(json_path, record)
    record["paths"] = {"json": str(json_path), "checkpoint": str(ckpt_path)}
    return record


def _finished_record(payload: dict, paths: RunPaths, total: int, ctx: DistContext) -> dict | None:
    """The stored record of a run whose checkpoint is at its last step, if that record says it finished."""
    stored = _distributed.broadcast_object(_read_record(paths.json) if ctx.is_main else None, ctx)
    if stored and stored.get("complete"):
        stored["paths"] = {"json": str(paths.json), "checkpoint": str(paths.checkpoint)}
        return stored
    return None


def _restore(payload: dict, *, model, optimizer, scheduler, ctx: DistContext) -> tuple[int, list, float]:
    """Model, optimizer, scheduler and this rank's RNG from a checkpoint; the step, history and training time."""
    _checkpoint.restore(payload, model=model, optimizer=optimizer, scheduler=scheduler)
    _checkpoint.set_rng_state(payload["rng"][ctx.rank])
    return payload["step"], list(payload["history"]), float(payload["extra"].get("train_time_s", 0.0))


def _new_record(*, run: RunInfo, config, loop: LoopConfig, ctx: DistContext, train_data, test_data, total: int,
                spe: int, eval_every: int, history: list, started: str) -> dict:
    """The run record before its first round: what ran, where, on which data (see train._results)."""
    env = _results.environment(world_size=ctx.world_size, device=str(ctx.device))
    return {
        "format": _results.FORMAT, "version": _results.VERSION,
        "name": run.name, "script": run.script, "model": run.model, "baseline": run.baseline,
        "config": _results.portable_config(config) if isinstance(config, dict) else config,
        "seed": loop.seed,
        "data": {"train": train_data.description, "test": test_data.description,
                 "train_items": len(train_data), "test_items": len(test_data)},
        "loop": {"steps_total": total, "steps_per_epoch": spe, "eval_every": eval_every,
                 "world_size": ctx.world_size, "batch_size_per_rank": loop.batch_size},
        "environment": env, "history": history, "summary": {}, "paper": dict(run.paper) if run.paper else None,
        "notes": run.notes, "complete": False, "started": started,
    }


def _round_row(red: _Sums, ev: dict, *, step: int, spe: int, total: int, weights, optimizer, probed: dict | None,
               train_time: float, eval_s: float) -> dict:
    """One history row: the round's training means, its evaluation, and the state after it."""
    named = {k: s / c for k, (s, c) in red.named.items() if c > 0}
    return {
        "epoch": step / spe, "step": step,
        "train_loss": red.loss / red.n, "train_ce": red.ce / red.n,
        "train_acc": 100.0 * red.correct / red.n,
        "nfe_forward": red.nfe_f / red.batches,
        "nfe_backward": red.nfe_b / red.nfe_b_batches if red.nfe_b_batches else None,
        **ev,
        "regularizers": {k.split("/", 1)[1]: v for k, v in named.items() if k.startswith("reg/")},
        "metrics": {k.split("/", 1)[1]: v for k, v in named.items() if k.startswith("metric/")},
        **({"probes": probed} if probed is not None else {}),
        "weights": {k: w((step - 1) / total) for k, w in weights.items()},
        "lr": optimizer.param_groups[0]["lr"],
        "train_s": red.seconds, "train_time_s": train_time, "eval_s": eval_s,
    }


def _record_failure(json_path: Path, record: dict, ctx: DistContext) -> None:
    """Write the record with its failure. Under torchrun any rank may fail; its peers wait for it in
    a collective until torchrun ends them, so the failing rank writes the record itself (it holds
    the same record as rank 0). A peer's exit then breaks the others' collectives, and they fail
    too: the first failure written in this run is the cause and is kept."""
    if ctx.distributed:
        on_disk = _read_record(json_path) or {}
        if on_disk.get("started") == record["started"] and isinstance(on_disk.get("failure"), dict):
            return
    if ctx.is_main or ctx.distributed:
        _results.write_json(json_path, record)


def _summary(history: list[dict], train_time: float) -> dict:
    if not history:
        return {}
    last = history[-1]
    return {
        "epochs": last["epoch"], "steps": last["step"],
        "train_acc": last["train_acc"], "test_acc": last["test_acc"], "test_loss": last["test_loss"],
        "test_nfe": last["test_nfe"], "predict_s_per_batch": last["predict_s_per_batch"],
        "train_time_s": train_time,
        "nfe_forward": last["nfe_forward"], "nfe_backward": last["nfe_backward"],
        "regularizers": last["regularizers"],
        **({"probes": last["probes"]} if "probes" in last else {}),
    }
