"""How gradients reach the parameters of f through z* = f(z*, x).

Implicit-function theorem: with v = ∂L/∂z*, solve (I − J)ᵀ g = v for J = ∂f/∂z at z*, then
∂L/∂θ = gᵀ ∂f/∂θ. Only one f evaluation at z* (with its graph) is kept, never the forward
iterates, so memory does not grow with the number of forward iterations.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, ClassVar

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from implicit._counting import BackwardTally, count_backward
from implicit._outcome import Outcome
from implicit.deq._fixed_point import FixedPoint
from implicit.deq._gmres import KrylovStats, gmres
from implicit.deq._root import Fn, RootSolution, RootSolver, check_int, check_tolerances, check_unit, norms

Vjp = Callable[[Tensor], Tensor]


@dataclasses.dataclass(kw_only=True)
class BackwardRecord(BackwardTally):
    """Filled in when (and each time) the backward pass runs; zeros before.

    ``nfe`` counts vector-Jacobian products of f (including the final one that carries the
    gradient to θ and x); ``n_iter``, ``residual`` and ``outcome`` describe the last adjoint
    solve (None for strategies without one).
    """

    nfe: int = 0
    n_iter: int = 0
    residual: Tensor | None = None
    outcome: Outcome | None = None

    def add_backward(self, n: int) -> None:
        self.nfe += n


# ---------------------------------------------------------------- adjoint linear solvers


class AdjointSolver(abc.ABC):
    """Solves (I − Jᵀ) g = v given u ↦ Jᵀu."""

    @abc.abstractmethod
    def solve(self, vjp: Vjp, v: Tensor) -> tuple[Tensor, KrylovStats]:
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class GMRES(AdjointSolver):
    """Restarted GMRES on (I − Jᵀ) g = v, per sample; ``max_iter`` bounds the VJPs."""

    tol: float = 1e-5
    abs_tol: float = 1e-10
    restart: int = 20
    max_iter: int = 40

    def __post_init__(self):
        check_tolerances("GMRES", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_int("GMRES", "restart", self.restart, minimum=1)

    def solve(self, vjp: Vjp, v: Tensor) -> tuple[Tensor, KrylovStats]:
        return gmres(lambda u: u - vjp(u), v, tol=self.tol, abs_tol=self.abs_tol,
                     restart=self.restart, max_iter=self.max_iter)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FixedPointBackward(AdjointSolver):
    """Iterates g ← Jᵀg + v; converges when the forward map is a contraction at z*."""

    tol: float = 1e-5
    abs_tol: float = 1e-10
    max_iter: int = 50

    def __post_init__(self):
        check_tolerances("FixedPointBackward", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)

    def solve(self, vjp: Vjp, v: Tensor) -> tuple[Tensor, KrylovStats]:
        g = v
        vn = norms(v)
        target = torch.clamp_min(self.tol * vn, self.abs_tol)
        n = 0
        while True:
            g_new = vjp(g) + v
            n += 1
            res = norms(g_new - g)
            g = g_new
            if bool((res <= target).all()) or n >= self.max_iter:
                break
        rel = res / vn.clamp_min(torch.finfo(v.dtype).tiny)
        return g, KrylovStats(n_matvec=n, n_iter=n, residual=rel, converged=res <= target)


# ---------------------------------------------------------------- backward strategies


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attached:
    """A solve plus the layer output that carries a strategy's gradient.

    ``z_leaf``/``fz`` are f evaluated at z* with its graph, when the strategy built one
    (the Jacobian regularizer reuses it).
    """

    out: Tensor
    solution: RootSolution
    extra_nfe: int
    z_leaf: Tensor | None
    fz: Tensor | None


class Backward(abc.ABC):
    """Runs the forward solve and wires the layer output's gradient.

    ``assumes_fixed_point``: the gradient is derived from z* = f(z*, x), so it is wrong for a solve
    that did not converge (the DEQ layer then refuses to backpropagate unless told otherwise).
    """

    assumes_fixed_point: ClassVar[bool] = True

    @abc.abstractmethod
    def run(self, solver: RootSolver, f: Fn, z0: Tensor, record: BackwardRecord) -> Attached:
        ...


def _solve_detached(solver: RootSolver, f: Fn, z0: Tensor) -> RootSolution:
    with torch.no_grad():
        return solver.solve(f, z0)


class _ImplicitGrad(torch.autograd.Function):
    """Identity on f(z*) in forward; in backward replaces v by g = (I − Jᵀ)⁻¹ v.

    ``link`` holds z* (a leaf) and f(z*) with its graph, used for the VJPs; g then flows on
    through that same graph to θ and x.
    """

    @staticmethod
    def forward(ctx, fz, link, adjoint, record):
        ctx.link, ctx.adjoint, ctx.record = link, adjoint, record
        return fz.detach().clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, v):
        z_leaf, fz = ctx.link

        def vjp(u: Tensor) -> Tensor:
            return torch.autograd.grad(fz, z_leaf, u, retain_graph=True)[0]

        g, st = ctx.adjoint.solve(vjp, v)
        rec = ctx.record
        # the adjoint solve's products plus the final VJP that carries g on to θ and x, counted
        # through the same tally as every other strategy (implicit._counting)
        rec.add_backward(st.n_matvec + 1)
        rec.n_iter = st.n_iter
        rec.residual = st.residual
        rec.outcome = Outcome.SUCCESSFUL if bool(st.converged.all()) else Outcome.NOT_CONVERGED
        return g, None, None, None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImplicitBackward(Backward):
    """Implicit-function-theorem gradient; the adjoint solve by ``solver`` (GMRES by default).

    The layer output is f(z*, x) (one more f call than the solve), so its value and its
    gradient both come from the same evaluation at z*.
    """

    solver: AdjointSolver = GMRES()

    def __post_init__(self):
        if not isinstance(self.solver, AdjointSolver):
            raise TypeError(
                f"ImplicitBackward: solver must be an AdjointSolver (GMRES(...) or FixedPointBackward(...)), "
                f"got {type(self.solver).__name__}"
            )

    def run(self, solver, f, z0, record):
        sol = _solve_detached(solver, f, z0)
        if not torch.is_grad_enabled():
            with torch.no_grad():
                return Attached(out=f(sol.z), solution=sol, extra_nfe=1, z_leaf=None, fz=None)
        z_leaf = sol.z.detach().requires_grad_(True)
        fz = f(z_leaf)
        out = _ImplicitGrad.apply(fz, (z_leaf, fz), self.solver, record)
        return Attached(out=out, solution=sol, extra_nfe=1, z_leaf=z_leaf, fz=fz)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JacobianFreeBackward(Backward):
    """Jacobian-free backprop (Fung et al. 2022): g = v, i.e. backprop through one f at z*."""

    def run(self, solver, f, z0, record):
        sol = _solve_detached(solver, f, z0)
        fz = f(sol.z.detach())
        out = count_backward(fz, record, 1) if fz.requires_grad else fz
        return Attached(out=out, solution=sol, extra_nfe=1, z_leaf=None, fz=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhantomGradient(Backward):
    """Phantom gradient (Geng et al. 2021): ``k`` damped steps z ← z + α(f(z) − z) from z*, backpropagated.

    The layer output is the last of those steps (memory grows with k, not with the solve).
    """

    k: int = 5
    alpha: float = 0.5

    def __post_init__(self):
        check_int("PhantomGradient", "k", self.k, minimum=1)
        check_unit("PhantomGradient", "alpha", self.alpha)

    def run(self, solver, f, z0, record):
        sol = _solve_detached(solver, f, z0)
        z = sol.z.detach()
        for _ in range(self.k):
            z = z + self.alpha * (f(z) - z)
        out = count_backward(z, record, self.k) if z.requires_grad else z
        return Attached(out=out, solution=sol, extra_nfe=self.k, z_leaf=None, fz=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unrolled(Backward):
    """Backpropagation through every forward iteration (memory grows with the iteration count).

    Needs a solver whose loop is differentiable tensor algebra: ``FixedPoint``. The gradient is
    that of the iterations run, converged or not.
    """

    assumes_fixed_point: ClassVar[bool] = False

    def run(self, solver, f, z0, record):
        if not isinstance(solver, FixedPoint):
            raise TypeError(
                f"Unrolled() backward needs solver=FixedPoint(...) (a differentiable loop), got "
                f"{type(solver).__name__}; use ImplicitBackward() with other solvers"
            )
        sol = solver.solve(f, z0)
        out = sol.z
        if out.requires_grad:
            out = count_backward(out, record, sol.stats.n_iter)
        return Attached(out=out, solution=sol, extra_nfe=0, z_leaf=None, fz=None)
