"""train.exp_mnist_nsde: the experiment's tables from run records."""

import json
from pathlib import Path

import pytest

from train import exp_mnist_nsde as exp

ROOT = Path(__file__).resolve().parents[1]


def _record(model, seed, *, acc, nfe, predict, complete=True):
    return {"format": "implicit-run", "name": f"{model}_seed{seed}", "model": model, "seed": seed, "complete": complete,
            "config": {"preset": "authors", "reg_weights": []},
            "summary": {"epochs": 20.0, "test_acc": acc, "predict_s_per_batch": predict, "train_time_s": 100.0,
                        "probes": {"nfe_drift_train_first": nfe, "predict_s_train_first": predict / 10}}}


def test_authors_table_pairs_runs_by_seed_and_checks_the_goal(tmp_path):
    for rec in (_record("nsde", 0, acc=97.0, nfe=300, predict=2.0), _record("ernsde", 0, acc=96.5, nfe=150, predict=1.0),
                _record("nsde", 1, acc=97.0, nfe=300, predict=2.0), _record("ernsde", 1, acc=95.0, nfe=250, predict=1.9)):
        (tmp_path / f"{rec['model']}_seed{rec['seed']}.json").write_text(json.dumps(rec))
    text = exp.authors_table(tmp_path)
    assert "| ernsde | 0 | 2.00 | 2.00 | 2.00 | – | -0.50 | met |" in text
    assert "| ernsde | 1 | 1.20 | 1.05 | 1.05 | – | -2.00 | missed |" in text
    assert "| ernsde | median | 1.60 |" in text
    assert "| nsde | 0 | 20 | 97.00 (96.95) | 300 (411) |" in text
    # an interleaved timing, when there, decides the prediction part of the goal
    timing = {"runs": {"nsde_seed0": {"predict_s_per_batch_median": 2.0}, "ernsde_seed0": {"predict_s_per_batch_median": 2.5}}}
    (tmp_path / "predict_timing.json").write_text(json.dumps(timing))
    assert "| ernsde | 0 | 2.00 | 2.00 | 2.00 | 0.80 | -0.50 | missed |" in exp.authors_table(tmp_path)


def test_the_readme_run_table_regenerates_byte_for_byte():
    readme = (ROOT / "results/mnist_nsde/README.md").read_text()
    assert exp.replace_block(readme, exp.sweep_table(ROOT / "results/mnist_nsde")) == readme


def test_the_papers_numbers_live_here_only():
    # 411 and 185 (the paper's NFE) appear in no other Python file of train/ or models/
    others = [p for d in ("train", "models") for p in (ROOT / d).glob("*.py") if p.name != "exp_mnist_nsde.py"]
    assert not [p.name for p in others if "411.0" in p.read_text() or "96.95" in p.read_text()]


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        exp.main(["authors", "no/such/folder"])
    assert e.value.code == 2 and "folder not found" in capsys.readouterr().err


def test_prediction_table_pairs_by_seed():
    runs = {"nsde_seed0": {"model": "nsde", "seed": 0, "predict_s_per_batch_median": 3.0, "predict_s_test_set_estimate": 60.0,
                           "nfe_drift_per_batch_median": 334},
            "ernsde_seed0": {"model": "ernsde", "seed": 0, "predict_s_per_batch_median": 1.5,
                             "predict_s_test_set_estimate": 30.0, "nfe_drift_per_batch_median": 174}}
    text = exp.prediction_table({"runs": runs})
    assert "| ernsde_seed0 | 174 | 1.500 | 30.0 | 2.00 |" in text and "| nsde_seed0 | 334 | 3.000 | 60.0 | – |" in text
