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

from typing import Sequence


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

import abc  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
from typing import final  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from implicit._counting import count_backward  # noqa: E402
from implicit._outcome import Outcome  # noqa: E402
from implicit.ode import _tableau  # noqa: E402
from implicit.ode._controller import PIController  # noqa: E402


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractAdamsSolver(abc.ABC):
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
    def start_tableau(self) -> _tableau.ButcherTableau:
        return _tableau.BOSH3

    def default_controller(self) -> PIController:
        return PIController(beta1=7 / 30, beta2=2 / 15)

    @abc.abstractmethod
    def attempt(self, core, t_n: float, y_n: Tensor, history, h: float, t1: float):
        """One Adams attempt from (t_n, y_n) with slope ``history`` [(t, f), ...] (newest first).

        Returns (y1, err, f1): f1 = f(t1, y1) when the step is accepted (evaluated by the caller
        through ``finish_accepted``), the error estimate ``err``.
        """


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
