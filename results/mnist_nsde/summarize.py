"""Write README.md's run table from the run records here and in lambda_sweep/.

`python results/mnist_nsde/summarize.py` (from the repository root). Rows name the regularizer
weight, which train.report's table cannot (it labels rows by model name only). Ratios are
nsde / variant for the nsde run of the same seed (above 1: the variant is cheaper).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAPER = {"nsde": {"test_acc": 96.95, "test_nfe": 411.0, "predict_s": 15.07},
         "ernsde": {"test_acc": 96.27, "test_nfe": 185.0, "predict_s": 7.23}}
DEFAULT_WEIGHTS = {"nsde": "–", "ernsde": "error=10", "srnsde": "stiffness=0.1"}


def load() -> list[dict]:
    runs = []
    for p in sorted(HERE.glob("*.json")) + sorted((HERE / "lambda_sweep").glob("*.json")):
        rec = json.loads(p.read_text())
        rec["_file"] = str(p.relative_to(HERE))
        runs.append(rec)
    return runs


def weights(rec: dict) -> str:
    given = rec["config"].get("reg_weights") or []
    return ", ".join(f"{k}={v:g}" for k, v in given) if given else DEFAULT_WEIGHTS[rec["model"]]


def table(runs: list[dict]) -> str:
    base = {r["seed"]: r["summary"] for r in runs if r["model"] == "nsde" and r["complete"]}
    head = ["run", "λ", "seed", "epochs", "train acc %", "test acc %", "test NFE", "predict s/batch",
            "train s", "NFE ratio", "predict ratio", "train-time ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = set()
    for r in sorted(runs, key=lambda r: (r["seed"], r["model"] != "nsde", r["model"], weights(r))):
        key = (r["model"], weights(r), r["seed"])
        if key in seen:  # the sweep folder repeats the baseline for self-containment
            continue
        seen.add(key)
        s = r["summary"]
        b = base.get(r["seed"])
        ratios = [f"{b[k] / s[k]:.2f}" if b and r["model"] != "nsde" else "–"
                  for k in ("test_nfe", "predict_s_per_batch", "train_time_s")]
        lines.append("| " + " | ".join([
            r["_file"], weights(r), str(r["seed"]), f"{s['epochs']:g}", f"{s['train_acc']:.2f}",
            f"{s['test_acc']:.2f}", f"{s['test_nfe']:.1f}", f"{s['predict_s_per_batch']:.3f}",
            f"{s['train_time_s']:.0f}", *ratios]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- runs:start -->", "<!-- runs:end -->"
    a, b = text.index(start) + len(start), text.index(end)
    readme.write_text(text[:a] + "\n" + table(load()) + text[b:])


if __name__ == "__main__":
    main()
