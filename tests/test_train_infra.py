"""The shared training infrastructure (train._data, _checkpoint, _results, _trainer,
_distributed, report) on a tiny MLP zoo model and a few hundred real MNIST images."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from implicit import Outcome, SolverError
from models._base import ZooOutput
from train import _checkpoint, _data, _distributed, _results, _trainer, report

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(),
    reason=f"real MNIST not found beside the checkout in {DATA}",
)


class TinyMLP(torch.nn.Module):
    """A stand-in zoo model: one hidden layer, dropout (so RNG state matters), one regularizer."""

    def __init__(self, hidden: int = 32, dropout: float = 0.2):
        super().__init__()
        self.l1 = torch.nn.Linear(784, hidden)
        self.l2 = torch.nn.Linear(hidden, 10)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x):
        h = self.drop(torch.tanh(self.l1(x.flatten(1))))
        return ZooOutput(logits=self.l2(h), regularizers={"act": (h**2).mean()}, nfe_forward=1,
                         metrics={"hidden_abs": float(h.detach().abs().mean())})


@pytest.fixture(scope="module")
def mnist_small():
    if not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not found beside the checkout in {DATA}")
    return (_data.load("mnist", DATA, train=True, limit=640), _data.load("mnist", DATA, train=False, limit=300))


def _fit(train, test, out, *, epochs=3, stop=None, resume=False, config=None, dropout=0.2, seed=0, batch_size=64, **loop_kw):
    torch.manual_seed(seed)
    model = TinyMLP(dropout=dropout)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _trainer.InverseDecay(decay=1e-2))
    rec = _trainer.fit(
        model=model, optimizer=opt, scheduler=sched, train_data=train, test_data=test,
        loop=_trainer.LoopConfig(batch_size=batch_size, epochs=epochs, seed=seed, stop_after_round=stop, progress=False, **loop_kw),
        weights={"act": _trainer.ExponentialAnneal(start=1.0, end=0.1)},
        ctx=_distributed.setup("cpu"), out_dir=out,
        run=_trainer.RunInfo(name="tiny", script="tests", model="tiny", baseline="tiny"),
        config=config or {"hidden": 32, "epochs": epochs}, resume=resume, log=lambda _m: None,
    )
    return model, rec


# --- data -----------------------------------------------------------------------------------


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(_data.ENV_VAR, raising=False)
    assert _data.resolve_data_dir(None) == Path("data")
    monkeypatch.setenv(_data.ENV_VAR, str(tmp_path))
    assert _data.resolve_data_dir(None) == tmp_path
    assert _data.resolve_data_dir("elsewhere") == Path("elsewhere")


def test_missing_mnist_names_folder_and_files(tmp_path):
    with pytest.raises(_data.DataNotFoundError, match=r"MNIST not found in data folder .*train-images-idx3-ubyte.*t10k-labels-idx1-ubyte.*--download"):
        _data.load("mnist", tmp_path / "nowhere", train=True)
    with pytest.raises(_data.DataNotFoundError, match=r"CIFAR-10 not found .*cifar-10-batches-py.*cifar10.npz"):
        _data.load("cifar10", tmp_path, train=True)
    with pytest.raises(ValueError, match="data set must be one of"):
        _data.load("svhn", tmp_path, train=True)


@needs_mnist
def test_mnist_matches_raw_idx_file_and_subset_is_a_fixed_prefix():
    test = _data.load("mnist", DATA, train=False)
    # independent reader of the IDX format: 16-byte header, then uint8 pixels
    raw = np.frombuffer((DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    raw = torch.from_numpy(raw.reshape(-1, 28, 28).astype(np.float32) / 255.0)
    labels = np.frombuffer((DATA / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    torch.testing.assert_close(test.x[:, 0] * _data.MNIST_STD[0] + _data.MNIST_MEAN[0], raw, atol=1e-6, rtol=0)
    assert torch.equal(test.y, torch.from_numpy(labels.astype(np.int64)))
    a, b = test.limit(200), test.limit(400)
    assert torch.equal(a.x, b.x[:200]) and torch.equal(a.y, b.y[:200])
    assert torch.equal(a.y, test.limit(200).y)  # reproducible
    counts = torch.bincount(b.y, minlength=10)
    assert counts.min() >= 20, counts  # shuffled, not the first 400 of the file
    assert "subset of 200 of 10000" in a.description
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        test.limit(0)


def test_cifar_npz_layout_and_normalization(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {k: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8) for k, n in (("x_train", 12), ("x_test", 5))}
    arrays.update(y_train=rng.integers(0, 10, 12).astype(np.uint8), y_test=rng.integers(0, 10, 5).astype(np.uint8))
    np.savez(tmp_path / "cifar10.npz", **arrays)
    ds = _data.load("cifar10", tmp_path, train=False)
    assert ds.x.shape == (5, 3, 32, 32) and "decoded from JPEG" in ds.description
    expect = (arrays["x_test"].astype(np.float32) / 255.0 - np.array(_data.CIFAR10_MEAN, np.float32)) / np.array(_data.CIFAR10_STD, np.float32)
    torch.testing.assert_close(ds.x, torch.from_numpy(expect.transpose(0, 3, 1, 2).copy()), atol=1e-5, rtol=1e-5)
    assert ds.y.tolist() == arrays["y_test"].tolist()
    np.savez(tmp_path / "cifar10.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match=r"lacks key\(s\) x_test, y_test"):
        _data.load("cifar10", tmp_path, train=False)


def test_augment_is_crop_of_padded_image_and_flip():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(_data.Augment(pad=0, flip=False)(x, gen), x)
    flipped = _data.Augment(pad=0, flip=True)(x, gen)
    for i in range(6):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    cropped = _data.Augment(pad=2, flip=False)(x, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, a : a + 8, b : b + 8] for a in range(5) for b in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)


def test_shards_cover_everything_equally_and_batches_resume_mid_epoch():
    order = _data.epoch_order(103, seed=3, epoch=1, shuffle=True)
    assert sorted(order.tolist()) == list(range(103))
    assert not torch.equal(order, _data.epoch_order(103, seed=3, epoch=2, shuffle=True))
    shards = [_data.shard(order, rank=r, world_size=4) for r in range(4)]
    assert {len(s) for s in shards} == {26}
    assert set(torch.cat(shards).tolist()) == set(range(103))
    ds = _data.InMemoryDataset(x=torch.arange(50.0).view(50, 1, 1, 1), y=torch.arange(50), num_classes=50, description="ramp")
    full = list(_data.batches(ds, batch_size=8, seed=1, epoch=0, shuffle=True))
    tail = list(_data.batches(ds, batch_size=8, seed=1, epoch=0, shuffle=True, start=3))
    assert len(full) == _data.num_batches(50, batch_size=8) == 7
    assert all(torch.equal(a[1], b[1]) for a, b in zip(full[3:], tail))


# --- checkpoints ----------------------------------------------------------------------------


def _save(path, config):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _checkpoint.save_checkpoint(path, model=model, optimizer=opt, scheduler=None, epoch=1, step=7,
                                history=[{"test_acc": 50.0}], config=config, rng_states=[_checkpoint.rng_state()])
    return model


def test_checkpoint_roundtrip_and_rng(tmp_path):
    path = tmp_path / "c.pt"
    torch.manual_seed(5)
    np.random.seed(5)
    model = _save(path, {"lr": 0.1})
    expect = (torch.rand(3), np.random.rand(2))
    payload = _checkpoint.load_checkpoint(path)
    assert payload["step"] == 7 and payload["history"] == [{"test_acc": 50.0}]
    torch.manual_seed(99)
    np.random.seed(99)
    _checkpoint.set_rng_state(payload["rng"][0])
    assert torch.equal(torch.rand(3), expect[0]) and np.array_equal(np.random.rand(2), expect[1])
    other = torch.nn.Linear(3, 2)
    _checkpoint.restore(payload, model=other, optimizer=torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9), scheduler=None)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    path = tmp_path / "c.pt"
    _save(path, {"lr": 0.1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(_checkpoint.CheckpointError, match=r"c\.pt.*unreadable \(truncated or corrupt"):
        _checkpoint.load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(_checkpoint.CheckpointError, match="not a checkpoint written by implicit"):
        _checkpoint.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        _checkpoint.load_checkpoint(tmp_path / "absent.pt")


def test_config_mismatch_names_each_field():
    saved = {"lr": 0.1, "model": "node", "out": "a", "old": 1}
    _checkpoint.check_config(saved, {**saved, "out": "b"}, ignore={"out"})
    with pytest.raises(_checkpoint.ConfigMismatchError,
                       match=r"lr: checkpoint 0\.1 vs now 0\.2; model: checkpoint 'node' vs now 'ernode'; old: checkpoint 1 vs now <absent>"):
        _checkpoint.check_config(saved, {"lr": 0.2, "model": "ernode", "out": "a"})


# --- trainer --------------------------------------------------------------------------------


def test_schedules():
    s = _trainer.ExponentialAnneal(start=100.0, end=10.0)
    assert s(0.0) == 100.0 and math.isclose(s(1.0), 10.0) and math.isclose(s(0.5), math.sqrt(1000.0))
    assert _trainer.Constant(value=0.5)(0.3) == 0.5
    assert _trainer.InverseDecay(decay=1e-5)(100_000) == 0.5
    with pytest.raises(ValueError, match="start > 0 and end > 0"):
        _trainer.ExponentialAnneal(start=0.0, end=1.0)
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        _trainer.Constant(value=-1.0)


def test_loop_config_errors():
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        _trainer.LoopConfig(batch_size=8)
    with pytest.raises(ValueError, match="exactly one of epochs and steps"):
        _trainer.LoopConfig(batch_size=8, epochs=1, steps=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        _trainer.LoopConfig(batch_size=0, epochs=1)


def test_one_run_learns_and_writes_a_valid_record(mnist_small, tmp_path):
    train, test = mnist_small
    _, rec = _fit(train, test, tmp_path, epochs=2)
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["complete"] is True and saved["format"] == "implicit-run"
    assert [h["epoch"] for h in saved["history"]] == [1.0, 2.0]
    assert saved["data"]["train_items"] == 640 and "subset of 640" in saved["data"]["train"]
    assert saved["environment"]["versions"]["torch"] == torch.__version__
    assert saved["environment"]["hardware"]["cpu_cores"] == os.cpu_count()
    s = saved["summary"]
    # 10 classes: chance is 10 %; two epochs of a small MLP on 640 real digits get far beyond it
    assert s["test_acc"] > 50.0 and s["train_acc"] > 30.0
    assert s["test_nfe"] == 1.0 and s["train_time_s"] > 0 and s["predict_s_per_batch"] > 0
    last = saved["history"][-1]
    assert set(last["regularizers"]) == {"act"} and "hidden_abs" in last["metrics"]
    # the weight recorded is the schedule's value at the last step of the round
    assert math.isclose(last["weights"]["act"], 0.1 ** (19 / 20))
    # independent check of the reported test accuracy
    model_acc = saved["summary"]["test_acc"]
    assert 0 <= model_acc <= 100 and saved["history"][-1]["test_items"] == 300


def test_resume_equals_uninterrupted(mnist_small, tmp_path):
    train, test = mnist_small
    m_full, r_full = _fit(train, test, tmp_path / "full", epochs=3)
    _, r_part = _fit(train, test, tmp_path / "part", epochs=3, stop=1)
    assert r_part["complete"] is False and len(r_part["history"]) == 1
    m_res, r_res = _fit(train, test, tmp_path / "part", epochs=3, resume=True)
    for a, b in zip(m_full.state_dict().values(), m_res.state_dict().values()):
        assert torch.equal(a, b)
    keys = ("train_loss", "train_acc", "test_acc", "test_loss", "nfe_forward", "regularizers", "lr")
    assert [{k: h[k] for k in keys} for h in r_full["history"]] == [{k: h[k] for k in keys} for h in r_res["history"]]
    assert r_res["complete"] is True


def test_resume_refuses_other_config_and_missing_checkpoint(mnist_small, tmp_path):
    train, test = mnist_small
    _fit(train, test, tmp_path, epochs=1)
    with pytest.raises(_checkpoint.ConfigMismatchError, match=r"hidden: checkpoint 32 vs now 64"):
        _fit(train, test, tmp_path, epochs=1, resume=True, config={"hidden": 64, "epochs": 1})
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        _fit(train, test, tmp_path / "other", epochs=1, resume=True)


def test_model_must_return_zoo_output(mnist_small, tmp_path):
    train, test = mnist_small
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with pytest.raises(TypeError, match="must return ZooOutput, got Tensor"):
        _trainer.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                     train_data=train, test_data=test, loop=_trainer.LoopConfig(batch_size=64, steps=1, progress=False),
                     weights={}, ctx=_distributed.setup("cpu"), out_dir=tmp_path,
                     run=_trainer.RunInfo(name="x", script="tests", model="x"), config={}, log=lambda _m: None)
    with pytest.raises(TypeError, match=r"weights\['act'\] must be a WeightSchedule"):
        _trainer.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                     train_data=train, test_data=test, loop=_trainer.LoopConfig(batch_size=64, steps=1),
                     weights={"act": 0.1}, ctx=_distributed.setup("cpu"), out_dir=tmp_path,
                     run=_trainer.RunInfo(name="x", script="tests", model="x"), config={})


class FailsAt(TinyMLP):
    """TinyMLP whose forward raises a solver failure at one training call."""

    def __init__(self, at):
        super().__init__(dropout=0.0)
        self.at, self.calls = at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise SolverError("forward solve stopped: NaN", Outcome.NONFINITE)
        return super().forward(x)


def test_a_run_that_fails_says_so_in_its_record(mnist_small, tmp_path):
    train, test = mnist_small  # 640 images, batch 64: 10 steps per epoch, so call 15 is in epoch 2
    model = FailsAt(15)
    with pytest.raises(SolverError, match="NaN"):
        _trainer.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
                     train_data=train, test_data=test, loop=_trainer.LoopConfig(batch_size=64, epochs=3, progress=False),
                     weights={}, ctx=_distributed.setup("cpu"), out_dir=tmp_path,
                     run=_trainer.RunInfo(name="x", script="tests", model="x"), config={}, log=lambda _m: None)
    saved = json.loads((tmp_path / "x.json").read_text())
    assert saved["complete"] is False and [h["epoch"] for h in saved["history"]] == [1.0]
    failure = saved["failure"]
    assert (failure["step"], failure["epoch"]) == (14, 1.4)
    assert failure["error"].startswith("SolverError: forward solve stopped: NaN (nonfinite)")
    assert (tmp_path / "checkpoints" / "x.pt").is_file()  # the last finished epoch is kept to inspect or resume


def test_step_budget_with_rounds_shorter_than_an_epoch(mnist_small, tmp_path):
    train, test = mnist_small
    _, rec = _fit(train, test, tmp_path, epochs=None, steps=7, eval_every=3)
    assert [h["step"] for h in rec["history"]] == [3, 6, 7]
    assert math.isclose(rec["history"][-1]["epoch"], 0.7)


def test_distributed_setup_single_process_and_env_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = _distributed.setup("cpu")
    assert not ctx.distributed and ctx.is_main and _distributed.all_reduce_sum([1.5, 2.0], ctx) == [1.5, 2.0]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        _distributed.setup("cpu")
    with pytest.raises(_distributed.DeviceError, match="device must be cpu, cuda, cuda:N or mps, got 'tpu'"):
        _distributed.setup("tpu")
    monkeypatch.delenv("WORLD_SIZE")
    if not torch.cuda.is_available():
        with pytest.raises(_distributed.DeviceError, match=r"'cuda:1' was asked for but torch.cuda.is_available\(\) is False"):
            _distributed.setup("cuda:1")


_DDP_SCRIPT = """
import sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
torch.set_num_threads(1)
from test_train_infra import _fit
from train import _data
out, batch = sys.argv[1], int(sys.argv[2])
train = _data.load("mnist", {data!r}, train=True, limit=640)
test = _data.load("mnist", {data!r}, train=False, limit=300)
model, rec = _fit(train, test, out, epochs=2, dropout=0.0, batch_size=batch)
if rec["loop"]["world_size"] == 1 or torch.distributed.get_rank() == 0:
    torch.save(model.state_dict(), out + "/params.pt")
"""


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_the_union_batch(tmp_path):
    """Rank r takes items r, r+2, ... of each block of 64, so the two ranks' batches of 32 are
    together the single process's batch of 64, and DDP's averaged gradient is that batch's."""
    if not (DATA / "MNIST").is_dir():
        pytest.skip(f"real MNIST not found beside the checkout in {DATA}")
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(DATA))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, str(script), str(single), "64"], check=True, env=env, timeout=300)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(multi), "32"],
        env=env, timeout=300, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((multi / "tiny.json").read_text())
    assert rec["complete"] and rec["loop"]["world_size"] == 2 and rec["loop"]["steps_per_epoch"] == 10
    one = json.loads((single / "tiny.json").read_text())
    # the test set is split over ranks and the counts summed: every item counted once
    assert rec["history"][-1]["test_items"] == 300
    assert math.isclose(rec["summary"]["test_acc"], one["summary"]["test_acc"], abs_tol=0.34)  # at most 1 of 300 flips
    a, b = torch.load(single / "params.pt"), torch.load(multi / "params.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)


_DDP_FAIL_SCRIPT = """
import sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
torch.set_num_threads(1)
from test_train_infra import FailsAt
from train import _data, _distributed, _trainer
train = _data.load("mnist", {data!r}, train=True, limit=640)
test = _data.load("mnist", {data!r}, train=False, limit=300)
ctx = _distributed.setup("cpu")
torch.manual_seed(0)
model = FailsAt(15 if ctx.rank == 1 else 10**9)
_trainer.fit(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=None,
             train_data=train, test_data=test, loop=_trainer.LoopConfig(batch_size=32, epochs=3, progress=False),
             weights={{}}, ctx=ctx, out_dir=sys.argv[1], run=_trainer.RunInfo(name="x", script="tests", model="x"),
             config={{}}, log=lambda _m: None)
"""


@pytest.mark.slow
def test_a_failing_rank_under_torchrun_writes_the_failure_before_the_group_ends(tmp_path):
    """Rank 1's solver fails in epoch 2 while rank 0 waits for it in DDP's gradient all-reduce:
    the record names rank 1 and where it stopped, and its command is torchrun's."""
    if not (DATA / "MNIST").is_dir():
        pytest.skip(f"real MNIST not found beside the checkout in {DATA}")
    script = tmp_path / "ddp_fail.py"
    script.write_text(textwrap.dedent(_DDP_FAIL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(DATA))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "out")], env=env, timeout=300, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    rec = json.loads((tmp_path / "out" / "x.json").read_text())
    assert not rec["complete"] and [h["epoch"] for h in rec["history"]] == [1.0]
    failure = rec["failure"]
    assert (failure["rank"], failure["world_size"], failure["step"], failure["epoch"]) == (1, 2, 14, 1.4), failure
    assert failure["error"].startswith("SolverError: forward solve stopped: NaN")
    assert rec["environment"]["command"] == "torchrun --nproc-per-node 2 ddp_fail.py <out>"


# --- results and report ---------------------------------------------------------------------


def _record(model, *, nfe, acc, predict, train_time, paper=None, seed=0):
    hist = [{"epoch": e, "step": 10 * e, "test_nfe": nfe + 10 * (2 - e), "test_acc": acc - (2 - e)} for e in (1, 2)]
    return {"format": "implicit-run", "version": 1, "name": f"{model}_s{seed}", "script": "train.mnist", "model": model,
            "baseline": "node", "seed": seed, "history": hist, "complete": True, "paper": paper,
            "summary": {"epochs": 2.0, "train_acc": acc + 1, "test_acc": acc, "train_time_s": train_time,
                        "predict_s_per_batch": predict, "test_nfe": nfe}}


def test_markdown_table_ratios_and_paper_numbers(tmp_path):
    runs = [
        _record("ernode", nfe=100.0, acc=96.5, predict=0.02, train_time=50.0, paper={"test_acc": 97.32, "test_nfe": 177}),
        _record("node", nfe=150.0, acc=97.0, predict=0.03, train_time=60.0, paper={"test_acc": 97.94, "test_nfe": 253}),
        _record("node", nfe=300.0, acc=90.0, predict=0.03, train_time=60.0, seed=1),
    ]
    table = _results.markdown_table(runs, order=["node", "ernode"])
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["node", "node", "ernode"]
    ern = rows[2].split("|")
    assert "96.50 (97.32)" in ern[5] and "100.0 (177.0)" in ern[8]
    # baseline/variant from the same seed, and the paper's ratio 253/177 beside it
    assert ern[9].strip() == f"{150 / 100:.2f} ({253 / 177:.2f})"
    assert ern[10].strip() == f"{0.03 / 0.02:.2f}" and ern[11].strip() == f"{60 / 50:.2f}"
    assert rows[0].split("|")[9].strip() == "1.00 (1.00)"


def test_write_report_and_cli(tmp_path, capsys):
    for rec in (_record("node", nfe=150.0, acc=97.0, predict=0.03, train_time=60.0),
                _record("srnode", nfe=120.0, acc=96.0, predict=0.025, train_time=55.0)):
        _results.write_json(tmp_path / f"{rec['name']}.json", rec)
    (tmp_path / "other.json").write_text('{"not": "a run"}')
    assert report.main([str(tmp_path), "--order", "node,srnode"]) == 0
    assert "| srnode |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "absent")])
    assert "results folder not found" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json.*is not valid JSON"):
        _results.load_runs(tmp_path)


def test_json_record_is_strict_json(tmp_path):
    _results.write_json(tmp_path / "r.json", {"a": float("nan"), "p": Path("x/y"), "t": (1, 2)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "p": "x/y", "t": [1, 2]}


def test_median_table_over_seeds():
    runs = [_record("node", nfe=n, acc=97.0, predict=0.03, train_time=60.0, seed=s) for s, n in enumerate((150.0, 170.0, 400.0))]
    runs += [_record("ernode", nfe=n, acc=96.0, predict=0.02, train_time=50.0, seed=s) for s, n in enumerate((100.0, 90.0))]
    table = _results.median_table(runs, order=["node", "ernode"])
    node, ern = [line.split("|") for line in table.splitlines()[2:]]
    assert node[1].strip() == "node" and node[2].strip() == "3 (0, 1, 2)" and node[7].strip() == "170.0"
    assert ern[7].strip() == "95.0" and ern[8].strip() == f"{170 / 95:.2f}"
    assert _results.median_table(runs[:1] + runs[3:4]) == ""


def test_table_lines_alignment_and_rows():
    lines = _results.table_lines(["a", "b", "c"], [["x", 1, ""], ("y", "2.50", "z")], "lrr")
    # an empty cell is "| |", as the committed tables write it
    assert lines == ["| a | b | c |", "|---|---:|---:|", "| x | 1 | |", "| y | 2.50 | z |"]
    assert _results.table_lines(["a", "b"], [], ["r", "l"]) == ["| a | b |", "|---:|---|"]
    assert _results.table_lines(["a", "b"], iter([])) == ["| a | b |", "|---|---|"]


def test_table_lines_refuses_a_short_row_and_an_unknown_alignment():
    with pytest.raises(ValueError, match=r"row 1 has 3 cell\(s\), the header 2"):
        _results.table_lines(["a", "b"], [["x", "y"], ["x", "y", "z"]])
    with pytest.raises(ValueError, match=r"unknown alignment 'c'"):
        _results.table_lines(["a", "b"], [], "lc")
    with pytest.raises(ValueError, match=r"align has 1 letter\(s\) for 2 column\(s\)"):
        _results.table_lines(["a", "b"], [], "l")


def test_record_command_holds_no_machine_paths(tmp_path):
    from train._results import REPO_ROOT, command_line

    cmd = command_line([str(REPO_ROOT / "train" / "mnist.py"), "--out", str(tmp_path / "runs"), "--data-dir",
                        "../shared/data", str(REPO_ROOT / "results" / "mnist")])
    assert cmd.split()[1:] == ["-m", "train.mnist", "--out", "<runs>", "--data-dir", "../shared/data", "results/mnist"]
    assert str(REPO_ROOT) not in cmd and str(tmp_path) not in cmd


def test_a_benchmark_config_names_its_file_wherever_it_was_written(tmp_path):
    # a benchmark written outside the repository keeps only <name>; its Markdown still names the file
    from train._results import REPO_ROOT, file_name, portable_config

    config = portable_config({"out": str(tmp_path / "ode.json"), "inside": str(REPO_ROOT / "results" / "bench"),
                              "note": "kept", "repeats": 5})
    assert config == {"out": "<ode.json>", "inside": "results/bench", "note": "kept", "repeats": 5}
    assert file_name(config["out"]) == file_name("results/bench/ode.json") == "ode.json"


def test_a_measurement_finds_the_data_its_records_name_or_is_told(tmp_path, monkeypatch):
    # records keep the data folder relative to the repository, or only as <name> when it was outside
    from train._errors import UserError
    from train._results import REPO_ROOT

    monkeypatch.delenv(_data.ENV_VAR, raising=False)
    assert _data.recorded_data_dir("<data>", tmp_path) == str(tmp_path)  # --data-dir wins
    monkeypatch.chdir(tmp_path)  # a path relative to the repository is found from anywhere
    assert Path(_data.recorded_data_dir("results")) == REPO_ROOT / "results"
    with pytest.raises(UserError, match=r"names the data folder '<data>', which is not here: pass --data-dir"):
        _data.recorded_data_dir("<data>")
    monkeypatch.setenv(_data.ENV_VAR, str(tmp_path))
    assert _data.recorded_data_dir("<data>") == str(tmp_path)


def test_a_config_record_reads_its_own_fields_first():
    # base-class fields (train._run.RunOptions) come after the script's own, as in records before that base
    from train import cifar, mnist
    from train._run import RunOptions

    for config in (mnist.parse_config(["--model", "ernode"]), cifar.parse_config([])):
        keys = list(_results.to_plain(config))
        assert keys[0] == "model" and sorted(keys) == sorted(f for f in config.__dataclass_fields__)
        run_fields = [f for f in RunOptions.__dataclass_fields__ if f != "out"]  # out: redeclared by each script
        assert keys[-len(run_fields):] == run_fields
    assert list(_results.to_plain(_trainer.LoopConfig(batch_size=2, epochs=1))) == \
        list(_trainer.LoopConfig.__dataclass_fields__)  # no base: declaration order
