"""Neural-ODE block: implicit.ode vs torchdiffeq 0.2.5, measured in one run.

``python -m train.bench ode --out results/bench/ode.json [--quick]``

The block is the paper's MNIST NODE field f(t, z) = tanh(W₂[tanh(W₁[z; t]); t]), 784 → 100 → 784,
on a batch of 512, integrated over t ∈ [0, 1] at rtol = atol ∈ {1e-3, 1e-5}, with PyTorch's default
random weights and with the weights scaled up until the dynamics take ≥ 100 NFE. torchdiffeq runs
dopri5 with ``step_t=[0, 1]`` so both sides take the identical step sequence (same NFE): the ratio
is then pure implementation cost. Every variant runs once per repeat, interleaved, so load from
other processes hits all of them alike; the JSON keeps every sample, the summary takes medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch
import torchdiffeq
from torch import nn

from implicit.ode import Dopri5, Tsit5, odeint
from models.mnist_node import ODEFunc
from train._results import benchmark_main, environment, file_name, format_cell, portable_config, table_lines, to_plain


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    out: Path
    quick: bool = False
    repeats: int = 5
    batch: int = 512
    hidden: int = 100
    tols: tuple[float, ...] = (1e-3, 1e-5)
    min_nfe_scaled: int = 100
    threads: int = 1
    seed: int = 0
    # Backprop through the solver keeps every f evaluation's activations (~18 MB per NFE here); a
    # variant needing more NFE than this is timed forward-only without grad instead (the machine's
    # memory is shared; 14 GB was OOM-killed once).
    max_graph_nfe: int = 250
    # what else ran on the machine during the measurement (the run cannot know; the operator says)
    note: str = ""


def mnist_field(hidden: int = 100, scale: float = 1.0) -> ODEFunc:
    """The zoo's MNIST NODE field (models.mnist_node.ODEFunc) with its weights multiplied by
    ``scale``: a larger scale makes the dynamics harder, so the adaptive solvers take more steps."""
    f = ODEFunc(dim=784, hidden=hidden)
    with torch.no_grad():
        for lin in (f.l1, f.l2):
            lin.weight.mul_(scale)
    return f


class _Count(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.n = f, 0

    def forward(self, t, z):
        self.n += 1
        return self.f(t, z)


# Variants: (name, library, solver, record). "record" keeps E_j and S_j in the graph and adds
# R_E + R_S to the loss, i.e. what an ERNODE/SRNODE training step pays.
VARIANTS = (
    ("torchdiffeq-dopri5", "torchdiffeq", "dopri5", False),
    ("ours-dopri5", "ours", "dopri5", False),
    ("ours-dopri5+reg", "ours", "dopri5", True),
    ("ours-tsit5", "ours", "tsit5", False),
    ("ours-tsit5+reg", "ours", "tsit5", True),
)


def _solve(variant, f, z0, t, tol):
    _, lib, method, record = variant
    if lib == "torchdiffeq":
        ys = torchdiffeq.odeint(f, z0, t, rtol=tol, atol=tol, method=method, options=dict(step_t=t))
        return ys, None
    solver = Dopri5() if method == "dopri5" else Tsit5()
    sol = odeint(f, z0, t, solver=solver, rtol=tol, atol=tol, record=record, max_steps=100_000)
    reg = sol.stats.reg_error + sol.stats.reg_stiffness if record else None
    return sol.ys, reg


def _run_once(variant, f, z0, t, tol, grad=True):
    """Forward seconds, forward+backward seconds, NFE of one training-style step.

    ``grad=False``: forward only, without autograd (forward+backward is then None)."""
    counted = _Count(f)
    f.zero_grad(set_to_none=True)
    if not grad:
        with torch.no_grad():
            start = time.perf_counter()
            _solve(variant, counted, z0, t, tol)
            return time.perf_counter() - start, None, counted.n
    start = time.perf_counter()
    ys, reg = _solve(variant, counted, z0, t, tol)
    loss = ys[-1].square().mean()
    if reg is not None:
        loss = loss + 0.01 * reg
    forward = time.perf_counter() - start
    nfe = counted.n
    loss.backward()
    total = time.perf_counter() - start
    return forward, total, nfe


def _time_f(f, z0, t, repeats):
    """Median seconds of one evaluation of f, and of one evaluation plus its VJP."""
    fwd, fb = [], []
    for _ in range(repeats):
        z = z0.detach().requires_grad_()
        s = time.perf_counter()
        out = f(t[0], z)
        m = time.perf_counter()
        out.backward(torch.ones_like(out))
        e = time.perf_counter()
        fwd.append(m - s)
        fb.append(e - s)
    return statistics.median(fwd), statistics.median(fb)


@torch.no_grad()
def _nfe(f, z0, t, tol, solver=Dopri5()):
    return odeint(f, z0, t, solver=solver, rtol=tol, atol=tol, record=False, max_steps=100_000).stats.nfe_forward


def _calibrate_scale(cfg, z0, t):
    """Smallest power-of-two weight scale whose dynamics take ≥ min_nfe_scaled NFE at the tightest tol.

    The tightest tolerance, because at the loosest one tanh saturation caps dopri5 below 100 NFE
    (98 from ×256 upward at 1e-3) while the graph of a ≥ 100-NFE solve must still fit memory for the
    forward+backward timing.

    Returns (scale, {scale: NFE}). NFE grows slowly with the scale (tanh saturates), so the search
    goes far; if no scale reaches the target, the one with most NFE is used and the table says so.
    """
    table = {}
    scale = 2.0
    while scale <= 1024:
        torch.manual_seed(cfg.seed)
        table[scale] = _nfe(mnist_field(hidden=cfg.hidden, scale=scale), z0, t, min(cfg.tols))
        if table[scale] >= cfg.min_nfe_scaled:
            return scale, table
        scale *= 2.0
    return max(table, key=table.get), table


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    z0 = torch.randn(cfg.batch, 784)
    t = torch.tensor([0.0, 1.0])
    load_before = os.getloadavg()
    scaled, calibration = _calibrate_scale(cfg, z0, t)
    cases = []
    for weights, scale in (("random", 1.0), ("scaled", scaled)):
        torch.manual_seed(cfg.seed)
        f = mnist_field(hidden=cfg.hidden, scale=scale)
        for tol in cfg.tols:
            nfe = {m: _nfe(f, z0, t, tol, Dopri5() if m == "dopri5" else Tsit5()) for m in ("dopri5", "tsit5")}
            grad = {v[0]: nfe[v[2]] <= cfg.max_graph_nfe for v in VARIANTS}
            samples = {v[0]: [] for v in VARIANTS}
            f_samples = []
            for variant in VARIANTS:  # warm-up (allocator, first-call costs)
                _run_once(variant, f, z0, t, tol, grad[variant[0]])
            for _ in range(cfg.repeats):
                for variant in VARIANTS:
                    samples[variant[0]].append(_run_once(variant, f, z0, t, tol, grad[variant[0]]))
                # f is timed inside each repeat, beside the solves, so overhead compares like with like
                f_samples.append(_time_f(f, z0, t, 5))
            f_s = statistics.median(x[0] for x in f_samples)
            fb_s = statistics.median(x[1] for x in f_samples)
            case = dict(weights=weights, weight_scale=scale, tol=tol, f_seconds=f_s, f_vjp_seconds=fb_s, variants={})
            for name, rows in samples.items():
                fwd = statistics.median(r[0] for r in rows)
                tot = statistics.median(r[1] for r in rows) if grad[name] else None
                n = rows[0][2]
                case["variants"][name] = dict(
                    autograd=grad[name], forward_s=fwd, forward_backward_s=tot, nfe=n,
                    forward_samples=[r[0] for r in rows], forward_backward_samples=[r[1] for r in rows],
                    overhead_forward=fwd / (n * f_s), overhead_forward_backward=None if tot is None else tot / (n * fb_s),
                )
            ref = case["variants"]["torchdiffeq-dopri5"]
            for name, v in case["variants"].items():
                same_mode = v["autograd"] == ref["autograd"]
                v["ratio_forward"] = v["forward_s"] / ref["forward_s"] if same_mode else None
                both = v["forward_backward_s"] is not None and ref["forward_backward_s"] is not None
                v["ratio_forward_backward"] = v["forward_backward_s"] / ref["forward_backward_s"] if both else None
            cases.append(case)
            print(_case_line(case), flush=True)
    return dict(
        format="implicit-bench-ode", version=1, config=portable_config(to_plain(cfg)), environment=environment(),
        load_average_before=load_before, load_average_after=os.getloadavg(), cases=cases,
        scale_calibration=dict(tol=min(cfg.tols), nfe_by_scale={str(k): v for k, v in calibration.items()}),
        note=cfg.note,
    )


def _fmt(x, spec=".3f") -> str:
    return format_cell(x, spec, missing="—")  # this table's committed dash


def _case_line(case) -> str:
    parts = [f"{case['weights']:>6} tol={case['tol']:.0e}"]
    for name, v in case["variants"].items():
        parts.append(f"{name}: nfe={v['nfe']} fwd={_fmt(v['forward_s'])}s f+b={_fmt(v['forward_backward_s'])}s "
                     f"ratio={_fmt(v['ratio_forward'], '.2f')}/{_fmt(v['ratio_forward_backward'], '.2f')}")
    return " | ".join(parts)


def render_markdown(result: dict) -> str:
    env = result["environment"]
    cfg = result["config"]
    lines = [
        "# Neural-ODE block: implicit.ode vs torchdiffeq",
        "",
        f"Generated from `{file_name(cfg['out'])}` by `train/_bench_ode.py`. MNIST NODE field "
        f"784 → {cfg['hidden']} → 784, batch {cfg['batch']}, t ∈ [0, 1], rtol = atol; median of "
        f"{cfg['repeats']} interleaved repeats; torch {env['versions']['torch']}, torchdiffeq "
        f"{env['versions']['torchdiffeq']}, {env['hardware']['cpu']} ({env['hardware']['cpu_cores']} cores, "
        f"{cfg['threads']} torch thread(s)), commit `{(env['git']['commit'] or '?')[:10]}`"
        f"{' (dirty)' if env['git']['dirty'] else ''}.",
        "",
        f"**Machine load:** {result['note'] or 'no note given.'} Load average before/after: "
        f"{result['load_average_before'][0]:.1f} / {result['load_average_after'][0]:.1f}.",
        "",
        "Ratio = ours / torchdiffeq dopri5 (same step sequence: `step_t=[0, 1]`), < 1 is faster. "
        "Overhead = time / (NFE × time of one f evaluation) (forward) or / (NFE × one f evaluation + "
        "its VJP) (forward+backward). `+reg` records E_j and S_j in the graph and backpropagates "
        "R_E + R_S. Targets: ratio ≤ 1.0 without regularizers, ≤ 1.10 with; overhead ≤ 1.10. "
        f"\"(no grad)\": the variant needs more than {cfg['max_graph_nfe']} NFE, whose backprop graph would not "
        "fit the shared machine's memory, so only its forward pass is timed, without autograd (its ratio is "
        "only given against a reference timed the same way).",
        "",
    ]
    rows = []
    for case in result["cases"]:
        w = f"{case['weights']} (×{case['weight_scale']:g})"
        for name, v in case["variants"].items():
            mode = "" if v["autograd"] else " (no grad)"
            rows.append([w, f"{case['tol']:.0e}", name + mode, v["nfe"], _fmt(v["forward_s"]),
                         _fmt(v["forward_backward_s"]), _fmt(v["ratio_forward"]), _fmt(v["ratio_forward_backward"]),
                         _fmt(v["overhead_forward"]), _fmt(v["overhead_forward_backward"])])
    lines += table_lines(["weights", "tol", "variant", "NFE", "fwd s", "fwd+bwd s", "ratio fwd", "ratio fwd+bwd",
                          "overhead fwd", "overhead fwd+bwd"], rows, "lllrrrrrrr")
    cal = result["scale_calibration"]
    lines += ["", f"Scaled weights: W₁, W₂ of PyTorch's default init multiplied by a power of two until dopri5 "
              f"at tol {cal['tol']:.0e} takes ≥ {cfg['min_nfe_scaled']} NFE (tanh saturates, so NFE grows slowly "
              "with the scale); NFE by scale: " + ", ".join(f"×{k}: {v}" for k, v in cal["nfe_by_scale"].items()) + "."]
    lines += ["", "f is timed inside every repeat, right after that repeat's solves (median of 5 calls per "
              "repeat, then the median over repeats), so overhead compares measurements taken at the same "
              "moments; it is still the noisiest column when the machine is shared."]
    lines += ["", "One f evaluation (median): " + ", ".join(
        f"{c['weights']} tol {c['tol']:.0e}: {c['f_seconds'] * 1e3:.2f} ms (+VJP {c['f_vjp_seconds'] * 1e3:.2f} ms)"
        for c in result["cases"]
    ) + ".", ""]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m train.bench ode", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file (a .md summary is written beside it)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: batch 16, one tolerance, 1 repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-graph-nfe", type=int, default=250,
                   help="above this NFE a variant is timed forward-only without grad (memory)")
    p.add_argument("--note", default="",
                   help="what else ran on the machine during the run, recorded in the JSON and the summary")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    if a.quick:
        return Config(out=a.out, quick=True, repeats=1, batch=16, hidden=16, tols=(1e-3,), min_nfe_scaled=20,
                      threads=a.threads, seed=a.seed, max_graph_nfe=a.max_graph_nfe, note=a.note)
    return Config(out=a.out, repeats=a.repeats, threads=a.threads, seed=a.seed, max_graph_nfe=a.max_graph_nfe,
                  note=a.note)


def main(argv: list[str] | None = None) -> int:
    return benchmark_main(argv, parse=parse, run=run, render=render_markdown)
