"""Train a CIFAR-10 multiscale DEQ: `python -m train.cifar --model skipdeq --data-dir ../shared/data`.

Models (see models.mdeq): deq (vanilla MDEQ-small), skipdeq (Skip DEQ: explicit predictor of z*),
skipregdeq (Skip DEQ V2: z₀ = f(0, x)), node (neural ODE of the same f over [0, 1]).
``--solver broyden`` solves with limited-memory Broyden (the papers' discrete CIFAR solver;
``--solver discrete``, its earlier name here, still works for one release with a warning),
``newton`` with Newton-Krylov, ``continuous`` integrates dz/dt = f(z, x) − z (``--integrator``: the
papers' VCAB3 by default, or VCABM3, or Tsit5 as the earlier records ran) until the
relative residual is below --tol: by default that of the whole batch as one vector, the papers'
test (``--stopping-test per_sample`` asks it of every sample). The backward pass is the
implicit-function-theorem gradient with GMRES (to --tol).

The default run (``--preset cpu``) is small enough for a laptop CPU and says so in its output;
``--preset paper`` is the papers' schedule for GPU users (both are listed at the end of this help).
Every setting, the papers' numbers and what we measured live in ``train/exp_cifar.py``.

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
import os
import sys

import torch

from implicit import SolverError
from models.mdeq import count_parameters
from train import _cli, _data, _results, _run, _trainer
from train import exp_cifar as exp
from train._errors import UserError
from train.exp_cifar import CIFARConfig, model_names  # noqa: F401  (train.report reads model_names)

SCRIPT = exp.SCRIPT


# --- command line -------------------------------------------------------------------------------


def _solver_option(text: str) -> str:
    """--solver's value in today's name; a deprecated one is translated with one line on stderr."""
    new = exp.SOLVER_ALIASES.get(text)
    if new is None:
        return text  # argparse's choices check names a wrong one
    # once per job, not once per torchrun process
    if os.environ.get("RANK", "0") == "0":
        print(f"warning: --solver {text} is deprecated, use --solver {new} (the same solver; {text!r} goes in "
              "the next release)", file=sys.stderr, flush=True)
    return new


def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  --preset {name}: {exp.describe_preset(name)}" for name in exp.PRESETS)
    p = _cli.ArgumentParser(prog="python -m train.cifar", description=__doc__, epilog="presets:\n" + presets,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="skipdeq", choices=exp.VARIANTS, help="variant (default: skipdeq)")
    p.add_argument("--solver", default="broyden", type=_solver_option, choices=exp.SOLVERS,
                   help="forward solve: broyden (limited-memory Broyden; 'discrete' is its deprecated name), "
                        "newton (Newton-Krylov), continuous (steady state of dz/dt = f(z) - z, see "
                        "--integrator); ignored by node (default: broyden)")
    p.add_argument("--integrator", default="vcab3", choices=exp.INTEGRATORS,
                   help="--solver continuous: the steady-state integrator (default: vcab3, the papers', at "
                        "integrator rtol 1e-3, atol 1e-6; tsit5: the earlier records' Tsit5 at rtol = tol, atol = tol/10)")
    p.add_argument("--stopping-test", default="batch", choices=exp.STOPPING_TESTS,
                   help="a forward solve stops when the relative residual of the whole batch as one vector is "
                        "below --tol (the papers' test) or when every sample's is (default: batch)")
    p.add_argument("--preset", default="cpu", choices=tuple(exp.PRESETS),
                   help="cpu: a few-minute run; paper: the papers' schedule for a GPU (default: cpu)")
    p.add_argument("--steps", type=_cli.positive_int, default=None, help="optimizer steps (default: preset)")
    p.add_argument("--pretrain-steps", type=_cli.nonneg_int, default=None,
                   help="first steps train the unrolled fixed-depth network (default: preset)")
    p.add_argument("--batch-size", type=_cli.positive_int, default=None, help="global batch size (default: preset)")
    p.add_argument("--lr", type=_cli.float_in(0.0, 10.0, lo_open=True), default=exp.LR,
                   help="Adam learning rate (default: %(default)g)")
    p.add_argument("--lr-min", type=_cli.nonneg_float, default=exp.LR_MIN,
                   help="cosine schedule's final lr, at most --lr (default: %(default)g)")
    p.add_argument("--weight-decay", type=_cli.float_in(0.0, 1.0), default=exp.WEIGHT_DECAY,
                   help="weight decay (default: %(default)g)")
    p.add_argument("--lambda-skip", type=_cli.nonneg_float, default=exp.LAMBDA["skip"],
                   help="weight λ_skip of the skip loss (default: %(default)g)")
    p.add_argument("--tol", type=_cli.float_in(0.0, 1.0, lo_open=True, hi_open=True), default=exp.TOL,
                   help="relative-residual tolerance of the forward and backward solves (default: %(default)g)")
    p.add_argument("--max-iter", type=_cli.positive_int, default=None,
                   help="forward iterations (continuous: ODE steps) at most (default: preset)")
    p.add_argument("--backward-max-iter", type=_cli.positive_int, default=None,
                   help="backward GMRES iterations at most (default: preset)")
    p.add_argument("--pretrain-depth", type=_cli.positive_int, default=exp.PRETRAIN_DEPTH,
                   help="f applications when pre-training (default: %(default)s)")
    p.add_argument("--dropout", type=_cli.float_in(0.0, 1.0, hi_open=True), default=exp.DROPOUT,
                   help="variational dropout rate (default: %(default)g)")
    p.add_argument("--width", type=_cli.positive_int, default=exp.WIDTH,
                   help="channels of both branches, a multiple of 8 (default: %(default)s, MDEQ-small)")
    p.add_argument("--augment", action="store_true", help="random crop + horizontal flip")
    p.add_argument("--limit-train", type=_cli.nonneg_int, default=None,
                   help="train on the first N images of a fixed shuffled order; 0 = all (default: preset)")
    p.add_argument("--limit-test", type=_cli.nonneg_int, default=None,
                   help="test on the first N images of a fixed shuffled order; 0 = all (default: preset)")
    p.add_argument("--eval-every", type=_cli.positive_int, default=None, help="steps between evaluations (default: preset)")
    p.add_argument("--eval-batch-size", type=_cli.positive_int, default=None, help="test batch size (default: preset)")
    p.add_argument("--timing-repeats", type=_cli.nonneg_int, default=3,
                   help="training steps timed after training for s/batch (median; 0 = skip) (default: 3)")
    _run.add_run_args(p, dataset="CIFAR-10", data_help="cifar10.npz or cifar-10-batches-py",
                      download_help="with torchvision", default_out="runs/cifar",
                      run_name_default="<model>_<solver>_seed<seed>")
    p.add_argument("--stop-after-round", type=_cli.positive_int, default=None,
                   help="stop after this many evaluation rounds with a checkpoint, as if interrupted")
    p.add_argument("--report", action="store_true", help="write <out>/table.md and curves.png after the run")
    p.add_argument("--table", default=None, metavar="DIR",
                   help="only write DIR/table.md and DIR/curves.png (the papers' table shape) from the run "
                        "records in DIR, then exit")
    _cli.add_debug(p)
    return p


def parse_config(argv: list[str] | None = None) -> CIFARConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = exp.PRESETS[args.preset]
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
        timing_repeats=args.timing_repeats, **_run.run_options(args), stop_after_round=args.stop_after_round,
        report=args.report,
    )


# --- running ------------------------------------------------------------------------------------


def run(config: CIFARConfig) -> dict:
    """Train as ``config`` says; return the run record (see ``train._results``)."""
    with _run.opened_run(config, dataset="cifar10", batch_size=config.batch_size) as ctx:
        train = _data.load("cifar10", config.data_dir, train=True, download=config.download, limit=config.limit_train)
        test = _data.load("cifar10", config.data_dir, train=False, download=config.download, limit=config.limit_test)
        _trainer.seed_everything(config.seed)
        net = exp.build_model(config.model_config())
        model = exp.PretrainThenSolve(net, config.pretrain_steps).to(ctx.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, exp.CosineToMin(total=config.steps, floor=config.lr_min / config.lr))
        weights = exp.loss_weights(config.model, config.lambda_skip)
        say = print if ctx.is_main else (lambda *_a, **_k: None)
        solver = "" if config.model == "node" else (f", {config.solver} solve (≤ {config.max_iter} iterations, "
                                                     f"{config.stopping_test.replace('_', '-')} test)")
        size = "MDEQ-small" if config.width == exp.WIDTH else f"MDEQ (width {config.width})"
        say(f"{SCRIPT}: {config.model} {size} ({count_parameters(net):,} parameters){solver}, tol {config.tol:g}, "
            f"backward GMRES ≤ {config.backward_max_iter}; train: {train.description}; test: {test.description}; "
            f"{config.steps} steps ({config.pretrain_steps} pre-training) of batch {config.batch_size}, Adam lr "
            f"{config.lr:g} cosine to {config.lr_min:g}, wd {config.weight_decay:g}, seed {config.seed}, "
            f"{ctx.world_size} process(es) on {ctx.device}, {torch.get_num_threads()} thread(s) each", flush=True)
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
            run=_trainer.RunInfo(name=config.name, script=SCRIPT, model=config.model, baseline=exp.BASELINE,
                                 paper=exp.paper_numbers(config.model, config.solver), notes=notes),
            config=config, resume=config.resume, overwrite=config.overwrite, resume_ignore=exp.RESUME_IGNORES,
            resume_added=exp.RESUME_ADDED, resume_renamed=exp.RESUME_RENAMED,
            checkpoint_dir=config.checkpoint_dir, log=lambda m: print(m, flush=True),
        )
        # a finished run resumed comes back as it was recorded, timing included
        if record["complete"] and config.timing_repeats > 0 and "train_s_per_batch" not in record["summary"]:
            timing = exp.measure_after_training(net, train, config, weights, device=ctx.device,
                                                world_size=ctx.world_size)
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
                exp.write_table(config.out)
        return record


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
        paper, accs = exp.PRESETS["paper"], [row["test_acc"] for row in exp.PAPER.values()]
        lines.append(f"This is a small CPU run, not the papers' experiment ({paper['steps']:,} steps of batch "
                     f"{paper['batch_size']} on a GPU, {min(accs):.1f}-{max(accs):.1f}% test accuracy): expect far "
                     "lower accuracy; use --preset paper for the full schedule.")
    lines.append("CIFAR-10 here is decoded from JPEG (../shared/data/cifar10.npz), so numbers are not exactly "
                 "comparable with the papers'.")
    lines.append(f"Record: {record['paths']['json']}  (table and plots: python -m train.report {config.out})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 training stopped on a solver failure or a non-finite loss (the record
    says where), 2 a user error (options, data, output folder, checkpoint): one ``error:`` line."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = _cli.wants_debug(args)
    if "--table" in args:
        folder = build_parser().parse_args(args).table

        def table() -> int:
            try:
                md, png = exp.write_table(folder)
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
