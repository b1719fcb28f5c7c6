"""python -m train.reproduce: every registered table renders from the committed records to the
committed Markdown byte for byte, and a table whose runs are all there trains nothing. No training:
the renders run in a copy of the committed records (results/ is never written)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from train import cifar, exp_cifar, mnist, reproduce
from train._results import REPO_ROOT, portable_config, to_plain

RENDERED = [t for t in reproduce.TABLES.values() if not t.measured]


def _committed_records() -> list[str]:
    # only what is committed: a run in progress may be writing records into results/ right now
    out = subprocess.run(["git", "ls-files", "results"], capture_output=True, text=True, cwd=REPO_ROOT)
    if out.returncode != 0:
        pytest.skip("needs the git checkout to tell committed records from others")
    return [f for f in out.stdout.split() if f.endswith(".json")]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """A copy of the repository's committed records (nothing else), to render in."""
    root = tmp_path_factory.mktemp("repo")
    # a table written into a README replaces a block of it, so that README comes along
    in_place = [f"{t.folder}/{t.markdown}" for t in RENDERED if t.markdown == "README.md"]
    for f in _committed_records() + in_place:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / f, root / f)
    return root


def _no_training(*args, **kwargs):
    raise AssertionError(f"a run was started: {args}")


@pytest.mark.parametrize("table", RENDERED, ids=[t.name for t in RENDERED])
def test_renders_committed_markdown_byte_for_byte(table, records):
    md = reproduce.render(table, root=records)
    committed = REPO_ROOT / md.relative_to(records)
    assert md.read_bytes() == committed.read_bytes(), f"{committed} differs from its rendering"


def test_every_committed_table_is_registered_or_said_not_to_be():
    # a generated Markdown file says so under its heading (READMEs are prose)
    registered = {f"{t.folder}/{t.markdown}" for t in reproduce.TABLES.values()}
    out = subprocess.run(["git", "ls-files", "results"], capture_output=True, text=True, cwd=REPO_ROOT)
    generated = {f for f in out.stdout.split() if f.endswith(".md")
                 and "Generated" in "".join((REPO_ROOT / f).read_text().splitlines(keepends=True)[:4])}
    assert generated - registered == set(), generated - registered


def test_dry_run_of_a_complete_table_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(reproduce.subprocess, "run", _no_training)
    before = (REPO_ROOT / "results/cifar/steps300/table.md").read_bytes()
    assert reproduce.main(["cifar_steps300", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 run(s) complete, 0 to run" in out and "python -m" not in out
    assert (REPO_ROOT / "results/cifar/steps300/table.md").read_bytes() == before


def test_complete_table_renders_without_training(monkeypatch, records, capsys):
    monkeypatch.setattr(reproduce.subprocess, "run", _no_training)
    table = reproduce.TABLES["mnist_longer"]
    assert reproduce.reproduce(table, root=records) == 0
    assert (records / "results/mnist/longer/table.md").read_bytes() == \
        (REPO_ROOT / "results/mnist/longer/table.md").read_bytes()


def test_a_measured_table_without_its_checkpoints_says_so_before_measuring(monkeypatch, records, capsys):
    # the copy of the records holds no checkpoint: nothing is trained or measured, the error names what is
    # missing, and the dry run gives commands that train into a scratch folder, not over the committed records
    from train._errors import UserError

    monkeypatch.setattr(reproduce.subprocess, "run", _no_training)
    table = reproduce.TABLES["mnist_deq_steady_state_probe"]
    with pytest.raises(UserError, match=r"needs 3 checkpoint\(s\) that are not here \(runs/ckpt/"
                                        r"continuous_full10ep_retrained/deq_seed0.pt, .*--dry-run prints the commands"):
        reproduce.reproduce(table, root=records)
    assert reproduce.reproduce(table, root=records, dry_run=True) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("python -m train.mnist")]
    assert len(commands) == 3
    for command, job in zip(commands, reproduce.jobs(table, root=records)):
        assert f"--out runs/retrained/{table.name} " in command and f"--checkpoint-dir {job.checkpoint.parent} " in command
        assert job.record.parent.as_posix() not in command.split("--out ")[1].split()[0]


def test_missing_checkpoints_are_told_before_any_training(monkeypatch, tmp_path):
    # one record missing (it would train) and the finished runs' checkpoints gone: refused before training
    from train._errors import UserError

    monkeypatch.setattr(reproduce.subprocess, "run", _no_training)
    table = reproduce.TABLES["mnist_deq_steady_state_probe"]
    group = "results/mnist_deq/continuous_full10ep_retrained"
    (tmp_path / group).mkdir(parents=True)
    for name in ("deq_seed0", "skipdeq_seed0"):
        shutil.copy(REPO_ROOT / group / f"{name}.json", tmp_path / group)
    with pytest.raises(UserError, match=r"needs 2 checkpoint\(s\)"):
        reproduce.reproduce(table, root=tmp_path)
    # with the two checkpoints in place nothing is missing, and the third run is the one to train
    every = reproduce.jobs(table, root=tmp_path)
    for job in every[:2]:
        (tmp_path / job.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / job.checkpoint).touch()
    assert reproduce.missing_checkpoints(table, every, root=tmp_path) == ([], [])
    assert [j.status for j in every] == ["complete", "complete", "missing"]


def test_missing_and_unfinished_runs(tmp_path):
    """A missing record is trained, an unfinished one resumed from its checkpoint (or trained anew
    when there is none), a complete one skipped."""
    table = reproduce.TABLES["cifar_steps300_integrators"]
    folder = tmp_path / table.folder
    folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / table.folder / "deq_discrete_seed0.json", folder)
    jobs = {j.record.name: j for j in reproduce.jobs(table, root=tmp_path)}
    assert jobs["deq_discrete_seed0.json"].status == "complete"
    missing = jobs["deq_continuous_vcab3_seed0.json"]
    assert missing.status == "missing" and missing.argv[:2] == ["-m", "train.cifar"]
    assert {"--integrator", "vcab3", "--run-name", "deq_continuous_vcab3_seed0"} <= set(missing.argv)
    assert not {"--resume", "--overwrite"} & set(missing.argv)

    rec = json.loads((folder / "deq_discrete_seed0.json").read_text())
    (folder / "deq_discrete_seed0.json").write_text(json.dumps({**rec, "complete": False}))
    (job,) = [j for j in reproduce.jobs(table, root=tmp_path) if j.record.name == "deq_discrete_seed0.json"]
    assert job.status == "unfinished" and job.argv[-1] == "--overwrite"
    ckpt = tmp_path / table.checkpoints / "deq_discrete_seed0.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (job,) = [j for j in reproduce.jobs(table, root=tmp_path) if j.record.name == "deq_discrete_seed0.json"]
    assert job.argv[-1] == "--resume"


def test_seeds_and_paper_budget_name_their_runs():
    table = reproduce.TABLES["mnist_longer"]
    jobs = reproduce.jobs(table, seeds=(3,), budget="paper")
    assert [j.record.as_posix() for j in jobs] == [f"results/mnist/longer_paper/{m}_seed3.json"
                                                   for m in ("node", "ernode", "srnode")]
    argv = jobs[0].argv
    assert argv[argv.index("--preset") + 1] == "paper" and "--epochs" not in argv


# fields a record of older code lacks (None) are read as what that code did; the two vcab3 JR
# seed-1 runs were started without --threads 1 --no-progress; records of discrete CIFAR solves
# once carried the (unused) integrator
_KNOWN = {("threads", 0), ("progress", None), ("integrator", "vcab3")}


# an absolute path starting a word of a string: "/work/...", "--out=/tmp/...", "a:/home/...", a line of
# its own; a "/" inside a relative path or a formula ("results/bench", "1/2", "max(1, |S|)/10.6") is none
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s\"'=(`:,])|(?<=file://))/(?:[\w.-]+/)*[\w.-]+", re.M)


def _strings(value):
    """Every string of a decoded JSON value, keys included (escaped newlines and tabs decoded)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_committed_records_hold_no_path_of_the_machine_that_wrote_them():
    # records are shared: paths inside the repository are relative to it, others reduced to <name>
    # (train._results.portable_path); the records written before that rule were rewritten by it
    found = {}
    for f in _committed_records():
        hits = [h for text in _strings(json.loads((REPO_ROOT / f).read_text())) for h in _ABSOLUTE.findall(text)]
        if hits:
            found[f] = hits[:3]
    assert not found, found


@pytest.mark.parametrize("text", ["python /work/main/train/mnist.py", "--out=/tmp/x", "PATH=a:/home/u/bin",
                                  "/data", "first line\n/work/x", "a,/root/y", "file:///tmp/z"])
def test_the_absolute_path_pattern_finds(text):
    assert _ABSOLUTE.findall(text), text


@pytest.mark.parametrize("text", ["results/mnist_deq/continuous", "1/2", "<data>", "max(1, |S|)/10.6",
                                  "EEst·dt/10.6", "https://example.org"])
def test_the_absolute_path_pattern_leaves(text):
    assert not _ABSOLUTE.findall(text), text


@pytest.mark.parametrize("table", [t for t in reproduce.TABLES.values() if not t.bench],
                         ids=[t.name for t in reproduce.TABLES.values() if not t.bench])
def test_commands_give_the_committed_records_config(table):
    parse = {"train.mnist": mnist.parse_config, "train.cifar": cifar.parse_config}[table.script]
    for job in reproduce.jobs(table):
        assert "discrete" not in job.argv, job.argv  # the commands use today's names (issue #16)
        config = portable_config(to_plain(parse([a for a in job.argv[2:] if a not in ("--resume", "--overwrite")])))
        path = REPO_ROOT / job.record
        if not path.is_file():
            continue
        old = json.loads(path.read_text())["config"]
        if table.script == "train.cifar" and "solver" in old:
            # the CIFAR records say "discrete" for broyden, its name before issue #16
            old = {**old, "solver": exp_cifar.record_solver(old)}
        for key in set(old) | set(config):
            if key in ("out", "checkpoint_dir", "data_dir", "run_name", "resume", "overwrite"):
                continue
            if old.get(key) != config.get(key):
                assert old.get(key) is None or (key, old.get(key)) in _KNOWN, (job.record, key, old.get(key),
                                                                              config.get(key))
    for budget in ("paper",) if table.paper is not None else ():
        for job in reproduce.jobs(table, budget=budget):
            parse(job.argv[2:])


def test_user_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["no_such_table"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "unknown table 'no_such_table'; known: mnist," in err and "bench_steady" in err
    assert reproduce.main(["bench_ode", "--budget", "paper"]) == 2
    assert capsys.readouterr().err == "error: table 'bench_ode' is a benchmark: it has no seeds and no --budget paper\n"
    assert reproduce.main(["mnist_predict_timing", "--budget", "paper", "--dry-run"]) == 2
    assert "has no paper schedule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(["mnist", "--seeds", "0,x"])
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_list_names_every_table(capsys):
    assert reproduce.main(["--list"]) == 0
    out = capsys.readouterr().out
    for t in reproduce.TABLES.values():
        assert f"{t.folder}/{t.markdown}" in out and t.name in out
    assert re.search(r"^mnist_longer +results/mnist/longer/table\.md +3/3$", out, re.M)
