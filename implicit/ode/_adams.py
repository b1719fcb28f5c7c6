"""Variable-step Adams methods of order 3: VCAB3 (explicit) and VCABM3 (predictor-corrector, PECE).

An Adams step integrates a polynomial interpolant of past slopes over [t_n, t_n + h]. With variable
steps its weights depend on the step history; here they are computed exactly as the integrals of
the Lagrange basis polynomials on the actual nodes (Hairer, Nørsett & Wanner I, III.5, in Lagrange
rather than divided-difference form: for three or four nodes the closed form is short and exact in
float64, and it gives every formula, predictor, corrector and error estimate, from one routine).

The multistep loop keeps the slopes of the last accepted points only, so a rejected attempt leaves
no trace in the history; output times are landed on by clipping the step, which the variable
coefficients absorb.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Sequence, final

import torch
from torch import Tensor

from implicit._counting import count_backward
from implicit._outcome import Outcome
from implicit.ode import _tableau
from implicit.ode._controller import PIController
from implicit.ode._solver import AbstractSolver

# NaN/Inf rejections tolerated before a solve is declared NONFINITE: the RK loop's rule
_MAX_NONFINITE_RETRIES = 5
_MAX_NONFINITE_TOTAL = 20


def _poly_mul_linear(p: list[float], root: float) -> list[float]:
    """Coefficients (ascending) of p(s)·(s − root)."""
    out = [0.0] * (len(p) + 1)
    for k, c in enumerate(p):
        out[k + 1] += c
        out[k] -= root * c
    return out


def quadrature_weights(nodes: Sequence[float], t_n: float, h: float) -> list[float]:
    """w_i with Σ w_i·g(nodes_i) = ∫_{t_n}^{t_n+h} p(t) dt for the interpolant p of g on ``nodes``.

    Exact for polynomials of degree < len(nodes). ``h`` is signed (backward-in-time solves).
    """
    a = [x - t_n for x in nodes]
    if len(set(a)) != len(a):
        raise ValueError(f"quadrature nodes must be distinct, got {list(nodes)}")
    weights = []
    for i, ai in enumerate(a):
        poly, denom = [1.0], 1.0
        for j, aj in enumerate(a):
            if j != i:
                poly = _poly_mul_linear(poly, aj)
                denom *= ai - aj
        integral = sum(c * h ** (k + 1) / (k + 1) for k, c in enumerate(poly))
        weights.append(integral / denom)
    return weights


# -- solver objects ------------------------------------------------------------------------------

_START = dataclasses.replace(_tableau.BOSH3, name="bosh3 (Adams start)", stiffness_stages=None)





@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractAdamsSolver(AbstractSolver):
    """A variable-step Adams method of order 3, started with Bogacki–Shampine 3(2) steps.

    Given to :func:`~implicit.ode.odeint` (and so to ``NeuralODE`` and ``SteadyState``) like a
    Runge–Kutta solver, with ``rtol``/``atol``. Its default controller is OrdinaryDiffEq's for
    these methods: the PI controller with the order-3 defaults ``beta1 = 7/30``, ``beta2 = 2/15``
    (OrdinaryDiffEq.jl v5.50.0, tag commit e6c0a9f9, ``src/alg_utils.jl``: beta1_default =
    7/(10·alg_order), beta2_default = 2/(5·alg_order), alg_order(VCAB3) = alg_order(VCABM3) = 3;
    VCAB3/VCABM3 are not ``isstandard``, so they get the PI controller). The error estimate enters
    the controller as a 3rd-order method's. Steps record E_j and h_j; there is no stiffness
    estimate (None in the stats).

    The first two accepted steps are Bogacki–Shampine steps (3 f calls each, with their embedded
    error estimate), which give the three points of slope history an order-3 Adams step needs, as
    OrdinaryDiffEq does. Unlike OrdinaryDiffEq v5.50 (whose start counter and step history advance
    on a rejected start step as well), a rejected attempt, start step or Adams step, leaves the
    history untouched.
    """

    order: int = dataclasses.field(default=3, init=False)

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        """The tableau of the starting steps; the Adams steps have no stiffness estimate, so neither
        do these (the record's stiffness fields are None)."""
        return _START

    def default_controller(self) -> PIController:
        return PIController(beta1=7 / 30, beta2=2 / 15)

    @abc.abstractmethod
    def attempt(self, core, t_n: float, y_n: Tensor, history, h: float, t1: float):
        """One Adams attempt of (signed) size ``h`` from (t_n, y_n) to t1, with the slopes ``history``
        [(t, f), ...] of the last accepted points, newest first. Returns (y1, err); the caller
        evaluates f(t1, y1) once the step is accepted."""


def _combine(base: Tensor, weights, fs) -> Tensor:
    from implicit.ode._integrate import _lincomb

    return _lincomb(base, list(weights), list(fs))


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class VCAB3(AbstractAdamsSolver):
    """Variable-coefficient Adams–Bashforth of order 3: one f call per accepted step, none per rejected one.

    y_{n+1} = y_n + ∫ p₃ over the step, p₃ interpolating f at t_n, t_{n−1}, t_{n−2}; the error
    estimate is the difference with the order-2 formula (nodes t_n, t_{n−1}), so a rejected attempt
    costs no f call (OrdinaryDiffEq.jl v5.50.0, ``src/perform_step/adams_bashforth_moulton_perform_step.jl``,
    VCAB3: ``utilde = g[k]·ϕstar_n[k]``, f evaluated only after acceptance).
    """

    def attempt(self, core, t_n, y_n, history, h, t1):
        (t0, f0), (tm1, fm1), (tm2, fm2) = history[:3]
        w3 = quadrature_weights([t0, tm1, tm2], t_n, h)
        w2 = quadrature_weights([t0, tm1], t_n, h)
        y1 = _combine(y_n, w3, [f0, fm1, fm2])
        err = _combine(None, [w3[0] - w2[0], w3[1] - w2[1], w3[2]], [f0, fm1, fm2])
        return y1, err


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class VCABM3(AbstractAdamsSolver):
    """Variable-coefficient Adams–Bashforth–Moulton of order 3, PECE: two f calls per accepted step.

    Predict with Adams–Bashforth of order 2 (nodes t_n, t_{n−1}), evaluate f there, correct with
    Adams–Moulton of order 3 (nodes t_{n+1}, t_n, t_{n−1}), estimate the error as the order-4
    Adams–Moulton formula (adding t_{n−2}) minus the corrector, and evaluate f at the accepted
    corrector (OrdinaryDiffEq.jl v5.50.0, same file, VCABM3: predictor Σ_{i<k} g_i ϕ*_i, corrector
    ``+ g[k]·ϕ_np1[k]``, ``utilde = (g[k+1] − g[k])·ϕ_np1[k+1]``).
    """

    def attempt(self, core, t_n, y_n, history, h, t1):
        (t0, f0), (tm1, fm1), (tm2, fm2) = history[:3]
        y_p = _combine(y_n, quadrature_weights([t0, tm1], t_n, h), [f0, fm1])
        f_p = core.call(t1, y_p)
        w3 = quadrature_weights([t1, t0, tm1], t_n, h)
        w4 = quadrature_weights([t1, t0, tm1, tm2], t_n, h)
        y1 = _combine(y_n, w3, [f_p, f0, fm1])
        err = _combine(None, [w4[0] - w3[0], w4[1] - w3[1], w4[2] - w3[2], w4[3]], [f_p, f0, fm1, fm2])
        return y1, err


# -- the multistep loop ----------------------------------------------------------------------------

def run(core, solver: AbstractAdamsSolver, grid: Sequence[float] | None = None):
    """Integrate with ``solver`` using ``core`` (the RK integrator's state for this solve: its f calls,
    error norm, controller, initial step, record) for evaluations and the record.

    ``grid`` (tests): step through exactly these times, accepting every step (no control), to
    check the formulas on a given, possibly non-uniform, step sequence. With ``core.dt`` set, fixed
    steps of that size are taken (landing on the output times).
    """
    ts, sign = core.ts, core.sign
    t0, y0 = ts[0], core.y0
    outs = [y0]
    E_list, h_list = [], []
    n_acc = n_rej = attempts = 0
    outcome, message = Outcome.SUCCESSFUL, ""
    want_E = core.record
    controller, order = core.controller, solver.order
    cstate = controller.init_state()
    uncontrolled = grid is not None or core.dt is not None

    k0 = core.call(t0, y0) if core.f0 is None else core.f0
    if core.f0 is not None and core.grad and k0.requires_grad:
        k0 = count_backward(k0, core.counter)  # one VJP of f in backward, as in the RK loop
    if not bool(torch.isfinite(k0).all()):
        return core.finish(outs, E_list, [], h_list, 0, 0, float(t0), Outcome.NONFINITE,
                           f"f produced NaN/Inf at the initial time t={float(t0):.10g} (initial state)")
    history = [(t0, k0)]  # (t, f) of accepted points, newest first; at most 3 are ever used
    if grid is not None:
        grid = list(grid)
        if grid[0] != t0 or grid[-1] != ts[-1] or len(ts) != 2:
            raise ValueError("grid must run from t[0] to t[-1] of a two-point t")
        steps = iter(grid[1:])
    elif core.dt is not None:
        h = sign * core.dt
        n_fixed, t_anchor = 0, t0
    else:
        h = sign * core.dt0 if core.dt0 is not None else sign * core.initial_step(t0, y0, k0)
        h = core.limit(h)
        core.h_first = h

    i_out = 1
    nonfinite_run = n_nonfinite = 0
    t_nonfinite = t0
    while i_out < len(ts):
        T = ts[i_out]
        if attempts >= core.max_steps:
            outcome, message = core.max_steps_failure(t0, n_acc, n_rej)
            break
        if grid is not None:
            t1 = next(steps)
        elif core.dt is not None:
            t1 = t_anchor + (n_fixed + 1) * h
            if sign * (T - t1) <= 1e-10 * abs(h):
                t1 = T
        else:
            if core.step_underflows(h, t0):
                outcome, message = core.underflow_failure(h, t0, attempts, n_nonfinite, t_nonfinite)
                break
            t1 = t0 + h
            # land on T when past it, or so close short of it that the step left would be a sliver:
            # two nearly equal nodes would blow up the next steps' interpolation weights
            if sign * (t1 - T) > 0 or abs(T - t1) <= 1e-6 * abs(h):
                t1 = T
        hh = t1 - t0
        attempts += 1
        starting = len(history) < 3
        if starting:
            y1, f1, err, _, _ = core.step(t0, y0, history[0][1], hh, t1)
        else:
            y1, err = solver.attempt(core, t0, y0, history, hh, t1)
            f1 = None
        if want_E:
            E = core.error_ratio(err, y0, y1)
            r = float(E.detach())
        else:
            with torch.no_grad():
                r = float(core.error_ratio(err, y0, y1))
        if uncontrolled:
            accept = True
        else:
            if not math.isfinite(r):
                n_rej += 1
                nonfinite_run += 1
                n_nonfinite += 1
                t_nonfinite = t0
                if nonfinite_run >= _MAX_NONFINITE_RETRIES or n_nonfinite >= _MAX_NONFINITE_TOTAL:
                    outcome = Outcome.NONFINITE
                    message = (f"f produced NaN/Inf in the step from t={t0:.10g} (step {attempts}, h={hh:.3g}); "
                               f"{n_nonfinite} such steps, {nonfinite_run} in a row")
                    break
                h = hh * controller.nonfinite_factor
                continue
            nonfinite_run = 0
            accept = r <= 1.0
            h, cstate = controller.propose(hh, r, accept, cstate, order)
            h = core.limit(h)
        if not accept:
            n_rej += 1
            continue
        if f1 is None:
            f1 = core.call(t1, y1)
        n_acc += 1
        h_list.append(abs(hh))
        if want_E:
            E_list.append(E)
        history = [(t1, f1)] + history[:2]
        t0, y0 = t1, y1
        if core.dt is not None:
            n_fixed += 1
        if t1 == T:
            outs.append(y1)
            i_out += 1
            if core.dt is not None:
                t_anchor, n_fixed = T, 0
        if core.stop is not None and bool(core.stop(core.time(t0, y0).detach(), y0, f1)):
            if t1 != T:
                outs.append(y0)
            break

    if uncontrolled and outcome is Outcome.SUCCESSFUL and not bool(torch.isfinite(outs[-1]).all()):
        bad = next(i for i, y in enumerate(outs) if not bool(torch.isfinite(y).all()))
        outcome = Outcome.NONFINITE
        message = f"f produced NaN/Inf: the state at output time t={ts[bad]:.10g} (index {bad}) is not finite"
    return core.finish(outs, E_list, [], h_list, n_acc, n_rej, float(t0), outcome, message)
