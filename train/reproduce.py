"""Regenerate any committed table of results/: train its missing runs, then render it.

    python -m train.reproduce --list                       # every table: name, folder, runs complete/expected
    python -m train.reproduce mnist_deq --dry-run          # the training commands it would run
    python -m train.reproduce cifar_steps300               # run what is missing (resume what is unfinished), render
    python -m train.reproduce mnist --budget paper --seeds 0,1

Each table is a :class:`Table` below: its folder, the training command of every run (script,
model, options, seeds; read from the run scripts that used to live in results/ and from the
records' ``config`` and ``environment.command``) and how its Markdown is rendered from the
records. A run whose record is complete is skipped; one whose record is unfinished is resumed from
its checkpoint (``--resume``), or trained again (``--overwrite``) when there is no checkpoint;
a missing one is trained. Every run is the training CLI in a subprocess, one after another.

``--budget cpu`` (the default) is the budget the committed records used; ``--budget paper`` the
papers' schedule (``--preset paper``; ``--preset authors`` with its own epochs for the authors'
regime), written beside the committed folder (``<folder>_paper``) so the two never mix.
Rendering from the committed records alone (all runs present) trains nothing and rewrites the
table byte for byte (tests/test_reproduce.py checks every table that renders from records).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from train import _cli
from train._errors import UserError
from train._results import REPO_ROOT

DATA_DIR = "../shared/data"  # relative to the repository, as the committed records name it
COMMON = ("--threads", "1", "--no-progress")  # every committed run: one torch thread, log rows only


@dataclass(frozen=True, kw_only=True)
class Run:
    """Runs of one training command at several seeds.

    ``stem`` names the record (``{seed}`` is filled in; a stem without it gets ``_seed<N>`` for a
    seed other than its first). ``args`` are the script's options besides the budget, the seed and
    where it writes; ``budget`` the options of the committed budget (the table's when None);
    ``group`` a subfolder of the table's folder; ``checkpoints`` the folder its checkpoint went to
    when not the table's (a run is resumed from there)."""

    stem: str
    args: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    budget: tuple[str, ...] | None = None
    group: str = ""
    checkpoints: str | None = None

    def name(self, seed: int) -> str:
        if "{seed}" in self.stem:
            return self.stem.format(seed=seed)
        return self.stem if seed == self.seeds[0] else f"{self.stem}_seed{seed}"


@dataclass(frozen=True, kw_only=True)
class Table:
    """One committed table: where it lives, the runs behind it, how it is drawn from them."""

    name: str
    folder: str  # relative to the repository
    script: str  # the training CLI (python -m <script>)
    runs: tuple[Run, ...]
    render: Callable[[str], object]  # called with the folder (relative), the repository as working folder
    markdown: str = "table.md"
    budget: tuple[str, ...] = ()  # the committed records' budget options, for runs that name none
    paper: tuple[str, ...] | None = ("--preset", "paper")  # the papers' schedule; None: the table has none
    checkpoints: str = ""  # checkpoint folder (default: runs/ckpt/<name>)
    # a measurement over saved checkpoints renders the table, not the records alone: its bytes are
    # timings of this machine and cannot be reproduced, so the byte-for-byte test leaves it out
    measured: bool = False
    bench: bool = False  # a benchmark: one JSON record per run, no seeds, no budgets
    note: str = ""

    def expected(self, seeds: tuple[int, ...] | None = None) -> list[tuple[Run, int]]:
        return [(run, s) for run in self.runs for s in (seeds or run.seeds)]


# --- renderers: each writes the committed Markdown from the records in the folder ------------------


def _report(title: str | None = None) -> Callable[[str], object]:
    def render(folder: str):
        from train import _results, report

        return _results.write_report(folder, order=report._default_order(), title=title)

    return render


def _cifar(folder: str):
    from train import exp_cifar

    return exp_cifar.write_table(folder)


def _authors(folder: str):
    from train import exp_mnist_node

    return exp_mnist_node.table(Path(folder))


def _nsde_authors(folder: str):
    from train import exp_mnist_nsde

    return exp_mnist_nsde.main(["authors", folder])


def _nsde_readme(folder: str):
    from train import exp_mnist_nsde

    return exp_mnist_nsde.main(["readme", "--folder", folder])


def _bench(suite: str) -> Callable[[str], object]:
    def render(folder: str):
        import importlib

        from train._checkpoint import atomic_write_bytes

        module = importlib.import_module(f"train._bench_{suite}")
        data = json.loads((Path(folder) / f"{suite}.json").read_text())
        atomic_write_bytes(Path(folder) / f"{suite}.md", module.render_markdown(data).encode())

    return render


def _mnist_deq(groups: tuple[str, ...]) -> Callable[[str], object]:
    def render(folder: str):
        from train import _mnist_deq_table

        return _mnist_deq_table.write(folder, groups)

    return render


def _measure(*command: str) -> Callable[[str], object]:
    """An experiment module's measurement on saved checkpoints (``python *command``), which writes
    the table itself."""
    def render(folder: str):
        if subprocess.run([sys.executable, *command]).returncode != 0:
            raise UserError(f"the measurement python {' '.join(command)} failed (its message is above); it needs "
                            "the runs' checkpoints")

    return render


# --- the runs behind each table ---------------------------------------------------------------------


def _models(models: dict[str, tuple[int, ...]], *args: str, stem: str = "{model}_seed{{seed}}",
            **kw) -> tuple[Run, ...]:
    return tuple(Run(stem=stem.format(model=m), args=("--model", m, *args), seeds=seeds, **kw)
                 for m, seeds in models.items())


DEQS = ("deq", "skipdeq", "skipregdeq")

# results/mnist: run_budget.sh's eight variants at seeds 0 and 1, the headline three (node, ernode,
# srnode) also at seed 2 (results/mnist/README.md)
_MNIST_NODE = _models({"node": (0, 1, 2), "ernode": (0, 1, 2), "srnode": (0, 1, 2), "steer": (0, 1),
                       "sr+er": (0, 1), "steer+er": (0, 1), "steer+sr": (0, 1), "taynode": (0, 1)})
_MNIST_BUDGET = ("--limit-train", "4000", "--limit-test", "2000", "--epochs", "4", "--batch-size", "128",
                 "--eval-batch-size", "1000")


def _deq_group(group: str, *, train: int, epochs: int, eval_batch: int = 1000, test: str = "batch") -> tuple[Run, ...]:
    """A one-seed MNIST FC group: deq, skipdeq, skipregdeq; the name says the solver and JR. Its
    continuous solves ran Tsit5 (before VCAB3 was the default) to the stopping test ``test``."""
    solver = group.split("_")[0]
    args = ("--solver", solver, *(("--jacobian-reg",) if "_jr" in group else ()))
    if solver == "continuous":
        args += ("--integrator", "tsit5", "--steady-state-test", test)
    budget = ("--limit-train", str(train), "--limit-test", "0", "--epochs", str(epochs), "--batch-size", "32",
              "--optimizer", "adam", "--lr", "1e-3", "--eval-batch-size", str(eval_batch))
    # run_25ep.sh kept its checkpoints under runs/ckpt, run_budget.sh and run_full10ep.sh under the table's
    checkpoints = f"runs/ckpt/{group}" if epochs == 25 else None
    return _models({m: (0,) for m in DEQS}, *args, budget=budget, group=group, checkpoints=checkpoints)


_SEEDS_BUDGET = ("--limit-train", "0", "--limit-test", "0", "--epochs", "25", "--batch-size", "32",
                 "--optimizer", "adam", "--lr", "1e-3", "--eval-batch-size", "32")


def _seeds_group(name: str, weights: dict[str, tuple[int, ...]], *, integrator: tuple[str, ...] = (),
                 models: tuple[str, ...] = ("skipdeq", "skipregdeq"), deq_seeds: tuple[int, ...],
                 subfolder: bool = True) -> tuple[Run, ...]:
    """A several-seed group at the paper's schedule (run_seeds.sh): the vanilla DEQ and each model at
    each skip-loss weight, records ``<model>[_lskip<λ>]_seed<N>`` in the subfolder ``name`` (or in
    the table's folder itself, for a group that is a table of its own)."""
    jr = ("--jacobian-reg",) if "_jr" in name else ()
    group = name if subfolder else ""
    checkpoints = f"runs/ckpt/{name}"  # run_seeds.sh's
    base = ("--solver", "continuous", *integrator, *jr)
    runs = [Run(stem="deq_seed{seed}", args=("--model", "deq", *base), seeds=deq_seeds, budget=_SEEDS_BUDGET,
                group=group, checkpoints=checkpoints)]
    for m in models:
        for w, seeds in weights.items():
            runs.append(Run(stem=f"{m}_lskip{w}_seed{{seed}}", args=("--model", m, *base, "--reg-weight", f"skip={w}"),
                            seeds=seeds, budget=_SEEDS_BUDGET, group=group,
                            checkpoints=checkpoints))
    return tuple(runs)


_TSIT5 = ("--integrator", "tsit5")  # what continuous records before the option integrated with
_DEQ_SEED_WEIGHTS = {"0.01": (0, 1), "0.1": (0, 1, 2), "1": (0,), "5": (0, 1, 2)}
_MNIST_DEQ = (
    # run_budget.sh: 10,000 images, 1 epoch, continuous (Tsit5) and Newton-Krylov, without / with JR
    # (the continuous groups before the 25-epoch ones stopped when every sample passed)
    *_deq_group("continuous", train=10000, epochs=1, test="per_sample"),
    *_deq_group("continuous_jr", train=10000, epochs=1, test="per_sample"),
    *_deq_group("newton", train=10000, epochs=1), *_deq_group("newton_jr", train=10000, epochs=1),
    # all 60,000 images: 1 epoch (Newton-Krylov), 10 (run_full10ep.sh), 25 (run_25ep.sh, the paper's schedule)
    *_deq_group("newton_full1ep", train=0, epochs=1),
    *_deq_group("newton_full10ep", train=0, epochs=10),
    *_deq_group("continuous_full10ep", train=0, epochs=10, test="per_sample"),
    *_deq_group("continuous_jr_full10ep", train=0, epochs=10, test="per_sample"),
    *_deq_group("continuous_25ep", train=0, epochs=25), *_deq_group("continuous_jr_25ep", train=0, epochs=25),
    *_deq_group("newton_25ep", train=0, epochs=25), *_deq_group("newton_jr_25ep", train=0, epochs=25),
    # run_seeds.sh: several seeds and skip-loss weights, test batch 32 as in the authors' script
    *_seeds_group("continuous_seeds_25ep", _DEQ_SEED_WEIGHTS, deq_seeds=(0, 1, 2), integrator=_TSIT5),
    *_seeds_group("continuous_jr_seeds_25ep", _DEQ_SEED_WEIGHTS, deq_seeds=(0, 1, 2), integrator=_TSIT5),
)
_PROBE_GROUP = "continuous_full10ep_retrained"
# the VCAB3 groups (the papers' integrator) have tables of their own and stay out of the combined one
_MNIST_DEQ_GROUPS = tuple(dict.fromkeys(r.group for r in _MNIST_DEQ))

# results/cifar: run_budget.sh, smaller than --preset cpu (16 steps of batch 16, 200 test images)
_CIFAR_SMALL = ("--preset", "cpu", "--steps", "16", "--pretrain-steps", "6", "--batch-size", "16",
                "--limit-test", "200", "--eval-every", "8", "--eval-batch-size", "100", "--timing-repeats", "2")
_CIFAR_300 = ("--steps", "300", "--pretrain-steps", "45", "--eval-every", "100", "--limit-test", "500")


def _cifar_runs(models: tuple[str, ...], *, solver: str, integrator: str = "", named: bool = False,
                test: str = "", checkpoints: str | None = None) -> tuple[Run, ...]:
    """train.cifar runs, records ``<model>_<solver>[_<integrator>]_seed<N>`` (the NODE's ``node_seed<N>``).
    ``integrator`` goes into the name when ``named``; ``test`` is the stopping test of records from
    before the batch test was the default (per_sample for Broyden solves)."""
    tail = f"_{integrator}" if integrator and named else ""
    # the committed Broyden records were named before the solver's rename (issue #16); --resume
    # reads their checkpoints' "discrete" as "broyden" (exp_cifar.RESUME_RENAMED)
    label = {"broyden": "discrete"}.get(solver, solver)
    extra = (("--integrator", integrator) if integrator else ()) + (("--stopping-test", test) if test else ())
    return tuple(Run(stem=f"{m}_seed{{seed}}" if m == "node" else f"{m}_{label}{tail}_seed{{seed}}",
                     args=("--model", m, *(() if m == "node" else ("--solver", solver, *extra))),
                     checkpoints=checkpoints)
                 for m in models)


def _authors_runs(group: str) -> tuple[tuple[Run, ...], tuple[str, ...]]:
    """train.exp_mnist_node.RUNS (the run lists of the authors-regime tables, kept there),
    split into the model options and the budget (epochs, subsets), which --budget paper drops."""
    from train import exp_mnist_node

    runs = []
    for name, args in exp_mnist_node.RUNS[group].items():
        args, budget, seed, i = list(args), [], 0, 0
        rest = []
        while i < len(args):
            if args[i] in ("--epochs", "--limit-train", "--limit-test"):
                budget += args[i:i + 2]
            elif args[i] == "--seed":
                seed = int(args[i + 1])
            else:
                rest.append(args[i])
                i += 1
                continue
            i += 2
        stem = name.replace(f"_seed{seed}", "_seed{seed}")  # so --seeds names other seeds' records alike
        runs.append(Run(stem=stem, args=("--preset", "authors", *rest), seeds=(seed,), budget=tuple(budget)))
    # the authors' schedule is --preset authors without the budget's epochs and subsets
    return tuple(runs), ()


def _tables() -> dict[str, Table]:
    authors, authors_paper = _authors_runs("main")
    ablation, _ = _authors_runs("ablation")
    bench_note = ("Run by the lead early in the session beside the {} benchmark (one thread each) on the 2-core CPU, "
                  "while the lead and up to two helpers edited code and ran short test runs (load average 1-3).")
    jvp_note = ("Run by the lead beside one MNIST DEQ training process (one thread) on the 2 cores, and short "
                "commands of the lead's; seconds are loaded, agreement, counts and residuals are not affected.")
    tables = [
        # --- MNIST neural ODEs (train.mnist) ---
        Table(name="mnist", folder="results/mnist", script="train.mnist", runs=_MNIST_NODE, budget=_MNIST_BUDGET,
              checkpoints="runs/mnist_bench_checkpoints",
              render=_report("MNIST neural ODEs, CPU budget (4,000 training images, 4 epochs)")),
        Table(name="mnist_longer", folder="results/mnist/longer", script="train.mnist",
              runs=_models({m: (0,) for m in ("node", "ernode", "srnode")}),
              budget=("--limit-train", "8000", *_MNIST_BUDGET[2:4], "--epochs", "6", *_MNIST_BUDGET[6:]),
              # where the records' runs kept them, apart from mnist's: mnist_predict_timing measures
              # those, and these runs share their names
              checkpoints="runs/mnist_longer_checkpoints",
              render=_report("mnist, longer budget (8,000 images, 6 epochs; node, ernode, srnode)")),
        Table(name="mnist_predict_timing", folder="results/mnist", markdown="predict_timing.md", script="train.mnist",
              runs=_MNIST_NODE, budget=_MNIST_BUDGET, checkpoints="runs/mnist_bench_checkpoints", paper=None,
              measured=True, note="prediction re-timed interleaved on the saved checkpoints",
              render=_measure("-m", "train.exp_mnist_node", "predict", "results/mnist", "--checkpoints",
                              "runs/mnist_bench_checkpoints")),
        Table(name="mnist_authors", folder="results/mnist/authors", script="train.mnist", runs=authors,
              paper=authors_paper, checkpoints="runs/mnist_authors_ckpt/authors", render=_authors,
              note="predict s from predict_timing.json "
                   "(python -m train.exp_mnist_node time results/mnist/authors)"),
        Table(name="mnist_authors_ablation", folder="results/mnist/authors_ablation", script="train.mnist",
              runs=ablation, paper=authors_paper, checkpoints="runs/mnist_authors_ckpt/authors_ablation",
              render=_authors),
        # --- MNIST fully connected DEQs (train.mnist) ---
        Table(name="mnist_deq", folder="results/mnist_deq", script="train.mnist", runs=_MNIST_DEQ,
              checkpoints="runs/mnist_deq_bench_checkpoints", render=_mnist_deq(_MNIST_DEQ_GROUPS),
              note="implicit share from implicit_share.json (python -m train.exp_mnist_deq share on the checkpoints)"),
        Table(name="mnist_deq_vcab3", folder="results/mnist_deq/vcab3_seeds_25ep", script="train.mnist",
              runs=_seeds_group("vcab3_seeds_25ep", {"0.01": (0, 1), "0.1": (0, 1)}, deq_seeds=(0, 1),
                                integrator=("--integrator", "vcab3"), subfolder=False),
              checkpoints="runs/ckpt/vcab3_seeds_25ep", render=_report()),
        Table(name="mnist_deq_vcab3_jr", folder="results/mnist_deq/vcab3_jr_seeds_25ep", script="train.mnist",
              runs=_seeds_group("vcab3_jr_seeds_25ep", {"0.1": (0, 1)}, deq_seeds=(0, 1), models=("skipregdeq",),
                                integrator=("--integrator", "vcab3"), subfolder=False),
              checkpoints="runs/ckpt/vcab3_jr_seeds_25ep", render=_report()),
        # the continuous_full10ep runs again on today's code: the probe needs their checkpoints, and the
        # committed continuous_full10ep records were made by a solver that counted one f call more
        Table(name="mnist_deq_steady_state_probe", folder="results/mnist_deq", markdown="steady_state_probe.md",
              script="train.mnist", runs=_deq_group(_PROBE_GROUP, train=0, epochs=10, test="per_sample"),
              checkpoints="runs/ckpt", paper=None, measured=True,
              note=f"stopping test × atol measured on the {_PROBE_GROUP} checkpoints",
              render=_measure("-m", "train.exp_mnist_deq", "probe", f"runs/ckpt/{_PROBE_GROUP}")),
        # --- MNIST neural SDEs (train.exp_mnist_nsde holds the experiment) ---
        Table(name="mnist_nsde_authors", folder="results/mnist_nsde/authors_20ep", markdown="paper_table.md",
              script="train.mnist", runs=_models({m: (0, 1) for m in ("nsde", "ernsde", "srnsde")}, "--preset", "authors"),
              budget=("--epochs", "20"), paper=("--preset", "authors"),
              checkpoints="results/mnist_nsde/authors_20ep/checkpoints", render=_nsde_authors),
        Table(name="mnist_nsde_authors_report", folder="results/mnist_nsde/authors_20ep",
              script="train.mnist", runs=_models({m: (0, 1) for m in ("nsde", "ernsde", "srnsde")}, "--preset", "authors"),
              budget=("--epochs", "20"), paper=("--preset", "authors"),
              checkpoints="results/mnist_nsde/authors_20ep/checkpoints", render=_report()),
        Table(name="mnist_nsde_authors_predict", folder="results/mnist_nsde/authors_20ep", markdown="predict_timing.md",
              script="train.mnist", runs=_models({m: (0, 1) for m in ("nsde", "ernsde", "srnsde")}, "--preset", "authors"),
              budget=("--epochs", "20"), paper=None, measured=True,
              checkpoints="results/mnist_nsde/authors_20ep/checkpoints",
              note="interleaved prediction timing of the final models, from their checkpoints",
              render=_measure("-m", "train.exp_mnist_nsde", "predict", "results/mnist_nsde/authors_20ep")),
        Table(name="mnist_nsde_readme", folder="results/mnist_nsde", markdown="README.md", script="train.mnist",
              runs=(*_models({"nsde": (0, 1), "ernsde": (0,), "srnsde": (0,)}),
                    *(Run(stem=f"ernsde_lam{lam}_seed{{seed}}", args=("--model", "ernsde", "--reg-weight", f"error={lam}"),
                          seeds=seeds, group="lambda_sweep")
                      for lam, seeds in (("0.01", (0, 1)), ("0.03", (0, 1)), ("0.1", (0,)), ("1", (0,))))),
              budget=("--epochs", "6", "--batch-size", "512", "--optimizer", "adam", "--lr", "0.01",
                      "--limit-train", "0", "--limit-test", "0"),
              checkpoints="runs/ckpt/mnist_nsde", render=_nsde_readme,
              note="the run table inside README.md (train.exp_mnist_nsde readme); the λ sweep in lambda_sweep/"),
        Table(name="mnist_nsde", folder="results/mnist_nsde", script="train.mnist",
              runs=_models({"nsde": (0, 1), "ernsde": (0,), "srnsde": (0,)}),
              budget=("--epochs", "6", "--batch-size", "512", "--optimizer", "adam", "--lr", "0.01",
                      "--limit-train", "0", "--limit-test", "0"),
              checkpoints="runs/ckpt/mnist_nsde", render=_report()),
        # --- CIFAR-10 MDEQ-small (train.cifar) ---
        Table(name="cifar", folder="results/cifar", script="train.cifar",
              runs=_cifar_runs(("deq", "skipdeq", "skipregdeq", "node"), solver="broyden", test="per_sample"),
              budget=_CIFAR_SMALL,
              checkpoints="runs/cifar_bench_checkpoints", render=_cifar),
        Table(name="cifar_preset_cpu", folder="results/cifar/preset_cpu", script="train.cifar",
              runs=(*_cifar_runs(("deq", "skipdeq", "skipregdeq", "node"), solver="broyden", test="per_sample"),
                    *_cifar_runs(DEQS, solver="continuous", integrator="tsit5", checkpoints="runs/ckpt/cifar_cont")),
              budget=("--preset", "cpu"), checkpoints="runs/cifar_bench_cpu_checkpoints", render=_cifar),
        Table(name="cifar_preset_cpu_integrators", folder="results/cifar/preset_cpu_integrators", script="train.cifar",
              runs=(*_cifar_runs(("deq", "skipdeq"), solver="broyden"),
                    *_cifar_runs(("deq", "skipdeq"), solver="continuous", integrator="tsit5", named=True),
                    *_cifar_runs(("deq", "skipdeq"), solver="continuous", integrator="vcab3", named=True)),
              budget=("--preset", "cpu"), checkpoints="runs/ckpt/cifar_integrators", render=_cifar),
        Table(name="cifar_steps300", folder="results/cifar/steps300", script="train.cifar",
              runs=_cifar_runs(DEQS, solver="broyden", test="per_sample"), budget=_CIFAR_300,
              checkpoints="runs/ckpt/cifar300", render=_cifar,
              note="per-sample stopping test, the default before the batch test"),
        Table(name="cifar_steps300_batch", folder="results/cifar/steps300_batch", script="train.cifar",
              runs=_cifar_runs(DEQS, solver="broyden", test="batch"), budget=_CIFAR_300,
              checkpoints="runs/ckpt/cifar300_batch", render=_cifar),
        Table(name="cifar_steps300_integrators", folder="results/cifar/steps300_integrators", script="train.cifar",
              runs=(*_cifar_runs(("deq",), solver="broyden"),
                    *_cifar_runs(("deq",), solver="continuous", integrator="vcab3", named=True)),
              budget=_CIFAR_300, checkpoints="runs/ckpt/cifar300_integrators", render=_cifar),
        # --- benchmarks (python -m train.bench SUITE): one JSON each, its Markdown rendered from it ---
        Table(name="bench_ode", folder="results/bench", markdown="ode.md", script="train.bench", bench=True, paper=None,
              runs=(Run(stem="ode", args=("ode", "--note", bench_note.format("DEQ"))),), render=_bench("ode")),
        Table(name="bench_deq", folder="results/bench", markdown="deq.md", script="train.bench", bench=True, paper=None,
              runs=(Run(stem="deq", args=("deq", "--note", bench_note.format("ODE"))),), render=_bench("deq")),
        Table(name="bench_steady", folder="results/bench", markdown="steady.md", script="train.bench", bench=True,
              paper=None, render=_bench("steady"),
              note="the trained MNIST cell is the checkpoint of mnist_deq_vcab3's skipregdeq_lskip0.1_seed0",
              runs=(Run(stem="steady", args=(
                  "steady", "--data-dir", DATA_DIR, "--mnist-checkpoint",
                  "runs/ckpt/vcab3_seeds_25ep/skipregdeq_lskip0.1_seed0.pt", "--repeats", "3", "--note",
                  "Run while 3 training processes (one thread each) shared the 2 cores; the trained MNIST cell is "
                  "that of the VCAB3 skipregdeq λ_skip 0.1 seed 0 run (results/mnist_deq/vcab3_seeds_25ep), solved "
                  "here from z = 0.")),)),
        Table(name="bench_sde", folder="results/bench", markdown="sde.md", script="train.bench", bench=True, paper=None,
              runs=(Run(stem="sde", args=("sde", "--data-dir", DATA_DIR, "--note",
                                          "Measured while two MNIST NSDE training processes (1 thread each) ran on the 2 "
                                          "cores: seconds are loaded and noisy, evaluations are not affected.")),),
              render=_bench("sde")),
        Table(name="bench_jvp", folder="results/bench", markdown="jvp.md", script="train.bench", bench=True, paper=None,
              runs=(Run(stem="jvp", args=("jvp", "--note", jvp_note)),), render=_bench("jvp")),
    ]
    return {t.name: t for t in tables}


TABLES = _tables()


# --- runs: which are missing, the command of each -------------------------------------------------------


def _status(path: Path) -> str:
    """"complete", "unfinished" (a record of a run that stopped or is running) or "missing"."""
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return "missing"
    except json.JSONDecodeError:
        return "unfinished"
    return "complete" if rec.get("complete", True) else "unfinished"


@dataclass(frozen=True)
class Job:
    record: Path  # relative to the repository
    status: str
    argv: list[str] = field(default_factory=list)
    checkpoint: Path | None = None  # relative to the repository; None for a benchmark


def out_folder(table: Table, budget: str) -> str:
    return table.folder if budget == "cpu" else f"{table.folder}_paper"


def jobs(table: Table, *, budget: str = "cpu", seeds: tuple[int, ...] | None = None,
         data_dir: str = DATA_DIR, root: Path = REPO_ROOT) -> list[Job]:
    """One job per expected run, with its record's state and the command that would (re)make it."""
    if table.bench and (budget != "cpu" or seeds):
        raise UserError(f"table {table.name!r} is a benchmark: it has no seeds and no --budget paper")
    if budget == "paper" and table.paper is None:
        raise UserError(f"table {table.name!r} has no paper schedule (it measures, or the papers report no such "
                        f"run); use --budget cpu")
    folder = out_folder(table, budget)
    checkpoints = table.checkpoints or f"runs/ckpt/{table.name}"
    if budget == "paper":
        checkpoints += "_paper"
    out: list[Job] = []
    seen: set[tuple] = set()
    for run, seed in table.expected(seeds):
        if table.bench:  # python -m train.bench SUITE --out FILE [options]
            record = Path(folder) / f"{run.stem}.json"
            argv = ["-m", table.script, run.args[0], "--out", record.as_posix(), *run.args[1:]]
            out.append(Job(record, _status(root / record), argv))
            continue
        schedule = (run.budget if run.budget is not None else table.budget) if budget == "cpu" else table.paper
        if budget == "paper":
            # groups that differ only in their budget are one run at the papers' schedule
            if (run.args, seed) in seen:
                continue
            seen.add((run.args, seed))
        group, name = Path(folder) / run.group, run.name(seed)
        record = group / f"{name}.json"
        ckpt = Path(checkpoints) / run.group
        if run.checkpoints:
            ckpt = Path(run.checkpoints + ("_paper" if budget == "paper" else ""))
        argv = ["-m", table.script, *run.args, *schedule, "--seed", str(seed), "--data-dir", data_dir,
                "--out", group.as_posix(), "--run-name", name, "--checkpoint-dir", ckpt.as_posix(), *COMMON]
        status = _status(root / record)
        if status == "unfinished":
            # resume from the checkpoint when there is one; else the stale record is in the way
            argv.append("--resume" if (root / ckpt / f"{name}.pt").is_file() else "--overwrite")
        out.append(Job(record, status, argv, ckpt / f"{name}.pt"))
    return out


def missing_checkpoints(table: Table, every: list[Job], *, root: Path = REPO_ROOT) -> tuple[list[Path], list[str]]:
    """For a table measured on checkpoints: the checkpoints of finished runs that are not here, and
    the commands that would train them again. Such runs are not retrained by ``reproduce``: a model
    trained again need not be the one its committed record describes, so the user decides (the
    commands write their records into a scratch folder and leave the committed ones alone)."""
    if not table.measured:
        return [], []
    gone = [j for j in every if j.status == "complete" and j.checkpoint and not (root / j.checkpoint).is_file()]
    commands = []
    for j in gone:
        argv = list(j.argv)
        argv[argv.index("--out") + 1] = f"runs/retrained/{table.name}"
        commands.append(" ".join(shlex.quote(w) for w in ["python", *argv]))
    return [j.checkpoint for j in gone], commands


@contextlib.contextmanager
def _working_folder(root: Path) -> Iterator[None]:
    # the renderers name the folder they were given in the Markdown ("Generated by ... results/mnist"),
    # so they get it relative to the repository (or to the copy of it a test renders in)
    before = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


def render(table: Table, *, root: Path = REPO_ROOT, budget: str = "cpu") -> Path:
    """Write the table's Markdown (and plots) from the records under ``root``; returns its path."""
    folder = out_folder(table, budget)
    if not (root / folder).is_dir():
        raise UserError(f"table {table.name!r}: no records folder {folder!r} to render from")
    with _working_folder(root):
        table.render(folder)
    return root / folder / table.markdown


def _list() -> str:
    rows = []
    for t in TABLES.values():
        js = jobs(t)
        done = sum(j.status == "complete" for j in js)
        unfinished = sum(j.status == "unfinished" for j in js)
        kind = " (measured on checkpoints)" if t.measured else ""
        rows.append((t.name, f"{t.folder}/{t.markdown}", f"{done}/{len(js)}" + (f" ({unfinished} unfinished)"
                                                                                  if unfinished else "") + kind))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    head = f"{'table':<{width[0]}}  {'markdown':<{width[1]}}  runs complete/expected"
    return "\n".join([head] + [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows])


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    p = _cli.ArgumentParser(prog="python -m train.reproduce", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", nargs="?", help="the table's name (see --list)")
    p.add_argument("--list", action="store_true", help="name every table, its Markdown and its runs complete/expected")
    p.add_argument("--budget", choices=("cpu", "paper"), default="cpu",
                   help="cpu: the committed records' budget (default); paper: the papers' schedule (--preset paper), "
                        "into <folder>_paper")
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="comma-separated seeds for every run of the table (default: the committed ones)")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"data folder for the training runs (default: {DATA_DIR})")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the missing runs and run nothing")
    _cli.add_debug(p)
    args = p.parse_args(argv)
    if args.list:
        print(_list())
        return 0
    if args.table is None:
        p.error("name a table (python -m train.reproduce --list names them)")
    if args.table not in TABLES:
        p.error(f"unknown table {args.table!r}; known: {', '.join(TABLES)}")
    return _cli.guard(lambda: reproduce(TABLES[args.table], budget=args.budget, seeds=args.seeds,
                                        data_dir=args.data_dir, dry_run=args.dry_run), debug=args.debug)


def reproduce(table: Table, *, budget: str = "cpu", seeds: tuple[int, ...] | None = None, data_dir: str = DATA_DIR,
              dry_run: bool = False, root: Path = REPO_ROOT) -> int:
    """Run the table's missing and unfinished runs one after another, then render it."""
    every = jobs(table, budget=budget, seeds=seeds, data_dir=data_dir, root=root)
    todo = [j for j in every if j.status != "complete"]
    print(f"{table.name}: {len(every) - len(todo)} run(s) complete, {len(todo)} to run", flush=True)
    # before any training: a run of hours should not end in a measurement that cannot start
    missing, retrain = missing_checkpoints(table, every, root=root)
    if missing and not dry_run:
        raise UserError(f"the measurement needs {len(missing)} checkpoint(s) that are not here "
                        f"({', '.join(p.as_posix() for p in missing)}); python -m train.reproduce {table.name} "
                        f"--dry-run prints the commands that train them again")
    for j in todo:
        command = " ".join(shlex.quote(w) for w in ["python", *j.argv])
        if dry_run:
            print(f"{command}    # {j.status}: {j.record}")
            continue
        print(f"=== {j.record} ({j.status}): {command}", flush=True)
        # one OpenMP thread unless asked otherwise, as every committed run had (--threads 1 sets torch's)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        result = subprocess.run([sys.executable, *j.argv], cwd=root, env=env)
        if result.returncode != 0:
            raise UserError(f"{j.record}: the run exited with {result.returncode} (its log is above); fix and run "
                            f"python -m train.reproduce {table.name} again to continue")
    if dry_run:
        print(f"then {'measure' if table.measured else 'render'} {out_folder(table, budget)}/{table.markdown}"
              + (f" ({table.note})" if table.note else ""))
        if missing:
            print(f"the measurement needs {len(missing)} checkpoint(s) that are not here; copy them in, or train "
                  f"them again (new records in runs/retrained/, the committed ones stay):")
            print("\n".join(retrain))
        return 0
    md = render(table, root=root, budget=budget)
    print(f"wrote {md.relative_to(root) if md.is_relative_to(root) else md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
