"""One JSON record per training run, and the Markdown table and plots built from a folder of them.

A run record (written by ``train._trainer.fit``) holds::

    format, version     "implicit-run", 1
    name                run name (file stem), e.g. "ernode_seed0"
    script, model       e.g. "train.mnist", "ernode"
    baseline            the variant that ratios are taken against, e.g. "node"
    config              the script's full config (plain types)
    seed
    data                descriptions of the train/test sets actually used (subset sizes)
    environment         git commit (+ dirty flag), library versions, hardware
    history             one row per evaluation (epoch/step, losses, accuracies, NFE, regularizers, times)
    summary             the last row's headline numbers + total training time
    paper               the paper's numbers for this variant, or null
    complete            false while a run is in progress (records are rewritten each epoch)
    started             when this process (group) began the run, UTC
    failure             only for a run that stopped on an error: rank, world_size, step, epoch, error

Records hold no absolute path of the machine that wrote them: paths inside the repository are
relative to it, others are reduced to ``<name>`` (see :func:`portable_path`).

``python -m train.report DIR`` turns the records in DIR into ``DIR/table.md`` and
``DIR/curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

import implicit

from train._checkpoint import atomic_write_bytes

FORMAT = "implicit-run"
VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]

# Headline columns: (summary key, header, format). Paper values use the same keys.
COLUMNS = (
    ("train_acc", "train acc %", "{:.2f}"),
    ("test_acc", "test acc %", "{:.2f}"),
    ("train_time_s", "train time s", "{:.1f}"),
    ("predict_s_per_batch", "predict s/batch", "{:.4f}"),
    ("test_nfe", "test NFE", "{:.1f}"),
)
# Ratios baseline/variant: > 1 means the variant is cheaper.
RATIOS = (
    ("test_nfe", "NFE ratio"),
    ("predict_s_per_batch", "predict-time ratio"),
    ("train_time_s", "train-time ratio"),
)


# --- environment --------------------------------------------------------------------------


def git_info(repo: Path = REPO_ROOT) -> dict:
    def run(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def environment(*, world_size: int = 1, device: str = "cpu") -> dict:
    """Git commit, library versions and hardware, for a run record."""
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
    return {
        "git": git_info(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            **{m: _version(m) for m in ("torchvision", "numpy", "torchdiffeq", "torchsde", "scipy")},
            "implicit": implicit.__version__,
        },
        "hardware": {
            "cpu": _cpu_model(),
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": gpu,
            "device": device,
            "world_size": world_size,
            "platform": platform.platform(),
        },
        "command": command_line(),
    }


def command_line(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command that ran, without this machine's paths: a script of the repository run as
    ``python -m pkg.module`` appears so, other paths inside the repository relative to it, paths
    outside it as ``<name>``. Under torchrun the command is torchrun's, its process counts read
    back from the variables it sets (the rendezvous address is the machine's, so it is left out)."""
    argv = list(sys.argv if argv is None else argv)
    env = os.environ if env is None else env
    launcher = torchrun_words(env)
    words = launcher if launcher else [Path(sys.executable).name]
    if argv:
        first = Path(argv[0])
        try:
            rel = first.resolve().relative_to(REPO_ROOT)
        except (ValueError, OSError):
            rel = None
        if rel is not None and rel.suffix == ".py":
            words += ["-m", ".".join(rel.with_suffix("").parts)]
        elif rel is not None:
            words.append(rel.as_posix())
        else:
            words.append(first.name if first.is_absolute() else argv[0])
        argv = argv[1:]
    for a in argv:
        key, eq, value = a.partition("=")
        words.append(f"{key}={portable_path(value)}" if a.startswith("--") and eq else portable_path(a))
    return " ".join(words)


def torchrun_words(env: Mapping[str, str]) -> list[str]:
    """``torchrun [--nnodes N] --nproc-per-node L [--max-restarts R]`` for a process torchrun
    started (it sets TORCHELASTIC_RUN_ID and LOCAL_WORLD_SIZE), else []."""
    if "TORCHELASTIC_RUN_ID" not in env or "LOCAL_WORLD_SIZE" not in env:
        return []

    def number(name: str) -> int | None:
        try:
            return int(env[name])
        except (KeyError, ValueError):
            return None

    local = number("LOCAL_WORLD_SIZE") or 1
    nodes = number("GROUP_WORLD_SIZE") or max(1, (number("WORLD_SIZE") or local) // local)
    words = ["torchrun"]
    if nodes > 1:
        words += ["--nnodes", str(nodes)]
    words += ["--nproc-per-node", str(local)]
    if (number("TORCHELASTIC_MAX_RESTARTS") or 0) > 0:
        words += ["--max-restarts", str(number("TORCHELASTIC_MAX_RESTARTS"))]
    return words


def portable_path(text: str) -> str:
    """An absolute path inside the repository made relative to it; one outside it reduced to
    ``<name>``; anything else unchanged."""
    p = Path(text)
    if not p.is_absolute():
        return text
    try:
        return p.resolve().relative_to(REPO_ROOT).as_posix()
    except (ValueError, OSError):
        return f"<{p.name}>"  # outside the repository: keep the name only


def file_name(path: str) -> str:
    """The file name of a path as a record stores it: for one outside the repository,
    :func:`portable_path` kept only ``<name>``."""
    name = Path(path).name
    return name[1:-1] if name.startswith("<") and name.endswith(">") else name


def portable_config(plain: Mapping[str, Any]) -> dict:
    """A plain config with :func:`portable_path` applied to its string values, for a record that
    is committed or shared (the checkpoint keeps the real paths)."""
    return {k: portable_path(v) if isinstance(v, str) else v for k, v in plain.items()}


def portable_text(text: str) -> str:
    """Free text (an error message) with the repository's absolute path cut off its paths."""
    return text.replace(str(REPO_ROOT) + os.sep, "").replace(str(REPO_ROOT), ".")


# --- records ------------------------------------------------------------------------------


def _field_order(cls: type) -> list[str]:
    """A dataclass's field names, those its own class declares first, then its bases' (a config
    extending train._run.RunOptions reads model first, as the records did before that base)."""
    import dataclasses

    place = {}
    for level, klass in enumerate(cls.__mro__):
        for i, name in enumerate(klass.__dict__.get("__annotations__", {})):
            place.setdefault(name, (level, i))
    return sorted((f.name for f in dataclasses.fields(cls)), key=lambda n: place.get(n, (len(cls.__mro__), 0)))


def to_plain(obj: Any) -> Any:
    """Config values as JSON types (Paths and enums become strings, tuples lists)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: to_plain(getattr(obj, name)) for name in _field_order(type(obj))}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/Inf; a missing number reads as null
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_json_and_summary(out: Path, result: Mapping, markdown: str) -> None:
    """A benchmark's JSON at ``out`` and its Markdown summary beside it (same stem, ``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown.encode())


def benchmark_main(argv: list[str] | None, *, parse: Callable, run: Callable, render: Callable[[dict], str]) -> int:
    """A benchmark's command: ``parse(argv)`` gives a config with ``out``; ``run(config)`` measures;
    the JSON and the Markdown ``render`` makes of it are written side by side."""
    cfg = parse(argv)
    result = run(cfg)
    write_json_and_summary(cfg.out, result, render(result))
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.md')}")
    return 0


def write_json(path: str | os.PathLike, record: Mapping) -> None:
    """Write ``record`` as indented JSON, atomically."""
    text = json.dumps(to_plain(record), indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def load_runs(folder: str | os.PathLike) -> list[dict]:
    """All run records (``*.json`` with format "implicit-run") in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder not found: {str(folder)!r}")
    runs = []
    for p in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(p)!r} is not valid JSON ({e})") from None
        if isinstance(rec, dict) and rec.get("format") == FORMAT:
            rec["_path"] = str(p)
            runs.append(rec)
    return runs


# --- table --------------------------------------------------------------------------------


def format_cell(value, spec: str, missing: str = "–") -> str:
    """A table cell: ``value`` by ``spec`` (a format spec such as ".2f", or a template such as
    "{:.2f}"), or ``missing`` where there is no value (None, or a float that is not finite)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return spec.format(value) if "{" in spec else format(value, spec)


_ALIGN = {"l": "---", "r": "---:"}


def table_lines(header: Sequence[str], rows: Iterable[Sequence[object]],
                align: str | Sequence[str] | None = None) -> list[str]:
    """A Markdown table as lines: ``header``, the separator, one line per row. ``align`` is one
    letter per column, "l" (left, the default) or "r" (right), e.g. "lrl". Cells are written with
    ``str`` (format numbers first, e.g. with :func:`format_cell`); an empty cell is written "| |",
    as the committed tables have it."""
    letters = ["l"] * len(header) if align is None else list(align)
    unknown = [a for a in letters if a not in _ALIGN]
    if unknown:
        raise ValueError(f"unknown alignment {unknown[0]!r} (expected 'l' or 'r')")
    if len(letters) != len(header):
        raise ValueError(f"align has {len(letters)} letter(s) for {len(header)} column(s)")

    def line(cells) -> str:
        return "|" + "|".join(f" {c} " if c != "" else " " for c in map(str, cells)) + "|"

    lines = [line(header), "|" + "|".join(_ALIGN[a] for a in letters) + "|"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cell(s), the header {len(header)}")
        lines.append(line(row))
    return lines


def _label(run: dict) -> str:
    """The model, with the regularizer weights the run overrode and Jacobian regularization, so runs
    of one model at several weights stay apart in the tables."""
    config = run.get("config") or {}
    extra = [f"λ_{name} {weight:g}" for name, weight in config.get("reg_weights") or ()]
    if config.get("jacobian_reg"):
        extra.append("JR")
    return run.get("model", "?") + (f" ({', '.join(extra)})" if extra else "")


def _ordered(runs: list[dict], order: Iterable[str] | None) -> list[dict]:
    rank = {name: i for i, name in enumerate(order or ())}
    return sorted(runs, key=lambda r: (r.get("script", ""), rank.get(r.get("model"), len(rank)), r.get("model", ""), r.get("seed", 0)))


def markdown_table(runs: list[dict], *, order: Iterable[str] | None = None) -> str:
    """A Markdown table of headline numbers per run, the paper's numbers beside ours (in
    parentheses) when the record carries them, and ratios baseline/variant measured in the same
    set of runs (same script, same seed)."""
    if not runs:
        return "_no runs_\n"
    runs = _ordered(runs, order)
    header = ["model", "seed", "epochs", *[h for _, h, _ in COLUMNS], *[h for _, h in RATIOS]]
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        paper = r.get("paper") or {}
        base = _baseline_of(r, runs)
        cells = [_label(r) + ("" if r.get("complete", True) else " (incomplete)"),
                 str(r.get("seed", "")), format_cell(s.get("epochs"), "{:g}")]
        for key, _, spec in COLUMNS:
            cell = format_cell(s.get(key), spec)
            if paper.get(key) is not None:
                cell += f" ({format_cell(paper[key], spec)})"
            cells.append(cell)
        for key, _ in RATIOS:
            ratio = None
            if base is not None:
                b, v = (base.get("summary") or {}).get(key), s.get(key)
                if b is not None and v:
                    ratio = b / v
            cell = format_cell(ratio, "{:.2f}")
            pb, pv = (_paper_of(base) or {}).get(key), paper.get(key)
            if pb is not None and pv:
                cell += f" ({pb / pv:.2f})"
            cells.append(cell)
        rows.append(cells)
    notes = ["", "Numbers in parentheses are the paper's. Ratios are baseline / variant (above 1: the "
             "variant is cheaper), computed between runs of the same script and seed."]
    return "\n".join(table_lines(header, rows) + notes) + "\n"


def median_table(runs: list[dict], *, order: Iterable[str] | None = None) -> str:
    """Per model (and script), the median over its complete runs (seeds) of each headline number,
    and ratios of the baseline's medians to the variant's. Empty when no model has several runs."""
    import statistics

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in _ordered([r for r in runs if r.get("complete", True)], order):
        groups.setdefault((r.get("script", ""), _label(r)), []).append(r)
    if not any(len(g) > 1 for g in groups.values()):
        return ""

    def med(group, key):
        values = [(x.get("summary") or {}).get(key) for x in group]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    header = ["model", "runs (seeds)", *[h for _, h, _ in COLUMNS], *[h for _, h in RATIOS]]
    rows = []
    for (script, model), group in groups.items():
        base = next((g for (sc, _), g in groups.items() if sc == script and g[0].get("model") == group[0].get("baseline")
                     and _jr(g[0]) == _jr(group[0]) and not (g[0].get("config") or {}).get("reg_weights")), None)
        cells = [model, f"{len(group)} ({', '.join(str(x.get('seed')) for x in group)})"]
        cells += [format_cell(med(group, key), spec) for key, _, spec in COLUMNS]
        for key, _ in RATIOS:
            b, v = (med(base, key) if base else None), med(group, key)
            cells.append(format_cell(b / v if b is not None and v else None, "{:.2f}"))
        rows.append(cells)
    return "\n".join(table_lines(header, rows)) + "\n"


def _paper_of(run: dict | None) -> dict | None:
    return None if run is None else run.get("paper")


def _jr(run: dict) -> bool:
    return bool((run.get("config") or {}).get("jacobian_reg"))


def _baseline_of(run: dict, runs: list[dict]) -> dict | None:
    """The baseline model's run of the same script and seed, with Jacobian regularization as ``run``'s."""
    base = run.get("baseline")
    for other in runs:
        if (other.get("model") == base and other.get("script") == run.get("script")
                and other.get("seed") == run.get("seed") and _jr(other) == _jr(run)):
            return other
    return None


# --- plots --------------------------------------------------------------------------------


def plot_curves(runs: list[dict], path: str | os.PathLike, *, order: Iterable[str] | None = None,
                x: str = "epoch", name: Callable[[dict], str] | None = None) -> None:
    """Test NFE and test accuracy against ``x`` (a history key: "epoch" or "step"), one line per
    run, saved as a PNG. ``name`` gives a run's variant (default: its model): one colour per
    variant, one line style per seed, so the seeds of a variant read as one family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = name or (lambda r: str(r.get("model")))
    runs = _ordered(runs, order)
    variants = list(dict.fromkeys(name(r) for r in runs))
    seeds = list(dict.fromkeys(r.get("seed") for r in runs))
    colours = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for r in runs:
        hist = r.get("history") or []
        xs = [h.get(x) for h in hist]
        style = dict(color=colours(variants.index(name(r)) % colours.N),
                     linestyle=styles[seeds.index(r.get("seed")) % len(styles)], marker="o", markersize=3)
        label = f"{name(r)} (seed {r.get('seed')})"
        axes[0].plot(xs, [h.get("test_nfe") for h in hist], label=label, **style)
        axes[1].plot(xs, [h.get("test_acc") for h in hist], label=label, **style)
    axes[0].set(xlabel=x, ylabel="test NFE (forward, per test batch)", title="Test NFE")
    axes[1].set(xlabel=x, ylabel="test accuracy %", title="Test accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_group_bars(groups: Mapping[str, Mapping[str, dict]], variants: Iterable[str],
                    path: str | os.PathLike) -> None:
    """Test NFE (log scale) and test accuracy at the end of each run as bars: one cluster per group
    of runs (``groups[name][variant]`` is a record), one bar per variant, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, variants = list(groups), list(variants)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(variants)
    for i, m in enumerate(variants):
        xs = [k + i * width for k in range(len(names))]
        summaries = [(groups[g].get(m) or {}).get("summary") or {} for g in names]
        axes[0].bar(xs, [sm.get("test_nfe") or 0 for sm in summaries], width, label=m)
        axes[1].bar(xs, [sm.get("test_acc") or 0 for sm in summaries], width, label=m)
    for ax, title in zip(axes, ("test NFE per test batch", "test accuracy %")):
        # the tick under the middle of each cluster
        ax.set_xticks([k + (len(variants) - 1) * width / 2 for k in range(len(names))], names, rotation=20, fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_yscale("log")
    axes[1].set_ylim(80, 100)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: str | os.PathLike, *, order: Iterable[str] | None = None, title: str | None = None) -> tuple[Path, Path]:
    """Write ``table.md`` and ``curves.png`` into ``folder`` from its run records."""
    folder = Path(folder)
    runs = load_runs(folder)
    if not runs:
        raise ValueError(f"no run records (*.json with format {FORMAT!r}) in {str(folder)!r}")
    md = folder / "table.md"
    png = folder / "curves.png"
    head = f"# {title or folder.name}\n\nGenerated by `python -m train.report {folder}` from {len(runs)} run records.\n\n"
    text = head + "## Every run\n\n" + markdown_table(runs, order=order)
    medians = median_table(runs, order=order)
    if medians:
        text += "\n## Median over seeds\n\n" + medians
    atomic_write_bytes(md, text.encode())
    plot_curves(runs, png, order=order)
    return md, png
