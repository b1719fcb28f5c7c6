"""The MNIST neural ODE experiment of ERNODE/SRNODE (Pal et al., ICML 2021, arXiv 2105.03918).

One home for it: the paper's numbers, the schedules and λ of the small default, ``--preset paper``
and ``--preset authors``, the run lists of the authors-regime tables, and the measurements that
turn saved checkpoints into tables. Architecture and solver options: ``models/mnist_node.py``;
one run: ``python -m train.mnist --model {node,ernode,srnode,...}``; every table:
``python -m train.reproduce --list`` (the mnist entries).

    python -m train.exp_mnist_node run main [--stream 0 --streams 2]   # missing authors runs only
    python -m train.exp_mnist_node run ablation
    python -m train.exp_mnist_node time results/mnist/authors          # interleaved prediction timing
    python -m train.exp_mnist_node table results/mnist/authors         # table.md from the records
    python -m train.exp_mnist_node predict results/mnist --checkpoints runs/mnist_bench_checkpoints

Where each setting of ``--preset authors`` comes from
------------------------------------------------------
RegNeuralDE.jl at its ICML release, commit 345925c5c0002df8f656696143cfc76c66daf1d0
(``experiments/mnist_node.jl`` last changed in d79a120c, ``experiments/configs/mnist_node.yml``
in 6f4d0fbe); its Manifest pins OrdinaryDiffEq 5.50.0 (tag commit e6c0a9f9), DiffEqBase 6.53.4
(tag commit 2ff7eac6), DiffEqCallbacks 2.16.0, Tracker 0.2.14, Flux 0.11.6.

* Model: ``Dense(785, 100, tanh)``, ``Dense(101, 784, tanh)`` with t appended to each layer's input,
  classifier ``Dense(784, 10)``, on the raw 784 pixels (mnist_node.jl, MLPDynamics/ClassifierNODE).
  Flux's default init: Glorot-uniform weights, zero biases -> ``--init glorot``.
* Inputs: ``Float32.(MNIST.traindata())`` in [0, 1], no mean/std normalisation
  (``src/dataset.jl``, 11593807) -> ``--inputs unit``.
* Solver: ``Tsit5()`` (``AutoTsit5(Tsit5())`` for SRNODE, which only adds the stiffness
  estimate), ``reltol = abstol = 1.4f-8``, tspan [0, 1], Float32 -> ``--rtol/--atol 1.4e-8``.
* Controller: OrdinaryDiffEq's default for Tsit5 is the PI controller, beta1 = 7/50,
  beta2 = 2/25, gamma = 9/10, qmin = 1/5, qmax = 10, qsteady = [1, 1], qoldinit = 1e-4, dtmax = the
  span (``src/alg_utils.jl``, ``src/solve.jl``, ``src/integrators/controllers.jl`` at v5.50.0)
  -> ``--controller pi`` (``implicit.PIController``).
* Gradient path: Tracker through the solver (``SensitivityADPassThrough``), tspan converted to
  tracked reals (``src/utils.jl``, ``_convert_tspan``) so that the error norm keeps tracking
  (DiffEqBase 6.53.4 ``src/tracker.jl``). But the controller strips tracking from its output:
  ``q11 = DiffEqBase.value(fastpow(EEst, beta1))``, ``q = DiffEqBase.value(max(...))`` and
  ``dtnew = DiffEqBase.value(step_accept_controller!(...)) * oneunit(dt)``
  (``src/integrators/controllers.jl`` and ``integrator_utils.jl`` at v5.50.0), with
  ``value(x::TrackedReal) = x.data``. So the step proposed after an accepted step carries no
  gradient; only the initial step (``ode_determine_initdt`` on tracked values), the times it
  shifts and the last step's clip to t1 do -> ``--step-path initial``. (``--step-path tracked``
  differentiates the controller too; the ablation measures both.)
* Regularizers: a ``SavingCallback`` (saves at the start too) of ``EEst * dt`` for ERNODE,
  aggregated by ``mean`` with weight λ_E = 100·exp(−ln(10)·(epoch − 1)/EPOCHS); of
  ``|eigen_est| / 3.5068`` (Tsit5's stability size) for SRNODE, aggregated by ``maximum`` with
  λ_S = 0.1 constant. OrdinaryDiffEq starts EEst and eigen_est at 1 (``src/solve.jl``), so the
  saved start values are 1·dt₀ and 1/3.5068 -> ``--aggregation authors``
  (``models._base.authors_error``/``authors_stiffness``).
* Training: ``Optimiser(InvDecay(1e-5), Momentum(0.1, 0.9))``, batch 512, shuffled, 75 epochs,
  seed 1999, cross-entropy on logits + λ·reg -> SGD lr 0.1 momentum 0.9, lr/(1 + 1e-5·step) (Flux
  decays the gradient before the momentum, torch the step after it; over the ≤ 236 steps run here
  the factor stays above 0.997, so the order does not matter).
* NFE column: ``sol.destats.nf`` of a forward pass on a fixed batch after every epoch; the
  release uses the first 512 training images, an earlier version ``rand(Float32, 28, 28, 1, 512)``
  (commit 30cbb29c) -> both are logged (``probes``: nfe_train_first, nfe_random).
* Not the authors': our seeds (0, 1; theirs 1999), the budget (epochs below; λ_E's schedule is
  compressed to the epochs run), ``max_steps = 100`` attempted steps per solve (the step path is
  kept in memory; 2.4× the ~42 steps of the paper's 253 NFE), running train accuracy (they pass
  over the whole training set), STEER and TayNODE run in the same regime with our weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from train import _checkpoint, _cli, _data, _results
from train._errors import UserError
from train._results import format_cell, table_lines
from train._trainer import Constant, EpochwiseExponential, ExponentialAnneal, WeightSchedule



# The paper's MNIST NODE table (arXiv 2105.03918, Table 1), where the brief quotes it: test
# accuracy % and test NFE. Other cells are left out rather than guessed.
PAPER = {
    "node": {"test_acc": 97.94, "test_nfe": 253.0},
    "ernode": {"test_acc": 97.32, "test_nfe": 177.0},
}

# the small default run: a few minutes on a CPU
SMALL = {"epochs": 2, "batch_size": 128, "limit_train": 10_000, "limit_test": None,
         "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "lr_decay": 1e-5}
# the paper's schedule (--preset paper)
PAPER_SCHEDULE = {"epochs": 75, "batch_size": 512, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "lr_decay": 1e-5,
                  "limit_train": None, "limit_test": None}
# --preset authors: the training settings and the solver/model/input options of the authors' release
# script (the sources are listed at the top of this module)
AUTHORS_SCHEDULE = dict(PAPER_SCHEDULE)
AUTHORS_OPTIONS = {"rtol": 1.4e-8, "atol": 1.4e-8, "controller": "pi", "step_path": "initial",
                   "aggregation": "authors", "init": "glorot", "inputs": "unit", "eval_batch_size": 512,
                   "max_steps": 100}


def weights(variant: str, config) -> dict[str, WeightSchedule]:
    """λ per regularizer. Paper: λ_E annealed exponentially from 100 to 10 over training; λ_S = 0.0285;
    TayNODE λ = 3.02e-3. --preset authors: their per-epoch schedule of λ_E, and λ_S = 0.1 on their
    max-of-|S| term (the sources are listed at the top of this module)."""
    if config.preset == "authors":
        er = {"error": EpochwiseExponential(start=100.0, end=10.0, epochs=config.epochs)}
    else:
        er = {"error": ExponentialAnneal(start=100.0, end=10.0)}
    sr = {"stiffness": Constant(value=0.1 if config.aggregation == "authors" else 0.0285)}
    return {
        "node": {}, "steer": {}, "ernode": er, "srnode": sr, "taynode": {"taylor": Constant(value=3.02e-3)},
        "steer+er": er, "steer+sr": sr, "sr+er": {**sr, **er},
    }[variant]


# --- the authors-regime tables: their runs ----------------------------------------------------

MAIN_OUT = "results/mnist/authors"
ABLATION_OUT = "results/mnist/authors_ablation"
CHECKPOINTS = "runs/mnist_authors_ckpt"

_MAIN_BUDGET = ("--epochs", "2")
_ABLATION_BUDGET = ("--epochs", "2", "--limit-train", "10240", "--limit-test", "2048", "--seed", "0")

RUNS = {
    # name -> train.mnist arguments after --preset authors
    "main": {
        **{f"{m}_seed{s}": ("--model", m, *_MAIN_BUDGET, "--seed", str(s))
           for s in (0, 1) for m in ("node", "ernode", "srnode")},
        "steer_seed0": ("--model", "steer", *_MAIN_BUDGET, "--seed", "0"),
        # the gradient through the controller too (what the authors' stack does not compute)
        "ernode_tracked_seed0": ("--model", "ernode", *_MAIN_BUDGET, "--seed", "0", "--step-path", "tracked"),
        # TayNODE's step costs far more than a vanilla one: one training step of batch 512 at
        # initialisation took 341 s here (206 NFE, one thread) against ~4 s, so this run (60 steps,
        # ~6 h) was stopped unfinished on the 2-core machine; it needs a GPU
        "taynode_seed0": ("--model", "taynode", "--epochs", "1", "--limit-train", "30720", "--seed", "0"),
    },
    # one departure switched back at a time (what our earlier runs used)
    "ablation": {
        "ernode_authors": ("--model", "ernode", *_ABLATION_BUDGET),
        "node_authors": ("--model", "node", *_ABLATION_BUDGET),
        "ernode_tol1e-5": ("--model", "ernode", *_ABLATION_BUDGET, "--rtol", "1e-5", "--atol", "1e-5"),
        "node_tol1e-5": ("--model", "node", *_ABLATION_BUDGET, "--rtol", "1e-5", "--atol", "1e-5"),
        "ernode_sum": ("--model", "ernode", *_ABLATION_BUDGET, "--aggregation", "paper"),
        "ernode_detached": ("--model", "ernode", *_ABLATION_BUDGET, "--step-path", "detached"),
        "ernode_tracked": ("--model", "ernode", *_ABLATION_BUDGET, "--step-path", "tracked"),
        "ernode_icontroller": ("--model", "ernode", *_ABLATION_BUDGET, "--controller", "i"),
        "node_icontroller": ("--model", "node", *_ABLATION_BUDGET, "--controller", "i"),
        "ernode_normalized": ("--model", "ernode", *_ABLATION_BUDGET, "--inputs", "normalized", "--init", "torch"),
        "node_normalized": ("--model", "node", *_ABLATION_BUDGET, "--inputs", "normalized", "--init", "torch"),
    },
}
OUTS = {"main": MAIN_OUT, "ablation": ABLATION_OUT}


def command(group: str, name: str, data_dir: str | None) -> list[str]:
    out = OUTS[group]
    args = ["--preset", "authors", *RUNS[group][name], "--out", out, "--run-name", name,
            "--checkpoint-dir", f"{CHECKPOINTS}/{Path(out).name}", "--threads", "1", "--no-progress"]
    return args + (["--data-dir", data_dir] if data_dir else [])


def _complete(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except FileNotFoundError:
        return False


def run_group(group: str, *, stream: int, streams: int, data_dir: str | None) -> None:
    """Run this stream's share of the group's runs that have no complete record (resuming those
    with a checkpoint)."""
    names = list(RUNS[group])[stream::streams]
    for name in names:
        if _complete(Path(OUTS[group]) / f"{name}.json"):
            print(f"skip {name} (complete)", flush=True)
            continue
        args = command(group, name, data_dir)
        if (Path(CHECKPOINTS) / Path(OUTS[group]).name / f"{name}.pt").is_file():
            args.append("--resume")
        print("python -m train.mnist " + " ".join(args), flush=True)
        from train import mnist  # train.mnist reads this module's presets

        mnist.run(mnist.parse_config(args))


# --- records -> prediction timing -> table ----------------------------------------------------


def _records(folder: Path) -> list[dict]:
    recs = []
    for p in sorted(folder.glob("*.json")):
        rec = json.loads(p.read_text())
        if rec.get("format") == _results.FORMAT and rec.get("complete"):
            recs.append(rec)
    return recs


def _model_from_record(rec: dict):
    cfg = rec["config"]
    from train import mnist

    family, builder, _ = mnist.Registry.discover().entries[cfg["model"]]
    options = {**family.tolerance(cfg["rtol"], cfg["atol"]),
               **{k: cfg[k] for k in ("controller", "step_path", "aggregation", "init", "max_steps")
                  if cfg.get(k) is not None}}
    return builder(**options)


def _checkpoints(folder: Path, checkpoints: Path | None) -> Path:
    return checkpoints if checkpoints is not None else Path(CHECKPOINTS) / folder.name


def _trained_models(folder: Path, checkpoints: Path | None) -> list[tuple[dict, torch.nn.Module]]:
    """(record, final model in eval mode) of every complete run of the folder that has its checkpoint."""
    runs = []
    for rec in _records(folder):
        ckpt = _checkpoints(folder, checkpoints) / f"{rec['name']}.pt"
        if ckpt.is_file():
            model = _model_from_record(rec)
            model.load_state_dict(_checkpoint.load_checkpoint(ckpt)["model"])
            runs.append((rec, model.eval()))
    return runs


def _test_set(cfg: dict, data_dir: str | None, *, limit: int | None):
    return _data.load("mnist", _data.recorded_data_dir(cfg.get("data_dir"), data_dir), train=False, limit=limit,
                      normalize=cfg.get("inputs", "normalized") != "unit")


def _timed(runs: list[tuple[dict, torch.nn.Module]], batches: list[torch.Tensor], repeats: int):
    from train._timing import time_interleaved

    seconds, nfe = time_interleaved({rec["name"]: model for rec, model in runs}, batches, repeats=repeats,
                                    nfe=lambda out: out.nfe_forward)
    return {name: statistics.median(v) for name, v in seconds.items()}, nfe


def time_predictions(folder: Path, *, repeats: int, data_dir: str | None, checkpoints: Path | None = None,
                     max_batches: int = 4) -> Path:
    """Median seconds per test batch of each final model, all models interleaved batch by batch in
    this one process (the training runs shared the machine, so their own timings are not comparable)."""
    torch.set_num_threads(1)
    runs = _trained_models(folder, checkpoints)
    if not runs:
        raise UserError(f"no complete runs with checkpoints under {str(_checkpoints(folder, checkpoints))!r}")
    cfg = runs[0][0]["config"]
    test = _test_set(cfg, data_dir, limit=cfg["limit_test"])
    bs = cfg["eval_batch_size"]
    batches = [test.x[i:i + bs] for i in range(0, len(test), bs)][:max_batches]
    median, nfe = _timed(runs, batches, repeats)
    result = {
        "what": f"median seconds per test batch of {bs}, {len(batches)} batches x {repeats} repeats, models "
                "interleaved batch by batch in one process, 1 thread",
        "environment": _results.environment(world_size=1, device="cpu"),
        "runs": {k: {"median_s": v, "nfe_mean": sum(nfe[k]) / len(nfe[k])} for k, v in median.items()},
    }
    path = folder / "predict_timing.json"
    _results.write_json(path, result)
    return path


def predict_table(records: Path, checkpoints: Path, *, repeats: int = 5, threads: int = 1,
                  data_dir: str | None = None) -> str:
    """predict_timing.md of the CPU-budget table (results/mnist): every complete run with its final
    checkpoint, timed on the whole test subset of its record, interleaved; ratios to the same-seed
    baseline measured in this process."""
    from train import mnist

    torch.set_num_threads(threads)
    runs = _trained_models(records, checkpoints)
    if not runs:
        raise UserError(f"no complete runs with checkpoints under {str(checkpoints)!r}")
    order = list(mnist.Registry.discover().entries)
    runs.sort(key=lambda rm: (rm[0]["seed"], order.index(rm[0]["model"])))
    cfg = runs[0][0]["config"]
    test = _test_set(cfg, data_dir, limit=cfg["limit_test"])
    bs = cfg["eval_batch_size"]
    batches = [test.x[i:i + bs] for i in range(0, len(test), bs)]
    median, nfe = _timed(runs, batches, repeats)
    lines = [
        "# Prediction time per test batch, measured interleaved in one process",
        "",
        f"Generated by `python -m train.exp_mnist_node predict`: {len(batches)} batches of {bs} test images, "
        f"{repeats} repeats, {threads} thread(s), models interleaved batch by batch; median seconds per batch. "
        "Ratio = baseline (same seed) / model. The machine was shared with other jobs, but every model saw "
        "the same conditions.",
        "",
    ]
    rows = []
    for rec, _ in runs:
        base = f"{rec['baseline']}_seed{rec['seed']}"
        ratio = median[base] / median[rec["name"]] if base in median else None
        rows.append([rec["name"], f"{statistics.mean(nfe[rec['name']]):.1f}", f"{median[rec['name']]:.4f}",
                     format_cell(ratio, "{:.2f}")])
    lines += table_lines(["run", "test NFE", "predict s/batch (median)", "ratio to baseline"], rows)
    return "\n".join(lines) + "\n"


# (label, controller, init, inputs, tolerance): the authors' setting, then one departure at a time
STEP_PROBES = (
    ("authors", "pi", "glorot", "unit", 1.4e-8),
    ("I controller", "i", "glorot", "unit", 1.4e-8),
    ("normalized inputs, torch init", "pi", "torch", "normalized", 1.4e-8),
    ("tolerance 1e-5", "pi", "glorot", "unit", 1e-5),
    ("our earlier runs: I, normalized, torch init, 1e-5", "i", "torch", "normalized", 1e-5),
)


def untrained_steps(out: Path, *, data_dir: str | None, n: int = 512) -> Path:
    """What the untrained field's solve on the first n training images costs under each setting."""
    from models.mnist_node import MNISTNODE, MNISTNODEConfig

    torch.set_num_threads(1)
    rows = {}
    for label, controller, init, inputs, tol in STEP_PROBES:
        x = _data.load("mnist", data_dir, train=True, normalize=inputs == "normalized").x[:n]
        torch.manual_seed(0)
        model = MNISTNODE(MNISTNODEConfig(variant="node", rtol=tol, atol=tol, controller=controller, init=init)).eval()
        with torch.no_grad():
            st = model(x).stats
        h = st.step_sizes.tolist()
        rows[label] = {"controller": controller, "init": init, "inputs": inputs, "tol": tol, "nfe": st.nfe_forward,
                       "accepted": st.n_accepted, "rejected": st.n_rejected, "h0": float(st.initial_step),
                       "h_first5": h[:5], "h_max": max(h), "E_median": float(st.error_estimates.median()),
                       "mean_abs_pixel": float(x.abs().mean())}
    path = out / "untrained_steps.json"
    _results.write_json(path, {"what": f"one forward solve of the untrained node (seed 0) on the first {n} training "
                                       "images, float32, 1 thread", "rows": rows,
                               "environment": _results.environment(world_size=1, device="cpu")})
    return path


def trained_steps(folder: Path, *, data_dir: str | None, n: int = 512, checkpoints: Path | None = None) -> Path:
    """Each final model's solve of the first n test images: h_0, every accepted h_j and E_j, so the
    table's NFE can be read as "how many steps, of what size, at what error ratio"."""
    torch.set_num_threads(1)
    rows = {}
    images = {}  # one load per input scaling, not one per model
    for rec, model in _trained_models(folder, checkpoints):
        key = rec["config"].get("inputs", "normalized")
        if key not in images:
            images[key] = _test_set(rec["config"], data_dir, limit=None).x[:n]  # the first n test images
        with torch.no_grad():
            st = model(images[key]).stats
        h, E = st.step_sizes.tolist(), st.error_estimates.tolist()
        rows[rec["name"]] = {"nfe": st.nfe_forward, "accepted": st.n_accepted, "rejected": st.n_rejected,
                             "h0": float(st.initial_step), "h": h, "E": E,
                             "E_median": statistics.median(E), "h_max": max(h)}
    path = folder / "trained_steps.json"
    _results.write_json(path, {"what": f"one forward solve of each final model on the first {n} test images, 1 thread",
                               "rows": rows, "environment": _results.environment(world_size=1, device="cpu")})
    return path


def table(folder: Path) -> Path:
    """table.md: one row per run, ratios against the vanilla node of the same seed."""
    recs = {r["name"]: r for r in _records(folder)}
    timing_path = folder / "predict_timing.json"
    timing = json.loads(timing_path.read_text())["runs"] if timing_path.is_file() else {}
    def base_of(rec):
        # the vanilla run with the same budget and the same solve (aggregation and step path do not
        # change a vanilla run's forward, so the ablation's ernode_sum/_detached/_tracked pair with node_authors)
        keys = ("seed", "epochs", "limit_train", "rtol", "atol", "controller", "inputs", "init")
        cands = [r for r in recs.values() if r["model"] == "node"
                 and all(r["config"].get(k) == rec["config"].get(k) for k in keys)]
        return cands[0] if cands else None

    lines = [f"# {folder.name}: MNIST neural ODEs, `--preset authors` (train.exp_mnist_node)", "",
             "Generated by `python -m train.exp_mnist_node table " + folder.as_posix() + "` from the run records. "
             "test NFE: mean per test batch of 512; random / first-train NFE: one batch of 512 uniform-random "
             "images / of the first training images after the last epoch (the authors' NFE column); predict s: "
             "median per batch, interleaved in one process (`predict_timing.json`); ratios: the same-seed, "
             "same-budget node / the row (> 1: cheaper). Train acc is the running accuracy of the last epoch.", ""]
    head = ["run", "model", "seed", "epochs", "train items", "train acc %", "test acc %", "Δ acc pt", "train min",
            "test NFE", "NFE ratio", "random NFE", "first-train NFE", "predict s", "predict ratio",
            "paper (test %, NFE)"]
    rows = []
    order = ["node", "ernode", "srnode", "steer", "taynode"]
    for rec in sorted(recs.values(), key=lambda r: (r["seed"], order.index(r["model"]) if r["model"] in order else 99,
                                                   r["name"])):
        s, base = rec["summary"], base_of(rec)
        probes = s.get("probes", {})
        t = timing.get(rec["name"], {}).get("median_s")
        tb = timing.get(base["name"], {}).get("median_s") if base else None
        paper = PAPER.get(rec["model"])
        rows.append([
            rec["name"], rec["model"], str(rec["seed"]), f"{s['epochs']:g}", str(rec["data"]["train_items"]),
            format_cell(s["train_acc"], "{:.2f}"), format_cell(s["test_acc"], "{:.2f}"),
            format_cell(s["test_acc"] - base["summary"]["test_acc"] if base else None, "{:+.2f}"),
            format_cell(s["train_time_s"] / 60, "{:.1f}"), format_cell(s["test_nfe"], "{:.1f}"),
            format_cell(base["summary"]["test_nfe"] / s["test_nfe"] if base else None, "{:.2f}"),
            format_cell(probes.get("nfe_random"), "{:.0f}"), format_cell(probes.get("nfe_train_first"), "{:.0f}"),
            format_cell(t, "{:.3f}"), format_cell(tb / t if (t and tb) else None, "{:.2f}"),
            f"{paper['test_acc']}, {paper['test_nfe']:g}" if paper else "–",
        ])
    lines += table_lines(head, rows)
    path = folder / "table.md"
    _results.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def main(argv: list[str] | None = None) -> int:
    p = _cli.ArgumentParser(prog="python -m train.exp_mnist_node", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli.add_debug(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the group's missing runs")
    r.add_argument("group", choices=tuple(RUNS))
    r.add_argument("--stream", type=_cli.nonneg_int, default=0, help="this process's share: runs stream, stream+streams, ...")
    r.add_argument("--streams", type=_cli.positive_int, default=1, help="number of processes sharing the group (default: 1)")
    r.add_argument("--data-dir", default=None)
    t = sub.add_parser("time", help="time prediction of the folder's final models, interleaved")
    t.add_argument("folder")
    t.add_argument("--repeats", type=_cli.positive_int, default=3)
    t.add_argument("--data-dir", default=None)
    pr = sub.add_parser("predict", help="<records>/predict_timing.md: the CPU-budget table's final models timed "
                                        "interleaved")
    pr.add_argument("records", help="folder of the run records (results/mnist)")
    pr.add_argument("--checkpoints", required=True, help="folder of their <run>.pt checkpoints")
    pr.add_argument("--repeats", type=_cli.positive_int, default=5, help="timed passes over the test subset (default: 5)")
    pr.add_argument("--threads", type=_cli.positive_int, default=1, help="torch threads (default: 1)")
    pr.add_argument("--data-dir", default=None)
    tb = sub.add_parser("table", help="write <folder>/table.md from the records")
    tb.add_argument("folder")
    ts = sub.add_parser("trained-steps", help="each final model's step sequence -> <folder>/trained_steps.json")
    ts.add_argument("folder")
    ts.add_argument("--data-dir", default=None)
    sp = sub.add_parser("steps", help="the untrained solve's steps under each setting -> <out>/untrained_steps.json")
    sp.add_argument("--out", default=ABLATION_OUT)
    sp.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if args.cmd == "run" and not args.stream < args.streams:
        p.error(f"--stream must be in [0, --streams), got {args.stream} of {args.streams}")
    return _cli.guard(lambda: _command(args), debug=args.debug, user_errors=_cli.data_errors())


def _command(args) -> int:
    if args.cmd == "run":
        run_group(args.group, stream=args.stream, streams=args.streams, data_dir=args.data_dir)
    elif args.cmd == "time":
        print(f"wrote {time_predictions(Path(args.folder), repeats=args.repeats, data_dir=args.data_dir)}")
    elif args.cmd == "predict":
        text = predict_table(Path(args.records), Path(args.checkpoints), repeats=args.repeats, threads=args.threads,
                             data_dir=args.data_dir)
        path = Path(args.records) / "predict_timing.md"
        _results.atomic_write_bytes(path, text.encode())
        print(text, end="")
    elif args.cmd == "trained-steps":
        print(f"wrote {trained_steps(Path(args.folder), data_dir=args.data_dir)}")
    elif args.cmd == "steps":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(f"wrote {untrained_steps(Path(args.out), data_dir=args.data_dir)}")
    else:
        print(table(Path(args.folder)).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
