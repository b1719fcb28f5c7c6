"""Jacobian-vector products for Newton–Krylov: double backward (ours) vs torch.func, measured in one run.

``python -m train.bench jvp --out results/bench/jvp.json [--quick]``

On the two DEQ blocks of ``results/bench/deq.md`` (the MNIST FC cell fed 784 pixels, batch 32 and
512; the conv + GroupNorm block on 24×32×32, batch 32), in float32, it times one f call and one
product J v, J = ∂f/∂z at a fixed random (z, x), formed four ways: the double-backward product
``NewtonKrylov(jvp="autodiff")`` uses (the library's own linearization class, not a copy),
``torch.func.jvp``, ``torch.func.linearize`` (its trace timed apart from its products), and the
one-sided difference of ``jvp="finite_difference"``. It records how far each product is from the
double-backward one, and what one product costs in f calls. A second table solves each block's
fixed point from z = 0 with ``NewtonKrylov`` for both JVPs, with and without plain iterations
first. Every variant runs once per repeat, interleaved, so load from other processes hits all
alike; the JSON keeps every sample and is written atomically, the Markdown is rendered from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from implicit.deq import NewtonKrylov
from implicit.deq._newton_krylov import _LINEARIZATIONS
from implicit.deq._root import Evaluator, norms
from models.mnist_deq import FCCell
from train import _cli
from train._bench_deq import ConvBlock
from train._results import benchmark_main, environment, file_name, format_cell, portable_config, table_lines, to_plain

FORMAT = "implicit-bench-jvp"
VERSION = 1

# the Newton–Krylov settings of the solve table: both JVPs, without plain iterations and with the
# solver's default number of them (read from the class, so the table follows a change of default)
JVPS = ("autodiff", "finite_difference")
FIXED_POINT_STEPS = (0, NewtonKrylov.fixed_point_steps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    out: Path
    quick: bool = False
    repeats: int = 5
    products: int = 3  # products timed per linearization point, after the first
    threads: int = 1
    tol: float = 1e-6
    max_iter: int = 50
    seed: int = 0
    # what else ran on the machine during the measurement (the run cannot know; the operator says)
    note: str = ""


def cases(quick: bool) -> list[tuple[str, Callable[[], nn.Module], tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(block name, block factory, z shape, x shape, batches); the blocks of the DEQ benchmark."""
    if quick:
        return [
            ("fc", lambda: FCCell(16, in_features=20), (16,), (20,), (4,)),
            ("conv", lambda: ConvBlock(c=4, groups=2), (4, 6, 6), (4, 6, 6), (2,)),
        ]
    return [
        ("fc", lambda: FCCell(128, in_features=784), (128,), (784,), (32, 512)),
        ("conv", lambda: ConvBlock(), (24, 32, 32), (24, 32, 32), (32,)),
    ]


# ---------------------------------------------------------------- the four products
# Each ``prepare(f, z)`` does what a Newton step does once at its new point z and returns the
# product v ↦ J v. Everything runs under no_grad, as the solver does inside the DEQ layer.


def _library(kind: str) -> Callable[[Callable[[Tensor], Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """The linearization ``NewtonKrylov(jvp=kind)`` builds, looked up by that name, so the bench
    times the solver's own code: for "autodiff" the setup records f's graph and the first product
    also builds the double-backward graph; for "finite_difference" the setup is one f call."""
    def prepare(f, z):
        return _LINEARIZATIONS[kind](Evaluator(f, z, "bench jvp"), z).jvp

    return prepare


def _func_jvp(f, z):
    # forward mode has no state to keep: every product runs f's primal again
    return lambda v: torch.func.jvp(f, (z,), (v,))[1]


def _func_linearize(f, z):
    _, product = torch.func.linearize(f, z)
    return product


# (key, label, prepare, has a setup phase); the first is the reference the others are compared to
METHODS = (
    ("autodiff", "double backward (ours)", _library("autodiff"), True),
    ("func_jvp", "torch.func.jvp", _func_jvp, False),
    ("func_linearize", "torch.func.linearize", _func_linearize, True),
    ("finite_difference", "finite difference", _library("finite_difference"), True),
)
REFERENCE = METHODS[0][0]


def relative_differences(p: Tensor, ref: Tensor) -> Tensor:
    """Per-sample ‖p − ref‖ / ‖ref‖ (the solver's per-sample norms)."""
    return norms(p - ref) / norms(ref).clamp_min(torch.finfo(ref.dtype).tiny)


def max_relative_difference(p: Tensor, ref: Tensor) -> float:
    """The largest per-sample relative difference over the batch."""
    return float(relative_differences(p, ref).max())


def _time_method(prepare, f, z: Tensor, v: Tensor, products: int) -> tuple[float, float, list[float], Tensor]:
    """Seconds of the setup at z, of the first product, of each further product; and the product."""
    t0 = time.perf_counter()
    product = prepare(f, z)
    t1 = time.perf_counter()
    jv = product(v)
    t2 = time.perf_counter()
    further = []
    for _ in range(products):
        s = time.perf_counter()
        product(v)
        further.append(time.perf_counter() - s)
    return t1 - t0, t2 - t1, further, jv


def measure_products(f, z: Tensor, v: Tensor, cfg: Config) -> dict:
    """f and the four products at one point: a warm-up round (whose products are compared), then
    ``repeats`` rounds, the methods interleaved within each round."""
    samples: dict[str, dict[str, list[float]]] = {
        key: {"setup_s": [], "first_product_s": [], "product_s": []} for key, *_ in METHODS}
    f_samples: list[float] = []
    with torch.no_grad(), warnings.catch_warnings():
        # torch.func warns about its own internals (torch.jit.script's deprecation on first use,
        # a get_attr node in every linearize trace): noise about torch, not about f; filtered once
        # here rather than per call, so no product pays for it
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        # warm-up: one-off costs (torch.func's first use, allocator) stay out of the samples
        first = {key: _time_method(prepare, f, z, v, 1)[3] for key, _, prepare, _ in METHODS}
        f(z)
        for _ in range(cfg.repeats):
            for _ in range(cfg.products):
                s = time.perf_counter()
                f(z)
                f_samples.append(time.perf_counter() - s)
            for key, _, prepare, _ in METHODS:
                setup, first_s, further, _ = _time_method(prepare, f, z, v, cfg.products)
                samples[key]["setup_s"].append(setup)
                samples[key]["first_product_s"].append(first_s)
                samples[key]["product_s"] += further
    f_s = statistics.median(f_samples)
    rows = []
    for key, label, _, has_setup in METHODS:
        s = dict(samples[key], setup_s=samples[key]["setup_s"] if has_setup else None)
        product_s = statistics.median(s["product_s"])
        setup_s = statistics.median(s["setup_s"]) if has_setup else None
        diff = None if key == REFERENCE else relative_differences(first[key], first[REFERENCE])
        rows.append(dict(
            method=key, label=label, setup_s=setup_s, first_product_s=statistics.median(s["first_product_s"]),
            product_s=product_s, product_in_f=product_s / f_s,
            setup_in_f=None if setup_s is None else setup_s / f_s,
            # the typical sample beside the worst: one sample whose step crosses a kink of f sets the max
            max_rel_diff=None if diff is None else float(diff.max()),
            median_rel_diff=None if diff is None else float(diff.median()),
            samples=s,
        ))
    return dict(f_s=f_s, f_samples=f_samples, methods=rows)


# ---------------------------------------------------------------- Newton–Krylov solves


def measure_solves(f, z0: Tensor, cfg: Config) -> list[dict]:
    """NewtonKrylov from z0 for every (jvp, fixed_point_steps): its record, median seconds."""
    solvers = {(jvp, fp): NewtonKrylov(tol=cfg.tol, abs_tol=0.0, max_iter=cfg.max_iter, jvp=jvp, fixed_point_steps=fp)
               for jvp in JVPS for fp in FIXED_POINT_STEPS}
    seconds: dict[tuple[str, int], list[float]] = {k: [] for k in solvers}
    with torch.no_grad():  # as the DEQ layer solves (implicit.deq._backward)
        # the warm-up solve gives the record: counts and residuals do not change between repeats
        stats = {k: s.solve(f, z0).stats for k, s in solvers.items()}
        for _ in range(cfg.repeats):
            for k, s in solvers.items():
                t = time.perf_counter()
                s.solve(f, z0)
                seconds[k].append(time.perf_counter() - t)
    rows = []
    for (jvp, fp), st in stats.items():
        rows.append(dict(
            jvp=jvp, fixed_point_steps=fp, outcome=st.outcome.value, n_iter=st.n_iter,
            # n_iter counts the plain iterations too; a solve that converged during them took no Newton step
            newton_steps=max(st.n_iter - fp, 0), nfe=st.nfe, n_jvp=st.n_jvp,
            residual_max=float(st.residual.max()), seconds=statistics.median(seconds[jvp, fp]),
            seconds_samples=seconds[jvp, fp],
        ))
    return rows


# ---------------------------------------------------------------- driver


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()
    products, solves = [], []
    for block_name, make, z_shape, x_shape, batches in cases(cfg.quick):
        torch.manual_seed(cfg.seed)
        block = make()
        for batch in batches:
            g = torch.Generator().manual_seed(cfg.seed + batch)
            x = torch.randn(batch, *x_shape, generator=g)
            # a random point and direction: J is that of f at z, not of the solver's iterates
            z = torch.randn(batch, *z_shape, generator=g)
            v = torch.randn(batch, *z_shape, generator=g)

            def f(z, block=block, x=x):
                return block(z, x)

            case = dict(block=block_name, batch=batch, z_shape=list(z_shape), x_shape=list(x_shape))
            p = dict(case, **measure_products(f, z, v, cfg))
            products.append(p)
            print(f"{block_name:4s} B={batch:<4d} f {p['f_s'] * 1e3:.3f} ms; " + "; ".join(
                f"{m['label']} {m['product_s'] * 1e3:.3f} ms = {m['product_in_f']:.2f} f"
                + ("" if m["max_rel_diff"] is None else f" (diff {m['max_rel_diff']:.1e})") for m in p["methods"]),
                flush=True)
            for row in measure_solves(f, torch.zeros(batch, *z_shape), cfg):
                solves.append(dict(case, **row))
                print(f"{block_name:4s} B={batch:<4d} NewtonKrylov({row['jvp']}, {row['fixed_point_steps']} fp): "
                      f"{row['outcome']}, {row['n_iter']} iterations, NFE {row['nfe']}, res "
                      f"{row['residual_max']:.1e}, {row['seconds']:.3f} s", flush=True)
    config = portable_config(to_plain(cfg))
    eps = torch.finfo(torch.float32).eps
    return dict(
        format=FORMAT, version=VERSION, config=config, environment=environment(),
        load_average_before=load_before, load_average_after=os.getloadavg(),
        dtype="float32", eps=eps, fixed_point_steps=list(FIXED_POINT_STEPS), products=products, solves=solves,
        note=cfg.note,
    )


# ---------------------------------------------------------------- Markdown


def _case(r: dict) -> str:
    return f"{r['block']} {r['batch']}"


def _method(p: dict, key: str) -> dict:
    return next(m for m in p["methods"] if m["method"] == key)


def _verdict(result: dict) -> list[str]:
    """One sentence per question the benchmark answers, computed from the tables below it."""
    out = []
    products = result["products"]
    labels = {key: label for key, label, *_ in METHODS}
    if products:
        exact = [m["max_rel_diff"] for p in products for m in p["methods"] if m["method"] in ("func_jvp", "func_linearize")]
        fd = ", ".join(f"{_method(p, 'finite_difference')['max_rel_diff']:.1e} ({_case(p)}; median sample "
                       f"{_method(p, 'finite_difference')['median_rel_diff']:.1e})" for p in products)
        out.append(
            f"- Agreement: torch.func.jvp and torch.func.linearize agree with the double-backward product to "
            f"{max(exact):.1e} (largest per-sample relative difference, every case; {result['dtype']} eps = "
            f"{result['eps']:.1e}). The finite-difference product differs from it by up to {fd}; its step is "
            f"chosen for an error of about √eps = {math.sqrt(result['eps']):.1e} on a smooth f, and both blocks "
            "have relu kinks, across which a difference step is off by more.")
        for key in (k for k, *_ in METHODS):
            costs = ", ".join(f"{_method(p, key)['product_in_f']:.2f} ({_case(p)})" for p in products)
            setup = ""
            if key == "func_linearize":
                setup = "; its trace, paid again at every new point (every Newton step), costs " + ", ".join(
                    f"{_method(p, key)['setup_in_f']:.0f} ({_case(p)})" for p in products) + " f calls"
            out.append(f"- One {labels[key]} product costs {costs} f calls{setup}.")
    solves = result["solves"]
    if solves:
        tol = result["config"]["tol"]
        by = {(_case(s), s["jvp"], s["fixed_point_steps"]): s for s in solves}
        keys = list(dict.fromkeys(_case(s) for s in solves))
        fps = result["fixed_point_steps"]
        n = {jvp: sum(s["outcome"] == "successful" for s in solves if s["jvp"] == jvp) for jvp in JVPS}
        total = len(solves) // len(JVPS)
        pairs = [(by[c, "finite_difference", fp], by[c, "autodiff", fp], c, fp) for c in keys for fp in fps]
        both = [(a, b, c, fp) for a, b, c, fp in pairs if a["outcome"] == b["outcome"] == "successful"]
        steps = "; ".join(f"{c}, {fp} plain: {a['newton_steps']} vs {b['newton_steps']}" for a, b, c, fp in both)
        more = [a["newton_steps"] - b["newton_steps"] for a, b, _, _ in both]
        out.append(
            f"- With finite-difference JVPs NewtonKrylov reached tol {tol:g} in {result['dtype']} in "
            f"{n['finite_difference']} of {total} solves (autodiff JVPs: {n['autodiff']} of {total})"
            + (f". Newton steps, finite difference vs autodiff, where both reached it: {steps} "
               f"({sum(more) / len(more):+.2f} on average)." if both else "."))
        lo, hi = min(fps), max(fps)
        ratios = [(by[c, jvp, hi], by[c, jvp, lo], c, jvp) for c in keys for jvp in JVPS]
        faster = sum(a["seconds"] < b["seconds"] for a, b, _, _ in ratios)
        out.append(
            f"- From z = 0, {hi} plain iterations before Newton (against {lo}) took "
            + ", ".join(f"{a['seconds'] / b['seconds']:.2f}× the seconds and {a['nfe']} instead of {b['nfe']} NFE "
                        f"({c}, {jvp})" for a, b, c, jvp in ratios)
            + f": fewer seconds in {faster} of {len(ratios)} cases.")
    return out + [""] if out else []


def _shape(shape: list[int]) -> str:
    return "×".join(map(str, shape))


def _ms(seconds) -> str:
    return format_cell(None if seconds is None else 1e3 * seconds, ".3f")


def render_markdown(result: dict) -> str:
    env, cfg = result["environment"], result["config"]
    hw = env["hardware"]
    lines = [
        "# Jacobian-vector products for Newton–Krylov: double backward vs torch.func",
        "",
        f"Generated from `{file_name(cfg['out'])}` by `train/_bench_jvp.py` (`python -m train.bench jvp`)"
        f"{' (--quick: tiny sizes, not representative)' if cfg['quick'] else ''}. torch {env['versions']['torch']}, "
        f"{hw['cpu']} ({hw['cpu_cores']} cores, {cfg['threads']} torch thread(s)), commit "
        f"`{(env['git'].get('commit') or '?')[:10]}`{' (dirty)' if env['git'].get('dirty') else ''}; load average "
        f"{result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} after.",
        "",
        f"**Machine load:** {result['note'] or 'no note given.'}",
        "",
        "Blocks (those of `deq.md`): fc f(z, x) = relu(W₁z) + relu(W₂x) (`models.mnist_deq.FCCell`); conv "
        "f(z, x) = GN₃(relu(x + ½·GN₂(conv₂(relu(GN₁(conv₁(z))))))) (`train._bench_deq.ConvBlock`); per sample "
        + ", ".join(dict.fromkeys(f"{p['block']} z {_shape(p['z_shape'])}, x {_shape(p['x_shape'])}"
                                  for p in result["products"]))
        + ". Products J v with J = ∂f/∂z at one random point "
        f"(z, x and v standard normal, seed {cfg['seed']}), {result['dtype']}, under no_grad as inside the "
        f"solver. Medians of {cfg['repeats']} interleaved repeat(s) after a warm-up; each repeat times "
        f"{cfg['products']} f call(s), then per method the setup at the point, the first product and "
        f"{cfg['products']} further product(s) (*product* is their median).",
        "",
        "- *double backward (ours)*: the class `NewtonKrylov(jvp=\"autodiff\")` uses. Setup records f's "
        "graph; the first product also builds the graph of u ↦ Jᵀu; each further product is one backward pass "
        "through it.",
        "- *torch.func.jvp*: forward mode; no setup, every product runs f again.",
        "- *torch.func.linearize*: setup traces f; products replay the trace. A Newton step is at a new point, "
        "so it pays the trace again.",
        "- *finite difference*: `NewtonKrylov(jvp=\"finite_difference\")`: setup is f(z); each product is one "
        "more f call, (f(z + εv) − f(z)) / ε.",
        "",
    ]
    lines += _verdict(result)
    rows = []
    for p in result["products"]:
        rows.append([p["block"], p["batch"], "f(z, x), one call", "–", "–", _ms(p["f_s"]), "1.00", "–"])
        for m in p["methods"]:
            rows.append([
                p["block"], p["batch"], m["label"], _ms(m["setup_s"]), _ms(m["first_product_s"]), _ms(m["product_s"]),
                format_cell(m["product_in_f"], ".2f"),
                format_cell(m["max_rel_diff"], ".1e")
                + ("" if m["median_rel_diff"] is None else " (" + format(m["median_rel_diff"], ".1e") + ")")])
    lines += table_lines(["block", "batch", "method", "setup ms", "first product ms", "product ms", "product in f calls",
                          "rel. diff vs ours, max (median)"], rows, "lrlrrrrr")
    lines += [
        "",
        f"## NewtonKrylov to tol {cfg['tol']:g} in {result['dtype']}",
        "",
        f"Each block's fixed point from z = 0 on the same x, `NewtonKrylov(tol={cfg['tol']:g}, abs_tol=0, "
        f"max_iter={cfg['max_iter']}, jvp=..., fixed_point_steps=...)`, other options at their defaults, under "
        "no_grad as the DEQ layer solves. *iterations* count the plain ones too; NFE counts f calls plus JVPs "
        "(the solver's own count); residual is the largest per-sample ‖f(z) − z‖ / ‖f(z)‖ of the result; "
        "seconds are medians over the repeats.",
        "",
    ]
    lines += table_lines(
        ["block", "batch", "jvp", "plain iterations first", "outcome", "iterations", "Newton steps", "NFE", "JVPs",
         "residual", "seconds"],
        [[s["block"], s["batch"], s["jvp"], s["fixed_point_steps"], s["outcome"], s["n_iter"], s["newton_steps"],
          s["nfe"], s["n_jvp"], format_cell(s["residual_max"], ".1e"), format_cell(s["seconds"], ".4f")]
         for s in result["solves"]],
        "lrlrlrrrrrr")
    lines.append("")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> Config:
    p = _cli.ArgumentParser(prog="python -m train.bench jvp", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file (a .md summary is written beside it)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: tiny blocks, 1 repeat, 1 further product")
    p.add_argument("--repeats", type=_cli.positive_int, default=5, help="interleaved timed repeats (default 5)")
    p.add_argument("--products", type=_cli.positive_int, default=3,
                   help="products timed per linearization point after the first (default 3)")
    p.add_argument("--threads", type=_cli.positive_int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--tol", type=_cli.positive_float, default=1e-6, help="NewtonKrylov's relative tol (default 1e-6)")
    p.add_argument("--max-iter", type=_cli.positive_int, default=50, help="NewtonKrylov's max_iter (default 50)")
    p.add_argument("--seed", type=_cli.seed, default=0)
    p.add_argument("--note", default="",
                   help="what else ran on the machine during the run, recorded in the JSON and the summary")
    a = p.parse_args(argv)
    common = dict(out=a.out, threads=a.threads, tol=a.tol, max_iter=a.max_iter, seed=a.seed, note=a.note)
    if a.quick:
        return Config(**common, quick=True, repeats=1, products=1)
    return Config(**common, repeats=a.repeats, products=a.products)


def main(argv: list[str] | None = None) -> int:
    return benchmark_main(argv, parse=parse, run=run, render=render_markdown)
