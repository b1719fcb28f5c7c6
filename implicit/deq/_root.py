"""What every root solver shares: the interface, its statistics record, and the residual test.

A root solver looks for z* with f(z*) = z* on a batch (batch first, any trailing shape). Samples
are independent: f must not mix samples (GroupNorm is fine, BatchNorm in training mode is not).
Each sample stops on its own relative residual ``‖f(z) − z‖ / ‖f(z)‖ ≤ tol`` or absolute
residual ``‖f(z) − z‖ ≤ abs_tol``; a sample that has converged stops changing. The solve ends when
every sample has converged (``criterion="per_sample"``) or, with ``criterion="batch"``, when the
whole batch taken as one vector passes the same test: the test of solvers that treat the batch as
one system (DEQ.jl flattens the batch into one state; MDEQ's Broyden takes one norm over the
batch), cheaper, but single samples may stay above tol, which ``stats.converged`` and
``stats.residual`` still report per sample.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import torch
from torch import Tensor

from implicit._outcome import Outcome

Fn = Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootStats:
    """Statistics of one root solve.

    ``nfe`` counts batched calls of f plus Jacobian-vector products (``n_jvp`` of them).
    ``residual`` is the per-sample relative residual ‖f(z) − z‖ / ‖f(z)‖ of the returned z;
    ``history`` the largest per-sample relative residual after each iteration (index 0 = start);
    for a solver stopping on the batch criterion (``criterion="batch"``), the batch's.
    """

    nfe: int
    n_jvp: int
    n_iter: int
    residual: Tensor
    converged: Tensor
    history: tuple[float, ...]
    outcome: Outcome
    message: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootSolution:
    z: Tensor
    stats: RootStats


class RootSolver(abc.ABC):
    """Finds z* = f(z*) for a batch of independent samples."""

    @abc.abstractmethod
    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        """Solve from ``z0`` (batch first); ``f`` maps a tensor of z0's shape to the same shape."""


def check_tolerances(owner: str, *, tol: float, abs_tol: float, max_iter: int) -> None:
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"{owner}: tol must be a positive number, got {tol!r}")
    if not (isinstance(abs_tol, (int, float)) and abs_tol >= 0):
        raise ValueError(f"{owner}: abs_tol must be a non-negative number, got {abs_tol!r}")
    if not (isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter >= 0):
        raise ValueError(f"{owner}: max_iter must be a non-negative int, got {max_iter!r}")


CRITERIA = ("per_sample", "batch")


def check_criterion(owner: str, criterion: object) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"{owner}: criterion must be 'per_sample' or 'batch', got {criterion!r}")


def check_start(z0: object) -> None:
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a torch.Tensor, got {type(z0).__name__}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"z0 must have a non-empty batch dimension first, got shape {tuple(z0.shape)}")
    if not z0.is_floating_point():
        raise TypeError(f"z0 must be a floating-point tensor, got dtype {z0.dtype}")


def norms(t: Tensor) -> Tensor:
    """Per-sample 2-norm over all but the batch dimension."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def project(Q: Tensor, v: Tensor) -> Tensor:
    """(B, n): the dot products of each sample's rows Q (B, n, d) with its v (B, d)."""
    # (B,1,d)@(B,d,n) is several times faster on CPU than the equivalent (B,n,d)@(B,d,1),
    # which falls to a slow batched matrix-vector path when d is large
    return torch.bmm(v.unsqueeze(1), Q.transpose(1, 2)).squeeze(1)


def combine(c: Tensor, P: Tensor) -> Tensor:
    """(B, d): Σᵢ cᵢ Pᵢ per sample, for coefficients c (B, n) and rows P (B, n, d)."""
    return torch.bmm(c.unsqueeze(1), P).squeeze(1)


def bview(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor to broadcast against ``like``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class Evaluator:
    """Calls f for one solve: counts calls, checks the output's shape once.

    Local to a single solve (built and dropped inside ``solve``), so no counter outlives it.
    """

    def __init__(self, f: Fn, z0: Tensor):
        self.f = f
        self.nfe = 0
        self.n_jvp = 0
        self._shape = z0.shape
        self._checked = False

    def __call__(self, z: Tensor) -> Tensor:
        fz = self.f(z)
        self.nfe += 1
        if not self._checked:
            if not isinstance(fz, Tensor):
                raise TypeError(f"f(z, x) must return a Tensor, got {type(fz).__name__}")
            if fz.shape != self._shape:
                raise ValueError(
                    f"f(z, x) must return a tensor of z's shape {tuple(self._shape)}, got shape "
                    f"{tuple(fz.shape)}; make f map z to the same shape (or pass z_shape to the DEQ)"
                )
            self._checked = True
        return fz


class Monitor:
    """Per-sample residual test, history, and the single host sync per iteration."""

    def __init__(self, *, tol: float, abs_tol: float, criterion: str = "per_sample"):
        self.tol = tol
        self.abs_tol = abs_tol
        # criterion "batch": "all converged" means the residual of the whole batch, as one vector, passes
        # the test (the criterion of solvers that treat the batch as one system or ODE state);
        # the per-sample residuals and flags are still computed and reported as they are.
        self.batch = criterion == "batch"
        self.history: list[float] = []

    def check(self, z: Tensor, fz: Tensor) -> tuple[Tensor, Tensor, bool, bool]:
        """Return (relative residual (B,), converged (B,), all converged, all finite)."""
        rn = norms(fz - z)
        fn = norms(fz)
        tiny = torch.finfo(fn.dtype).tiny
        rel = rn / fn.clamp_min(tiny)
        conv = (rn <= self.tol * fn) | (rn <= self.abs_tol)
        finite = torch.isfinite(rn).all()
        if self.batch:
            rn_all, fn_all = rn.square().sum().sqrt(), fn.square().sum().sqrt()
            passed = (rn_all <= self.tol * fn_all) | (rn_all <= self.abs_tol)
            measure = rn_all / fn_all.clamp_min(tiny)
        else:
            passed, measure = conv.all(), rel.max()
        # one sync for all three decisions
        summary = torch.stack([passed.to(rel.dtype), measure, finite.to(rel.dtype)]).tolist()
        all_conv, worst, all_finite = bool(summary[0]), summary[1], bool(summary[2])
        self.history.append(worst)
        return rel, conv, all_conv, all_finite


def finish(
    *,
    z: Tensor,
    rel: Tensor,
    conv: Tensor,
    all_conv: bool,
    all_finite: bool,
    n_iter: int,
    ev: Evaluator,
    monitor: Monitor,
    max_iter: int,
    name: str,
) -> RootSolution:
    if not all_finite:
        outcome = Outcome.NONFINITE
        message = f"{name}: f returned NaN/Inf at iteration {n_iter}"
    elif all_conv:
        outcome = Outcome.SUCCESSFUL
        message = f"{name}: converged in {n_iter} iterations"
    else:
        outcome = Outcome.NOT_CONVERGED
        n_bad = int((~conv).sum())
        message = (
            f"{name}: {n_bad} of {conv.numel()} samples did not converge within max_iter={max_iter} "
            f"(worst relative residual {float(rel.detach().max()):.3e}"
            + (f", batch relative residual {monitor.history[-1]:.3e})" if monitor.batch else ")")
        )
    stats = RootStats(
        nfe=ev.nfe,
        n_jvp=ev.n_jvp,
        n_iter=n_iter,
        residual=rel.detach(),
        converged=conv.detach(),
        history=tuple(monitor.history),
        outcome=outcome,
        message=message,
    )
    return RootSolution(z=z, stats=stats)
