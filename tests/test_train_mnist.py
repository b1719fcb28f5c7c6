"""`python -m train.mnist` and the MNIST NODE zoo (models.mnist_node) on a few hundred real images."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.integrate import solve_ivp

from models.mnist_node import BUILDERS, REGULARIZERS, VARIANTS, MNISTNODEConfig, ODEFunc
from train import _checkpoint, mnist

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(),
    reason=f"real MNIST not found beside the checkout in {DATA}",
)
TINY = ["--data-dir", str(DATA), "--limit-train", "128", "--limit-test", "100", "--batch-size", "64",
        "--eval-batch-size", "50", "--no-progress"]


# --- the model ----------------------------------------------------------------------------------


def test_odefunc_is_the_papers_f():
    torch.manual_seed(0)
    f = ODEFunc(6, 4)
    z, t = torch.randn(3, 6), torch.tensor(0.3)
    w1, b1, w2, b2 = f.l1.weight, f.l1.bias, f.l2.weight, f.l2.bias
    # tanh(W2 [tanh(W1 [z; t]); t]) with the time column written out by hand
    h = torch.tanh(z @ w1[:, :6].T + 0.3 * w1[:, 6] + b1)
    expect = torch.tanh(h @ w2[:, :4].T + 0.3 * w2[:, 4] + b2)
    torch.testing.assert_close(f(t, z), expect)


def test_node_solution_matches_scipy():
    torch.manual_seed(0)
    model = BUILDERS["node"]().double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        f = model.ode.f

        def rhs(t, z):
            return f(torch.tensor(t, dtype=torch.float64), torch.from_numpy(z).view(1, -1)).view(-1).numpy()

        for i in range(2):
            ref = solve_ivp(rhs, (0.0, 1.0), x[i].view(-1).numpy(), method="DOP853", rtol=1e-10, atol=1e-10).y[:, -1]
            logits = model.readout(torch.from_numpy(ref))
            # rtol = atol = 1e-5 per step; the global error stays well inside 1e-3
            torch.testing.assert_close(out.logits[i], logits, atol=1e-3, rtol=1e-3)
    assert out.nfe_forward > 0 and out.stats.outcome.ok


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_reports_its_regularizers_and_trains(variant):
    torch.manual_seed(0)
    model = BUILDERS[variant]()
    x = torch.randn(8, 1, 28, 28)
    out = model(x)
    assert set(out.regularizers) == set(REGULARIZERS[variant])
    assert out.logits.shape == (8, 10) and out.nfe_forward >= 7
    loss = out.logits.logsumexp(1).mean() + sum(out.regularizers.values())
    loss.backward()
    assert out.stats.nfe_backward > 0
    for name in out.regularizers:
        assert out.regularizers[name].requires_grad and float(out.regularizers[name].detach()) >= 0
    assert all(p.grad is not None for p in model.ode.f.parameters())
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert ev.stats.t_final == 1.0  # STEER only perturbs the end time in training
    if variant == "taynode":
        assert ev.stats.reg_taylor is None  # eval solves the plain ODE, as the test NFE should


def test_steer_draws_end_times_in_training():
    torch.manual_seed(0)
    model = BUILDERS["steer"]()
    ends = {model(torch.randn(2, 784)).stats.t_final for _ in range(4)}
    assert len(ends) == 4 and all(0.5 <= e <= 1.5 for e in ends)


def test_config_errors():
    with pytest.raises(ValueError, match="variant must be one of"):
        MNISTNODEConfig(variant="rnode")
    with pytest.raises(ValueError, match=r"rtol must be a number in \(0, 1\), got 0"):
        MNISTNODEConfig(rtol=0)
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 28, 28\)"):
        BUILDERS["node"]()(torch.randn(2, 3, 8, 8))


# --- the script -----------------------------------------------------------------------------------


def test_registry_and_weights():
    registry = mnist.Registry.discover()
    assert list(registry.entries)[: len(VARIANTS)] == list(VARIANTS)
    config = mnist.parse_config(["--model", "ernode"], registry)
    weights = mnist._weights(config, registry.entries["ernode"][0])
    # λ_E annealed exponentially 100 -> 10 over training
    assert weights["error"](0.0) == 100.0 and abs(weights["error"](1.0) - 10.0) < 1e-12
    config = mnist.parse_config(["--model", "sr+er", "--reg-weight", "stiffness=0.5"], registry)
    weights = mnist._weights(config, registry.entries["sr+er"][0])
    assert weights["stiffness"](0.3) == 0.5 and set(weights) == {"error", "stiffness"}


def test_presets_and_explicit_options():
    small = mnist.parse_config([])
    assert (small.epochs, small.batch_size, small.limit_train, small.optimizer) == (2, 128, 10_000, "sgd")
    paper = mnist.parse_config(["--preset", "paper", "--lr", "0.05"])
    assert (paper.epochs, paper.batch_size, paper.limit_train, paper.lr_decay, paper.momentum, paper.lr) == (75, 512, None, 1e-5, 0.9, 0.05)
    assert mnist.parse_config(["--limit-train", "0"]).limit_train is None


def test_the_papers_schedule_is_recognised_however_it_was_asked_for():
    deq = mnist.Registry.discover().entries["deq"][0]
    by_hand = mnist.parse_config(["--model", "deq", "--limit-train", "0", "--limit-test", "0", "--epochs", "25",
                                  "--batch-size", "32", "--optimizer", "adam", "--lr", "1e-3"])
    assert by_hand.preset == "small" and mnist.schedule_differences(by_hand, deq) == []
    assert mnist.schedule_differences(mnist.parse_config(["--model", "deq", "--preset", "paper"]), deq) == []
    small = mnist.parse_config(["--model", "deq"])
    assert mnist.schedule_differences(small, deq) == ["epochs 1 (paper 25)", "limit_train 10000 (paper all)"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "rnode"], r"argument --model: invalid choice: 'rnode'"),
        (["--epochs", "0"], r"argument --epochs: expected a positive integer, got 0"),
        (["--lr", "-0.1"], r"argument --lr: expected a number in \(0, 10\], got -0.1"),
        (["--momentum", "1.5"], r"argument --momentum: expected a number in \[0, 0.999\], got 1.5"),
        (["--rtol", "abc"], r"argument --rtol: expected a number, got 'abc'"),
        (["--reg-weight", "error"], r"expected NAME=VALUE such as error=50, got 'error'"),
        (["--optimizer", "lbfgs"], r"argument --optimizer: invalid choice: 'lbfgs'"),
        (["--solver", "newton"], r"--solver and --jacobian-reg apply to DEQ models only"),
        (["--device", "tpu"], r"argument --device: expected a device such as cpu, cuda, cuda:1 or mps, got 'tpu'"),
        (["--resume", "--overwrite"], r"argument --overwrite: not allowed with argument --resume"),
        (["--preset", "authors", "--model", "deq"], r"--preset authors exists for the node and nsde families only"),
        (["--model", "deq", "--controller", "pi"], r"--controller applies to the node family only, not --model deq"),
        (["--model", "node", "--sde-scheme", "sosri"], r"--sde-scheme applies to the nsde family only, not --model node"),
        (["--model", "nsde", "--step-path", "tracked"], r"--step-path tracked is not implemented for neural SDEs"),
        (["--step-path", "through"], r"argument --step-path: invalid choice: 'through'"),
        (["--aggregation", "median"], r"argument --aggregation: invalid choice: 'median'"),
        (["--max-steps", "0"], r"argument --max-steps: expected a positive integer, got 0"),
    ],
)
def test_bad_options_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        mnist.main(argv)
    assert info.value.code == 2
    import re

    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.rstrip().endswith("(see python -m train.mnist --help)")


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert mnist.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(r"^error: .*MNIST not found in data folder .*nowhere.*train-images-idx3-ubyte", line)


@needs_mnist
def test_one_epoch_writes_a_valid_record(tmp_path, capsys):
    assert mnist.main(TINY + ["--epochs", "1", "--out", str(tmp_path), "--model", "ernode"]) == 0
    rec = json.loads((tmp_path / "ernode_seed0.json").read_text())
    assert rec["complete"] and rec["model"] == "ernode" and rec["baseline"] == "node"
    assert rec["config"]["limit_train"] == 128 and rec["data"]["train_items"] == 128
    assert rec["paper"] == {"test_acc": 97.32, "test_nfe": 177.0}
    (row,) = rec["history"]
    assert row["test_items"] == 100 and row["step"] == 2
    assert row["nfe_forward"] >= 7 and row["nfe_backward"] > 0 and row["test_nfe"] >= 7
    assert row["regularizers"]["error"] > 0 and row["weights"]["error"] > 10.0
    assert {"R_E", "R_S", "accepted", "rejected"} <= set(row["metrics"])
    out = capsys.readouterr().out
    assert "subset of 128 of 60000" in out and "This is not the paper's schedule (epochs 1 (paper 75)" in out
    assert rec["notes"].startswith("not the paper's schedule: epochs 1 (paper 75), batch_size 64 (paper 512)")
    assert (tmp_path / "checkpoints" / "ernode_seed0.pt").is_file()


@needs_mnist
def test_resume_equals_uninterrupted(tmp_path):
    # steer+er: STEER draws end times from the RNG and λ_E follows a schedule, so both the RNG
    # restore and the schedule's progress are exercised.
    common = TINY + ["--model", "steer+er", "--epochs", "2"]
    mnist.main(common + ["--out", str(tmp_path / "full")])
    mnist.main(common + ["--out", str(tmp_path / "part"), "--stop-after-epoch", "1"])
    part = json.loads((tmp_path / "part" / "steer+er_seed0.json").read_text())
    assert not part["complete"] and len(part["history"]) == 1
    mnist.main(common + ["--out", str(tmp_path / "part"), "--resume"])
    a = json.loads((tmp_path / "full" / "steer+er_seed0.json").read_text())
    b = json.loads((tmp_path / "part" / "steer+er_seed0.json").read_text())
    keys = ("train_loss", "train_acc", "test_acc", "test_loss", "nfe_forward", "nfe_backward", "test_nfe", "regularizers", "lr")
    assert [{k: h[k] for k in keys} for h in a["history"]] == [{k: h[k] for k in keys} for h in b["history"]]
    pa = _checkpoint.load_checkpoint(tmp_path / "full" / "checkpoints" / "steer+er_seed0.pt")["model"]
    pb = _checkpoint.load_checkpoint(tmp_path / "part" / "checkpoints" / "steer+er_seed0.pt")["model"]
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


@needs_mnist
def test_resume_with_other_options_names_the_difference(tmp_path):
    mnist.main(TINY + ["--epochs", "1", "--out", str(tmp_path), "--limit-train", "64"])
    with pytest.raises(_checkpoint.ConfigMismatchError, match=r"lr: checkpoint 0\.1 vs now 0\.05"):
        mnist.run(mnist.parse_config(TINY + ["--epochs", "1", "--out", str(tmp_path), "--limit-train", "64", "--lr", "0.05",
                                             "--resume"]))


@pytest.mark.slow
@needs_mnist
def test_two_processes_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train.mnist",
         *TINY, "--epochs", "1", "--threads", "1", "--model", "srnode", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((tmp_path / "srnode_seed0.json").read_text())
    assert rec["complete"] and rec["loop"]["world_size"] == 2 and rec["loop"]["batch_size_per_rank"] == 32
    assert rec["history"][0]["test_items"] == 100 and rec["history"][0]["regularizers"]["stiffness"] > 0
    assert proc.stdout.count("test accuracy") == 1  # only rank 0 prints
    # the command that reproduces the run is torchrun's, and the record holds no path of this machine
    assert rec["environment"]["command"].startswith("torchrun --nproc-per-node 2 -m train.mnist --data-dir <data>")
    assert str(tmp_path) not in json.dumps(rec) and rec["config"]["out"] == f"<{tmp_path.name}>"


# --- --preset authors (train.exp_mnist_node) ------------------------------------------------------


def test_authors_preset_settings_and_overrides():
    c = mnist.parse_config(["--preset", "authors", "--model", "srnode"])
    assert (c.rtol, c.atol, c.controller, c.step_path, c.aggregation, c.init, c.inputs) == \
        (1.4e-8, 1.4e-8, "pi", "initial", "authors", "glorot", "unit")
    assert (c.epochs, c.batch_size, c.optimizer, c.lr, c.momentum, c.lr_decay, c.eval_batch_size) == \
        (75, 512, "sgd", 0.1, 0.9, 1e-5, 512)
    family = mnist.Registry.discover().entries["srnode"][0]
    assert mnist.schedule_differences(c, family) == []
    assert mnist._weights(c, family)["stiffness"](0.5) == 0.1  # on the authors' max-of-|S| term
    er = mnist._weights(mnist.parse_config(["--preset", "authors", "--model", "ernode", "--epochs", "4"]), family)
    # the authors' per-epoch schedule, compressed to 4 epochs: 100·10^(-e/4), constant within an epoch
    assert [er["error"](p) for p in (0.0, 0.2, 0.25, 0.99)] == pytest.approx([100.0, 100.0, 100 * 10 ** -0.25,
                                                                             100 * 10 ** -0.75])
    o = mnist.parse_config(["--preset", "authors", "--model", "sr+er", "--controller", "i", "--step-path", "tracked",
                            "--aggregation", "paper", "--rtol", "1e-5", "--inputs", "normalized"])
    assert (o.controller, o.step_path, o.aggregation, o.rtol, o.atol, o.inputs, o.init) == \
        ("i", "tracked", "paper", 1e-5, 1.4e-8, "normalized", "glorot")
    assert mnist._weights(o, family)["stiffness"](0.0) == 0.0285  # the paper's λ_S belongs to its sum


@needs_mnist
def test_authors_preset_run_records_its_settings_and_probes(tmp_path):
    # the preset at a tiny budget and a loose tolerance; every other setting is the authors'
    argv = ["--preset", "authors", "--model", "ernode", "--data-dir", str(DATA), "--limit-train", "64",
            "--batch-size", "32", "--limit-test", "32", "--epochs", "1", "--rtol", "1e-4", "--atol", "1e-4",
            "--out", str(tmp_path), "--no-progress"]
    assert mnist.main(argv) == 0
    rec = json.loads((tmp_path / "ernode_seed0.json").read_text())
    cfg = rec["config"]
    assert (cfg["controller"], cfg["step_path"], cfg["aggregation"], cfg["init"], cfg["inputs"], cfg["max_steps"]) == \
        ("pi", "initial", "authors", "glorot", "unit", 100)
    assert "pixels in [0, 1]" in rec["data"]["train"] and rec["notes"].startswith("not the authors' schedule")
    (row,) = rec["history"]
    assert row["probes"]["nfe_random"] >= 8 and row["probes"]["nfe_train_first"] >= 8
    assert row["weights"]["error"] == 100.0 and row["regularizers"]["error"] > 0
    assert row["metrics"]["R_E_authors"] == pytest.approx(row["regularizers"]["error"])
    assert rec["summary"]["probes"] == row["probes"]


def test_authors_aggregation_is_the_mean_with_the_start_value_and_the_scaled_max():
    torch.manual_seed(0)
    model = BUILDERS["sr+er"](aggregation="authors", controller="pi", rtol=1e-4, atol=1e-4)
    out = model(torch.rand(4, 1, 28, 28))
    st = out.stats
    E, S, h = st.error_estimates.tolist(), st.stiffness_estimates.tolist(), st.step_sizes.tolist()
    expect_E = (float(st.initial_step) + sum(e * x for e, x in zip(E, h))) / (len(E) + 1)
    assert float(out.regularizers["error"]) == pytest.approx(expect_E, rel=1e-5)
    assert float(out.regularizers["stiffness"]) == pytest.approx(max([1.0] + S) / 3.5068, rel=1e-6)


@needs_mnist
def test_a_solve_past_max_steps_ends_the_run_cleanly(tmp_path, capsys):
    # with the step path in the graph a runaway solve must stop at max_steps, not exhaust memory
    argv = ["--preset", "authors", "--model", "node", "--data-dir", str(DATA), "--limit-train", "32",
            "--batch-size", "32", "--limit-test", "32", "--epochs", "1", "--max-steps", "3", "--out", str(tmp_path),
            "--no-progress"]
    assert mnist.main(argv) == 1
    err = capsys.readouterr().err
    assert "node_seed0 stopped" in err and "max_steps=3" in err and "Traceback" not in err
    rec = json.loads((tmp_path / "node_seed0.json").read_text())
    assert not rec["complete"] and rec["failure"]["step"] == 0 and "max_steps=3" in rec["failure"]["error"]


@needs_mnist
def test_authors_experiment_table_timing_and_steps_from_records(tmp_path):
    from train import exp_mnist_node as exp

    out = tmp_path / "authors"
    for model in ("node", "ernode"):
        assert mnist.main(["--preset", "authors", "--model", model, "--data-dir", str(DATA), "--limit-train", "64",
                           "--batch-size", "32", "--limit-test", "64", "--epochs", "1", "--rtol", "1e-4", "--atol",
                           "1e-4", "--out", str(out), "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"]) == 0
    timing = json.loads(exp.time_predictions(out, repeats=1, data_dir=str(DATA), checkpoints=tmp_path / "ckpt").read_text())
    assert set(timing["runs"]) == {"node_seed0", "ernode_seed0"} and all(r["median_s"] > 0 for r in timing["runs"].values())
    steps = json.loads(exp.trained_steps(out, data_dir=str(DATA), n=16, checkpoints=tmp_path / "ckpt").read_text())
    row = steps["rows"]["ernode_seed0"]
    assert len(row["h"]) == len(row["E"]) == row["accepted"] and row["h0"] > 0
    text = exp.table(out).read_text()
    rec = json.loads((out / "ernode_seed0.json").read_text())
    base = json.loads((out / "node_seed0.json").read_text())
    (line,) = [x for x in text.splitlines() if x.startswith("| ernode_seed0 ")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[9] == f"{rec['summary']['test_nfe']:.1f}"
    assert cells[10] == f"{base['summary']['test_nfe'] / rec['summary']['test_nfe']:.2f}"
    assert cells[11] == f"{rec['summary']['probes']['nfe_random']:.0f}" and cells[15] == "97.32, 177"
    # the CPU-budget table's re-timing: same records and checkpoints, the whole test subset
    assert exp.main(["predict", str(out), "--checkpoints", str(tmp_path / "ckpt"), "--repeats", "1",
                     "--data-dir", str(DATA)]) == 0
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
            for r in (out / "predict_timing.md").read_text().splitlines() if r.startswith("| ") and "seed0" in r}
    assert set(rows) == {"node_seed0", "ernode_seed0"} and rows["node_seed0"][3] == "1.00"
    assert rows["ernode_seed0"][1] == f"{rec['summary']['test_nfe']:.1f}" and float(rows["ernode_seed0"][2]) > 0


def test_every_authors_run_is_a_valid_command():
    from train import exp_mnist_node as exp

    for group, runs in exp.RUNS.items():
        for name in runs:
            c = mnist.parse_config(exp.command(group, name, None))
            assert c.preset == "authors" and c.run_name == name and c.out == exp.OUTS[group]


def test_nsde_authors_preset_resolves_the_solver_per_variant():
    c = mnist.parse_config(["--preset", "authors", "--model", "srnsde"])
    assert (c.sde_scheme, c.rtol, c.atol, c.step_path, c.aggregation, c.init, c.inputs, c.eval_batch_size) == \
        ("sosri2", 0.14, 0.14, "initial", "authors", "glorot", "unit", 512)
    assert (c.epochs, c.batch_size, c.optimizer, c.lr, c.lr_decay) == (40, 512, "adam", 0.01, 1e-5)
    assert mnist.parse_config(["--preset", "authors", "--model", "ernsde"]).sde_scheme == "sosri"
    family = mnist.Registry.discover().entries["ernsde"][0]
    e = mnist.parse_config(["--preset", "authors", "--model", "ernsde", "--sde-scheme", "sriw1"])
    assert mnist._nsde_options(e)["scheme"] == "sriw1" and mnist._weights(e, family) == {"error": mnist.Constant(value=10.0)}


@needs_mnist
def test_nsde_authors_preset_run_records_its_solver_and_probes(tmp_path):
    argv = ["--preset", "authors", "--model", "ernsde", "--data-dir", str(DATA), "--limit-train", "64",
            "--batch-size", "32", "--limit-test", "32", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]
    assert mnist.main(argv) == 0
    rec = json.loads((tmp_path / "ernsde_seed0.json").read_text())
    assert (rec["config"]["sde_scheme"], rec["config"]["step_path"], rec["config"]["rtol"]) == ("sosri", "initial", 0.14)
    (row,) = rec["history"]
    assert row["probes"]["nfe_drift_train_first"] >= 6 and row["probes"]["predict_s_train_first"] > 0
    assert row["metrics"]["R_E_authors"] == pytest.approx(row["regularizers"]["error"])
    assert row["weights"]["error"] == 10.0
