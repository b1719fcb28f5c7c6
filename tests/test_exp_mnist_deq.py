"""train.exp_mnist_deq: the measurements on saved checkpoints (share, probe), on a tiny checkpoint
trained here by train.mnist itself."""

import json
from pathlib import Path

import pytest
import torch

from train import _data, mnist
from train import exp_mnist_deq as exp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(),
                                reason=f"real MNIST not found beside the checkout in {DATA}")
# the committed implicit_share.json's entry keys (batch_size is the CLI's)
SHARE_KEYS = {"active", "batch_size", "nfe", "run", "share", "start_below_tol", "start_median", "tol"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, record) of a skipregdeq trained 2 steps the way the several-seed groups were
    (continuous, Tsit5, batch test), its checkpoint in a group folder as train.reproduce keeps them."""
    root = tmp_path_factory.mktemp("deq")
    argv = ["--model", "skipregdeq", "--solver", "continuous", "--integrator", "tsit5", "--steady-state-test",
            "batch", "--data-dir", str(DATA), "--limit-train", "64", "--limit-test", "32", "--epochs", "1",
            "--batch-size", "32", "--eval-batch-size", "32", "--out", str(root / "out"),
            "--checkpoint-dir", str(root / "ckpt" / "grp"), "--no-progress"]
    threads = torch.get_num_threads()
    try:
        assert mnist.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads((root / "out" / "skipregdeq_seed0.json").read_text())
    return root / "ckpt" / "grp" / "skipregdeq_seed0.pt", record


def test_the_rebuilt_model_is_the_trained_one(trained):
    checkpoint, record = trained
    model, _ = exp.model_from_checkpoint(checkpoint)
    assert type(model.deq.solver.solver).__name__ == "Tsit5" and model.deq.solver.stopping_test == "batch"
    # the record's test NFE, on the same test subset and batch
    test = _data.load("mnist", DATA, train=False, limit=32)
    with torch.no_grad():
        assert model(test.x).nfe_forward == record["summary"]["test_nfe"]


def test_a_config_older_than_the_options_is_read_as_what_it_ran(trained, tmp_path):
    payload = torch.load(trained[0], weights_only=True)
    for key in ("steady_state_test", "integrator"):
        payload["config"].pop(key)
    torch.save(payload, tmp_path / "old.pt")
    model, _ = exp.model_from_checkpoint(tmp_path / "old.pt")
    assert type(model.deq.solver.solver).__name__ == "Tsit5" and model.deq.solver.stopping_test == "per_sample"


def test_share_numbers(trained):
    checkpoint, _ = trained
    r = exp.implicit_share(checkpoint, data_dir=DATA, batch_size=32, limit=64)
    assert r["run"] == "grp/skipregdeq_seed0" and r["tol"] == 0.005
    # z* = u + relu(W₂x + b₂) with both terms ≥ 0, so ‖u‖ ≤ ‖z*‖; near init about half the units are on
    assert 0.1 < r["active"] < 0.9 and 0.1 < r["share"] < 1.0
    assert 0.0 <= r["start_below_tol"] <= 1.0 and r["start_median"] > 0.005  # a 2-step model still needs its solve
    model, _ = exp.model_from_checkpoint(checkpoint)
    images = _data.load("mnist", DATA, train=False).x[:64]
    with torch.no_grad():
        nfe = [model(images[i:i + 32]).nfe_forward for i in (0, 32)]
    assert r["nfe"] == sum(nfe) / 2 > 6


def test_share_cli_merges_into_the_json(trained, tmp_path, capsys):
    out = tmp_path / "share.json"
    out.write_text(json.dumps({"other/run": {"share": 0.5}}))
    assert exp.main(["share", str(trained[0]), "--data-dir", str(DATA), "--limit", "32", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["other/run"] == {"share": 0.5}
    assert set(saved["grp/skipregdeq_seed0"]) == SHARE_KEYS | {"limit"}
    committed = json.loads((Path(__file__).resolve().parents[1] / "results/mnist_deq/implicit_share.json").read_text())
    assert all(set(v) == SHARE_KEYS for v in committed.values())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | active units at z* |") and lines[2].startswith("| grp/skipregdeq_seed0 | ")


def test_probe_counts_failed_solves():
    torch.manual_seed(0)
    from models.mnist_deq import MNISTDEQConfig, MNISTFCDEQ

    model = MNISTFCDEQ(MNISTDEQConfig(variant="deq", solver="continuous")).eval()
    test = _data.load("mnist", DATA, train=False)
    images, labels = test.x[:64], test.y[:64]
    # untrained, at integrator atol = tol every batch solve stalls at 50 steps, at tol/10 none does
    # (results/mnist_deq/steady_state_probe.md)
    rows = exp.steady_state_probe(model, images, labels, settings=(("batch", 0.005), ("batch", 0.0005)))
    (_, _, nfe_stall, failed_stall, n, acc, _), (_, _, nfe_ok, failed_ok, _, _, worst) = rows
    assert n == 2 and failed_stall == 2 and failed_ok == 0 and nfe_ok < nfe_stall
    assert 0 <= acc <= 100 and worst <= 0.0075
    (_, _, nfe, failed, _, _, _), = exp.steady_state_probe(model, images, labels, settings=(("per_sample", 1e-6),),
                                                         max_steps=1)
    assert failed == 2 and nfe < nfe_ok  # one step: every solve stops unconverged, and cheap


def test_probe_cli_writes_the_table(trained, tmp_path):
    out = tmp_path / "probe.md"
    argv = ["probe", str(trained[0].parent), "--images", "32", "--data-dir", str(DATA), "--out", str(out)]
    assert exp.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[2].startswith(f"Generated by `python -m train.exp_mnist_deq probe {trained[0].parent}")
    assert "first 32 test images in batches of 32" in lines[3]
    assert lines[5] == "| model | test | integrator atol | NFE/batch | failed | accuracy % | worst residual |"
    rows = [line.split(" | ") for line in lines[7:]]
    models = list(dict.fromkeys(r[0].lstrip("| ") for r in rows))
    assert models == ["deq, untrained", "skipdeq, untrained", "skipregdeq, untrained", "skipregdeq, grp epoch 1"]
    assert [(r[1], r[2]) for r in rows[:7]] == [(t, f"{a:g}") for t, a in exp.PROBE_SETTINGS]
    assert all(r[4].endswith("/1") for r in rows)


@pytest.mark.parametrize("argv,message", [
    (["share", "no/such.pt"], "error: checkpoint not found: 'no/such.pt'\n"),
    (["probe", "no/such/folder"], "error: checkpoint folder not found: 'no/such/folder'\n"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert exp.main(argv) == 2
    assert capsys.readouterr().err == message


def test_a_folder_without_checkpoints_is_a_one_line_error(tmp_path, capsys):
    assert exp.main(["probe", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint to probe in" in err and "deq_seed0.pt" in err
