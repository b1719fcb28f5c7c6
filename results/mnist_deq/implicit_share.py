"""Is a trained MNIST FC DEQ still implicit? Measured on the test set from saved checkpoints.

    python results/mnist_deq/implicit_share.py <checkpoint.pt> ...   # from the repository root

For f(z, x) = relu(W₁z + b₁) + relu(W₂x + b₂) the z-dependent term is u = relu(W₁z* + b₁).
Where every pre-activation W₁z* + b₁ is negative, ∂f/∂z = 0 at z*: the fixed point is the
explicit f(0, x) and the solve has nothing to do. Reported per checkpoint:

* ``active``  fraction of the 128 units whose pre-activation is positive at z* (∂f/∂z ≠ 0 there)
* ``share``   ‖u‖ / ‖z*‖ over the test set: how much of z* the implicit term carries
* ``start``   the batch relative residual ‖f(z₀) − z₀‖ / ‖f(z₀)‖ at the variant's start z₀,
              against the solver's tolerance (below it, the solve stops before any ODE step)
* ``NFE``     test NFE per batch, recomputed here (must equal the run record's)

Prints one Markdown row per checkpoint (the checkpoint's config tells how to rebuild the model);
``--json FILE`` also merges the numbers into FILE keyed by "<group>/<run name>", where
``python -m train.reproduce mnist_deq`` picks them up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from models.mnist_deq import BUILDERS  # noqa: E402
from train._checkpoint import atomic_write_bytes, load_checkpoint  # noqa: E402
from train._data import load  # noqa: E402


def measure(path: Path, data_dir: str, batch_size: int) -> dict:
    payload = load_checkpoint(path)
    c = payload["config"]
    model = BUILDERS[c["model"]](solver=c["solver"], jacobian_reg=c["jacobian_reg"],
                                 **({"steady_state_test": c["steady_state_test"]}
                                    if c.get("steady_state_test") else {}))
    model.load_state_dict(payload["model"])
    model.eval()
    test = load("mnist", data_dir, train=False)
    cell = model.cell
    active = u_sq = z_sq = 0.0
    n_units = nfe = n_batches = 0
    starts = []
    with torch.no_grad():
        for i in range(0, len(test), batch_size):
            images = test.x[i:i + batch_size]
            x = model.embed(images.reshape(images.shape[0], -1))
            z_star, stats = model.deq(x)
            nfe += int(stats.nfe_forward)
            n_batches += 1
            pre = cell.w1(z_star)
            u = torch.relu(pre)
            active += float((pre > 0).float().sum())
            n_units += pre.numel()
            u_sq += float(u.square().sum())
            z_sq += float(z_star.square().sum())
            if c["model"] == "skipdeq":
                z0 = model.skip(x)
            elif c["model"] == "skipregdeq":
                z0 = cell(torch.zeros_like(x), x)
            else:
                z0 = torch.zeros_like(x)
            fz0 = cell(z0, x)
            starts.append(float((fz0 - z0).norm() / fz0.norm().clamp_min(1e-30)))
    starts_t = torch.tensor(starts)
    return {
        "run": f"{path.parent.name}/{path.stem}",
        "active": active / n_units,
        "share": (u_sq / z_sq) ** 0.5,
        "start_median": float(starts_t.median()),
        "start_below_tol": float((starts_t <= model.config.tol).float().mean()),
        "nfe": nfe / n_batches,
        "tol": model.config.tol,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--batch-size", type=int, default=32, help="test batch size (default: 32, as the runs)")
    p.add_argument("--json", type=Path, default=None, help="merge the numbers into this JSON file")
    a = p.parse_args(argv)
    saved = json.loads(a.json.read_text()) if a.json and a.json.exists() else {}
    torch.set_num_threads(1)
    print("| run | active units at z* | ‖relu(W₁z*+b₁)‖ / ‖z*‖ | start residual (median over batches) | "
          "batches starting below tol | test NFE |")
    print("|---|---|---|---|---|---|")
    for path in a.checkpoints:
        r = measure(path, a.data_dir, a.batch_size)
        print(f"| {r['run']} | {r['active']:.3f} | {r['share']:.3f} | {r['start_median']:.2e} | "
              f"{r['start_below_tol']:.2f} (tol {r['tol']:g}) | {r['nfe']:.1f} |", flush=True)
        if a.json:
            saved[r["run"]] = dict(r, batch_size=a.batch_size)
            atomic_write_bytes(a.json, (json.dumps(saved, indent=1, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    main()
