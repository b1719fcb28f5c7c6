"""The MNIST fully connected DEQ experiment of the Skip DEQ paper: the paper's numbers, λ and
schedules, and the measurements made on its saved checkpoints.

Architecture and solver settings: ``models/mnist_deq.py``; training: ``python -m train.mnist --model
{deq,skipdeq,skipregdeq}``; tables: ``python -m train.reproduce --list`` (the mnist_deq entries).
Measurements (from the repository root; the data folder is --data-dir, else $IMPLICIT_DATA, else
../shared/data):

    python -m train.exp_mnist_deq share CHECKPOINT.pt ... [--json results/mnist_deq/implicit_share.json]
    python -m train.exp_mnist_deq probe [CHECKPOINT_DIR ...]   # results/mnist_deq/steady_state_probe.md

``share``: is a trained layer still implicit? For f(z, x) = relu(W₁z + b₁) + relu(W₂x + b₂) the
z-dependent term is u = relu(W₁z* + b₁). Where every pre-activation W₁z* + b₁ is negative, ∂f/∂z = 0
at z*: the fixed point is the explicit f(0, x) and the solve has nothing to do. Per checkpoint, on
the test set:

* ``active``  fraction of the 128 units whose pre-activation is positive at z* (∂f/∂z ≠ 0 there)
* ``share``   ‖u‖ / ‖z*‖ over the test set: how much of z* the implicit term carries
* ``start``   the batch relative residual ‖f(z₀) − z₀‖ / ‖f(z₀)‖ at the variant's start z₀,
              against the solver's tolerance (below it, the solve stops before any ODE step)
* ``NFE``     test NFE per batch, recomputed here (must equal the run record's)

One Markdown row per checkpoint; ``--json FILE`` also merges the numbers into FILE keyed by
"<group>/<run name>", where ``python -m train.reproduce mnist_deq`` picks them up.

``probe``: how the continuous solve's stopping test and integrator atol set its cost. For an
untrained model (seed 0) of each variant and for each ``<variant>_seed0.pt`` in the given folders
(train.mnist checkpoints, e.g. runs/mnist_deq_bench_checkpoints/continuous_full10ep), solve the
first test images with Tsit5 at rtol 0.005 and each (stopping test, integrator atol) of
``PROBE_SETTINGS``; report mean NFE per batch, how many solves failed (max_steps = 50), the accuracy
and the worst per-sample relative residual. One torch thread.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from train._results import table_lines
from train._trainer import Constant, WeightSchedule

# The paper's MNIST FC table (Pal et al. 2022, "Mixing Implicit and Explicit Deep Learning with Skip
# DEQs and Infinite Time Neural ODEs (Continuous DEQs)"), continuous solve, keyed like the run records'
# summaries: PAPER without Jacobian regularization, PAPER_JR with it.
PAPER = {
    "deq": {"test_acc": 97.93, "test_nfe": 18.3, "train_time_s": 5.20 * 60, "predict_s_per_batch": 0.038},
    "skipdeq": {"test_acc": 97.76, "test_nfe": 4.00, "train_time_s": 1.71 * 60, "predict_s_per_batch": 0.010},
    "skipregdeq": {"test_acc": 97.97, "test_nfe": 4.00, "train_time_s": 1.30 * 60, "predict_s_per_batch": 0.010},
}
PAPER_JR = {
    "deq": {"test_acc": 98.12, "test_nfe": 5.03, "train_time_s": 7.32 * 60, "predict_s_per_batch": 0.011},
    "skipdeq": {"test_acc": 97.75, "test_nfe": 4.00, "train_time_s": 6.02 * 60, "predict_s_per_batch": 0.012},
    "skipregdeq": {"test_acc": 98.02, "test_nfe": 4.00, "train_time_s": 5.13 * 60, "predict_s_per_batch": 0.012},
}


def paper_numbers(name: str, config) -> dict | None:
    """The paper's numbers for a run: its MNIST FC table is for the continuous solve only, with
    and without Jacobian regularization; other solvers have no published row."""
    if getattr(config, "solver", "continuous") != "continuous":
        return None
    return (PAPER_JR if getattr(config, "jacobian_reg", False) else PAPER).get(name)

# Skip DEQ paper: λ_skip = 0.01, λ_jac = 1.0. The authors' MNIST FC script weights the same mean-|·| skip
# loss by 5; at ≥ 1 the layer here trains into an explicit one, at 0.1 nearly so (results/mnist_deq), so
# the paper's stated 0.01 stays the default; --reg-weight skip=W sets it.
LAMBDA_SKIP = 0.01
LAMBDA_JACOBIAN = 1.0
# the small default run, and the paper's schedule (--preset paper)
SMALL = {"epochs": 1, "batch_size": 32, "limit_train": 10_000, "limit_test": None,
         "optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "lr_decay": 0.0}
PAPER_SCHEDULE = {"epochs": 25, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "lr_decay": 0.0,
                  "limit_train": None, "limit_test": None}


def weights(variant: str, config) -> dict[str, WeightSchedule]:
    """λ per regularizer: the skip loss for the Skip variants, the Jacobian term with --jacobian-reg."""
    out = {"skip": Constant(value=LAMBDA_SKIP)} if variant != "deq" else {}
    if config.jacobian_reg:
        out["jacobian"] = Constant(value=LAMBDA_JACOBIAN)
    return out


# --- measurements on saved checkpoints ---------------------------------------------------------


def model_from_checkpoint(path: str | os.PathLike):
    """(model in eval mode, checkpoint payload) of a train.mnist MNIST FC DEQ checkpoint, the model
    built from the config it stores with train.mnist's own option mapping."""
    from types import SimpleNamespace

    from models.mnist_deq import BUILDERS
    from train import mnist
    from train._checkpoint import load_checkpoint
    from train._errors import UserError

    payload = load_checkpoint(path)
    c = dict(payload.get("config") or {})
    if c.get("model") not in BUILDERS:
        raise UserError(f"checkpoint {str(path)!r} is of model {c.get('model')!r}, not of an MNIST FC DEQ "
                        f"({', '.join(BUILDERS)})")
    if c.get("solver") == "continuous":
        # configs older than the options: such runs stopped when every sample passed (the label
        # train._mnist_deq_table gives them) and integrated with Tsit5 (train.mnist.RESUME_ADDED)
        c["steady_state_test"] = c.get("steady_state_test") or "per_sample"
        c["integrator"] = c.get("integrator") or mnist.RESUME_ADDED["integrator"](c)
    family = next(f for f in mnist.FAMILIES if f.name == "deq")
    cfg = SimpleNamespace(**{"rtol": None, "atol": None, "jacobian_reg": False, "steady_state_test": None,
                             "integrator": None, **c})
    model = BUILDERS[c["model"]](**family.tolerance(cfg.rtol, cfg.atol), **family.extra_options(cfg))
    model.load_state_dict(payload["model"])
    return model.eval(), payload


def _test_set(data_dir, *, normalize: bool = True):
    from train import _data

    if data_dir is None and not os.environ.get(_data.ENV_VAR):
        from train._results import REPO_ROOT

        data_dir = REPO_ROOT.parent / "shared" / "data"
    return _data.load("mnist", data_dir, train=False, normalize=normalize)


def implicit_share(path: str | os.PathLike, *, data_dir=None, batch_size: int = 32, limit: int | None = None) -> dict:
    """The ``share`` numbers of one checkpoint over the first ``limit`` test images (all when None),
    keyed as results/mnist_deq/implicit_share.json."""
    import torch

    path = Path(path)
    model, payload = model_from_checkpoint(path)
    test = _test_set(data_dir, normalize=payload["config"].get("inputs") != "unit")
    images_all = test.x if limit is None else test.x[:limit]
    variant = model.config.variant
    cell = model.cell
    active = u_sq = z_sq = 0.0
    n_units = nfe = n_batches = 0
    starts = []
    with torch.no_grad():
        for i in range(0, len(images_all), batch_size):
            images = images_all[i:i + batch_size]
            x = model.embed(images.reshape(images.shape[0], -1))
            z_star, stats = model.deq(x)
            nfe += int(stats.nfe_forward)
            n_batches += 1
            pre = cell.w1(z_star)
            u = torch.relu(pre)
            active += float((pre > 0).float().sum())
            n_units += pre.numel()
            u_sq += float(u.square().sum())
            z_sq += float(z_star.square().sum())
            if variant == "skipdeq":
                z0 = model.skip(x)
            elif variant == "skipregdeq":
                z0 = cell(torch.zeros_like(x), x)
            else:
                z0 = torch.zeros_like(x)
            fz0 = cell(z0, x)
            starts.append(float((fz0 - z0).norm() / fz0.norm().clamp_min(1e-30)))
    starts_t = torch.tensor(starts)
    return {
        "run": f"{path.parent.name}/{path.stem}",
        "active": active / n_units,
        "share": (u_sq / z_sq) ** 0.5,
        "start_median": float(starts_t.median()),
        "start_below_tol": float((starts_t <= model.config.tol).float().mean()),
        "nfe": nfe / n_batches,
        "tol": model.config.tol,
    }


SHARE_COLUMNS = ("run", "active units at z*", "‖relu(W₁z*+b₁)‖ / ‖z*‖",
                 "start residual (median over batches)", "batches starting below tol", "test NFE")
SHARE_HEAD = "\n".join(table_lines(SHARE_COLUMNS, []))


def share_row(r: dict) -> str:
    # one line at a time: share prints each checkpoint's row as soon as it is measured
    cells = [r["run"], f"{r['active']:.3f}", f"{r['share']:.3f}", f"{r['start_median']:.2e}",
             f"{r['start_below_tol']:.2f} (tol {r['tol']:g})", f"{r['nfe']:.1f}"]
    return table_lines(SHARE_COLUMNS, [cells])[-1]


PROBE_TOL = 0.005
PROBE_SETTINGS = (("batch", PROBE_TOL), ("batch", PROBE_TOL / 10), ("batch", PROBE_TOL / 100), ("batch", 1e-6),
                   ("per_sample", PROBE_TOL), ("per_sample", PROBE_TOL / 10), ("per_sample", 1e-6))
PROBE_IMAGES, PROBE_BATCH, PROBE_MAX_STEPS = 640, 32, 50  # the training batch


def steady_state_probe(model, images, labels, *, batch_size: int = PROBE_BATCH, settings=PROBE_SETTINGS,
                       max_steps: int = PROBE_MAX_STEPS) -> list[tuple]:
    """One row per (stopping test, integrator atol): (test, atol, mean NFE per batch, failed solves,
    batches, accuracy %, worst per-sample relative residual). Replaces the model's solver."""
    import torch

    from implicit.deq import SteadyState
    from implicit.ode import Tsit5

    rows = []
    for test, ode_atol in settings:
        model.deq.solver = SteadyState(solver=Tsit5(), rtol=PROBE_TOL, atol=1e-6, ode_rtol=PROBE_TOL,
                                       ode_atol=ode_atol, stopping_test=test, max_steps=max_steps)
        nfe, failed, correct, worst = [], 0, 0, 0.0
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                out = model(images[i:i + batch_size])
                nfe.append(out.nfe_forward)
                failed += not out.stats.outcome.ok
                correct += int((out.logits.argmax(1) == labels[i:i + batch_size]).sum())
                worst = max(worst, float(out.stats.residual.max()))
        rows.append((test, ode_atol, sum(nfe) / len(nfe), failed, len(nfe), 100 * correct / len(images), worst))
    return rows


def probe_models(folders) -> list[tuple[str, object]]:
    """(label, model): the untrained model of each variant (seed 0), then each folder's
    ``<variant>_seed0.pt``; a folder holding none of them is an error."""
    import torch

    from models.mnist_deq import VARIANTS, MNISTDEQConfig, MNISTFCDEQ
    from train._checkpoint import load_checkpoint
    from train._errors import UserError

    models = []
    for v in VARIANTS:
        torch.manual_seed(0)
        models.append((f"{v}, untrained", MNISTFCDEQ(MNISTDEQConfig(variant=v, solver="continuous"))))
    for folder in map(Path, folders):
        paths = [folder / f"{v}_seed0.pt" for v in VARIANTS]
        if not any(p.is_file() for p in paths):
            raise UserError(f"no checkpoint to probe in {str(folder)!r}: expected one of "
                            f"{', '.join(p.name for p in paths)} (train.mnist --checkpoint-dir)")
        for v, path in zip(VARIANTS, paths):
            if not path.is_file():
                continue
            state = load_checkpoint(path)
            # the probe sets the solver itself; only the variant and the weights matter
            m = MNISTFCDEQ(MNISTDEQConfig(variant=v, solver="continuous",
                                          jacobian_reg=bool(state["config"].get("jacobian_reg"))))
            m.load_state_dict(state["model"])
            models.append((f"{v}, {folder.name} epoch {state['epoch']}", m))
    return models


def probe_markdown(folders, *, data_dir=None, n_images: int = PROBE_IMAGES, settings=PROBE_SETTINGS,
                   max_steps: int = PROBE_MAX_STEPS, command: str | None = None, log=print) -> str:
    """results/mnist_deq/steady_state_probe.md: the probe of the untrained models and of the
    checkpoints in ``folders``; ``command`` is what the Generated-by line names."""
    import torch

    from train._results import _cpu_model, git_info

    models = probe_models(folders)  # before the data: a wrong folder is refused at once
    test = _test_set(data_dir)
    images, labels = test.x[:n_images], test.y[:n_images]
    command = command or " ".join(["python -m train.exp_mnist_deq probe", *map(str, folders)])
    lines = ["# Continuous MNIST FC DEQ: stopping test × integrator atol", "",
             f"Generated by `{command}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {(git_info().get('commit') or '?')[:7]}, "
             f"{_cpu_model()}).",
             f"Tsit5, rtol = {PROBE_TOL} for the integrator and the test, at most {max_steps} steps; first "
             f"{len(images)} test images in batches of {PROBE_BATCH} (the training batch). NFE: mean forward f "
             "evaluations per batch (6 per Tsit5 step). failed: solves that hit max_steps. worst residual: largest "
             "per-sample relative residual seen.", ""]
    head = ["model", "test", "integrator atol", "NFE/batch", "failed", "accuracy %", "worst residual"]
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, m in models:
            m.eval()
            for test_name, ode_atol, nfe, failed, n, acc, worst in steady_state_probe(
                    m, images, labels, settings=settings, max_steps=max_steps):
                rows.append([name, test_name, f"{ode_atol:g}", f"{nfe:.1f}", f"{failed}/{n}", f"{acc:.2f}",
                             f"{worst:.4f}"])
                log(table_lines(head, rows[-1:])[-1])  # each row as it is measured: the probe takes minutes
    finally:
        torch.set_num_threads(threads)
    return "\n".join(lines + table_lines(head, rows)) + "\n"


def main(argv: list[str] | None = None) -> int:
    import json
    import shlex

    from train import _cli
    from train._results import atomic_write_bytes

    p = _cli.ArgumentParser(prog="python -m train.exp_mnist_deq", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("share", help="active units, implicit share, start residual and NFE of trained checkpoints")
    s.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    s.add_argument("--batch-size", type=_cli.positive_int, default=32,
                   help="test batch size (default: 32, as the runs)")
    s.add_argument("--json", type=Path, default=None, help="merge the numbers into this JSON file")
    s.add_argument("--limit", type=_cli.positive_int, default=None,
                   help="the first N test images only (default: all; the JSON entry then says limit N)")
    r = sub.add_parser("probe", help="NFE, failures and accuracy per stopping test × integrator atol "
                                     "(results/mnist_deq/steady_state_probe.md)")
    r.add_argument("folders", nargs="*", type=Path, metavar="CHECKPOINT_DIR",
                   help="folders holding train.mnist's <variant>_seed0.pt (default: none; untrained models only)")
    r.add_argument("--out", type=Path, default=Path("results/mnist_deq/steady_state_probe.md"),
                   help="the Markdown to write (default: results/mnist_deq/steady_state_probe.md)")
    r.add_argument("--images", type=_cli.positive_int, default=PROBE_IMAGES,
                   help=f"the first N test images (default: {PROBE_IMAGES})")
    for q in (s, r):
        q.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $IMPLICIT_DATA, "
                                                        "else ../shared/data beside the repository)")
        _cli.add_debug(q)
    args = p.parse_args(argv)

    def share() -> int:
        from train._errors import UserError

        missing = [str(c) for c in args.checkpoints if not c.is_file()]
        if missing:  # before anything is measured
            raise UserError(f"checkpoint not found: {', '.join(map(repr, missing))}")
        saved = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
        import torch

        torch.set_num_threads(1)
        print(SHARE_HEAD)
        for path in args.checkpoints:
            row = implicit_share(path, data_dir=args.data_dir, batch_size=args.batch_size, limit=args.limit)
            print(share_row(row), flush=True)
            if args.json:
                saved[row["run"]] = dict(row, batch_size=args.batch_size,
                                         **({"limit": args.limit} if args.limit else {}))
                atomic_write_bytes(args.json, (json.dumps(saved, indent=1, sort_keys=True) + "\n").encode())
        return 0

    def probe() -> int:
        folders = [str(f) for f in args.folders]
        missing = [f for f in folders if not Path(f).is_dir()]
        if missing:
            from train._errors import UserError

            raise UserError(f"checkpoint folder not found: {', '.join(map(repr, missing))}")
        command = shlex.join(["python", "-m", "train.exp_mnist_deq", *(sys.argv[1:] if argv is None else argv)])
        text = probe_markdown(folders, data_dir=args.data_dir, n_images=args.images, command=command,
                              log=lambda line: print(line, flush=True))
        atomic_write_bytes(args.out, text.encode())
        print(f"wrote {args.out}")
        return 0

    return _cli.guard(share if args.what == "share" else probe, debug=args.debug, user_errors=_cli.data_errors())


if __name__ == "__main__":
    sys.exit(main())
