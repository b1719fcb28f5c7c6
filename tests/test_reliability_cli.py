"""Reliability battery, CLI and run safety (#12): what the training scripts do with bad options,
missing or hostile files, a run already in the output folder, and a run that stops on an error.

A user-fixable error is one ``error:`` line on stderr with exit code 2 and no traceback; a finished
run is never replaced without ``--overwrite``; an interrupted one continues only with ``--resume``.
Most cases call a script's ``main(argv)`` in this process (stdout and stderr captured); a few run it
as a real process, where the interpreter's own handling of exceptions and exit codes is what counts.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from _battery import Battery, one_line_error, raises
from train import _checkpoint, _distributed, _results, _trainer, cifar, exp_mnist_node, exp_mnist_nsde, mnist, report
from train._errors import UserError

BATTERY = Battery("cli")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HAS_MNIST = (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
# one optimizer step per epoch and one test batch, at a loose tolerance: a second or two per run
TINY = ["--data-dir", str(DATA), "--limit-train", "32", "--limit-test", "32", "--batch-size", "32",
        "--eval-batch-size", "32", "--rtol", "1e-3", "--atol", "1e-3", "--no-progress", "--threads", "1"]
NAME = "node_seed0"


def _call(main, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)`` as the interpreter would report them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            if isinstance(e.code, str):  # the interpreter prints such a message and exits 1
                err.write(e.code + "\n")
                rc = 1
            else:
                rc = e.code or 0
    return rc, out.getvalue(), err.getvalue()


def _mnist(*argv: str) -> tuple[int, str, str]:
    return _call(mnist.main, list(argv))


def _cifar(*argv: str) -> tuple[int, str, str]:
    return _call(cifar.main, list(argv))


def _process(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _needs_mnist() -> None:
    if not HAS_MNIST:
        pytest.skip(f"real MNIST not found in {DATA}")


_KEEP = tempfile.TemporaryDirectory(prefix="battery_cli_")  # the trained runs every case copies


@functools.cache
def _trained(kind: str) -> Path:
    """An --out folder holding one tiny node run: "finished" (1 epoch) or "partial" (1 of 2 epochs)."""
    _needs_mnist()
    out = Path(_KEEP.name) / kind
    extra = ["--epochs", "1"] if kind == "finished" else ["--epochs", "2", "--stop-after-epoch", "1"]
    rc, _, err = _mnist(*TINY, *extra, "--out", str(out))
    assert rc == 0, err
    return out


def _copy(kind: str, into: str) -> Path:
    out = Path(into) / "out"
    shutil.copytree(_trained(kind), out)
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    """The process id of a process that has ended (what a killed writer leaves in a temp name)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _no_gpu_device() -> str:
    """A CUDA device this machine lacks."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


# --- options: one shared type per kind of value -----------------------------------------------


@BATTERY.cli
def mnist_zero_epochs():
    one_line_error(*_mnist("--epochs", "0")[::2], "--epochs", "expected a positive integer, got 0", "--help")


@BATTERY.cli
def mnist_zero_batch_size():
    one_line_error(*_mnist("--batch-size", "0")[::2], "--batch-size", "positive integer")


@BATTERY.cli
def mnist_zero_learning_rate():
    one_line_error(*_mnist("--lr", "0")[::2], "--lr", "expected a number in (0, 10], got 0")


@BATTERY.cli
def mnist_negative_momentum():
    one_line_error(*_mnist("--momentum", "-0.1")[::2], "--momentum", "[0, 0.999]")


@BATTERY.cli
def mnist_nan_weight_decay():
    one_line_error(*_mnist("--weight-decay", "nan")[::2], "--weight-decay", "finite")


@BATTERY.cli
def mnist_infinite_regularizer_weight():
    one_line_error(*_mnist("--reg-weight", "error=inf")[::2], "--reg-weight", "finite VALUE >= 0", "error=inf")


@BATTERY.cli
def mnist_seed_past_64_bits():
    one_line_error(*_mnist("--seed", str(2**64))[::2], "--seed", "[0, 2**63 - 1]")


@BATTERY.cli
def mnist_zero_tolerance():
    one_line_error(*_mnist("--rtol", "0")[::2], "--rtol", "(0, 1]")


@BATTERY.cli
def mnist_unknown_option():
    one_line_error(*_mnist("--epochz", "3")[::2], "unrecognized arguments: --epochz 3")


@BATTERY.cli
def mnist_run_name_with_a_folder():
    one_line_error(*_mnist("--run-name", "../elsewhere")[::2], "--run-name", "'../elsewhere'")


@BATTERY.cli
def mnist_hidden_run_name():
    one_line_error(*_mnist("--run-name", ".node")[::2], "--run-name", "not starting with '.'")


@BATTERY.cli
def mnist_resume_and_overwrite_together():
    one_line_error(*_mnist("--resume", "--overwrite")[::2], "--overwrite", "not allowed with argument --resume")


@BATTERY.cli
def cifar_zero_learning_rate():
    # lr 0 trained nothing for 40 steps and reported the untrained network
    one_line_error(*_cifar("--lr", "0")[::2], "--lr", "expected a number in (0, 10], got 0")


@BATTERY.cli
def cifar_negative_weight_decay():
    one_line_error(*_cifar("--weight-decay", "-1e-5")[::2], "--weight-decay", "[0, 1]")


@BATTERY.cli
def cifar_infinite_skip_weight():
    one_line_error(*_cifar("--lambda-skip", "inf")[::2], "--lambda-skip", "finite")


@BATTERY.cli
def cifar_dropout_of_one():
    one_line_error(*_cifar("--dropout", "1")[::2], "--dropout", "[0, 1)")


@BATTERY.cli
def cifar_floor_above_learning_rate():
    one_line_error(*_cifar("--lr", "1e-4", "--lr-min", "1e-3")[::2], "--lr-min", "must not exceed --lr")


@BATTERY.cli
def cifar_more_pretraining_than_steps():
    one_line_error(*_cifar("--steps", "3", "--pretrain-steps", "5")[::2], "--pretrain-steps", "must not exceed --steps")


@BATTERY.cli
def cifar_zero_eval_every():
    one_line_error(*_cifar("--eval-every", "0")[::2], "--eval-every", "positive integer")


# --- devices ----------------------------------------------------------------------------------


@BATTERY.cli
def mnist_cuda_without_a_gpu():
    device = _no_gpu_device()
    one_line_error(*_mnist("--device", device)[::2], "--device", repr(device), "cuda")


@BATTERY.cli
def mnist_second_gpu_that_is_not_there():
    count = torch.cuda.device_count()
    one_line_error(*_mnist("--device", f"cuda:{max(count, 1)}")[::2], "--device", f"'cuda:{max(count, 1)}'")


@BATTERY.cli
def cifar_cuda_without_a_gpu():
    one_line_error(*_cifar("--device", _no_gpu_device())[::2], "--device", "cuda")


@BATTERY.cli
def mnist_cpu_has_no_second_index():
    one_line_error(*_mnist("--device", "cpu:1")[::2], "--device", "cpu:1")


@BATTERY.cli
def mnist_unknown_device_type():
    one_line_error(*_mnist("--device", "tpu")[::2], "--device", "'tpu'")


@BATTERY.correct
def cpu_zero_is_the_cpu():
    # cpu:0 names the CPU; stored as cpu, a run started either way resumes the other
    assert mnist.parse_config(["--device", "cpu:0"]).device == "cpu"
    assert cifar.parse_config(["--device", "cpu"]).device == "cpu"


@BATTERY.error
def setup_refuses_a_missing_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    e = raises(lambda: _distributed.setup("cuda:1"), _distributed.DeviceError, "'cuda:1'", "use --device cpu")
    assert isinstance(e, UserError)


# --- data and output folder -----------------------------------------------------------------------


@BATTERY.cli
def mnist_missing_data_folder():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_mnist("--data-dir", f"{d}/nowhere", "--out", f"{d}/out")[::2], "MNIST", "nowhere")


@BATTERY.cli
def cifar_missing_data_folder():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_cifar("--data-dir", f"{d}/nowhere", "--out", f"{d}/out")[::2], "CIFAR-10", "nowhere")


@BATTERY.cli
def mnist_out_is_a_file():
    # found before any data loads or any epoch trains, and the folder asked for is named, not a temporary
    with tempfile.TemporaryDirectory() as d:
        blocker = Path(d) / "results"
        blocker.write_text("not a folder")
        t0 = time.perf_counter()
        rc, _, err = _mnist(*TINY, "--out", str(blocker / "mnist"))
        one_line_error(rc, err, "--out", str(blocker / "mnist"), "choose a writable --out")
        assert ".tmp" not in err and time.perf_counter() - t0 < 5
        assert sorted(p.name for p in Path(d).iterdir()) == ["results"]


@BATTERY.cli
def mnist_checkpoint_dir_is_a_file():
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "ckpt").write_text("")
        rc, _, err = _mnist(*TINY, "--out", f"{d}/out", "--checkpoint-dir", f"{d}/ckpt")
        one_line_error(rc, err, "--checkpoint-dir", "ckpt")


# --- a run already in the folder ------------------------------------------------------------------


@BATTERY.cli
def rerun_over_a_finished_run_is_refused():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        one_line_error(*_mnist(*TINY, "--epochs", "1", "--out", str(out))[::2], "finished run", "--overwrite",
                       f"{NAME}.json")


@BATTERY.correct
def refused_rerun_leaves_the_finished_run_byte_for_byte():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        before = _files(out)
        # even with other options: the default --out of every run is runs/mnist
        rc, _, _ = _mnist(*TINY, "--epochs", "3", "--lr", "0.05", "--out", str(out))
        assert rc == 2 and _files(out) == before


@BATTERY.cli
def rerun_over_an_unfinished_run_is_refused_with_advice():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        one_line_error(*_mnist(*TINY, "--epochs", "2", "--out", str(out))[::2], "unfinished run", "step 1 of 2",
                       "--resume", "--overwrite")


@BATTERY.cli
def leftover_checkpoint_without_record_is_refused():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        (out / f"{NAME}.json").unlink()
        one_line_error(*_mnist(*TINY, "--epochs", "2", "--out", str(out))[::2], "checkpoint", "--resume", "--overwrite")


@BATTERY.cli
def foreign_file_in_place_of_the_record_is_refused():
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"{NAME}.json").write_text('{"my": "notes"}')
        one_line_error(*_mnist(*TINY, "--epochs", "1", "--out", d)[::2], "not a run record", "--overwrite")
        assert json.loads((Path(d) / f"{NAME}.json").read_text()) == {"my": "notes"}


@BATTERY.cli
def cifar_rerun_over_a_finished_run_is_refused():
    # refused before the 50,000 training images load
    with tempfile.TemporaryDirectory() as d:
        record = {"format": _results.FORMAT, "complete": True, "summary": {"steps": 40}, "loop": {"steps_total": 40}}
        _results.write_json(Path(d) / "skipdeq_broyden_seed0.json", record)
        one_line_error(*_cifar("--data-dir", str(DATA), "--out", d)[::2], "finished run", "step 40 of 40",
                       "--overwrite")


@BATTERY.correct
def overwrite_replaces_a_finished_run():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        old = json.loads((out / f"{NAME}.json").read_text())
        rc, stdout, err = _mnist(*TINY, "--epochs", "1", "--seed", "0", "--lr", "0.05", "--out", str(out), "--overwrite")
        assert rc == 0, err
        new = json.loads((out / f"{NAME}.json").read_text())
        assert new["complete"] and new["config"]["lr"] == 0.05 and old["config"]["lr"] == 0.1
        assert new["started"] != old["started"] and "replaced" in stdout
        assert _checkpoint.load_checkpoint(out / "checkpoints" / f"{NAME}.pt")["config"]["lr"] == 0.05


@BATTERY.correct
def overwritten_run_resumes_without_the_flag():
    # --overwrite is how the run started, not part of the experiment: --resume must accept it
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        rc, _, err = _mnist(*TINY, "--epochs", "2", "--stop-after-epoch", "1", "--out", str(out), "--overwrite")
        assert rc == 0, err
        rc, _, err = _mnist(*TINY, "--epochs", "2", "--out", str(out), "--resume")
        assert rc == 0, err
        assert json.loads((out / f"{NAME}.json").read_text())["complete"]


@BATTERY.correct
def resume_of_a_finished_run_changes_nothing():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        before = _files(out)
        rc, stdout, err = _mnist(*TINY, "--epochs", "1", "--out", str(out), "--resume")
        assert rc == 0 and err == "" and "nothing to do" in stdout
        assert _files(out) == before


@BATTERY.cli
def resume_without_a_checkpoint():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_mnist(*TINY, "--epochs", "1", "--out", d, "--resume")[::2], "no checkpoint at",
                       f"{NAME}.pt", "without --resume")


@BATTERY.cli
def resume_with_other_options_names_the_difference():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        one_line_error(*_mnist(*TINY, "--epochs", "2", "--lr", "0.05", "--out", str(out), "--resume")[::2],
                       "lr: checkpoint 0.1 vs now 0.05", "same options")


@BATTERY.cli
def resume_from_a_truncated_checkpoint():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        ckpt = out / "checkpoints" / f"{NAME}.pt"
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
        one_line_error(*_mnist(*TINY, "--epochs", "2", "--out", str(out), "--resume")[::2], "unreadable",
                       "truncated or corrupt", f"{NAME}.pt")


@BATTERY.cli
def resume_from_a_foreign_checkpoint():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        torch.save({"weights": torch.zeros(2)}, out / "checkpoints" / f"{NAME}.pt")
        one_line_error(*_mnist(*TINY, "--epochs", "2", "--out", str(out), "--resume")[::2],
                       "not a checkpoint written by implicit")


@BATTERY.correct
def stale_temporaries_of_the_run_are_removed_and_others_kept():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        # what kill -9 during an atomic write leaves: the partly written file under a hidden name
        gone = _dead_pid()
        stale = [out / f".{NAME}.json.{gone}.tmp", out / "checkpoints" / f".{NAME}.pt.{gone}.tmp"]
        other = out / f".ernode_seed0.json.{gone}.tmp"  # another run's write, possibly in flight
        live = out / f".{NAME}.json.{os.getppid()}.tmp"  # this run's name, but its writer still runs
        for p in (*stale, other, live):
            p.write_bytes(b"partial")
        rc, stdout, err = _mnist(*TINY, "--epochs", "2", "--out", str(out), "--resume")
        assert rc == 0, err
        assert not any(p.exists() for p in stale) and other.read_bytes() == live.read_bytes() == b"partial"
        assert "removed 1 temporary file(s)" in stdout
        assert json.loads((out / f"{NAME}.json").read_text())["complete"]


@BATTERY.correct
def kill_9_mid_run_then_resume_gives_the_uninterrupted_model_bit_for_bit():
    _needs_mnist()
    import random
    import signal

    argv = [*TINY, "--limit-train", "256", "--epochs", "5"]
    with tempfile.TemporaryDirectory() as d:
        whole, killed = Path(d) / "whole", Path(d) / "killed"
        rc, _, err = _mnist(*argv, "--out", str(whole))
        assert rc == 0, err
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "train.mnist", *argv, "--out", str(killed)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpt = killed / "checkpoints" / f"{NAME}.pt"
        deadline = time.monotonic() + 60
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random(0).uniform(0.0, 0.3))  # somewhere in a later epoch or its checkpoint write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
        assert not json.loads((killed / f"{NAME}.json").read_text())["complete"]
        rc, _, err = _mnist(*argv, "--out", str(killed), "--resume")
        assert rc == 0, err
        a = torch.load(whole / "checkpoints" / f"{NAME}.pt", weights_only=False)["model"]
        b = torch.load(ckpt, weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert not list(killed.rglob("*.tmp"))


@BATTERY.correct
def a_checkpoint_older_than_a_config_field_still_resumes():
    # checkpoints written before the integrator option carry no "integrator": their runs resume
    with tempfile.TemporaryDirectory() as d:
        out = _copy("partial", d)
        ckpt = out / "checkpoints" / f"{NAME}.pt"
        payload = torch.load(ckpt, weights_only=False)
        del payload["config"]["integrator"]
        torch.save(payload, ckpt)
        rc, _, err = _mnist(*TINY, "--epochs", "2", "--out", str(out), "--resume")
        assert rc == 0, err
        assert json.loads((out / f"{NAME}.json").read_text())["complete"]


@BATTERY.error
def an_old_continuous_deq_checkpoint_means_tsit5():
    saved = {"model": "deq", "solver": "continuous", "steady_state_test": "batch"}
    _checkpoint.check_config(saved, {**saved, "integrator": "tsit5"}, added=mnist.RESUME_ADDED)
    raises(lambda: _checkpoint.check_config(saved, {**saved, "integrator": "vcab3"}, added=mnist.RESUME_ADDED),
           _checkpoint.ConfigMismatchError, "integrator: checkpoint 'tsit5' vs now 'vcab3'")


@BATTERY.cli
def overwrite_that_fails_to_start_keeps_the_finished_run():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        before = _files(out)
        argv = [a if a != str(DATA) else f"{d}/no-data" for a in TINY]
        rc, _, err = _mnist(*argv, "--epochs", "1", "--out", str(out), "--overwrite")
        one_line_error(rc, err, "no-data")
        assert _files(out) == before


@BATTERY.error
def prepare_refuses_resume_and_overwrite_together():
    with tempfile.TemporaryDirectory() as d:
        paths = _trainer.run_paths(d, "x")
        raises(lambda: _trainer.prepare_run(paths, resume=True, overwrite=True), UserError, "--resume", "--overwrite")


@BATTERY.error
def prepare_refuses_a_run_in_the_way():
    with tempfile.TemporaryDirectory() as d:
        paths = _trainer.run_paths(d, "x")
        _results.write_json(paths.json, {"format": _results.FORMAT, "complete": True})
        e = raises(lambda: _trainer.prepare_run(paths), _trainer.RunInTheWayError, "finished run", "--overwrite")
        assert isinstance(e, UserError)


@BATTERY.error
def atomic_write_names_the_file_not_its_temporary():
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "file").write_text("")
        e = raises(lambda: _checkpoint.atomic_write_bytes(Path(d) / "file" / "r.json", b"{}"), OSError,
                   "cannot write", "r.json")
        assert ".tmp" not in str(e)


# --- records: failures and commands ---------------------------------------------------------------


@BATTERY.failure
def solver_failure_is_one_line_exit_1_and_a_record():
    _needs_mnist()
    with tempfile.TemporaryDirectory() as d:
        argv = ["--preset", "authors", "--model", "node", "--data-dir", str(DATA), "--limit-train", "32",
                "--batch-size", "32", "--limit-test", "32", "--epochs", "1", "--max-steps", "3", "--out", d,
                "--no-progress"]
        rc, _, err = _mnist(*argv)
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and "Traceback" not in err and "max_steps=3" in lines[0]
        failure = json.loads((Path(d) / f"{NAME}.json").read_text())["failure"]
        assert (failure["rank"], failure["world_size"], failure["step"]) == (0, 1, 0)


@BATTERY.correct
def a_failing_peer_rank_writes_the_record_and_rank_0_keeps_it():
    # under torchrun a failing rank's peers wait in a collective until torchrun ends them
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.json"
        record = {"format": _results.FORMAT, "started": "t0", "complete": False,
                  "failure": {"rank": 1, "world_size": 2, "step": 3, "epoch": 0.3, "error": "SolverError: NaN"}}
        _trainer._record_failure(path, record, _distributed.DistContext(rank=1, world_size=2))
        assert json.loads(path.read_text())["failure"]["rank"] == 1
        # rank 0's own error (a broken connection to the dead peer) does not hide the cause
        consequence = {**record, "failure": {**record["failure"], "rank": 0, "error": "DistBackendError: closed"}}
        _trainer._record_failure(path, consequence, _distributed.DistContext(rank=0, world_size=2))
        assert json.loads(path.read_text())["failure"]["error"] == "SolverError: NaN"
        # but a peer's failure from an earlier attempt does
        _trainer._record_failure(path, {**consequence, "started": "t1"}, _distributed.DistContext(rank=0, world_size=2))
        assert json.loads(path.read_text())["failure"]["rank"] == 0


@BATTERY.correct
def torchrun_command_is_reconstructed():
    env = {"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "1",
           "TORCHELASTIC_MAX_RESTARTS": "0"}
    argv = [str(REPO / "train" / "mnist.py"), "--epochs", "1", "--out=/somewhere/else/runs"]
    assert _results.command_line(argv, env) == "torchrun --nproc-per-node 2 -m train.mnist --epochs 1 --out=<runs>"
    env = {**env, "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "3"}
    assert _results.command_line(argv[:1], env) == "torchrun --nnodes 2 --nproc-per-node 4 --max-restarts 3 -m train.mnist"
    # WORLD_SIZE alone (set by hand, not by torchrun) is a plain python command
    assert _results.command_line(argv[:1], {"WORLD_SIZE": "2"}).split()[1:] == ["-m", "train.mnist"]


@BATTERY.correct
def record_holds_no_machine_paths():
    with tempfile.TemporaryDirectory() as d:
        out = _copy("finished", d)
        text = (out / f"{NAME}.json").read_text()
        rec = json.loads(text)
        assert _KEEP.name not in text and str(DATA) not in text and str(REPO) not in text
        assert rec["config"]["out"] == "<finished>" and rec["config"]["data_dir"] == "<data>"


@BATTERY.correct
def debug_shows_the_traceback_too():
    with tempfile.TemporaryDirectory() as d:
        rc, _, err = _mnist(*TINY, "--epochs", "1", "--out", d, "--resume", "--debug")
        assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --resume given")


# --- the other command lines ----------------------------------------------------------------------


@BATTERY.cli
def cifar_table_of_a_missing_folder():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_cifar("--table", f"{d}/absent")[::2], "--table", "results folder not found")


@BATTERY.cli
def report_of_a_missing_folder():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_call(report.main, [f"{d}/absent"])[::2], "results folder not found")


@BATTERY.cli
def authors_stream_out_of_range():
    one_line_error(*_call(exp_mnist_node.main, ["run", "main", "--stream", "2", "--streams", "2"])[::2],
                   "--stream must be in [0, --streams)")


@BATTERY.cli
def authors_timing_without_runs():
    with tempfile.TemporaryDirectory() as d:
        one_line_error(*_call(exp_mnist_node.main, ["time", d, "--repeats", "1"])[::2],
                       "no complete runs with checkpoints")
        one_line_error(*_call(exp_mnist_node.main, ["predict", d, "--checkpoints", d])[::2],
                       "no complete runs with checkpoints")
        one_line_error(*_call(exp_mnist_nsde.main, ["predict", d])[::2], "no complete runs of")


@BATTERY.cli
def process_cuda_without_a_gpu():
    proc = _process("-m", "train.mnist", "--device", _no_gpu_device())
    one_line_error(proc.returncode, proc.stderr, "--device", "cuda")


@BATTERY.cli
def process_resume_without_a_checkpoint():
    with tempfile.TemporaryDirectory() as d:
        proc = _process("-m", "train.cifar", "--out", d, "--resume", "--data-dir", str(DATA))
        one_line_error(proc.returncode, proc.stderr, "no checkpoint at")


test_battery = BATTERY.test()
