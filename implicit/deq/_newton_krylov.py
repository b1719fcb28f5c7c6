"""Jacobian-free Newton–Krylov with a per-sample backtracking line search."""

from __future__ import annotations

import abc
import dataclasses
import math

import torch
from torch import Tensor

from implicit.deq._gmres import gmres
from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import (
    Evaluator,
    Fn,
    Monitor,
    RootSolution,
    RootSolver,
    bview,
    check_bool,
    check_choice,
    check_stopping_test,
    check_growth,
    check_int,
    check_start,
    check_tolerances,
    check_unit,
    finish,
    norms,
)


class _Linearization(abc.ABC):
    """f evaluated at z (``fz``), plus Jacobian-vector products J v = ∂f/∂z(z)·v at the same point."""

    fz: Tensor

    @abc.abstractmethod
    def jvp(self, v: Tensor) -> Tensor:
        ...


class _AutodiffLinearization(_Linearization):
    """Exact JVPs by the double-backward trick.

    With y = f(z) recorded once, w(u) = (∂f/∂z)ᵀu is linear in u, so J v = ∂(w·v)/∂u. The graph
    of f is built once per Newton step and every product is one backward pass through the
    (linear) VJP graph, while torch.func.jvp re-runs the primal f with every product, and
    torch.func.linearize traces f anew at every Newton step. All three form the same product;
    how closely they agree and what each costs is measured in ``results/bench/jvp.md``
    (``python -m train.reproduce bench_jvp``).
    """

    def __init__(self, ev: Evaluator, z: Tensor):
        self._ev = ev
        with torch.enable_grad():
            self._z = z.detach().requires_grad_(True)
            self._y = ev(self._z)
        self.fz = self._y.detach()
        self._u: Tensor | None = None
        self._w: Tensor | None = None

    def jvp(self, v: Tensor) -> Tensor:
        if self._w is None:
            with torch.enable_grad():
                self._u = torch.zeros_like(self._y, requires_grad=True)
                (self._w,) = torch.autograd.grad(self._y, self._z, self._u, create_graph=True)
        (jv,) = torch.autograd.grad(self._w, self._u, v, retain_graph=True)
        self._ev.n_jvp += 1
        self._ev.nfe += 1
        return jv


class _FiniteDifferenceLinearization(_Linearization):
    """JVPs by one-sided differences J v ≈ (f(z + εv) − f(z)) / ε: one f call each, no graph.

    ε = √(machine eps)·(1 + ‖z‖)/‖v‖ per sample, so the perturbation is a fixed fraction of
    the sample's size: the truncation error (∝ ε‖v‖²) and the rounding error (∝ eps/ε) are
    balanced, each about √eps relative (3e-4 in float32, 1e-8 in float64).
    """

    def __init__(self, ev: Evaluator, z: Tensor):
        self._ev = ev
        self._z = z.detach()
        with torch.no_grad():
            self.fz = ev(self._z)
        self._scale = math.sqrt(torch.finfo(z.dtype).eps) * (1 + norms(self._z))

    def jvp(self, v: Tensor) -> Tensor:
        vn = norms(v)
        nonzero = vn > 0
        # a zero v (a converged sample's padding) gets ε = 0 and a zero product, not 0/0
        eps = torch.where(nonzero, self._scale / vn.clamp_min(torch.finfo(vn.dtype).tiny), torch.zeros_like(vn))
        with torch.no_grad():
            fzv = self._ev.f(self._z + bview(eps, v) * v)
        self._ev.n_jvp += 1
        self._ev.nfe += 1
        inv = torch.where(nonzero, 1 / eps, torch.zeros_like(eps))
        return (fzv - self.fz) * bview(inv, v)


_LINEARIZATIONS = {"autodiff": _AutodiffLinearization, "finite_difference": _FiniteDifferenceLinearization}


@renamed_keyword("criterion", "stopping_test")
@dataclasses.dataclass(frozen=True, kw_only=True)
class NewtonKrylov(RootSolver):
    """Inexact Newton on g(z) = f(z) − z, each step solving (I − ∂f/∂z) Δ = f(z) − z by GMRES.

    The GMRES tolerance (forcing term) is min(``gmres_tol``, √(relative residual)) per sample:
    it tends to 0 with the residual, so convergence near the root is superlinear (order 1.5),
    while early, far-from-root steps spend few JVPs. It is never below 0.5·tol / (relative
    residual), capped at 0.5, so the last step is not solved more finely than tol needs.
    ``gmres_restart`` is the Krylov dimension per cycle, ``gmres_max_iter`` the JVP budget per
    Newton step; a sample whose cycle did not halve its linear residual stops there and, if its
    linear residual is still above 0.5, steps along f(z) − z (fixed-point direction) instead of
    the Newton direction. With ``line_search`` each sample backtracks (halving, up to
    ``max_backtracks`` times) until ‖f(z) − z‖ drops by the Armijo factor (1 − 1e-4·step); a
    non-finite trial also backtracks.

    ``jvp`` chooses how J v is formed: ``"autodiff"`` (exact; one backward pass through the
    double-backward graph of f, built once per Newton step, per product) or
    ``"finite_difference"`` (one f call under no_grad per product, no graph; its step is chosen
    for an error of about √eps on a smooth f, more where f has kinks such as relu's, which can
    slow Newton's final convergence). Which costs less
    depends on f: a backward pass through f's graph against one more f call (measured on the
    benchmark blocks: ``results/bench/jvp.md``). ``fixed_point_steps`` plain iterations
    z ← f(z) run before the first Newton step: far from the root (and at z = 0, where
    GroupNorm's Jacobian is singular) a Newton step's several JVPs buy little, while a plain
    iteration costs one f call. They count in ``n_iter`` and the residual history.

    Defaults (``jvp="finite_difference"``, ``fixed_point_steps=8``) were chosen by the solver
    benchmark against torchdeq (``results/bench/deq.md`` has its numbers). For Newton's own
    quadratic tail at tight float64 tolerances, pass ``jvp="autodiff", fixed_point_steps=0``.

    ``stopping_test="batch"`` ends the solve when the whole batch, as one vector, passes the residual
    test instead of every sample (see ``implicit.deq._root``).
    """

    tol: float = 1e-4
    abs_tol: float = 1e-8
    max_iter: int = 30
    stopping_test: str = "per_sample"
    gmres_tol: float = 0.1
    gmres_restart: int = 10
    gmres_max_iter: int = 30
    line_search: bool = True
    max_backtracks: int = 6
    jvp: str = "finite_difference"
    fixed_point_steps: int = 8
    max_growth: float | None = 1e3

    def __post_init__(self):
        check_tolerances("NewtonKrylov", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_stopping_test("NewtonKrylov", self.stopping_test)
        check_unit("NewtonKrylov", "gmres_tol", self.gmres_tol, closed=False)
        check_int("NewtonKrylov", "gmres_restart", self.gmres_restart, minimum=1)
        check_int("NewtonKrylov", "gmres_max_iter", self.gmres_max_iter, minimum=1)
        check_bool("NewtonKrylov", "line_search", self.line_search)
        check_int("NewtonKrylov", "max_backtracks", self.max_backtracks, minimum=0)
        check_choice("NewtonKrylov", "jvp", self.jvp, tuple(_LINEARIZATIONS))
        check_int("NewtonKrylov", "fixed_point_steps", self.fixed_point_steps, minimum=0)
        check_growth("NewtonKrylov", self.max_growth)

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0, "NewtonKrylov")
        ev = Evaluator(f, z0, "NewtonKrylov")
        mon = Monitor(tol=self.tol, abs_tol=self.abs_tol, stopping_test=self.stopping_test, max_growth=self.max_growth)
        z = z0.detach()
        fz, lin = self._evaluate(ev, z, plain=self.fixed_point_steps > 0)
        n_iter = 0
        while True:
            chk = mon.check(z, fz)
            if chk.done or n_iter >= self.max_iter:
                break
            frozen = chk.frozen
            if n_iter < self.fixed_point_steps:
                z = torch.where(bview(frozen, z), z, fz)
                n_iter += 1
                fz, lin = self._evaluate(ev, z, plain=n_iter < self.fixed_point_steps)
                continue
            r = torch.where(bview(frozen, z), torch.zeros_like(z), fz - z)
            jvp = lin.jvp
            step, kst = gmres(
                lambda v: v - jvp(v),
                r,
                tol=self._forcing(chk.rel),
                abs_tol=0.0,
                restart=self.gmres_restart,
                max_iter=self.gmres_max_iter,
                give_up_below=0.5,
            )
            # Where the Krylov solve stalled (e.g. GroupNorm at z = 0, whose Jacobian blows up)
            # the Newton direction is unreliable: take the fixed-point direction f(z) − z instead.
            # (NaN from a JVP compares False, so a non-finite Krylov solve also falls back.)
            stalled = ~(kst.residual <= 0.5) | ~torch.isfinite(norms(step))
            step = torch.where(bview(stalled, z), r, step)
            z, lin = self._line_search(ev, z, step, norms(fz - z), frozen)
            fz = lin.fz
            n_iter += 1
        return finish(z=z, check=chk, n_iter=n_iter, ev=ev, monitor=mon, max_iter=self.max_iter,
                      name="NewtonKrylov")

    def _evaluate(self, ev: Evaluator, z: Tensor, *, plain: bool) -> tuple[Tensor, _Linearization | None]:
        """f(z), and the linearization at z unless the next step is a plain iteration (no graph)."""
        if plain:
            with torch.no_grad():
                return ev(z), None
        lin = _LINEARIZATIONS[self.jvp](ev, z)
        return lin.fz, lin

    def _forcing(self, rel: Tensor) -> Tensor:
        eta = rel.sqrt().clamp(max=self.gmres_tol)
        # no oversolving on the last step: a linear residual of half the way to tol suffices
        eta = torch.maximum(eta, (0.5 * self.tol / rel.clamp_min(torch.finfo(rel.dtype).tiny)).clamp(max=0.5))
        return eta

    def _line_search(self, ev: Evaluator, z: Tensor, step: Tensor, rn: Tensor, conv: Tensor):
        alpha = torch.ones_like(rn)
        tries = self.max_backtracks if self.line_search else 0
        for k in range(tries + 1):
            z_try = z + bview(alpha, z) * step
            lin = _LINEARIZATIONS[self.jvp](ev, z_try)
            if k == tries:
                break
            rn_try = norms(lin.fz - z_try)
            ok = conv | (rn_try <= (1 - 1e-4 * alpha) * rn)  # NaN compares False: backtrack
            if bool(ok.all()):
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        return z_try, lin
