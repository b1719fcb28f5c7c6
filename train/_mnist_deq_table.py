"""The combined MNIST FC DEQ table (all solver / Jacobian-regularization groups), the paper's beside ours.

Written by ``python -m train.reproduce mnist_deq`` (which names the groups and how each run was
trained) into results/mnist_deq/table.md + nfe.png. The per-group records live in
``<folder>/<group>/*.json`` (written by train.mnist). The paper (Pal et al. 2022) reports the
continuous solve only, without / with Jacobian regularization; its numbers stand in parentheses in
the continuous rows. Moved here from results/mnist_deq/make_table.py, unchanged but for taking the
folder and its groups as arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from models.mnist_deq import VARIANTS
from train.exp_mnist_deq import LAMBDA_SKIP, PAPER, PAPER_JR

from train._checkpoint import atomic_write_bytes
from train._results import plot_group_bars, table_lines


def _fmt(v, spec):
    return "–" if v is None else spec.format(v)


SEEDED = "_seeds_25ep"  # groups holding several seeds and skip-loss weights
DEFAULT_SKIP_WEIGHT = LAMBDA_SKIP  # the paper's λ_skip, train.mnist's default for skipdeq / skipregdeq


def load(folder: Path, names: Iterable[str]):
    """(groups, seeded): one record per model for the one-seed groups; (model, λ_skip, seed) keys
    for the several-seed groups. Only the groups ``names`` count: a group with a table of its own
    (the VCAB3 ones) stays out of this one."""
    names = set(names)
    groups, seeded = {}, {}
    for p in sorted(folder.glob("*/*.json")):
        rec = json.loads(p.read_text())
        if rec.get("format") != "implicit-run" or rec.get("script") != "train.mnist" or p.parent.name not in names:
            continue
        g = p.parent.name
        if g.endswith(SEEDED):
            seeded.setdefault(g, {})[(rec["model"], skip_weight(rec), rec["config"]["seed"])] = rec
        else:
            groups.setdefault(g, {})[rec["model"]] = rec
    return groups, seeded


def skip_weight(rec):
    if rec["model"] == "deq":
        return None
    return dict(map(tuple, rec["config"].get("reg_weights") or [])).get("skip", DEFAULT_SKIP_WEIGHT)


def _mean_sd(xs):
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else None
    return m, sd


def _pm(xs, spec):
    if not xs:
        return "–"
    m, sd = _mean_sd(xs)
    return spec.format(m) + ("" if sd is None else " ± " + spec.replace("+", "").format(sd))


def _seeds_cell(runs, m, w, done) -> str:
    """Finished seeds, then any seed whose run failed (its record says where)."""
    failed = [f"seed {sd} failed at epoch {r['failure']['epoch']:.1f}" for (mm, ww, sd), r in sorted(runs.items())
              if (mm, ww) == (m, w) and r.get("failure")]
    return ", ".join([",".join(map(str, sorted(done))) or "none finished"] + failed)


def seeded_paper_table(seeded, weight) -> str:
    """The paper's table shape (continuous, without / with JR) from the several-seed groups at one
    skip-loss weight: means over the seeds that finished, ratios paired by seed, paper in parentheses."""
    names = {"deq": "vanilla DEQ", "skipdeq": "Skip DEQ", "skipregdeq": "Skip DEQ V2 (SkipReg)"}
    plain, jr = f"continuous{SEEDED}", f"continuous_jr{SEEDED}"
    head = ["model", "seeds (no JR / JR)", "test % (no JR / JR)", "test NFE (no JR / JR)",
            "NFE ratio vanilla/variant (no JR / JR)", "train min (no JR / JR)", "predict s/batch (no JR / JR)"]
    rows = []
    for m in VARIANTS:
        cells = {k: [] for k in head[1:]}
        for g, paper_src in ((plain, PAPER), (jr, PAPER_JR)):
            runs = seeded.get(g, {})
            w = None if m == "deq" else weight
            done = {sd: r["summary"] for (mm, ww, sd), r in runs.items() if (mm, ww) == (m, w) and r.get("complete")}
            base = {sd: r["summary"] for (mm, ww, sd), r in runs.items() if mm == "deq" and r.get("complete")}
            paper, pbase = paper_src[m], paper_src["deq"]

            def mean(key, spec, scale=1.0):
                return _fmt(sum(v[key] for v in done.values()) / len(done) * scale, spec) if done else "–"

            ratio = [base[sd]["test_nfe"] / done[sd]["test_nfe"] for sd in done if sd in base]
            cells[head[1]].append(_seeds_cell(runs, m, w, done))
            cells[head[2]].append(f"{_pm([v['test_acc'] for v in done.values()], '{:.2f}')} ({paper['test_acc']:.2f})")
            cells[head[3]].append(f"{_pm([v['test_nfe'] for v in done.values()], '{:.1f}')} ({paper['test_nfe']:.1f})")
            cells[head[4]].append(f"{_pm(ratio, '{:.2f}') if ratio else '–'} ({pbase['test_nfe'] / paper['test_nfe']:.2f})")
            cells[head[5]].append(f"{mean('train_time_s', '{:.1f}', 1 / 60)} ({paper['train_time_s'] / 60:.2f})")
            cells[head[6]].append(f"{mean('predict_s_per_batch', '{:.4f}')} ({paper['predict_s_per_batch']:.3f})")
        rows.append([names[m]] + [" / ".join(v) for v in cells.values()])
    out = [f"\n**continuous, λ_skip = {weight:g}** (groups `{plain}`, `{jr}`; mean over seeds, paper in parentheses)\n",
           *table_lines(head, rows)]
    return "\n".join(out) + "\n"


def seeded_table(seeded, share) -> str:
    """Mean ± standard deviation over seeds; ratios and accuracy changes pair each run with the
    vanilla run of the same group and seed. ``share``: the numbers of ``python -m train.exp_mnist_deq
    share`` by run (results/mnist_deq/implicit_share.json)."""
    head = ["group", "model", "λ_skip", "seeds", "test %", "Δ acc vs vanilla (pt)", "test NFE / batch of 32",
            "NFE ratio vanilla/variant", "active units at z*", "‖relu(W₁z*+b₁)‖ / ‖z*‖", "train min",
            "predict s/batch"]
    rows = []
    for g, runs in seeded.items():
        keys = sorted({(m, w) for m, w, _ in runs}, key=lambda k: (VARIANTS.index(k[0]), k[1] or 0))
        for m, w in keys:
            done = {sd: r for (mm, ww, sd), r in runs.items() if (mm, ww) == (m, w) and r.get("complete")}
            if not done and not any((mm, ww) == (m, w) and r.get("failure") for (mm, ww, _), r in runs.items()):
                continue
            base = {sd: runs.get(("deq", None, sd)) for sd in done}
            paired = [sd for sd in done if base[sd] and base[sd].get("complete")]
            sm = {sd: r["summary"] for sd, r in done.items()}
            acc = [sm[sd]["test_acc"] for sd in done]
            dacc = [sm[sd]["test_acc"] - base[sd]["summary"]["test_acc"] for sd in paired]
            ratio = [base[sd]["summary"]["test_nfe"] / sm[sd]["test_nfe"] for sd in paired]
            stems = {sd: f"{g}/{Path(r['config']['run_name']).name}" for sd, r in done.items()}
            active = [share[stems[sd]]["active"] for sd in done if stems[sd] in share]
            frac = [share[stems[sd]]["share"] for sd in done if stems[sd] in share]
            rows.append([
                g, m, "–" if w is None else f"{w:g}", _seeds_cell(runs, m, w, done),
                _pm(acc, "{:.2f}"), _pm(dacc, "{:+.2f}") if m != "deq" else "–",
                _pm([sm[sd]["test_nfe"] for sd in done], "{:.1f}"),
                _pm(ratio, "{:.2f}") if m != "deq" else "–",
                _pm(active, "{:.3f}"), _pm(frac, "{:.3f}"),
                _pm([sm[sd]["train_time_s"] / 60 for sd in done], "{:.1f}"),
                _pm([sm[sd]["predict_s_per_batch"] for sd in done], "{:.4f}"),
            ])
    return "\n".join(table_lines(head, rows)) + "\n"


def tradeoff_table(seeded, share) -> str:
    """One row per variant and skip-loss weight: what the weight buys (NFE ratio against the
    vanilla run of the same seed), what it costs (accuracy change, same pairing), and how much of
    z* the implicit term still carries, without / with JR; mean over the seeds that finished."""
    plain, jr = f"continuous{SEEDED}", f"continuous_jr{SEEDED}"
    head = ["model", "λ_skip", "seeds (no JR / JR)", "NFE ratio vanilla/variant (no JR / JR)",
            "Δ acc vs vanilla, pt (no JR / JR)", "‖relu(W₁z*+b₁)‖ / ‖z*‖ (no JR / JR)"]
    vanilla = [_pm([share[k]["share"] for k in share if k.startswith(f"{g}/deq_seed")], "{:.3f}")
               for g in (plain, jr)]
    rows = [["vanilla DEQ", "–", "–", "1 / 1", "0 / 0", " / ".join(vanilla)]]
    weights = sorted({k[1] for runs in seeded.values() for k in runs if k[1] is not None})
    for m in VARIANTS[1:]:
        for w in weights:
            cells = [[], [], [], []]
            for g in (plain, jr):
                runs = seeded.get(g, {})
                done = {sd: r for (mm, ww, sd), r in runs.items() if (mm, ww) == (m, w) and r.get("complete")}
                base = {sd: runs.get(("deq", None, sd)) for sd in done}
                paired = [sd for sd in done if base[sd] and base[sd].get("complete")]
                cells[0].append(",".join(map(str, sorted(done))) or "–")
                cells[1].append(_pm([base[sd]["summary"]["test_nfe"] / done[sd]["summary"]["test_nfe"]
                                     for sd in paired], "{:.2f}"))
                cells[2].append(_pm([done[sd]["summary"]["test_acc"] - base[sd]["summary"]["test_acc"]
                                     for sd in paired], "{:+.2f}"))
                stems = [f"{g}/{Path(r['config']['run_name']).name}" for r in done.values()]
                cells[3].append(_pm([share[k]["share"] for k in stems if k in share], "{:.3f}"))
            if any(c != "–" for c in cells[0]):
                rows.append([m, f"{w:g}"] + [" / ".join(c) for c in cells])
    return "\n".join(table_lines(head, rows)) + "\n"


def _solver_label(config) -> str:
    """continuous runs name their steady-state test; records from before the option existed
    stopped when every sample passed (per-sample)."""
    if config["solver"] != "continuous":
        return config["solver"]
    return f"continuous ({config.get('steady_state_test') or 'per_sample'})"


def paper_table(groups, suffix="_25ep") -> str:
    """The paper's MNIST FC table shape for the full-schedule groups: rows = variants, columns =
    without / with JR, ours then the paper's; plus the same for the Newton–Krylov groups."""
    names = {"deq": "vanilla DEQ", "skipdeq": "Skip DEQ", "skipregdeq": "Skip DEQ V2 (SkipReg)"}
    out = []
    for solver, plain, jr in (("continuous", f"continuous{suffix}", f"continuous_jr{suffix}"),
                              ("Newton–Krylov", f"newton{suffix}", f"newton_jr{suffix}")):
        if plain not in groups and jr not in groups:
            continue
        out.append(f"\n**{solver}** (groups `{plain}`, `{jr}`; ours, paper in parentheses where it reports this solver)\n")
        head = ["model", "test % (no JR / JR)", "test NFE (no JR / JR)", "NFE ratio vanilla/variant (no JR / JR)",
                "train min (no JR / JR)", "predict s/batch (no JR / JR)"]
        rows = []
        for m in VARIANTS:
            cells = {k: [] for k in head[1:]}
            for g, paper_src in ((plain, PAPER), (jr, PAPER_JR)):
                r, base = groups.get(g, {}).get(m), groups.get(g, {}).get("deq")
                paper = paper_src[m] if solver == "continuous" else None
                pbase = paper_src["deq"] if solver == "continuous" else None

                def both(v, p, spec, scale=1.0):
                    text = _fmt(None if v is None else v * scale, spec)
                    return text + (f" ({_fmt(p * scale, spec)})" if p is not None else "")

                s = r["summary"] if r else {}
                if r and not r.get("complete"):
                    s = {}
                ratio = (base["summary"]["test_nfe"] / s["test_nfe"]) if (s and base and base.get("complete")) else None
                cells[head[1]].append(both(s.get("test_acc"), paper and paper["test_acc"], "{:.2f}"))
                cells[head[2]].append(both(s.get("test_nfe"), paper and paper["test_nfe"], "{:.1f}"))
                cells[head[3]].append(both(ratio, paper and pbase["test_nfe"] / paper["test_nfe"], "{:.2f}"))
                cells[head[4]].append(both(s.get("train_time_s"), paper and paper["train_time_s"], "{:.1f}", 1 / 60))
                cells[head[5]].append(both(s.get("predict_s_per_batch"), paper and paper["predict_s_per_batch"],
                                           "{:.3f}"))
            rows.append([names[m]] + [" / ".join(v) for v in cells.values()])
        out += table_lines(head, rows)
    return "\n".join(out) + "\n"


def table(groups) -> str:
    head = ["group", "solver", "JR", "train images × epochs", "model", "test acc %", "Δ acc vs deq (pt)", "test NFE",
            "NFE ratio deq/variant", "train time min", "predict s/batch"]
    rows = []
    for g, runs in groups.items():
        base = runs.get("deq")
        for m in VARIANTS:
            r = runs.get(m)
            if r is None:
                continue
            c, s = r["config"], r["summary"]
            paper = (PAPER_JR if c["jacobian_reg"] else PAPER)[m] if c["solver"] == "continuous" else {}
            pb = (PAPER_JR if c["jacobian_reg"] else PAPER)["deq"] if c["solver"] == "continuous" else {}
            bs = base["summary"] if base else {}

            def cell(key, spec, scale=1.0):
                v = s.get(key)
                out = _fmt(None if v is None else v * scale, spec)
                if paper.get(key) is not None:
                    out += f" ({_fmt(paper[key] * scale, spec)})"
                return out

            dacc = None if not bs else s["test_acc"] - bs["test_acc"]
            pdacc = None if not paper else paper["test_acc"] - pb["test_acc"]
            ratio = None if not bs else bs["test_nfe"] / s["test_nfe"]
            pratio = None if not paper else pb["test_nfe"] / paper["test_nfe"]
            rows.append([
                g, _solver_label(c), "yes" if c["jacobian_reg"] else "no",
                f"{r['data']['train_items']:,} × {s['epochs']:g}", m + ("" if r.get("complete") else " (incomplete)"),
                cell("test_acc", "{:.2f}"),
                _fmt(dacc, "{:+.2f}") + ("" if pdacc is None else f" ({pdacc:+.2f})"),
                cell("test_nfe", "{:.1f}"),
                _fmt(ratio, "{:.2f}") + ("" if pratio is None else f" ({pratio:.2f})"),
                cell("train_time_s", "{:.2f}", 1 / 60),
                cell("predict_s_per_batch", "{:.3f}"),
            ])
    return "\n".join(table_lines(head, rows)) + "\n"


def write(folder: str | Path, names: Iterable[str]) -> Path:
    """Write ``folder/table.md`` and ``folder/nfe.png`` from the records of the groups ``names``."""
    folder = Path(folder)
    groups, seeded = load(folder, names)
    share_path = folder / "implicit_share.json"
    share = json.loads(share_path.read_text()) if share_path.exists() else {}
    text = ("# MNIST fully connected DEQs (Skip DEQ paper's table)\n\n"
            "Generated by `python -m train.reproduce mnist_deq` from the run records in the group folders. "
            "Parentheses: the paper's numbers (continuous solve only; 25 epochs on 60,000 images on their "
            "hardware). Ratios and accuracy changes compare runs of the same group. Runs that have not finished "
            "are marked incomplete (their numbers are from the last finished epoch) and left out of the "
            "paper-shaped table.\n\n"
            "## The paper's table, 25 epochs on all 60,000 images\n" + paper_table(groups)
            + (("\n## Several seeds, and the skip-loss weight\n\n"
                "The `*_seeds_25ep` groups (test batch 32 as in the authors' script; current library code): "
                "mean ± standard deviation over seeds. λ_skip 0.01 is the paper's stated weight, 5 the one "
                "in the authors' MNIST FC script. Active units and implicit share come from "
                "`implicit_share.py` on the saved checkpoints: 0 means ∂f/∂z = 0 at z*, i.e. the trained "
                "layer computes the explicit f(0, x) and is no longer implicit.\n"
                + "".join(seeded_paper_table(seeded, w) for w in sorted(
                    {k[1] for runs in seeded.values() for k in runs if k[1] is not None}, reverse=True))
                + "\n**What the skip-loss weight buys and costs** (continuous; ratios and accuracy changes "
                  "paired with the vanilla run of the same seed; the last column is the share of z* the "
                  "implicit term carries, on the seeds with a saved checkpoint)\n\n" + tradeoff_table(seeded, share)
                + "\n**Every several-seed run**\n\n" + seeded_table(seeded, share))
               if seeded else "")
            + "\n## Every group\n\n" + table(groups))
    md = folder / "table.md"
    atomic_write_bytes(md, text.encode())
    plot_group_bars(groups, VARIANTS, folder / "nfe.png")
    return md
