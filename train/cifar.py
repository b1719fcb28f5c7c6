"""Train a CIFAR-10 multiscale DEQ: `python -m train.cifar --model skipdeq --data-dir ../shared/data`.

Models (see models.mdeq): deq (vanilla MDEQ-small), skipdeq (Skip DEQ: explicit predictor of z*),
skipregdeq (Skip DEQ V2: z₀ = f(0, x)), node (neural ODE of the same f over [0, 1]).
``--solver discrete`` solves with limited-memory Broyden (the papers' discrete CIFAR solver),
``newton`` with Newton-Krylov, ``continuous`` integrates dz/dt = f(z, x) − z (``--integrator``: the
papers' VCAB3 by default, or VCABM3, or Tsit5 as the earlier records ran) until the
relative residual is below --tol: by default that of the whole batch as one vector, the papers'
test (``--stopping-test per_sample`` asks it of every sample). The backward pass is the
implicit-function-theorem gradient with GMRES (tol 0.05).

The default run (``--preset cpu``) is small enough for a laptop CPU (measured on a 2-core machine:
1.9 minutes wall when it was otherwise idle, 7.2 minutes when other jobs shared it): 40 steps of batch 32 (the first 15 pre-training the unrolled, fixed-depth network), forward/backward solves
capped at 10 iterations, tested on a fixed 500-image subset of the test set. It says so in its
output. ``--preset paper`` is the papers' schedule for GPU users: Adam 1e-3 with cosine decay to
1e-6, weight decay 2.5e-5, batch 128, 20,000 steps of which 3,000 pre-train, forward ≤ 18
iterations, backward GMRES ≤ 20, λ_skip 0.01, the whole test set.

After training, the run measures on a fixed training batch the median seconds of a training
step (forward + backward), of the backward alone, and NFE forward/backward, and stores them in
the record next to the test accuracy and prediction seconds per batch. The CIFAR-10 copy in
``../shared/data/cifar10.npz`` was decoded from JPEG: accuracies are not exactly comparable
with the papers'.

Each run writes <out>/<run-name>.json and <out>/checkpoints/<run-name>.pt after every round;
``--resume`` continues an interrupted run exactly, and a run of the same name already there is left
alone without ``--resume`` or ``--overwrite``; ``python -m train.report <out>`` (or
``--report``) writes table.md and curves.png. Runs under ``torchrun --nproc_per_node=N -m
train.cifar ...`` (--batch-size is the global batch).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.mdeq import (
    CIFAR_SOLVERS, CIFAR_VARIANTS, STOPPING_TESTS, CIFARModelConfig, MDEQClassifier, count_parameters,
)
from implicit import SolverError
from train import _cli, _data, _distributed, _results, _trainer
from train._errors import UserError
from train._trainer import Constant, WeightSchedule

SCRIPT = "train.cifar"
BASELINE = "deq"

# The papers' CIFAR-10 numbers (Pal et al. 2022, MDEQ-small on a GPU), keyed like our summaries;
# train_s_per_batch is their training seconds per batch. Discrete / continuous.
PAPER = {
    ("deq", "discrete"): {"test_acc": 81.23, "train_s_per_batch": 0.651},
    ("skipdeq", "discrete"): {"test_acc": 82.01, "train_s_per_batch": 0.717},
    ("skipregdeq", "discrete"): {"test_acc": 81.17, "train_s_per_batch": 0.709},
    ("deq", "continuous"): {"test_acc": 80.81, "train_s_per_batch": 0.753},
    ("skipdeq", "continuous"): {"test_acc": 80.81, "train_s_per_batch": 0.806},
    ("skipregdeq", "continuous"): {"test_acc": 82.51, "train_s_per_batch": 0.679},
    ("node", None): {"test_acc": 83.54, "train_s_per_batch": 1.608},
}

PRESETS = {
    # a few minutes on a 2-core CPU
    "cpu": {"steps": 40, "pretrain_steps": 15, "batch_size": 32, "max_iter": 10, "backward_max_iter": 10,
            "limit_train": None, "limit_test": 500, "eval_every": 20, "eval_batch_size": 100},
    # the papers' schedule (GPU)
    "paper": {"steps": 20_000, "pretrain_steps": 3000, "batch_size": 128, "max_iter": 18, "backward_max_iter": 20,
              "limit_train": None, "limit_test": None, "eval_every": 1000, "eval_batch_size": 500},
}


def model_names() -> list[str]:
    """Variant names in table order (used by `python -m train.report`)."""
    return list(CIFAR_VARIANTS)


@dataclass(frozen=True, kw_only=True)
class CIFARConfig:
    """Everything a run depends on. Saved in every checkpoint and result record."""

    model: str = "skipdeq"
    solver: str = "discrete"
    stopping_test: str = "batch"
    integrator: str | None = "vcab3"  # continuous solve only (None otherwise)
    preset: str = "cpu"
    steps: int
    pretrain_steps: int
    batch_size: int
    lr: float = 1e-3
    lr_min: float = 1e-6
    weight_decay: float = 2.5e-5
    lambda_skip: float = 0.01
    tol: float = 0.05
    max_iter: int
    backward_max_iter: int
    pretrain_depth: int = 5
    dropout: float = 0.2
    width: int = 24
    augment: bool = False
    limit_train: int | None
    limit_test: int | None
    eval_every: int
    eval_batch_size: int
    timing_repeats: int = 3
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    download: bool = False
    out: str = "runs/cifar"
    checkpoint_dir: str | None = None
    run_name: str | None = None
    resume: bool = False
    overwrite: bool = False
    stop_after_round: int | None = None
    threads: int = 0
    progress: bool | None = None
    report: bool = False

    def __post_init__(self):
        if self.model not in CIFAR_VARIANTS:
            raise ValueError(f"model must be one of {CIFAR_VARIANTS}, got {self.model!r}")
        if self.solver not in CIFAR_SOLVERS:
            raise ValueError(f"solver must be one of {CIFAR_SOLVERS}, got {self.solver!r}")
        if self.stopping_test not in STOPPING_TESTS:
            raise ValueError(f"stopping_test must be one of {STOPPING_TESTS}, got {self.stopping_test!r}")
        if self.pretrain_steps > self.steps:
            raise ValueError(f"pretrain_steps ({self.pretrain_steps}) must not exceed steps ({self.steps})")

    @property
    def name(self) -> str:
        if self.run_name:
            return self.run_name
        solver = "" if self.model == "node" else f"_{self.solver}"
        return f"{self.model}{solver}_seed{self.seed}"

    def model_config(self) -> CIFARModelConfig:
        from models.mdeq import MDEQ_SMALL
        import dataclasses

        return CIFARModelConfig(
            variant=self.model, solver=self.solver, stopping_test=self.stopping_test,
            integrator=self.integrator or "vcab3",
            tol=self.tol,
            max_iter=self.max_iter,
            backward_tol=self.tol, backward_max_iter=self.backward_max_iter, pretrain_depth=self.pretrain_depth,
            node_rtol=self.tol, node_atol=self.tol,
            mdeq=dataclasses.replace(MDEQ_SMALL, dropout=self.dropout, channels=(self.width, self.width)),
        )


# fields that may differ between an interrupted run and its --resume
RESUME_IGNORES = ("resume", "overwrite", "stop_after_round", "threads", "progress", "data_dir", "download", "out",
                  "checkpoint_dir", "report")
# config fields newer than some checkpoints, and what their absence meant (continuous solves ran Tsit5)
RESUME_ADDED = {"integrator": lambda saved: "tsit5" if saved.get("solver") == "continuous"
                and saved.get("model") != "node" else None}


class PretrainThenSolve(nn.Module):
    """The first ``pretrain_steps`` training forwards run the unrolled fixed-depth network
    (MDEQ's pre-training); later ones, and every evaluation, solve for the equilibrium.

    The count of training forwards is a buffer, so it is saved in checkpoints and a resumed run
    switches at the same step as an uninterrupted one.
    """

    def __init__(self, model: MDEQClassifier, pretrain_steps: int):
        super().__init__()
        self.model = model
        self.pretrain_steps = pretrain_steps
        self.register_buffer("train_forwards", torch.zeros((), dtype=torch.long))

    def forward(self, images: torch.Tensor):
        unrolled = False
        if self.training and torch.is_grad_enabled():
            unrolled = int(self.train_forwards) < self.pretrain_steps
            self.train_forwards += 1
        return self.model(images, unrolled=unrolled)


@dataclass(frozen=True)
class CosineToMin:
    """LR factor for LambdaLR: cosine from 1 to ``floor`` over ``total`` steps (a dataclass,
    not a lambda, so the scheduler's state can be checkpointed)."""

    total: int
    floor: float

    def __call__(self, step: int) -> float:
        progress = min(step, self.total) / max(self.total, 1)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m train.cifar", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="skipdeq", choices=CIFAR_VARIANTS, help="variant (default: skipdeq)")
    p.add_argument("--solver", default="discrete", choices=CIFAR_SOLVERS,
                   help="forward solve: discrete (Broyden), newton (Newton-Krylov), continuous (steady state "
                        "of dz/dt = f(z) - z, see --integrator); ignored by node (default: discrete)")
    p.add_argument("--integrator", default="vcab3", choices=("vcab3", "vcabm3", "tsit5"),
                   help="--solver continuous: the steady-state integrator (default: vcab3, the papers', at "
                        "integrator rtol 1e-3, atol 1e-6; tsit5: the earlier records' Tsit5 at rtol = tol, atol = tol/10)")
    p.add_argument("--stopping-test", default="batch", choices=STOPPING_TESTS,
                   help="a forward solve stops when the relative residual of the whole batch as one vector is "
                        "below --tol (the papers' test) or when every sample's is (default: batch)")
    p.add_argument("--preset", default="cpu", choices=tuple(PRESETS),
                   help="cpu: a few-minute run; paper: the papers' schedule for a GPU (default: cpu)")
    p.add_argument("--steps", type=_cli.positive_int, default=None, help="optimizer steps (default: preset)")
    p.add_argument("--pretrain-steps", type=_cli.nonneg_int, default=None,
                   help="first steps train the unrolled fixed-depth network (default: preset)")
    p.add_argument("--batch-size", type=_cli.positive_int, default=None, help="global batch size (default: preset)")
    p.add_argument("--lr", type=_cli.float_in(0.0, 10.0, lo_open=True), default=1e-3,
                   help="Adam learning rate (default: 1e-3)")
    p.add_argument("--lr-min", type=_cli.nonneg_float, default=1e-6,
                   help="cosine schedule's final lr, at most --lr (default: 1e-6)")
    p.add_argument("--weight-decay", type=_cli.float_in(0.0, 1.0), default=2.5e-5, help="weight decay (default: 2.5e-5)")
    p.add_argument("--lambda-skip", type=_cli.nonneg_float, default=0.01, help="weight of the skip loss (default: 0.01)")
    p.add_argument("--tol", type=_cli.float_in(0.0, 1.0, lo_open=True, hi_open=True), default=0.05,
                   help="relative-residual tolerance of the forward and backward solves (default: 0.05)")
    p.add_argument("--max-iter", type=_cli.positive_int, default=None,
                   help="forward iterations (continuous: ODE steps) at most (default: preset)")
    p.add_argument("--backward-max-iter", type=_cli.positive_int, default=None,
                   help="backward GMRES iterations at most (default: preset)")
    p.add_argument("--pretrain-depth", type=_cli.positive_int, default=5, help="f applications when pre-training (default: 5)")
    p.add_argument("--dropout", type=_cli.float_in(0.0, 1.0, hi_open=True), default=0.2,
                   help="variational dropout rate (default: 0.2)")
    p.add_argument("--width", type=_cli.positive_int, default=24,
                   help="channels of both branches, a multiple of 8 (default: 24, MDEQ-small)")
    p.add_argument("--augment", action="store_true", help="random crop + horizontal flip")
    p.add_argument("--limit-train", type=_cli.nonneg_int, default=None,
                   help="train on the first N images of a fixed shuffled order; 0 = all (default: preset)")
    p.add_argument("--limit-test", type=_cli.nonneg_int, default=None,
                   help="test on the first N images of a fixed shuffled order; 0 = all (default: preset)")
    p.add_argument("--eval-every", type=_cli.positive_int, default=None, help="steps between evaluations (default: preset)")
    p.add_argument("--eval-batch-size", type=_cli.positive_int, default=None, help="test batch size (default: preset)")
    p.add_argument("--timing-repeats", type=_cli.nonneg_int, default=3,
                   help="training steps timed after training for s/batch (median; 0 = skip) (default: 3)")
    p.add_argument("--seed", type=_cli.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=_cli.device, default="cpu",
                   help="a torch device: cpu, cuda, cuda:N or mps; under torchrun cuda gives each process GPU "
                        "LOCAL_RANK (default: cpu)")
    p.add_argument("--data-dir", default=None, help=f"folder holding cifar10.npz or cifar-10-batches-py "
                                                    f"(default: ${_data.ENV_VAR}, else ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision (needs internet)")
    p.add_argument("--out", default="runs/cifar", help="folder for the result JSON (default: runs/cifar)")
    p.add_argument("--checkpoint-dir", default=None, help="folder for checkpoints (default: <out>/checkpoints)")
    p.add_argument("--run-name", type=_cli.run_name, default=None,
                   help="file stem of JSON and checkpoint (default: <model>_<solver>_seed<seed>)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run from its checkpoint (same options)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace a run of the same name in --out, finished or not (default: refuse to)")
    p.add_argument("--stop-after-round", type=_cli.positive_int, default=None,
                   help="stop after this many evaluation rounds with a checkpoint, as if interrupted")
    p.add_argument("--threads", type=_cli.nonneg_int, default=0, help="torch CPU threads per process; 0 = torch's default")
    p.add_argument("--report", action="store_true", help="write <out>/table.md and curves.png after the run")
    p.add_argument("--table", default=None, metavar="DIR",
                   help="only write DIR/table.md and DIR/curves.png (the papers' table shape) from the run "
                        "records in DIR, then exit")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show the progress bar (default: only on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar")
    _cli.add_debug(p)
    return p


def parse_config(argv: list[str] | None = None) -> CIFARConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    values = {}
    for key in ("steps", "pretrain_steps", "batch_size", "max_iter", "backward_max_iter", "limit_train",
                "limit_test", "eval_every", "eval_batch_size"):
        given = getattr(args, key)
        values[key] = preset[key] if given is None else given
    for key in ("limit_train", "limit_test"):
        if values[key] == 0:
            values[key] = None
    if values["pretrain_steps"] > values["steps"]:
        parser.error(f"--pretrain-steps ({values['pretrain_steps']}) must not exceed --steps ({values['steps']})")
    if args.lr_min > args.lr:
        parser.error(f"--lr-min ({args.lr_min:g}) must not exceed --lr ({args.lr:g}): the cosine schedule decays to it")
    if args.width % 8:
        parser.error(f"--width must be a multiple of 8 (GroupNorm with 8 groups), got {args.width}")
    return CIFARConfig(
        model=args.model, solver=args.solver, stopping_test=args.stopping_test,
        integrator=args.integrator if args.solver == "continuous" and args.model != "node" else None,
        preset=args.preset, **values,
        lr=args.lr, lr_min=args.lr_min,
        weight_decay=args.weight_decay, lambda_skip=args.lambda_skip, tol=args.tol,
        pretrain_depth=args.pretrain_depth, dropout=args.dropout, width=args.width, augment=args.augment,
        timing_repeats=args.timing_repeats, seed=args.seed, device=args.device, data_dir=args.data_dir,
        download=args.download, out=args.out, checkpoint_dir=args.checkpoint_dir, run_name=args.run_name,
        resume=args.resume, overwrite=args.overwrite, stop_after_round=args.stop_after_round, threads=args.threads,
        progress=args.progress, report=args.report,
    )


# --- running ------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(model: MDEQClassifier, images: torch.Tensor, labels: torch.Tensor, *, repeats: int,
                 weights: dict[str, WeightSchedule]) -> dict:
    """Median seconds of forward+backward and of backward alone, and NFE, on one training batch.

    One untimed warm-up step first; gradients are computed but no parameter is updated, and the
    model's RNG use (dropout masks) does not disturb the run (the RNG state is restored).
    """
    rng = torch.get_rng_state()
    was_training = model.training
    model.train()
    steps, backs, nfe_f, nfe_b = [], [], [], []
    try:
        for i in range(repeats + 1):
            _sync(images.device)
            t0 = time.perf_counter()
            out = model(images)
            loss = nn.functional.cross_entropy(out.logits, labels)
            for name, w in weights.items():
                if name in out.regularizers:
                    loss = loss + w(1.0) * out.regularizers[name]
            _sync(images.device)
            t1 = time.perf_counter()
            loss.backward()
            _sync(images.device)
            t2 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if i == 0:
                continue
            steps.append(t2 - t0)
            backs.append(t2 - t1)
            nfe_f.append(out.nfe_forward)
            # read after backward: the layer's record fills in its backward NFE then
            nfe_b.append(out.stats.nfe_backward)
    finally:
        model.train(was_training)
        torch.set_rng_state(rng)
    return {
        "train_s_per_batch": statistics.median(steps),
        "backward_s_per_batch": statistics.median(backs),
        "timing_nfe_forward": statistics.mean(nfe_f),
        "timing_nfe_backward": statistics.mean(nfe_b),
        "timing_repeats": repeats,
        "timing_batch_size": int(images.shape[0]),
    }


def run(config: CIFARConfig) -> dict:
    """Train as ``config`` says; return the run record (see ``train._results``)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = _distributed.setup(config.device)
    try:
        if config.batch_size % ctx.world_size:
            raise UserError(f"--batch-size {config.batch_size} must be divisible by the number of processes ({ctx.world_size})")
        # before the data loads: a run in the way or an unwritable --out is refused at once
        note = _trainer.prepare_run(_trainer.run_paths(config.out, config.name, config.checkpoint_dir),
                                    resume=config.resume, overwrite=config.overwrite, ctx=ctx, replace=False)
        if note and ctx.is_main:
            print(note, flush=True)
        if config.download and ctx.distributed:
            if ctx.is_main:
                _data.load("cifar10", config.data_dir, train=True, download=True)
            _distributed.barrier(ctx)
        train = _data.load("cifar10", config.data_dir, train=True, download=config.download, limit=config.limit_train)
        test = _data.load("cifar10", config.data_dir, train=False, download=config.download, limit=config.limit_test)
        _seed_everything(config.seed)
        net = MDEQClassifier(config.model_config())
        model = PretrainThenSolve(net, config.pretrain_steps).to(ctx.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, CosineToMin(total=config.steps, floor=config.lr_min / config.lr))
        weights = {"skip": Constant(value=config.lambda_skip)} if config.model in ("skipdeq", "skipregdeq") else {}
        say = print if ctx.is_main else (lambda *_a, **_k: None)
        solver = "" if config.model == "node" else (f", {config.solver} solve (≤ {config.max_iter} iterations, "
                                                     f"{config.stopping_test.replace('_', '-')} test)")
        size = "MDEQ-small" if config.width == 24 else f"MDEQ (width {config.width})"
        say(f"{SCRIPT}: {config.model} {size} ({count_parameters(net):,} parameters){solver}, tol {config.tol:g}, "
            f"backward GMRES ≤ {config.backward_max_iter}; train: {train.description}; test: {test.description}; "
            f"{config.steps} steps ({config.pretrain_steps} pre-training) of batch {config.batch_size}, Adam lr "
            f"{config.lr:g} cosine to {config.lr_min:g}, wd {config.weight_decay:g}, seed {config.seed}, "
            f"{ctx.world_size} process(es) on {ctx.device}, {torch.get_num_threads()} thread(s) each", flush=True)
        paper = PAPER.get((config.model, None if config.model == "node" else config.solver))
        notes = "CIFAR-10 decoded from JPEG (../shared/data/cifar10.npz); "
        notes += ("the papers' schedule" if config.preset == "paper"
                  else f"small CPU run ({config.steps} steps of batch {config.batch_size}), not the papers' schedule")
        record = _trainer.fit(
            model=model, optimizer=optimizer, scheduler=scheduler, train_data=train, test_data=test,
            loop=_trainer.LoopConfig(
                batch_size=config.batch_size // ctx.world_size, steps=config.steps,
                eval_batch_size=config.eval_batch_size, eval_every=config.eval_every, seed=config.seed,
                progress=config.progress, stop_after_round=config.stop_after_round,
                augment=_data.Augment() if config.augment else None,
                # the Skip net is unused while pre-training the unrolled network (and vice versa)
                find_unused_parameters=True,
            ),
            weights=weights, ctx=ctx, out_dir=config.out,
            run=_trainer.RunInfo(name=config.name, script=SCRIPT, model=config.model, baseline=BASELINE,
                                 paper=paper, notes=notes),
            config=config, resume=config.resume, overwrite=config.overwrite, resume_ignore=RESUME_IGNORES,
            resume_added=RESUME_ADDED,
            checkpoint_dir=config.checkpoint_dir, log=lambda m: print(m, flush=True),
        )
        # a finished run resumed comes back as it was recorded, timing included
        if record["complete"] and config.timing_repeats > 0 and "train_s_per_batch" not in record["summary"]:
            timing = _timing(net, train, config, weights, ctx)
            if ctx.is_main:
                record["summary"].update(timing)
                record["summary"]["solver"] = None if config.model == "node" else config.solver
                record["summary"]["parameters"] = count_parameters(net)
                paths = record.pop("paths")
                _results.write_json(paths["json"], record)
                record["paths"] = paths
        if ctx.is_main:
            print(_final_message(config, record, train, test), flush=True)
            if config.report:
                write_table(config.out)
        return record
    finally:
        _distributed.teardown(ctx)


def _timing(net, train, config: CIFARConfig, weights, ctx) -> dict:
    g = torch.Generator().manual_seed(config.seed + 12345)
    per_rank = config.batch_size // ctx.world_size
    sel = torch.randperm(len(train), generator=g)[:per_rank]
    images, labels = train.x[sel].to(ctx.device), train.y[sel].to(ctx.device)
    return measure_step(net, images, labels, repeats=config.timing_repeats, weights=weights)


def _final_message(config: CIFARConfig, record: dict, train, test) -> str:
    s = record["summary"]
    if not record["complete"]:
        return f"stopped at step {s.get('steps', 0)} of {config.steps}; results so far in {record['paths']['json']}"
    lines = [
        f"{config.model}: test accuracy {s['test_acc']:.2f}% on {test.description} after {s['steps']} steps "
        f"({config.pretrain_steps} pre-training) of batch {config.batch_size} from {train.description}; "
        f"test NFE {s['test_nfe']:.1f} per batch of {config.eval_batch_size}; prediction "
        f"{s['predict_s_per_batch']:.3f} s/batch; training {s['train_time_s']:.1f} s in total.",
    ]
    if "train_s_per_batch" in s:
        lines.append(f"Timed after training (median of {s['timing_repeats']}): {s['train_s_per_batch']:.3f} s per "
                     f"training step, {s['backward_s_per_batch']:.3f} s of it backward; NFE forward "
                     f"{s['timing_nfe_forward']:.1f}, backward {s['timing_nfe_backward']:.1f}.")
    if config.preset != "paper":
        lines.append("This is a small CPU run, not the papers' experiment (20,000 steps of batch 128 on a GPU, "
                     "~81-83% test accuracy): expect far lower accuracy; use --preset paper for the full schedule.")
    lines.append("CIFAR-10 here is decoded from JPEG (../shared/data/cifar10.npz), so numbers are not exactly "
                 "comparable with the papers'.")
    lines.append(f"Record: {record['paths']['json']}  (table and plots: python -m train.report {config.out})")
    return "\n".join(lines)


# --- the papers' table ------------------------------------------------------------------------

_TABLE_COLUMNS = (
    ("parameters", "params", "{:,.0f}"),
    ("steps", "steps", "{:g}"),
    ("test_acc", "test acc %", "{:.2f}"),
    ("test_nfe", "test NFE", "{:.1f}"),
    ("timing_nfe_forward", "NFE fwd", "{:.1f}"),
    ("timing_nfe_backward", "NFE bwd", "{:.1f}"),
    ("train_s_per_batch", "train s/batch", "{:.3f}"),
    ("round_s_per_batch", "train s/batch (last round)", "{:.3f}"),
    ("backward_s_per_batch", "backward s/batch", "{:.3f}"),
    ("predict_s_per_batch", "predict s/batch", "{:.3f}"),
    ("train_time_s", "train time s", "{:.0f}"),
)
_TABLE_RATIOS = (("train_s_per_batch", "train"), ("round_s_per_batch", "train (last round)"),
                 ("backward_s_per_batch", "backward"),
                 ("predict_s_per_batch", "predict"), ("timing_nfe_forward", "NFE fwd"))


def _cell(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return spec.format(value)


def _round_seconds(run: dict) -> float | None:
    """Mean seconds per optimizer step over the last evaluation round, if it had no pre-training
    step (an average over many steps, steadier than the few timed steps on a shared machine)."""
    hist = run.get("history") or []
    if not hist:
        return None
    start = hist[-2]["step"] if len(hist) > 1 else 0
    if start < run["config"].get("pretrain_steps", 0) or hist[-1]["step"] <= start:
        return None
    return hist[-1]["train_s"] / (hist[-1]["step"] - start)


def _solve_label(cfg: dict) -> str:
    """The solver, its integrator when continuous, and its stopping test; records from before the
    options stopped discrete and Newton solves per sample and continuous solves on the batch, and
    integrated continuous solves with Tsit5."""
    test = cfg.get("stopping_test") or ("batch" if cfg.get("solver") == "continuous" else "per_sample")
    solver = cfg.get("solver")
    if solver == "continuous":
        solver += f" {RESUME_ADDED['integrator'](cfg) if 'integrator' not in cfg else cfg['integrator']}"
    return f"{solver} ({test.replace('_', '-')})"


def table_markdown(runs: list[dict]) -> str:
    """Our CIFAR-10 numbers in the papers' shape, theirs in parentheses, and speed-up ratios
    vanilla / variant (above 1: the variant is faster) between runs of the same solver and seed."""
    runs = [r for r in runs if r.get("script") == SCRIPT]
    for r in runs:
        r.setdefault("summary", {})["round_s_per_batch"] = _round_seconds(r)
    rank = {m: i for i, m in enumerate(model_names())}
    runs.sort(key=lambda r: (_solve_label(r["config"]), rank.get(r.get("model"), 99), r.get("seed", 0)))
    head = ["model", "solver", *[h for _, h, _ in _TABLE_COLUMNS], *[f"{h} ratio" for _, h in _TABLE_RATIOS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in runs:
        s, paper, cfg = r.get("summary") or {}, r.get("paper") or {}, r["config"]
        solver = "–" if r["model"] == "node" else _solve_label(cfg)
        base = next((o for o in runs if o["model"] == BASELINE and _solve_label(o["config"]) == _solve_label(cfg)
                     and o.get("seed") == r.get("seed")), None)
        if r["model"] == "node":  # the neural ODE is compared with the discrete vanilla DEQ
            base = next((o for o in runs if o["model"] == BASELINE and o["config"].get("solver") == "discrete"
                         and o.get("seed") == r.get("seed")), None)
        cells = [r["model"] + ("" if r.get("complete") else " (incomplete)"), str(solver)]
        for key, _, spec in _TABLE_COLUMNS:
            cell = _cell(s.get(key), spec)
            if paper.get(key) is not None:
                cell += f" ({_cell(paper[key], spec)})"
            cells.append(cell)
        for key, _ in _TABLE_RATIOS:
            b = (base or {}).get("summary", {}).get(key)
            v = s.get(key)
            cell = _cell(b / v if b and v else None, "{:.2f}")
            pb = ((base or {}).get("paper") or {}).get(key)
            if pb and paper.get(key):
                cell += f" ({pb / paper[key]:.2f})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Parentheses: the paper's numbers (Pal et al. 2022, MDEQ-small, 20,000 steps of batch 128 on a GPU; "
        "train s/batch is theirs on a GPU). NFE fwd/bwd and train/backward s/batch are the medians of "
        "`timing_repeats` training steps on one fixed batch after training; train s/batch (last round) is the "
        "mean over the last evaluation round's optimizer steps (when none of them pre-trained); predict s/batch is the median "
        "test-batch forward; test NFE is per test batch. Ratios are vanilla DEQ / variant (above 1: the "
        "variant is cheaper), within the same solver (node: against the discrete vanilla DEQ). CIFAR-10 is "
        "decoded from JPEG here.",
    ]
    return "\n".join(lines + notes) + "\n"


def write_table(folder) -> tuple:
    """Write ``folder/table.md`` and ``folder/curves.png`` (NFE and accuracy against step per variant)."""
    from pathlib import Path

    from train._checkpoint import atomic_write_bytes

    folder = Path(folder)
    runs = [r for r in _results.load_runs(folder) if r.get("script") == SCRIPT]
    if not runs:
        raise ValueError(f"no train.cifar run records in {str(folder)!r}")
    budgets = sorted({(r["config"]["steps"], r["config"]["batch_size"], r["data"]["test_items"]) for r in runs})
    text = ("# CIFAR-10 MDEQ-small (train.cifar)\n\n"
            f"Generated by `python -m train.cifar --table {folder}` from {len(runs)} run records. Budgets "
            "(steps, batch, test images): " + ", ".join(str(b) for b in budgets) + ".\n\n" + table_markdown(runs))
    md, png = folder / "table.md", folder / "curves.png"
    atomic_write_bytes(md, text.encode())
    _plot(runs, png)
    return md, png


def _plot(runs, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        hist = r.get("history") or []
        label = r["model"] + ("" if r["model"] == "node" else f" ({r['config'].get('solver')})")
        steps = [h["step"] for h in hist]
        axes[0].plot(steps, [h.get("test_nfe") for h in hist], marker="o", label=label)
        axes[1].plot(steps, [h.get("test_acc") for h in hist], marker="o", label=label)
    axes[0].set(xlabel="step", ylabel="test NFE (forward, per batch)", title="Test NFE")
    axes[1].set(xlabel="step", ylabel="test accuracy %", title="Test accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 training stopped on a solver failure or a non-finite loss (the record
    says where), 2 a user error (options, data, output folder, checkpoint): one ``error:`` line."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = _cli.wants_debug(args)
    if "--table" in args:
        folder = build_parser().parse_args(args).table

        def table() -> int:
            try:
                md, png = write_table(folder)
            except (FileNotFoundError, ValueError) as e:  # no such folder, no records, a broken record
                raise UserError(f"--table {folder}: {e}") from e
            print(md.read_text())
            print(f"wrote {md} and {png}")
            return 0

        return _cli.guard(table, debug=debug)
    config = parse_config(args)

    def body() -> int:
        run(config)
        return 0

    stopped = (lambda e: f"error: {config.name} stopped: {e}; its record ({config.out}/{config.name}.json) keeps "
                         "the last finished evaluation round and the failure")
    return _cli.guard(body, debug=debug, user_errors=_cli.data_errors(), failures=(SolverError, FloatingPointError),
                      failure_message=stopped)


if __name__ == "__main__":
    sys.exit(main())
