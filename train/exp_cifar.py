"""The CIFAR-10 MDEQ experiment of the Skip DEQ paper: its settings, the papers' numbers, our evidence.

Every fact of the experiment lives here once and is imported elsewhere: ``train.cifar`` is the
command line over it, ``models.mdeq`` the architecture it trains. Read top to bottom: the papers'
numbers and where they come from, the variants and solver choices, the presets, the loss weights,
the table we report them in, then the pieces a run is made of (the model built from names, the
pre-training switch, the LR schedule, the timing protocol, the table generator).

Evidence (measured by us; the records and tables are in results/cifar/, the story in
results/cifar/README.md):

* The small default (``--preset cpu``: 40 steps of batch 32, 500 test images) took 1.9 minutes
  wall on a 2-core machine when it was otherwise idle and 7.2 minutes when other jobs shared it
  (before session 6; ``results/cifar/preset_cpu/``). `time python -m train.cifar --model skipdeq`
  on 2 December 2026 (issue #16), with two MNIST trainings and other jobs on the 2 cores (load
  average about 5): 8 min 55 s wall, 12.60 % test accuracy, test NFE 12.0 per batch of 100, a
  timed training step 4.78 s (2.18 s of it backward).
* At that budget every variant ends near chance (12.6-14.8 % test accuracy) and the forward
  solves spend their 10-iteration cap, so Skip DEQ saves no NFE there: test NFE 12.0 for both deq
  and skipdeq, Broyden solve, batch test (results/cifar/preset_cpu_integrators/table.md).
  The saving starts at 300 steps: test NFE 12.0 / 11.2 / 10.6 for deq / skipdeq / skipregdeq
  (results/cifar/steps300_batch/), far from the papers' after 20,000 steps.
* Continuous solves on the papers' VCAB3 cost about what Broyden ones do per step at this budget
  (1.13x Broyden at ``--preset cpu``, 0.82x at 300 steps), but by stopping at the 18-step cap
  near t = 1e-4, not by converging (results/cifar/README.md, session 6).

The records in results/cifar/ predate the one vocabulary of issue #16 and call Broyden "discrete"
(in their config and their names); they stay as written, the tables show them so, and
``record_solver`` reads them in today's names wherever the code compares solvers.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from models.mdeq import MDEQ_SMALL, VARIANTS, MDEQClassifier, MDEQConfig, ODESolve
from models.mnist_deq import INTEGRATORS, SOLVER_ALIASES, solver_name
from train import _results, _run
from train._run import RunOptions
from train._trainer import Constant, WeightSchedule, _sync
from train.exp_mnist_deq import LAMBDA_SKIP

SCRIPT = "train.cifar"

# --- the papers' numbers ----------------------------------------------------------------------

PAPER_SOURCE = ("Pal, Edelman & Rackauckas 2022, \"Mixing Implicit and Explicit Deep Learning with Skip DEQs "
                "and Infinite Time Neural ODEs (Continuous DEQs)\", arXiv 2201.12240, the CIFAR-10 MDEQ-small "
                "table (Table 3 of v4 as a review of the PDF numbers it; not checked against the PDF here), "
                "trained on the schedule of PRESETS['paper'] on a GPU")
# Keyed (variant, solver) like our run summaries, solver None for the neural ODE; test accuracy %
# and their training seconds per batch on their GPU.
PAPER = {
    ("deq", "broyden"): {"test_acc": 81.23, "train_s_per_batch": 0.651},
    ("skipdeq", "broyden"): {"test_acc": 82.01, "train_s_per_batch": 0.717},
    ("skipregdeq", "broyden"): {"test_acc": 81.17, "train_s_per_batch": 0.709},
    ("deq", "continuous"): {"test_acc": 80.81, "train_s_per_batch": 0.753},
    ("skipdeq", "continuous"): {"test_acc": 80.81, "train_s_per_batch": 0.806},
    ("skipregdeq", "continuous"): {"test_acc": 82.51, "train_s_per_batch": 0.679},
    ("node", None): {"test_acc": 83.54, "train_s_per_batch": 1.608},
}
# Their model sizes, as the same paper states them ("about"): the vanilla MDEQ-small and the Skip
# net that Skip DEQ adds to it.
PAPER_PARAMETERS = {"vanilla": 163.5e3, "skip_net": 37e3}


def paper_numbers(model: str, solver: str | None) -> dict | None:
    """The papers' row for a run, or None where they report none (the Newton solve); ``solver`` as a
    record may spell it ("discrete" is read as "broyden")."""
    return PAPER.get((model, None if model == "node" else SOLVER_ALIASES.get(solver, solver)))


# --- variants and how their layer is solved ---------------------------------------------------

# VARIANTS (imported above from models.mdeq): deq, skipdeq (Skip DEQ), skipregdeq (Skip DEQ V2),
# node (a neural ODE of the same f)
# "broyden" is limited-memory Broyden, the papers' discrete CIFAR solver (MDEQ, DEQ.jl);
# "newton" is our Newton-Krylov, "continuous" the steady-state ODE solve dz/dt = f(z, x) - z
# (integrator: the papers' VCAB3 by default, see models.mnist_deq.INTEGRATORS). The names are the
# zoo's (models.mnist_deq.SOLVERS); its SOLVER_ALIASES ("discrete", this experiment's earlier name
# of broyden) are accepted with a deprecation warning for one release.
SOLVERS = ("broyden", "newton", "continuous")
# when a solve stops: "batch" when the batch's relative residual, one norm over the whole batch,
# is below tol (the papers' codes: MDEQ's Broyden, DEQ.jl's solvers on the flattened batch);
# "per_sample" when every sample's is
STOPPING_TESTS = ("batch", "per_sample")

# --- settings of every preset (the papers') ---------------------------------------------------

LR = 1e-3  # Adam, cosine decay to LR_MIN over the run
LR_MIN = 1e-6
WEIGHT_DECAY = 2.5e-5
TOL = 0.05  # relative residual of forward and backward solves (and the node's rtol = atol)
PRETRAIN_DEPTH = 5  # f applications of the unrolled network while pre-training
DROPOUT = 0.2
WIDTH = MDEQ_SMALL.channels[0]  # channels of both branches
NEWTON_GMRES_ITER = 6  # inner GMRES iterations (and restart) of each Newton step
NODE_MAX_STEPS = 100

# Loss weights: loss = cross entropy + λ · regularizer. Skip DEQ trains its predictor g(x) toward
# z* and Skip DEQ V2 pulls f(0, x) toward z*, both as the "skip" regularizer at the papers' λ_skip.
# The Skip DEQ paper states one λ_skip for its MNIST and CIFAR-10 experiments, so it has one home,
# train.exp_mnist_deq. (The authors' CIFAR-10 config agrees: DeepEquilibriumNetworks.jl
# experiments/cifar10/tiny.yml, commit 12370e0, w_skip 0.01; their MNIST FC script's 5 is not used.)
LAMBDA = {"skip": LAMBDA_SKIP}
REGULARIZED = {"deq": (), "skipdeq": ("skip",), "skipregdeq": ("skip",), "node": ()}

PRESETS = {
    # the small default: a few minutes on a 2-core CPU (see the evidence above)
    "cpu": {"steps": 40, "pretrain_steps": 15, "batch_size": 32, "max_iter": 10, "backward_max_iter": 10,
            "limit_train": None, "limit_test": 500, "eval_every": 20, "eval_batch_size": 100},
    # the papers' schedule (GPU): forward ≤ 18 iterations (MDEQ's threshold, DEQ.jl's maxiters),
    # backward GMRES ≤ 20, the whole test set
    "paper": {"steps": 20_000, "pretrain_steps": 3000, "batch_size": 128, "max_iter": 18, "backward_max_iter": 20,
              "limit_train": None, "limit_test": None, "eval_every": 1000, "eval_batch_size": 500},
}


def describe_preset(name: str) -> str:
    """One line per preset, for the command line's help."""
    p = PRESETS[name]
    test = "the whole test set" if p["limit_test"] is None else f"a fixed {p['limit_test']}-image test subset"
    return (f"{p['steps']:,} steps of batch {p['batch_size']} (the first {p['pretrain_steps']:,} pre-training the "
            f"unrolled network), forward ≤ {p['max_iter']} iterations, backward GMRES ≤ {p['backward_max_iter']}, "
            f"{test}")


def model_names() -> list[str]:
    """Variant names in table order (read by `python -m train.report` through train.cifar)."""
    return list(VARIANTS)


def loss_weights(model: str, lambda_skip: float) -> dict[str, WeightSchedule]:
    weights = {"skip": Constant(value=lambda_skip)}
    return {name: weights[name] for name in REGULARIZED[model]}


# --- the table we report -----------------------------------------------------------------------

# Ratios are BASELINE / variant between runs of the same solve and seed; the neural ODE, which has
# no root solver, is paired with the Broyden vanilla DEQ (as in every table in results/cifar/).
BASELINE = "deq"
NODE_BASELINE_SOLVER = "broyden"
# (summary key, column heading, format)
TABLE_COLUMNS = (
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
# (summary key, ratio heading)
TABLE_RATIOS = (("train_s_per_batch", "train"), ("round_s_per_batch", "train (last round)"),
                ("backward_s_per_batch", "backward"),
                ("predict_s_per_batch", "predict"), ("timing_nfe_forward", "NFE fwd"))


# --- the model, from names --------------------------------------------------------------------


def _check_solver(config) -> None:
    """A config's solver in today's name, a deprecated one translated with a warning."""
    if config.solver in SOLVER_ALIASES:
        # frozen: the canonical name is stored, so equal configs compare equal; the warning points
        # past this function, __post_init__ and the generated __init__ to the caller
        object.__setattr__(config, "solver", solver_name(config.solver, stacklevel=4))
    if config.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {config.solver!r}")


def record_solver(config: Mapping) -> str | None:
    """The solver of a saved config (a record's or a checkpoint's) in today's names, without a
    warning: the committed records say "discrete" for broyden and stay as they are."""
    solver = config.get("solver")
    return SOLVER_ALIASES.get(solver, solver)


@dataclass(frozen=True, kw_only=True)
class CIFARModelConfig:
    """Which CIFAR-10 model to build and how its implicit layer is solved (defaults: the papers').

    ``solver``: see ``SOLVERS`` ("discrete" is read as "broyden", deprecated); ``stopping_test``:
    see ``STOPPING_TESTS`` (every solver; the batch test is the papers'). ``pretrain_depth`` is the
    number of f applications of the fixed-depth (unrolled) network used during pre-training steps.
    ``node`` integrates dz/dt = f(z, x) over [0, 1] from z = 0.
    """

    variant: str = "skipdeq"
    solver: str = "broyden"
    stopping_test: str = "batch"
    integrator: str = "vcab3"
    tol: float = TOL
    max_iter: int = PRESETS["paper"]["max_iter"]
    newton_gmres_iter: int = NEWTON_GMRES_ITER
    backward_tol: float = TOL
    backward_max_iter: int = PRESETS["paper"]["backward_max_iter"]
    pretrain_depth: int = PRETRAIN_DEPTH
    node_rtol: float = TOL
    node_atol: float = TOL
    node_max_steps: int = NODE_MAX_STEPS
    mdeq: MDEQConfig = MDEQ_SMALL

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        _check_solver(self)
        if self.stopping_test not in STOPPING_TESTS:
            raise ValueError(f"stopping_test must be one of {STOPPING_TESTS}, got {self.stopping_test!r}")
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        if not (isinstance(self.pretrain_depth, int) and self.pretrain_depth >= 1):
            raise ValueError(f"pretrain_depth must be an int >= 1, got {self.pretrain_depth!r}")
        if not (self.tol > 0 and self.backward_tol > 0):
            raise ValueError(f"tol and backward_tol must be positive, got {self.tol!r}, {self.backward_tol!r}")


def _root_solver(config: CIFARModelConfig):
    from implicit.deq import Broyden, NewtonKrylov

    if config.solver == "continuous":
        from models.mnist_deq import continuous_solver

        # the papers' test: reltol = abstol = tol (on the batch's relative residual by default);
        # Tsit5's atol is tol/10 because atol = tol lets it stall at its stability limit near the
        # steady state (measured on the MNIST FC DEQ, see models.mnist_deq.make_solver)
        return continuous_solver(config.integrator, tol=config.tol, atol=config.tol, max_iter=config.max_iter,
                                 stopping_test=config.stopping_test, tsit5_ode_atol=config.tol / 10)
    if config.solver == "newton":
        k = config.newton_gmres_iter
        return NewtonKrylov(tol=config.tol, max_iter=config.max_iter, gmres_max_iter=k, gmres_restart=k,
                            stopping_test=config.stopping_test)
    return Broyden(tol=config.tol, max_iter=config.max_iter, stopping_test=config.stopping_test)


def build_model(config: CIFARModelConfig) -> MDEQClassifier:
    """The MDEQ classifier with the solver objects the names in ``config`` stand for."""
    from implicit.deq import GMRES, ImplicitBackward

    if config.variant == "node":
        return MDEQClassifier(config.mdeq, variant="node", pretrain_depth=config.pretrain_depth,
                              node=ODESolve(rtol=config.node_rtol, atol=config.node_atol,
                                            max_steps=config.node_max_steps))
    gradient = ImplicitBackward(solver=GMRES(tol=config.backward_tol, max_iter=config.backward_max_iter))
    return MDEQClassifier(config.mdeq, variant=config.variant, solver=_root_solver(config), gradient=gradient,
                          pretrain_depth=config.pretrain_depth)


# --- a run's configuration ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CIFARConfig(RunOptions):
    """Everything a run depends on. Saved in every checkpoint and result record. ``solver`` as in
    :class:`CIFARModelConfig` ("discrete" is read as "broyden", deprecated)."""

    model: str = "skipdeq"
    solver: str = "broyden"
    stopping_test: str = "batch"
    integrator: str | None = "vcab3"  # continuous solve only (None otherwise)
    preset: str = "cpu"
    steps: int
    pretrain_steps: int
    batch_size: int
    lr: float = LR
    lr_min: float = LR_MIN
    weight_decay: float = WEIGHT_DECAY
    lambda_skip: float = LAMBDA["skip"]
    tol: float = TOL
    max_iter: int
    backward_max_iter: int
    pretrain_depth: int = PRETRAIN_DEPTH
    dropout: float = DROPOUT
    width: int = WIDTH
    augment: bool = False
    limit_train: int | None
    limit_test: int | None
    eval_every: int
    eval_batch_size: int
    timing_repeats: int = 3
    out: str = "runs/cifar"
    stop_after_round: int | None = None
    report: bool = False

    def __post_init__(self):
        if self.model not in VARIANTS:
            raise ValueError(f"model must be one of {VARIANTS}, got {self.model!r}")
        _check_solver(self)
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
RESUME_IGNORES = (*_run.RESUME_IGNORES, "stop_after_round", "report")
# config fields newer than some checkpoints, and what their absence meant (continuous solves ran Tsit5)
RESUME_ADDED = {"integrator": lambda saved: "tsit5" if saved.get("solver") == "continuous"
                and saved.get("model") != "node" else None}
# config fields whose values were renamed, read in today's names: a checkpoint of a "discrete" run
# resumes as the "broyden" run it is
RESUME_RENAMED = {"solver": record_solver}


# --- training pieces --------------------------------------------------------------------------


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


# --- the timing protocol ------------------------------------------------------------------------

# the fixed training batch timed after training is drawn apart from the training order
TIMING_SEED_OFFSET = 12345


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


def measure_after_training(net: MDEQClassifier, train, config: CIFARConfig, weights, *, device,
                           world_size: int) -> dict:
    """:func:`measure_step` on this process's share of one fixed training batch."""
    g = torch.Generator().manual_seed(config.seed + TIMING_SEED_OFFSET)
    sel = torch.randperm(len(train), generator=g)[:config.batch_size // world_size]
    images, labels = train.x[sel].to(device), train.y[sel].to(device)
    return measure_step(net, images, labels, repeats=config.timing_repeats, weights=weights)


# --- the table generator ------------------------------------------------------------------------


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


def _solve_label(cfg: dict, solver: str | None = None) -> str:
    """The solver (``cfg``'s as it is written, unless given), its integrator when continuous, and
    its stopping test; records from before the options stopped Broyden and Newton solves per sample
    and continuous solves on the batch, and integrated continuous solves with Tsit5."""
    test = cfg.get("stopping_test") or ("batch" if cfg.get("solver") == "continuous" else "per_sample")
    solver = cfg.get("solver") if solver is None else solver
    if solver == "continuous":
        solver += f" {RESUME_ADDED['integrator'](cfg) if 'integrator' not in cfg else cfg['integrator']}"
    return f"{solver} ({test.replace('_', '-')})"


def _same_solve(cfg: dict) -> str:
    """What pairs runs: the solve label in today's names, so an old "discrete" record pairs with a
    new "broyden" one."""
    return _solve_label(cfg, record_solver(cfg))


_EARLIER_NAME = {new: old for old, new in SOLVER_ALIASES.items()}


def _row_order(cfg: dict) -> str:
    # Broyden rows sort under the name they had ("discrete", after "continuous"), so the committed
    # tables keep their row order and new records sort beside the old ones
    solver = record_solver(cfg)
    return _solve_label(cfg, _EARLIER_NAME.get(solver, solver))


def _baseline_solver_as_written(runs: list[dict]) -> str:
    """NODE_BASELINE_SOLVER as the table's vanilla DEQ records spell it ("discrete" before the rename)."""
    return next((r["config"]["solver"] for r in runs if r["model"] == BASELINE
                 and record_solver(r["config"]) == NODE_BASELINE_SOLVER), NODE_BASELINE_SOLVER)


def _baseline(run: dict, runs: list[dict]) -> dict | None:
    def same_seed_baseline(match):
        return next((o for o in runs if o["model"] == BASELINE and match(o["config"])
                     and o.get("seed") == run.get("seed")), None)

    if run["model"] == "node":
        return same_seed_baseline(lambda cfg: record_solver(cfg) == NODE_BASELINE_SOLVER)
    return same_seed_baseline(lambda cfg: _same_solve(cfg) == _same_solve(run["config"]))


def table_markdown(runs: list[dict]) -> str:
    """Our CIFAR-10 numbers in the papers' shape, theirs in parentheses, and speed-up ratios
    vanilla / variant (above 1: the variant is faster) between runs of the same solver and seed.
    Each row names its solver as its record does (the committed records: "discrete" for broyden)."""
    runs = [r for r in runs if r.get("script") == SCRIPT]
    for r in runs:
        r.setdefault("summary", {})["round_s_per_batch"] = _round_seconds(r)
    rank = {m: i for i, m in enumerate(model_names())}
    runs.sort(key=lambda r: (_row_order(r["config"]), rank.get(r.get("model"), 99), r.get("seed", 0)))
    head = ["model", "solver", *[h for _, h, _ in TABLE_COLUMNS], *[f"{h} ratio" for _, h in TABLE_RATIOS]]
    rows = []
    for r in runs:
        s, paper, cfg = r.get("summary") or {}, r.get("paper") or {}, r["config"]
        solver = "–" if r["model"] == "node" else _solve_label(cfg)
        base = _baseline(r, runs)
        cells = [r["model"] + ("" if r.get("complete") else " (incomplete)"), str(solver)]
        for key, _, spec in TABLE_COLUMNS:
            cell = _cell(s.get(key), spec)
            if paper.get(key) is not None:
                cell += f" ({_cell(paper[key], spec)})"
            cells.append(cell)
        for key, _ in TABLE_RATIOS:
            b = (base or {}).get("summary", {}).get(key)
            v = s.get(key)
            cell = _cell(b / v if b and v else None, "{:.2f}")
            pb = ((base or {}).get("paper") or {}).get(key)
            if pb and paper.get(key):
                cell += f" ({pb / paper[key]:.2f})"
            cells.append(cell)
        rows.append(cells)
    paper_run = PRESETS["paper"]
    notes = [
        "",
        f"Parentheses: the paper's numbers (Pal et al. 2022, MDEQ-small, {paper_run['steps']:,} steps of batch "
        f"{paper_run['batch_size']} on a GPU; "
        "train s/batch is theirs on a GPU). NFE fwd/bwd and train/backward s/batch are the medians of "
        "`timing_repeats` training steps on one fixed batch after training; train s/batch (last round) is the "
        "mean over the last evaluation round's optimizer steps (when none of them pre-trained); predict s/batch is the median "
        "test-batch forward; test NFE is per test batch. Ratios are vanilla DEQ / variant (above 1: the "
        f"variant is cheaper), within the same solver (node: against the {_baseline_solver_as_written(runs)} "
        "vanilla DEQ). "
        "CIFAR-10 is decoded from JPEG here.",
    ]
    return "\n".join(_results.table_lines(head, rows) + notes) + "\n"


def write_table(folder) -> tuple:
    """Write ``folder/table.md`` and ``folder/curves.png`` (NFE and accuracy against step per variant)."""
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
    _results.plot_curves(runs, png, x="step", name=_variant)
    return md, png


def _variant(run: dict) -> str:
    """A CIFAR curve's label: the model and, for a DEQ, its solver (and integrator)."""
    if run["model"] == "node":
        return "node"
    cfg = run["config"]
    solver = record_solver(cfg) + (f" {cfg['integrator']}" if cfg.get("solver") == "continuous" and cfg.get("integrator") else "")
    return f"{run['model']} ({solver})"
