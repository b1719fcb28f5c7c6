"""Adaptive SDE solvers at equal strong error: SOSRI (embedded estimate) vs step doubling, in one run.

``python -m train.bench sde --out results/bench/sde.json [--quick]``

Each method solves the same problem on the same ``BrownianInterval`` (one path per batch row, the
batch sharing one step sequence as in a NeuralSDE) over a sweep of tolerances rtol = atol:

* ``sosri``: implicit's SOSRI with its natural embedded error estimate and StochasticDiffEq's
  controller and initial step (``Embedded``), 4 drift + 4 diffusion evaluations per attempt;
* ``srk-doubling``: torchsde's SRK (strong order 1.5) with step doubling, 30 + 30 per attempt;
* ``milstein-doubling``: torchsde's Itô Milstein with step doubling (3 + 3 per attempt plus 3
  diffusion VJPs, which are not evaluations but are in the seconds).

Errors and evaluations come from solves on the reference's own ``BrownianInterval``; seconds from
solves on fresh intervals of the same entropy (see ``_measure``). Problems: geometric Brownian motion (exact solution on the path) and the MNIST NSDE field of
``models.mnist_nsde`` at the authors' Glorot init, started from the embedded first training images
(reference: SOSRI with fixed steps of 1/``ref_steps`` on the same path; the run also reports its
distance to the solve at half as many steps). Strong error = mean over rows of ‖y(1) − y_ref(1)‖₂.
Evaluations are drift + diffusion calls; seconds are the median over repeats of a forward solve
without autograd. "At equal error" interpolates log-evaluations (and log-seconds) linearly in
log-error between a method's sweep points, at error levels inside every method's range.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import torch
import torchsde

from implicit.sde import SOSRI, SRK, Embedded, FixedSteps, Milstein, NeuralSDE, StepDoubling
from train._results import environment, format_cell, portable_config, table_lines, to_plain, write_json_and_summary

METHODS = {
    "sosri": (SOSRI, "embedded"),
    "srk-doubling": (SRK, "doubling"),
    "milstein-doubling": (Milstein, "doubling"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    out: Path
    quick: bool = False
    repeats: int = 3
    gbm_paths: int = 512
    mnist_images: int = 128
    # the embedded estimate is far more conservative than step doubling's (results/bench/sde.md), so
    # each kind sweeps its own range to reach overlapping errors
    tols_embedded: tuple[float, ...] = (3.0, 1.0, 0.3, 0.14, 0.05, 0.02, 0.01, 0.005, 0.002)
    tols_doubling: tuple[float, ...] = (0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
    # a method's sweep stops (loose to tight) after a solve costs more evaluations than this
    max_evaluations: int = 50_000
    repeat_below_s: float = 3.0
    # the first step step doubling tries (the controller grows it by at most 1.4x per step)
    dt0: float = 0.01
    # its noise is not commutative (a dense diffusion read as diagonal noise), so every scheme converges
    # at strong order 1/2 there and the reference needs many steps
    ref_steps: int = 8192
    threads: int = 1
    seed: int = 0
    data_dir: str | None = None
    note: str = ""


def _gbm(cfg: Config):
    mu, sigma = 1.5, 0.5
    y0 = torch.ones(cfg.gbm_paths, 1, dtype=torch.float64)
    return {"name": "gbm", "description": f"dy = {mu} y dt + {sigma} y dW, y0 = 1, {cfg.gbm_paths} paths, float64",
            "drift": lambda t, y: mu * y, "diffusion": lambda t, y: sigma * y, "y0": y0,
            "exact": lambda bm: y0 * math.exp(mu - sigma**2 / 2) * torch.exp(sigma * bm(0.0, 1.0))}


def _mnist_field(cfg: Config):
    from models.mnist_nsde import BUILDERS
    from train import _data
    from train.exp_mnist_nsde import AUTHORS

    torch.manual_seed(cfg.seed)
    model = BUILDERS["nsde"](**AUTHORS["nsde"])
    train = _data.load("mnist", cfg.data_dir, train=True, limit=cfg.mnist_images, normalize=False)
    with torch.no_grad():
        y0 = model.embed(train.x.reshape(len(train.x), -1)).double()
    drift, diffusion = model.sde.drift.double(), model.sde.diffusion.double()
    return {"name": "mnist_nsde", "description": f"models.mnist_nsde field at Glorot init (seed {cfg.seed}), "
            f"state 32, the first {cfg.mnist_images} training images embedded, float64",
            "drift": drift, "diffusion": diffusion, "y0": y0, "exact": None}


def _brownian(y0: torch.Tensor, entropy: int):
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=tuple(y0.shape), dtype=y0.dtype, entropy=entropy,
                                     levy_area_approximation="space-time")


def _layer(problem, method: str, tol: float, cfg: Config) -> NeuralSDE:
    scheme, kind = METHODS[method]
    stepping = Embedded(rtol=tol, atol=tol) if kind == "embedded" else \
        StepDoubling(dt0=cfg.dt0, rtol=tol, atol=tol, dt_min=1e-6)
    return NeuralSDE(problem["drift"], problem["diffusion"], scheme=scheme(), stepping=stepping, max_steps=200_000)


def _error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(y - ref, dim=-1).mean())


@torch.no_grad()
def _reference(problem, bm, cfg: Config) -> tuple[torch.Tensor, float | None]:
    if problem["exact"] is not None:
        return problem["exact"](bm), None
    ys = []
    for n in (cfg.ref_steps // 2, cfg.ref_steps):
        sde = NeuralSDE(problem["drift"], problem["diffusion"], scheme=SOSRI(),
                        stepping=FixedSteps(dt=1.0 / n, estimate_error=False), max_steps=10 * n)
        ys.append(sde(problem["y0"], [0.0, 1.0], bm)[0][-1])
    return ys[1], _error(ys[0], ys[1])


@torch.no_grad()
def _measure(problem, bm, ref, method: str, tol: float, cfg: Config) -> dict:
    """Error and evaluations of the solve on the reference's own path ``bm``; seconds from solves on fresh
    intervals of the same entropy, because an interval's search tree grows with every query (the fine
    reference's would slow every later solve). A fresh interval is not guaranteed to give bit-identical
    increments after such a tree (measured: on the MNIST field it did not), so only its time is used."""
    sde = _layer(problem, method, tol, cfg)
    ys, stats = sde(problem["y0"], [0.0, 1.0], bm)
    seconds, timed_evaluations = [], []
    for _ in range(cfg.repeats):
        fresh = _brownian(problem["y0"], problem["entropy"])
        start = time.perf_counter()
        _, timed = sde(problem["y0"], [0.0, 1.0], fresh)
        seconds.append(time.perf_counter() - start)
        timed_evaluations.append(timed.nfe_forward)
        if seconds[0] > cfg.repeat_below_s:  # a long solve is timed once: its noise is small against it
            break
    return {"tol": tol, "error": _error(ys[-1], ref), "evaluations": stats.nfe_forward, "nfe_drift": stats.nfe_drift,
            "nfe_diffusion": stats.nfe_diffusion, "accepted": stats.n_accepted, "rejected": stats.n_rejected,
            "forced": stats.n_forced, "outcome": stats.outcome.value, "seconds": seconds,
            "seconds_median": statistics.median(seconds), "timed_evaluations": timed_evaluations}


def _sweep(problem, bm, ref, method: str, tols, cfg: Config) -> list[dict]:
    """Loose to tight; stops before a solve the last two predict (geometrically) to exceed max_evaluations."""
    points = []
    for tol in tols:
        if len(points) >= 2:
            a, b = points[-2]["evaluations"], points[-1]["evaluations"]
            if b * max(b / a, 1.0) > cfg.max_evaluations:
                break
        points.append(_measure(problem, bm, ref, method, tol, cfg))
        p = points[-1]
        print(f"  {problem['name']} {method} tol {tol:g}: error {p['error']:.3e}, {p['evaluations']} evaluations, "
              f"{p['seconds_median']:.2f} s", flush=True)
        if p["evaluations"] > cfg.max_evaluations:
            break
    return points


def _interpolate(points: list[dict], error: float, key: str) -> float | None:
    """log(key) at log(error), linear between the sweep points that bracket it (None outside)."""
    pts = sorted(((p["error"], p[key]) for p in points if p["error"] > 0 and p[key] > 0), key=lambda p: p[0])
    for (e0, v0), (e1, v1) in zip(pts, pts[1:]):
        if e0 <= error <= e1 and e1 > e0:
            w = (math.log(error) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp((1 - w) * math.log(v0) + w * math.log(v1))
    return None


def equal_error(sweeps: dict[str, list[dict]], levels: int = 3, base: str = "sosri") -> list[dict]:
    """Each other method against ``base`` at error levels both reach (log-spaced in their overlap):
    interpolated evaluations and seconds of both, and their ratios (method / base)."""
    def span(pts):
        return min(p["error"] for p in pts), max(p["error"] for p in pts)

    out = []
    for m, pts in sweeps.items():
        if m == base:
            continue
        (lo0, hi0), (lo1, hi1) = span(sweeps[base]), span(pts)
        lo, hi = max(lo0, lo1), min(hi0, hi1)
        if not lo < hi:
            out.append({"method": m, "error": None, "overlap": False})
            continue
        for k in range(levels):
            e = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * (k + 0.5) / levels)
            row = {"method": m, "error": e, "overlap": True}
            for who, p in ((base, sweeps[base]), (m, pts)):
                row[who] = {"evaluations": _interpolate(p, e, "evaluations"), "seconds": _interpolate(p, e, "seconds_median")}
            row["evaluations_ratio"] = row[m]["evaluations"] / row[base]["evaluations"]
            row["seconds_ratio"] = row[m]["seconds"] / row[base]["seconds"]
            out.append(row)
    return out


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    problems = [_gbm(cfg), _mnist_field(cfg)]
    cases = []
    for i, problem in enumerate(problems):
        print(f"{problem['name']}: {problem['description']}", flush=True)
        problem["entropy"] = cfg.seed * 1000 + 17 + i
        bm = _brownian(problem["y0"], problem["entropy"])
        ref, ref_check = _reference(problem, bm, cfg)
        sweeps = {m: _sweep(problem, bm, ref, m, cfg.tols_embedded if kind == "embedded" else cfg.tols_doubling, cfg)
                  for m, (_, kind) in METHODS.items()}
        cases.append({"problem": problem["name"], "description": problem["description"],
                      "reference": "exact solution on the path" if ref_check is None else
                      f"SOSRI fixed steps 1/{cfg.ref_steps}", "reference_halving_error": ref_check,
                      "sweeps": sweeps, "equal_error": equal_error(sweeps)})
    return {"format": "implicit-bench-sde", "config": portable_config(to_plain(cfg)),
            "environment": environment(), "cases": cases}


def _fmt(v, spec=".3g") -> str:
    return format_cell(v, spec)


def render_markdown(result: dict) -> str:
    cfg = result["config"]
    hw = result["environment"]["hardware"]
    lines = [
        "# Adaptive SDE solvers at equal strong error",
        "",
        f"`python -m train.bench sde` on {hw['cpu']} ({hw['torch_threads']} thread), commit "
        f"{(result['environment']['git'].get('commit') or '?')[:7]}"
        f"{' with uncommitted changes' if result['environment']['git'].get('dirty') else ''}. {cfg['note']}".rstrip(),
        "",
        "SOSRI adapts on its natural embedded error estimate (StochasticDiffEq's controller); SRK and Milstein are "
        f"torchsde's steps with step doubling (first step {cfg['dt0']}). Strong error at t = 1 is the mean over rows "
        f"of ‖y − y_ref‖₂; evaluations = drift + diffusion calls of one solve; seconds = median of {cfg['repeats']} "
        f"forward solves without autograd on a fresh Brownian interval of the same entropy (one solve when it takes over {cfg['repeat_below_s']:g} s). A sweep stops "
        f"before a solve its last two points predict to cost over {cfg['max_evaluations']} evaluations. Milstein's "
        "diffusion VJPs are in its seconds, not in its evaluations.",
    ]
    for case in result["cases"]:
        lines += ["", f"## {case['problem']}: {case['description']}", "",
                  f"Reference: {case['reference']}"
                  + (f" (distance to the solve at half as many steps: {case['reference_halving_error']:.2e})"
                     if case["reference_halving_error"] is not None else "") + ".", ""]
        lines += table_lines(
            ["method", "tol", "strong error", "evaluations", "accepted", "rejected", "seconds"],
            [[m, f"{p['tol']:g}", f"{p['error']:.3e}", p["evaluations"], p["accepted"],
              f"{p['rejected']}{' (+' + str(p['forced']) + ' forced)' if p['forced'] else ''}",
              f"{p['seconds_median']:.3f}"] for m, pts in case["sweeps"].items() for p in pts],
            "lrrrrrr")
        lines += ["", "Against SOSRI at equal strong error (log-interpolated within both sweeps):", ""]
        rows = []
        for row in case["equal_error"]:
            m = row["method"]
            if not row["overlap"]:
                rows.append([m, "its errors and SOSRI's do not overlap in these sweeps", *[""] * 6])
                continue
            a, b = row[m], row["sosri"]
            rows.append([m, f"{row['error']:.2e}", f"{a['evaluations']:.0f}", f"{b['evaluations']:.0f}",
                         f"{row['evaluations_ratio']:.2f}×", f"{a['seconds']:.3g}", f"{b['seconds']:.3g}",
                         f"{row['seconds_ratio']:.2f}×"])
        lines += table_lines(["method", "strong error", "its evaluations", "SOSRI's", "ratio", "its seconds", "SOSRI's",
                              "ratio"], rows, "lrrrrrrr")
    lines.append("")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m train.bench sde", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file (a .md summary is written beside it)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: small batches, 3 tolerances, 1 repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $IMPLICIT_DATA, else ./data)")
    p.add_argument("--note", default="", help="what else ran on the machine, recorded in the JSON and the summary")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    common = dict(out=a.out, threads=a.threads, seed=a.seed, data_dir=a.data_dir, note=a.note)
    if a.quick:
        return Config(quick=True, repeats=1, gbm_paths=32, mnist_images=16, tols_embedded=(0.3, 0.05, 0.01),
                      tols_doubling=(0.03, 3e-3, 3e-4), ref_steps=256, max_evaluations=20_000, **common)
    return Config(repeats=a.repeats, **common)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    result = run(cfg)
    write_json_and_summary(cfg.out, to_plain(result), render_markdown(result))
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.md')}")
    return 0
