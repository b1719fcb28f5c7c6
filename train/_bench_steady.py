"""Continuous-DEQ integrators: f calls and seconds to one steady-state test, measured in one run.

``python -m train.bench steady --out results/bench/steady.json [--mnist-checkpoint PATH] [--quick]``

Each case integrates dz/dt = f(z, x) − z from z = 0 on a batch of real test images until the batch's
relative residual ‖f(z) − z‖ / ‖f(z)‖ (one norm over the batch, the papers' test) is below tol: the
MNIST FC cell (tol 0.005) and the MDEQ-small cell (tol 0.05), at initialisation and, for MNIST, from
a trained checkpoint when one is given. Integrators: Tsit5, VCAB3, VCABM3, each at the papers'
integrator tolerances (OrdinaryDiffEq's defaults rtol 1e-3, atol 1e-6, see
``models.mnist_deq.INTEGRATORS``) and at integrator rtol = atol = tol. Every variant runs once per
repeat, interleaved, so load from other processes hits all alike; the JSON keeps every sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch

from implicit.deq import SteadyState
from implicit.ode import VCAB3, VCABM3, Tsit5
from models.mnist_deq import PAPERS_ODE_TOLERANCES
from train import _data
from train._results import benchmark_main, environment, file_name, portable_config, table_lines, to_plain

INTEGRATORS = {"tsit5": Tsit5(), "vcab3": VCAB3(), "vcabm3": VCABM3()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    out: Path
    data_dir: str
    mnist_checkpoint: Path | None = None
    quick: bool = False
    repeats: int = 5
    batch: int = 32
    max_steps: int = 2000
    mdeq_max_steps: int = 300
    threads: int = 1
    seed: int = 0
    note: str = ""


def _cells(cfg: Config):
    """(name, f, z shape, tol, max_steps) for every cell measured."""
    from train.exp_cifar import CIFARModelConfig, build_model
    from models.mnist_deq import MNISTDEQConfig, MNISTFCDEQ

    torch.manual_seed(cfg.seed)
    images = _data.load("mnist", cfg.data_dir, train=False, limit=cfg.batch).x
    out = []
    states = [("init", None)]
    if cfg.mnist_checkpoint is not None:
        states.append((f"trained ({cfg.mnist_checkpoint.name})", torch.load(cfg.mnist_checkpoint, weights_only=False)))
    for label, ckpt in states:
        net = MNISTFCDEQ(MNISTDEQConfig(variant="deq"))
        if ckpt is not None:
            net.load_state_dict(ckpt["model"])
        net.eval()
        with torch.no_grad():
            x = net.embed(images.reshape(images.shape[0], -1))
        out.append((f"MNIST FC, {label}", lambda z, net=net, x=x: net.cell(z, x), (128,), 0.005, cfg.max_steps))
    if not cfg.quick:
        torch.manual_seed(cfg.seed)
        cifar = _data.load("cifar10", cfg.data_dir, train=False, limit=cfg.batch).x
        net = build_model(CIFARModelConfig(variant="deq", solver="continuous")).eval()
        with torch.no_grad():
            x = net.cell.make_input(net.stem(cifar))
        out.append(("MDEQ-small (CIFAR-10), init", lambda z, net=net, x=x: net.cell(z, x),
                    (net.cell.layout.size,), 0.05, cfg.mdeq_max_steps))
    return out


REFERENCE = ("tsit5", "earlier")


def _variants(tol: float):
    for name in INTEGRATORS:
        yield name, "papers'", PAPERS_ODE_TOLERANCES
        yield name, "earlier", {"ode_rtol": tol, "ode_atol": tol / 10}
        yield name, "= tol", {"ode_rtol": tol, "ode_atol": tol}


def _solve(f, z0, integrator, tol, ode, max_steps):
    s = SteadyState(solver=INTEGRATORS[integrator], rtol=tol, atol=1e-12, stopping_test="batch", max_steps=max_steps,
                    **ode)
    t0 = time.perf_counter()
    with torch.no_grad():
        sol = s.solve(f, z0)
    return time.perf_counter() - t0, sol.stats


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()
    cases = []
    for cell, f, shape, tol, max_steps in _cells(cfg):
        z0 = torch.zeros(cfg.batch, *shape)
        variants = list(_variants(tol))
        variants_ode = {(n, o): ode for n, o, ode in variants}
        samples = {(n, o): [] for n, o, _ in variants}
        stats = {}
        for name, label, ode in variants:  # warm-up; also the NFE record (deterministic)
            stats[name, label] = _solve(f, z0, name, tol, ode, max_steps)[1]
        for _ in range(cfg.repeats):
            for name, label, ode in variants:
                samples[name, label].append(_solve(f, z0, name, tol, ode, max_steps)[0])
        rows = []
        for name, label, _ in variants:
            st = stats[name, label]
            ode = dict(variants_ode[name, label])
            rows.append(dict(integrator=name, ode_tolerances=label, ode_rtol=ode["ode_rtol"], ode_atol=ode["ode_atol"],
                             nfe=st.nfe, steps=st.n_iter,
                             outcome=st.outcome.value, batch_residual=st.history[-1],
                             seconds=statistics.median(samples[name, label]), samples=samples[name, label]))
        ref = next(r for r in rows if (r["integrator"], r["ode_tolerances"]) == REFERENCE)
        for r in rows:
            r["nfe_vs_reference"] = r["nfe"] / ref["nfe"]
            r["seconds_vs_reference"] = r["seconds"] / ref["seconds"]
        cases.append(dict(cell=cell, tol=tol, batch=cfg.batch, max_steps=max_steps, rows=rows))
        print(f"{cell}: " + "; ".join(f"{r['integrator']} {r['ode_tolerances']}: {r['nfe']} NFE {r['outcome']}"
                                      for r in rows), flush=True)
    config = portable_config(to_plain(cfg))
    return dict(format="implicit-bench-steady", version=1, config=config, environment=environment(),
                load_average_before=load_before, load_average_after=os.getloadavg(), cases=cases, note=cfg.note)


def render_markdown(result: dict) -> str:
    env, cfg = result["environment"], result["config"]
    lines = [
        "# Continuous-DEQ integrators to one steady-state test",
        "",
        f"Generated from `{file_name(cfg['out'])}` by `train/_bench_steady.py` (`python -m train.bench steady`). "
        "dz/dt = f(z, x) − z from z = 0, batch of "
        f"{cfg['batch']} real test images, stopped when the batch's relative residual is below tol (the papers' "
        "test); medians of "
        f"{cfg['repeats']} interleaved repeats, {cfg['threads']} thread(s), on {env['hardware']['cpu']}, "
        f"commit {env['git']['commit'][:8] if env['git'].get('commit') else '?'}; load average "
        f"{result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} after."
        + (f" {result['note']}" if result["note"] else ""),
        "",
        "Integrator tolerances (rtol, atol): *papers'* = OrdinaryDiffEq's defaults (1e-3, 1e-6), which the papers' "
        "code runs at (see `models/mnist_deq.py`); *earlier* = (tol, tol/10), what this library's continuous "
        "records before the Adams integrators ran with Tsit5 (the reference of the ratio columns); *= tol* = (tol, tol).",
        "",
        "A solve that reaches its bound on attempted steps ("
        + "; ".join(f"{c['cell']}: {c['max_steps']}" for c in result["cases"])
        + ") is reported as such (outcome column).",
        "",
    ]
    lines += table_lines(
        ["cell", "tol", "integrator", "integrator tolerances (rtol, atol)", "NFE", "steps", "outcome", "batch residual",
         "ms", "NFE / reference", "time / reference"],
        [[case["cell"], f"{case['tol']:g}", r["integrator"],
          f"{r['ode_tolerances']} ({r['ode_rtol']:g}, {r['ode_atol']:g})", r["nfe"], r["steps"], r["outcome"],
          f"{r['batch_residual']:.4f}", f"{1e3 * r['seconds']:.1f}", f"{r['nfe_vs_reference']:.2f}",
          f"{r['seconds_vs_reference']:.2f}"]
         for case in result["cases"] for r in case["rows"]],
        "llllrrlrrrr")
    lines.append("")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m train.bench steady", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file (a .md summary is written beside it)")
    p.add_argument("--data-dir", default=os.environ.get("IMPLICIT_DATA", "data"))
    p.add_argument("--mnist-checkpoint", type=Path, default=None, help="a train.mnist checkpoint of --model deq")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: MNIST cell only, batch 8, 1 repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mdeq-max-steps", type=int, default=300,
                   help="bound on attempted steps for the MDEQ cell, whose solves are costly (default 300)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="", help="what else ran on the machine, recorded in the JSON and the summary")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    if a.mdeq_max_steps < 1:
        p.error(f"--mdeq-max-steps must be >= 1, got {a.mdeq_max_steps}")
    if a.mnist_checkpoint is not None and not a.mnist_checkpoint.is_file():
        p.error(f"--mnist-checkpoint {a.mnist_checkpoint}: no such file")
    common = dict(out=a.out, data_dir=a.data_dir, mnist_checkpoint=a.mnist_checkpoint, threads=a.threads, note=a.note,
                  mdeq_max_steps=a.mdeq_max_steps)
    if a.quick:
        return Config(**common, quick=True, repeats=1, batch=8)
    return Config(**common, repeats=a.repeats)


def main(argv: list[str] | None = None) -> int:
    return benchmark_main(argv, parse=parse, run=run, render=render_markdown)
