"""train.cifar: every variant trains a few steps on a tiny slice and writes a valid record;
pre-training switches at the right step; --resume equals an uninterrupted run; CLI errors."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train import cifar
from train import exp_cifar as exp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "cifar10.npz").is_file(), reason="cifar10.npz not available")

# A narrow MDEQ (8 channels per branch) on 32x32 images keeps each step well under a second.
TINY = ["--data-dir", str(DATA), "--width", "8", "--batch-size", "4", "--limit-train", "16", "--limit-test", "8",
        "--eval-batch-size", "8", "--max-iter", "3", "--backward-max-iter", "3", "--timing-repeats", "1",
        "--no-progress", "--threads", "1"]


def _run(tmp_path, *extra):
    config = cifar.parse_config([*TINY, "--out", str(tmp_path), *extra])
    return config, cifar.run(config)


@needs_data
@pytest.mark.parametrize("model", [
    # one variant in the default suite; the others take the same path through the script
    pytest.param("deq", marks=pytest.mark.slow),
    "skipdeq",
    pytest.param("skipregdeq", marks=pytest.mark.slow),
    pytest.param("node", marks=pytest.mark.slow),
])
def test_each_variant_trains_and_writes_a_valid_record(tmp_path, model):
    config, record = _run(tmp_path, "--model", model, "--steps", "2", "--pretrain-steps", "1", "--eval-every", "1")
    saved = json.loads(Path(record["paths"]["json"]).read_text())
    assert saved["complete"] and saved["model"] == model and saved["script"] == "train.cifar"
    assert saved["config"]["model"] == model and saved["seed"] == 0
    hist = saved["history"]
    assert [h["step"] for h in hist] == [1, 2]
    # step 1 pre-trains the unrolled network: exactly pretrain_depth applications of f
    assert hist[0]["nfe_forward"] == config.pretrain_depth
    # step 2 solves: a DEQ spends at least one f call plus the output evaluation, and its
    # backward runs GMRES; the neural ODE takes at least one Tsit5 step (6 stages)
    assert hist[1]["nfe_forward"] >= (6 if model == "node" else 2)
    if model != "node":
        assert hist[1]["nfe_backward"] >= 1
        assert 0.0 <= hist[1]["metrics"]["converged"] <= 1.0
    if model in ("skipdeq", "skipregdeq"):
        assert all(math.isfinite(h["regularizers"]["skip"]) and h["regularizers"]["skip"] >= 0 for h in hist)
    else:
        assert "skip" not in hist[1]["regularizers"]
    s = saved["summary"]
    assert 0.0 <= s["test_acc"] <= 100.0 and s["test_nfe"] > 0
    assert s["train_s_per_batch"] >= s["backward_s_per_batch"] > 0
    assert s["timing_batch_size"] == 4
    assert s["parameters"] > 0
    assert saved["data"]["train_items"] == 16 and saved["data"]["test_items"] == 8
    assert "decoded from JPEG" in saved["notes"]


@needs_data
@pytest.mark.slow  # ~7 s: three runs, each loading the 50,000-image npz
def test_resume_equals_uninterrupted(tmp_path):
    common = ["--model", "skipdeq", "--steps", "3", "--pretrain-steps", "1", "--eval-every", "1", "--timing-repeats", "0"]
    _, full = _run(tmp_path / "full", *common)
    _, part = _run(tmp_path / "part", *common, "--stop-after-round", "2")
    assert not part["complete"] and len(part["history"]) == 2
    _, resumed = _run(tmp_path / "part", *common, "--resume")
    assert resumed["complete"]
    for a, b in zip(full["history"], resumed["history"]):
        for key in ("train_loss", "test_acc", "test_loss", "nfe_forward", "nfe_backward"):
            assert a[key] == b[key], key
    sa = torch.load(full["paths"]["checkpoint"], map_location="cpu", weights_only=False)["model"]
    sb = torch.load(resumed["paths"]["checkpoint"], map_location="cpu", weights_only=False)["model"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_cosine_schedule_ends_at_floor():
    s = exp.CosineToMin(total=100, floor=1e-3)
    assert s(0) == 1.0
    assert s(100) == pytest.approx(1e-3)
    assert s(50) == pytest.approx((1 + 1e-3) / 2)
    assert s(200) == pytest.approx(1e-3)  # held after the end


def test_presets_and_overrides():
    c = cifar.parse_config([])
    assert (c.model, c.solver, c.stopping_test, c.preset) == ("skipdeq", "broyden", "batch", "cpu")
    assert c.steps == exp.PRESETS["cpu"]["steps"] and c.limit_test == exp.PRESETS["cpu"]["limit_test"]
    p = cifar.parse_config(["--preset", "paper", "--model", "deq"])
    assert (p.steps, p.pretrain_steps, p.batch_size, p.lr, p.lr_min, p.weight_decay, p.lambda_skip) == (
        20_000, 3000, 128, 1e-3, 1e-6, 2.5e-5, 0.01)
    assert p.limit_test is None and p.name == "deq_broyden_seed0"
    assert cifar.parse_config(["--model", "node"]).name == "node_seed0"


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet"], "invalid choice: 'resnet'"),
    (["--solver", "anderson"], "invalid choice: 'anderson'"),
    (["--stopping-test", "max"], "--stopping-test: invalid choice: 'max'"),
    (["--steps", "0"], "expected a positive integer, got 0"),
    (["--steps", "5", "--pretrain-steps", "6"], "must not exceed --steps"),
    (["--width", "12"], "multiple of 8"),
    (["--tol", "2"], r"expected a number in \(0, 1\)"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--lr", "0"], r"--lr: expected a number in \(0, 10\], got 0"),
    (["--lr", "1e-4", "--lr-min", "1e-3"], "--lr-min .* must not exceed --lr"),
    (["--dropout", "1"], r"--dropout: expected a number in \[0, 1\), got 1"),
])
def test_cli_errors_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cifar.parse_config(argv)
    import re

    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model must be one of"):
        exp.CIFARConfig(model="resnet", steps=1, pretrain_steps=0, batch_size=1, max_iter=1, backward_max_iter=1,
                          limit_train=None, limit_test=None, eval_every=1, eval_batch_size=1)
    with pytest.raises(TypeError):
        exp.CIFARConfig(steps=1, pretrain_steps=0, batch_size=1, max_iter=1, backward_max_iter=1, limit_train=None,
                          limit_test=None, eval_every=1, eval_batch_size=1, colour="red")


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert cifar.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "CIFAR-10 not found" in line


@needs_data
@pytest.mark.slow
def test_two_process_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
           "train.cifar", *TINY, "--out", str(tmp_path), "--steps", "2", "--pretrain-steps", "1", "--eval-every", "1",
           "--model", "skipdeq"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((tmp_path / "skipdeq_broyden_seed0.json").read_text())
    assert rec["complete"] and rec["loop"]["world_size"] == 2 and rec["loop"]["batch_size_per_rank"] == 2


def _fake_record(model, solver, stopping_test=None, **summary):
    config = {"solver": solver, "steps": 10, "batch_size": 4, "pretrain_steps": 0}
    if stopping_test:
        config["stopping_test"] = stopping_test
    return {"format": "implicit-run", "script": "train.cifar", "model": model, "seed": 0, "complete": True,
            "config": config,
            "data": {"test_items": 8},
            "paper": exp.paper_numbers(model, solver),
            "summary": summary,
            "history": [{"step": 10, "train_s": 5.0, "test_nfe": summary.get("test_nfe"), "test_acc": 10.0}]}


def test_table_ratios_are_vanilla_over_variant_within_a_solver(tmp_path):
    from train import _results

    recs = [_fake_record("deq", "discrete", train_s_per_batch=3.0, predict_s_per_batch=1.0, test_nfe=12.0),
            _fake_record("skipdeq", "discrete", train_s_per_batch=1.5, predict_s_per_batch=0.25, test_nfe=4.0),
            _fake_record("deq", "continuous", train_s_per_batch=1.0),
            _fake_record("skipdeq", "continuous", train_s_per_batch=2.0),
            # a newer record that names its stopping test is compared only with its own kind
            _fake_record("deq", "discrete", "batch", train_s_per_batch=2.0),
            _fake_record("skipdeq", "discrete", "batch", train_s_per_batch=1.0)]
    for i, r in enumerate(recs):
        _results.write_json(tmp_path / f"r{i}.json", r)
    md, png = exp.write_table(tmp_path)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in md.read_text().splitlines()
            if line.startswith("| skipdeq") or line.startswith("| deq")}
    # records from before the options: discrete solves stopped per sample, continuous on the batch (Tsit5)
    disc = [c.strip() for c in rows[("skipdeq", "discrete (per-sample)")].split("|")]
    cont = [c.strip() for c in rows[("skipdeq", "continuous tsit5 (batch)")].split("|")]
    batch = [c.strip() for c in rows[("skipdeq", "discrete (batch)")].split("|")]
    # after model, solver and the 11 value columns: train, train (last round), backward, predict, NFE ratios
    assert disc[14].startswith("2.00") and disc[17].startswith("4.00")
    # the paper's own ratio sits beside ours: 0.651 / 0.717 for discrete training
    assert f"({0.651 / 0.717:.2f})" in disc[14]
    assert cont[14].startswith("0.50") and batch[14].startswith("2.00")
    assert "82.01" in rows[("skipdeq", "discrete (per-sample)")] and png.is_file()


def test_the_papers_numbers_have_one_home():
    # train.cifar, the models and every other script read the papers' numbers from train.exp_cifar
    import re

    root = Path(__file__).resolve().parents[1]
    numbers = {repr(v) for row in exp.PAPER.values() for v in row.values()}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(n) for n in sorted(numbers)) + r")(?![\d])")
    holders = {str(path.relative_to(root)) for folder in ("train", "models") for path in (root / folder).rglob("*.py")
               if pattern.search(path.read_text(encoding="utf-8"))}
    assert holders == {"train/exp_cifar.py"}
    assert cifar.exp is exp and not hasattr(cifar, "PAPER")


# --- one vocabulary (issue #16): "broyden" is the solver's name, "discrete" its deprecated alias ---------


def test_the_solvers_are_named_as_in_the_zoo():
    from models import mnist_deq

    assert set(exp.SOLVERS) == set(mnist_deq.SOLVERS) and "discrete" not in exp.SOLVERS
    assert exp.NODE_BASELINE_SOLVER == "broyden" and ("skipdeq", "broyden") in exp.PAPER
    assert exp.paper_numbers("skipdeq", "discrete") == exp.paper_numbers("skipdeq", "broyden") == exp.PAPER[
        ("skipdeq", "broyden")]


def test_cli_solver_discrete_is_broyden_with_one_warning(capsys):
    config = cifar.parse_config(["--solver", "discrete", "--model", "deq"])
    err = capsys.readouterr().err
    assert err == ("warning: --solver discrete is deprecated, use --solver broyden (the same solver; 'discrete' "
                   "goes in the next release)\n")
    assert config.solver == "broyden" and config.name == "deq_broyden_seed0"
    assert config == cifar.parse_config(["--solver", "broyden", "--model", "deq"])
    assert capsys.readouterr().err == ""
    # the deprecated name is accepted, not offered
    assert "{broyden,newton,continuous}" in cifar.build_parser().format_usage()


def test_python_config_reads_discrete_as_broyden_with_a_deprecation_warning():
    budget = dict(steps=1, pretrain_steps=0, batch_size=1, max_iter=1, backward_max_iter=1, limit_train=None,
                  limit_test=None, eval_every=1, eval_batch_size=1)
    with pytest.warns(DeprecationWarning, match=r"solver='discrete' is deprecated, use solver='broyden'") as caught:
        config = exp.CIFARConfig(solver="discrete", **budget)
    assert caught[0].filename == __file__  # it points at the caller
    assert config.solver == "broyden" and config == exp.CIFARConfig(**budget)
    with pytest.warns(DeprecationWarning, match=r"solver='discrete' is deprecated") as caught:
        model = exp.CIFARModelConfig(solver="discrete")
    assert caught[0].filename == __file__ and model == exp.CIFARModelConfig(solver="broyden")
    assert config.model_config().solver == "broyden"
    with pytest.raises(ValueError, match=r"one of \('broyden', 'newton', 'continuous'\), got 'anderson'"):
        exp.CIFARModelConfig(solver="anderson")


def test_a_discrete_checkpoint_config_resumes_as_broyden():
    from train import _checkpoint, _results

    now = _results.to_plain(cifar.parse_config(["--model", "deq"]))
    saved = {**now, "solver": "discrete"}
    _checkpoint.check_config(saved, now, ignore=exp.RESUME_IGNORES, added=exp.RESUME_ADDED, renamed=exp.RESUME_RENAMED)
    # without the rename the same pair is refused: the rename is what lets it resume
    with pytest.raises(_checkpoint.ConfigMismatchError, match="solver: checkpoint 'discrete' vs now 'broyden'"):
        _checkpoint.check_config(saved, now, ignore=exp.RESUME_IGNORES, added=exp.RESUME_ADDED)
    # a different solver is still refused, under the name the checkpoint gives it
    newton = _results.to_plain(cifar.parse_config(["--model", "deq", "--solver", "newton"]))
    with pytest.raises(_checkpoint.ConfigMismatchError, match="solver: checkpoint 'discrete' vs now 'newton'"):
        _checkpoint.check_config(saved, newton, ignore=exp.RESUME_IGNORES, added=exp.RESUME_ADDED,
                                 renamed=exp.RESUME_RENAMED)


@needs_data
def test_a_run_checkpointed_as_discrete_resumes(tmp_path, capsys):
    # a checkpoint written before the rename, of a run named as the committed records are
    common = ["--model", "deq", "--steps", "2", "--pretrain-steps", "1", "--eval-every", "1", "--timing-repeats", "0",
              "--run-name", "deq_discrete_seed0"]
    _, part = _run(tmp_path, *common, "--stop-after-round", "1")
    path = Path(part["paths"]["checkpoint"])
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["config"]["solver"] = "discrete"
    torch.save(payload, path)
    capsys.readouterr()
    _, resumed = _run(tmp_path, *common, "--solver", "discrete", "--resume")
    assert resumed["complete"] and [h["step"] for h in resumed["history"]] == [1, 2]
    assert resumed["config"]["solver"] == "broyden"
    assert "resumed deq_discrete_seed0" in capsys.readouterr().out


def test_old_discrete_records_render_as_written_and_pair_with_broyden_ones(tmp_path):
    from train import _results

    node = _fake_record("node", "discrete", train_s_per_batch=8.0)
    recs = [_fake_record("deq", "discrete", "batch", train_s_per_batch=3.0),
            # a run resumed after the rename from a "discrete" checkpoint, or a new one beside the old
            _fake_record("skipdeq", "broyden", "batch", train_s_per_batch=1.5),
            _fake_record("deq", "continuous", train_s_per_batch=1.0), node]
    for i, r in enumerate(recs):
        _results.write_json(tmp_path / f"r{i}.json", r)
    md, _ = exp.write_table(tmp_path)
    lines = [line for line in md.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    # each row names its solver as its record does; Broyden rows sort where "discrete" did, after continuous
    assert [c[:2] for c in cells] == [["deq", "continuous tsit5 (batch)"], ["deq", "discrete (batch)"],
                                      ["skipdeq", "broyden (batch)"], ["node", "–"]]
    # the old vanilla record is the new variant's baseline (3.0 / 1.5), and the node's (3.0 / 8.0)
    assert cells[2][13].startswith("2.00") and cells[3][13].startswith("0.38")
    assert "(node: against the discrete vanilla DEQ)" in md.read_text()
    assert "82.01" in lines[2]  # the paper's Broyden row

    for f in tmp_path.glob("r*.json"):
        f.unlink()
    for i, r in enumerate([_fake_record("deq", "broyden", "batch", train_s_per_batch=3.0), node]):
        _results.write_json(tmp_path / f"r{i}.json", r)
    md, _ = exp.write_table(tmp_path)
    assert "(node: against the broyden vanilla DEQ)" in md.read_text()


def test_lambda_skip_is_the_skip_deq_papers_one_number():
    # the paper states one λ_skip for MNIST and CIFAR-10; its home is the MNIST DEQ experiment
    from train import exp_mnist_deq

    assert exp.LAMBDA["skip"] is exp_mnist_deq.LAMBDA_SKIP
    assert cifar.parse_config(["--model", "skipregdeq"]).lambda_skip == exp_mnist_deq.LAMBDA_SKIP
