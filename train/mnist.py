"""Train an MNIST zoo model: `python -m train.mnist --model ernode --data-dir ../shared/data`.

Neural ODEs (node, ernode, srnode, steer, taynode, steer+er, steer+sr, sr+er; ERNODE/SRNODE paper,
Pal et al. 2021), and, when their modules are present, DEQs (deq, skipdeq, skipregdeq; Skip DEQ
paper) and neural SDEs (nsde, ernsde, srnsde). The default run is small (a 10,000-image
training subset, 2 epochs; measured 30 s per epoch + 7 s per test pass on an idle 2-core CPU,
89.5 % test accuracy) and says so; `--preset paper` gives
the paper's full schedule for the chosen model's family.

Each run writes <out>/<model>_seed<seed>.json (config, git commit, versions, hardware,
per-epoch metrics) and <out>/checkpoints/<model>_seed<seed>.pt after every epoch;
`--resume` continues an interrupted run exactly. A run of the same name already in <out>, finished
or not, is left alone unless `--resume` or `--overwrite` says what to do with it. An error the user
can fix (options, data, output folder, checkpoint) is one `error:` line and exit code 2 (`--debug`
adds the traceback); a run stopped by its solver exits 1. `python -m train.report <out>` builds a table
and plots from the JSONs. Runs under `torchrun --nproc_per_node=N -m train.mnist ...` too
(--batch-size is the global batch, split over the processes).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from implicit import SolverError
from train import _cli, _data, _run, _trainer, exp_mnist_deq, exp_mnist_node, exp_mnist_nsde
from train._trainer import Constant, WeightSchedule

SCRIPT = "train.mnist"


# --- model families ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Family:
    """How this script trains one family of zoo models.

    ``module`` exposes ``BUILDERS`` (variant name -> builder(**options) returning a model whose
    forward gives a ZooOutput) and optionally ``PAPER`` (variant -> the paper's numbers, keys as
    in ``train._results.COLUMNS``). ``weights(variant)`` gives the λ of each regularizer name the
    model reports; ``small`` and ``paper`` are the training settings of the default run and of
    ``--preset paper``; ``tolerance`` maps --rtol/--atol onto builder options.
    """

    name: str
    module: str
    baseline: str
    weights: Callable[[str, "MNISTConfig"], dict[str, WeightSchedule]]
    small: Mapping[str, Any]
    paper: Mapping[str, Any]
    tolerance: Callable[[float | None, float | None], dict]
    extra_options: Callable[["MNISTConfig"], dict] = lambda config: {}
    description: str = ""
    # --preset authors: training settings as ``small``/``paper``, and the solver/model/input options
    # (MNISTConfig fields) it sets; None where the family has no such preset
    authors: Mapping[str, Any] | None = None
    authors_options: Mapping[str, Any] = field(default_factory=dict)
    probes: Callable[["MNISTConfig", Any], Callable] | None = None
    # the experiment module holding the paper's numbers when ``module`` (the architecture) does not
    experiment: str | None = None


def _node_tolerance(rtol, atol):
    return {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}


def _node_options(config: "MNISTConfig") -> dict:
    keys = ("controller", "step_path", "aggregation", "init", "max_steps")
    return {k: getattr(config, k) for k in keys if getattr(config, k) is not None}


def _node_probes(config: "MNISTConfig", train):
    """NFE of two fixed batches after every epoch, as the authors' script logs it: uniform-random
    images in [0, 1] (its earlier version) and the first training images (its release)."""
    n = config.batch_size
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(n, 1, 28, 28, generator=gen)
    if config.inputs == "normalized":
        noise = (noise - _data.MNIST_MEAN[0]) / _data.MNIST_STD[0]
    first = train.x[:n]
    device = torch.device(config.device)

    def probe(model) -> dict:
        return {"nfe_random": float(model(noise.to(device)).nfe_forward),
                "nfe_train_first": float(model(first.to(device)).nfe_forward)}

    return probe


def _deq_tolerance(rtol, atol):
    if atol is not None:
        raise ValueError("--atol does not apply to DEQ models (their solve stops on the relative residual --rtol)")
    return {"tol": rtol} if rtol is not None else {}


def _nsde_options(config: "MNISTConfig") -> dict:
    """Solver options set by flags or by --preset authors (train.exp_mnist_nsde.AUTHORS, resolved in parse_config)."""
    options = {}
    for key, field_name in (("scheme", "sde_scheme"), ("aggregation", "aggregation"), ("init", "init"),
                            ("step_path", "step_path"), ("max_steps", "max_steps")):
        if getattr(config, field_name) is not None:
            options[key] = getattr(config, field_name)
    return options


def _nsde_probes(config: "MNISTConfig", train):
    """After every epoch, as the authors' script logs it: one solve (one Brownian path) of the first
    batch_size training images, its drift evaluations (their NFE1), diffusion evaluations (NFE2) and
    seconds (their "Inference Runtime")."""
    import time

    first = train.x[:config.batch_size].to(torch.device(config.device))

    def probe(model) -> dict:
        _trainer._sync(first.device)
        start = time.perf_counter()
        out = model(first, trajectories=1)
        _trainer._sync(first.device)
        return {"nfe_drift_train_first": float(out.stats.nfe_drift),
                "nfe_diffusion_train_first": float(out.stats.nfe_diffusion),
                "predict_s_train_first": time.perf_counter() - start}

    return probe


FAMILIES = (
    Family(
        name="node", module="models.mnist_node", baseline="node", weights=exp_mnist_node.weights,
        small=exp_mnist_node.SMALL, paper=exp_mnist_node.PAPER_SCHEDULE,
        tolerance=_node_tolerance,
        extra_options=_node_options,
        description="neural ODEs, Tsit5 on [0, 1], default rtol = atol = 1e-5 (see models.mnist_node)",
        authors=exp_mnist_node.AUTHORS_SCHEDULE, authors_options=exp_mnist_node.AUTHORS_OPTIONS,
        probes=_node_probes,
        experiment="train.exp_mnist_node",
    ),
    Family(
        name="deq", module="models.mnist_deq", baseline="deq", weights=exp_mnist_deq.weights,
        small=exp_mnist_deq.SMALL, paper=exp_mnist_deq.PAPER_SCHEDULE,
        tolerance=_deq_tolerance,
        extra_options=lambda c: {"solver": c.solver, "jacobian_reg": c.jacobian_reg,
                                 **({"stopping_test": c.steady_state_test} if c.steady_state_test else {}),
                                 **({"integrator": c.integrator} if c.integrator else {})},
        description="fully connected DEQs (see models.mnist_deq)",
        experiment="train.exp_mnist_deq",
    ),
    Family(
        name="nsde", module="models.mnist_nsde", baseline="nsde", weights=exp_mnist_nsde.weights,
        small=exp_mnist_nsde.SMALL, paper=exp_mnist_nsde.PAPER_SCHEDULE,
        tolerance=_node_tolerance,
        extra_options=_nsde_options,
        description="neural SDEs (see models.mnist_nsde)",
        authors=exp_mnist_nsde.AUTHORS_SCHEDULE, authors_options=exp_mnist_nsde.AUTHORS_OPTIONS,
        probes=_nsde_probes,
        experiment="train.exp_mnist_nsde",
    ),
)


@dataclass(frozen=True)
class Registry:
    """Model name -> (family, builder, config -> the paper's numbers or None), from the family modules present.

    A family module may quote its paper by ``PAPER`` (variant -> numbers) or, when the paper's
    numbers depend on more than the variant (solver, Jacobian regularization), by a function
    ``paper_numbers(name, config)``.
    """

    entries: Mapping[str, tuple[Family, Callable, Callable[["MNISTConfig"], Mapping | None]]] = field(
        default_factory=dict)

    @staticmethod
    def discover() -> "Registry":
        entries = {}
        for fam in FAMILIES:
            try:
                module = importlib.import_module(fam.module)
            except ModuleNotFoundError as e:
                if e.name == fam.module:  # that family is not part of this checkout
                    continue
                raise
            numbers = importlib.import_module(fam.experiment) if fam.experiment else module
            lookup = getattr(numbers, "paper_numbers", None)
            if lookup is None:
                table = getattr(numbers, "PAPER", {})  # optional: not every module quotes a paper table
                lookup = lambda name, config, table=table: table.get(name)  # noqa: E731
            for name, builder in module.BUILDERS.items():
                if name in entries:
                    raise RuntimeError(f"model name {name!r} is registered by both {entries[name][0].module} and {fam.module}")
                entries[name] = (fam, builder, lambda config, name=name, lookup=lookup: lookup(name, config))
        return Registry(entries)


def model_names() -> list[str]:
    """Registered model names, in family order (used by `python -m train.report` for row order)."""
    return list(Registry.discover().entries)


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MNISTConfig(_run.RunOptions):
    """Everything a run depends on. Saved in every checkpoint and result record."""

    model: str = "node"
    preset: str = "small"
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    lr_decay: float
    weight_decay: float = 0.0
    rtol: float | None = None
    atol: float | None = None
    solver: str = "continuous"
    jacobian_reg: bool = False
    steady_state_test: str | None = None  # continuous DEQ only
    integrator: str | None = None  # continuous DEQ only
    reg_weights: tuple[tuple[str, float], ...] = ()
    limit_train: int | None
    limit_test: int | None
    controller: str | None = None  # node family: "i" or "pi" (None: the model's default)
    step_path: str | None = None
    aggregation: str | None = None
    init: str | None = None
    max_steps: int | None = None
    sde_scheme: str | None = None  # nsde family: models.mnist_nsde.SCHEMES
    inputs: str = "normalized"  # MNIST pixels standardised, or "unit": in [0, 1]
    eval_batch_size: int = 1000
    out: str = "runs/mnist"
    stop_after_epoch: int | None = None

    @property
    def name(self) -> str:
        return self.run_name or f"{self.model}_seed{self.seed}"


# fields that may differ between an interrupted run and its --resume
RESUME_IGNORES = (*_run.RESUME_IGNORES, "stop_after_epoch")
# config fields newer than some checkpoints, and what their absence meant: before the Adams
# integrators a continuous DEQ (the only runs with a steady-state test) integrated with Tsit5
RESUME_ADDED = {"integrator": lambda saved: "tsit5" if saved.get("steady_state_test") else None,
                "sde_scheme": lambda saved: None}
PRESETS = ("small", "paper", "authors")
# solver flags -> the model families they apply to
SOLVER_FLAGS = {"controller": ("node",), "step_path": ("node", "nsde"), "aggregation": ("node", "nsde"),
                "init": ("node", "nsde"), "max_steps": ("node", "nsde"), "sde_scheme": ("nsde",)}
OPTIMIZERS = ("sgd", "adam")


def _reg_weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as error=50, got {text!r}")
    try:
        v = _cli.nonneg_float(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a finite VALUE >= 0, got {text!r}") from None
    return name, v


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    names = list(registry.entries)
    fams = ", ".join(f"{f.name}: {f.description}" for f in FAMILIES if any(e[0] is f for e in registry.entries.values()))
    p = _cli.ArgumentParser(
        prog="python -m train.mnist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Families: " + fams + ". Options shown with default 'family' take the value of --preset for the "
               "model's family: small (node: 2 epochs of a 10,000-image subset, batch 128, SGD lr 0.1 momentum 0.9 "
               "inverse decay 1e-5) or paper (node: all 60,000 images, 75 epochs, batch 512, same optimizer).",
    )
    p.add_argument("--model", default="node", choices=names, metavar="NAME",
                   help=f"zoo model, one of: {', '.join(names)} (default: node)")
    p.add_argument("--preset", default="small", choices=PRESETS,
                   help="small: a few-minute CPU run on a subset; paper: the paper's full schedule; authors (node "
                        "and nsde families): every setting of the authors' release script (see train.exp_mnist_node, "
                        "train.exp_mnist_nsde) "
                        "(default: small)")
    p.add_argument("--epochs", type=_cli.positive_int, default=None, help="training epochs (default: family)")
    p.add_argument("--batch-size", type=_cli.positive_int, default=None,
                   help="global batch size, split over torchrun processes (default: family)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd or adam (default: family)")
    p.add_argument("--lr", type=_cli.float_in(0.0, 10.0, lo_open=True), default=None, help="learning rate (default: family)")
    p.add_argument("--momentum", type=_cli.float_in(0.0, 0.999), default=None, help="SGD momentum (default: family)")
    p.add_argument("--lr-decay", type=_cli.float_in(0.0, 1.0), default=None,
                   help="inverse decay per step: lr_k = lr / (1 + decay * k) (default: family; 1e-5 for node)")
    p.add_argument("--weight-decay", type=_cli.float_in(0.0, 1.0), default=0.0, help="L2 weight decay (default: 0)")
    p.add_argument("--rtol", type=_cli.float_in(0.0, 1.0, lo_open=True), default=None,
                   help="solver relative tolerance (default: model's; node 1e-5, 1.4e-8 with --preset authors "
                        "(the authors'); DEQ: relative residual)")
    p.add_argument("--atol", type=_cli.float_in(0.0, 1.0, lo_open=True), default=None,
                   help="solver absolute tolerance (default: model's; node 1e-5, 1.4e-8 with --preset authors)")
    p.add_argument("--controller", default=None, choices=("i", "pi"),
                   help="node family: step-size controller, i (torchdiffeq's) or pi (OrdinaryDiffEq's) "
                        "(default: i; pi with --preset authors)")
    p.add_argument("--step-path", default=None, choices=("detached", "tracked", "initial"),
                   help="node and nsde families: how much of the step-size path the gradient follows (default: "
                        "detached; initial with --preset authors; nsde: detached or initial, SRI schemes only)")
    p.add_argument("--aggregation", default=None, choices=("paper", "authors"),
                   help="node and nsde families: R_E/R_S as the paper's sums or as the authors' code (mean / max) "
                        "(default: paper; authors with --preset authors)")
    p.add_argument("--init", default=None, choices=("torch", "glorot"),
                   help="node and nsde families: weight init (default: torch; glorot with --preset authors)")
    p.add_argument("--inputs", default=None, choices=("normalized", "unit"),
                   help="MNIST pixels standardised by mean/std, or unit: in [0, 1] (default: normalized; "
                        "unit with --preset authors)")
    p.add_argument("--max-steps", type=_cli.positive_int, default=None,
                   help="node family: bound on attempted solver steps per solve (default: 2000; 100 with "
                        "--preset authors, which keeps the step path in memory)")
    p.add_argument("--sde-scheme", default=None, choices=("milstein", "srk", "euler", "sosri", "sosri2", "sriw1"),
                   help="nsde family: SDE solver; sosri/sosri2/sriw1 adapt on their embedded error estimate, the "
                        "others by step doubling (default: milstein; sosri, sosri2 for srnsde, with --preset authors)")
    p.add_argument("--solver", default="continuous", choices=("continuous", "newton", "broyden"),
                   help="DEQ models only: forward solver (default: continuous)")
    p.add_argument("--jacobian-reg", action="store_true", help="DEQ models only: Jacobian regularization (λ 1.0)")
    p.add_argument("--steady-state-test", default=None, choices=("batch", "per_sample"),
                   help="continuous DEQ only: stop when the batch's relative residual is below --rtol (the "
                        "papers' test, default) or when every sample's is")
    p.add_argument("--integrator", default=None, choices=("vcab3", "vcabm3", "tsit5"),
                   help="continuous DEQ only: the steady-state integrator (default: vcab3, the papers', at "
                        "integrator rtol 1e-3, atol 1e-6; tsit5: the earlier records' Tsit5 at rtol = tol, atol = tol/10)")
    p.add_argument("--reg-weight", type=_reg_weight, action="append", default=[], metavar="NAME=VALUE",
                   help="override a regularizer weight by name with a constant, e.g. error=50 or stiffness=0.1 "
                        "(repeatable; default: the paper's weights for the model)")
    p.add_argument("--limit-train", type=_cli.nonneg_int, default=None,
                   help="train on the first N images of a fixed shuffled order; 0 = all (default: family)")
    p.add_argument("--limit-test", type=_cli.nonneg_int, default=None,
                   help="test on the first N images of a fixed shuffled order; 0 = all (default: family)")
    p.add_argument("--eval-batch-size", type=_cli.positive_int, default=None,
                   help="test batch size (default: 1000; 512 with --preset authors)")
    _run.add_run_args(p, dataset="MNIST", data_help="MNIST/raw", download_help="into --data-dir if missing",
                      default_out="runs/mnist", run_name_default="<model>_seed<seed>")
    p.add_argument("--stop-after-epoch", type=_cli.positive_int, default=None,
                   help="stop after this epoch with a checkpoint, as if interrupted; continue with --resume (default: off)")
    _cli.add_debug(p)
    return p


def parse_config(argv: list[str] | None, registry: Registry | None = None) -> MNISTConfig:
    registry = registry or Registry.discover()
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    family = registry.entries[args.model][0]
    if args.preset == "authors" and family.authors is None:
        parser.error(f"--preset authors exists for the node and nsde families only, not --model {args.model}")
    preset = {"small": family.small, "paper": family.paper, "authors": family.authors}[args.preset]
    authors = dict(family.authors_options) if args.preset == "authors" else {}
    if args.preset == "authors" and family.name == "nsde":
        # the solver differs by variant (SOSRI2 for srnsde): resolved here so that the record names it
        per_variant = exp_mnist_nsde.AUTHORS[args.model]
        authors.update({("sde_scheme" if k == "scheme" else k): v for k, v in per_variant.items()})
    node_only = {k: getattr(args, k) for k in SOLVER_FLAGS}
    for key, value in node_only.items():
        if value is not None and family.name not in SOLVER_FLAGS[key]:
            owners = " and ".join(SOLVER_FLAGS[key])
            parser.error(f"--{key.replace('_', '-')} applies to the {owners} famil{'ies' if len(SOLVER_FLAGS[key]) > 1 else 'y'} "
                         f"only, not --model {args.model}")
    if family.name == "nsde" and args.step_path == "tracked":
        parser.error("--step-path tracked is not implemented for neural SDEs; use detached or initial")
    chosen = {k: v if v is not None else authors.get(k) for k, v in node_only.items()}
    inputs = args.inputs or authors.get("inputs", "normalized")
    eval_batch_size = args.eval_batch_size or authors.get("eval_batch_size", 1000)
    rtol = args.rtol if args.rtol is not None else authors.get("rtol")
    atol = args.atol if args.atol is not None else authors.get("atol")
    values = {}
    for key in ("epochs", "batch_size", "optimizer", "lr", "momentum", "lr_decay", "limit_train", "limit_test"):
        given = getattr(args, key)
        values[key] = preset[key] if given is None else given
    for key in ("limit_train", "limit_test"):
        if values[key] == 0:
            values[key] = None
    if family.name != "deq" and (args.solver != "continuous" or args.jacobian_reg):
        parser.error(f"--solver and --jacobian-reg apply to DEQ models only, not --model {args.model}")
    steady_state_test = integrator = None
    if family.name == "deq" and args.solver == "continuous":
        steady_state_test = args.steady_state_test or "batch"
        integrator = args.integrator or "vcab3"
    else:
        for flag, value in (("--steady-state-test", args.steady_state_test), ("--integrator", args.integrator)):
            if value is not None:
                parser.error(f"{flag} applies to DEQ models with --solver continuous only, "
                             f"not --model {args.model} --solver {args.solver}")
    if values["optimizer"] == "adam" and args.momentum not in (None, 0.0):
        parser.error("--momentum applies to --optimizer sgd only")
    try:
        family.tolerance(rtol, atol)
    except ValueError as e:
        parser.error(str(e))
    return MNISTConfig(
        model=args.model, preset=args.preset, **values, weight_decay=args.weight_decay, rtol=rtol, atol=atol,
        **chosen, inputs=inputs,
        solver=args.solver, jacobian_reg=args.jacobian_reg, steady_state_test=steady_state_test, integrator=integrator,
        reg_weights=tuple(args.reg_weight),
        eval_batch_size=eval_batch_size, **_run.run_options(args), stop_after_epoch=args.stop_after_epoch,
    )


# --- running --------------------------------------------------------------------------------


def _weights(config: MNISTConfig, family: Family) -> dict[str, WeightSchedule]:
    weights = family.weights(config.model, config)
    for name, value in config.reg_weights:
        weights[name] = Constant(value=value)
    return weights


def _optimizer(config: MNISTConfig, params) -> tuple[torch.optim.Optimizer, Any]:
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _trainer.InverseDecay(decay=config.lr_decay)) if config.lr_decay > 0 else None
    return opt, sched


def run(config: MNISTConfig, *, registry: Registry | None = None) -> dict:
    """Train as ``config`` says; return the run record (see ``train._results``)."""
    registry = registry or Registry.discover()
    if config.model not in registry.entries:
        raise ValueError(f"model must be one of {list(registry.entries)}, got {config.model!r}")
    family, builder, paper_of = registry.entries[config.model]
    paper = paper_of(config)
    with _run.opened_run(config, dataset="mnist", batch_size=config.batch_size) as ctx:
        unit = config.inputs == "unit"
        train = _data.load("mnist", config.data_dir, train=True, download=config.download, limit=config.limit_train,
                           normalize=not unit)
        test = _data.load("mnist", config.data_dir, train=False, download=config.download, limit=config.limit_test,
                          normalize=not unit)
        _trainer.seed_everything(config.seed)
        options = {**family.tolerance(config.rtol, config.atol), **family.extra_options(config)}
        model = builder(**options).to(ctx.device)
        optimizer, scheduler = _optimizer(config, model.parameters())
        say = print if ctx.is_main else (lambda *_a, **_k: None)
        say(f"{SCRIPT}: {config.model} ({family.description}); train: {train.description}; test: {test.description}; "
            f"{config.epochs} epochs, batch {config.batch_size}, {config.optimizer} lr {config.lr:g}"
            + (f" momentum {config.momentum:g}" if config.optimizer == "sgd" else "")
            + (f" inverse decay {config.lr_decay:g}" if config.lr_decay else "")
            + f", seed {config.seed}, {ctx.world_size} process(es) on {ctx.device}, {torch.get_num_threads()} thread(s) each",
            flush=True)
        weights = _weights(config, family)
        record = _trainer.fit(
            model=model, optimizer=optimizer, scheduler=scheduler, train_data=train, test_data=test,
            loop=_trainer.LoopConfig(
                batch_size=config.batch_size // ctx.world_size, epochs=config.epochs,
                eval_batch_size=config.eval_batch_size, seed=config.seed, progress=config.progress,
                stop_after_round=config.stop_after_epoch,
            ),
            weights=weights, ctx=ctx, out_dir=config.out,
            run=_trainer.RunInfo(name=config.name, script=SCRIPT, model=config.model, baseline=family.baseline,
                                 paper=paper,
                                 notes=(f"not {_whose(config)} schedule: " + ", ".join(diff)) if (
                                     diff := schedule_differences(config, family)) else ""),
            config=config, resume=config.resume, overwrite=config.overwrite, resume_ignore=RESUME_IGNORES,
            resume_added=RESUME_ADDED,
            checkpoint_dir=config.checkpoint_dir, log=lambda m: print(m, flush=True),
            probes=family.probes(config, train) if family.probes is not None else None,
        )
        if ctx.is_main:
            print(_final_message(config, record, train, test, family), flush=True)
        return record


def schedule_differences(config: MNISTConfig, family: Family) -> list[str]:
    """Where the run's schedule differs from the paper's, e.g. ["epochs 2 (paper 25)"]; empty for
    the paper's schedule however it was asked for (--preset paper or every option by hand)."""
    return [f"{k} {getattr(config, k) if getattr(config, k) is not None else 'all'} "
            f"({'authors' if config.preset == 'authors' else 'paper'} {v if v is not None else 'all'})"
            for k, v in _reference(config, family).items() if getattr(config, k) != v]


def _whose(config: MNISTConfig) -> str:
    return "the authors'" if config.preset == "authors" else "the paper's"


def _reference(config: MNISTConfig, family: Family) -> Mapping[str, Any]:
    return family.authors if config.preset == "authors" and family.authors is not None else family.paper


def _final_message(config: MNISTConfig, record: dict, train, test, family: Family) -> str:
    s = record["summary"]
    if not record["complete"]:
        return f"stopped at epoch {s.get('epochs', 0):g} of {config.epochs}; results so far in {record['paths']['json']}"
    lines = [
        f"{config.model}: test accuracy {s['test_acc']:.2f}% on {test.description}; train accuracy {s['train_acc']:.2f}% "
        f"(running, over the last epoch); test NFE {s['test_nfe']:.1f} per batch of {config.eval_batch_size}; "
        f"prediction {s['predict_s_per_batch']:.3f} s/batch; training {s['train_time_s']:.1f} s.",
        f"Trained {s['epochs']:g} epochs on {train.description}.",
    ]
    diff = schedule_differences(config, family)
    if diff:
        lines.append(f"This is not {_whose(config)} schedule ({', '.join(diff)}): expect lower accuracy; "
                     f"use --preset {config.preset if config.preset != 'small' else 'paper'} without budget options "
                     "for the full schedule.")
    lines.append(f"Record: {record['paths']['json']}  (table and plots: python -m train.report {config.out})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 training stopped on a solver failure or a non-finite loss (the record
    says where), 2 a user error (options, data, output folder, checkpoint): one ``error:`` line."""
    registry = Registry.discover()
    config = parse_config(argv, registry)

    def body() -> int:
        run(config, registry=registry)
        return 0

    # a training outcome, not a bug: the record names the step and keeps the last finished epoch
    stopped = (lambda e: f"error: {config.name} stopped: {e}; its record ({config.out}/{config.name}.json) keeps "
                         "the last finished epoch and the failure")
    return _cli.guard(body, debug=_cli.wants_debug(argv), user_errors=_cli.data_errors(),
                      failures=(SolverError, FloatingPointError), failure_message=stopped)


if __name__ == "__main__":
    sys.exit(main())
