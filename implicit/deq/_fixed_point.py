"""Plain (optionally damped) fixed-point iteration z ← z + damping·(f(z) − z)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit.deq._root import (
    Evaluator, Fn, Monitor, RootSolution, RootSolver, bview, check_criterion, check_start,
    check_tolerances, finish,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FixedPoint(RootSolver):
    """Picard iteration; converges when f is a contraction (linearly, at rate ‖∂f/∂z‖).

    Its loop is plain differentiable tensor algebra, so it is also the solver ``Unrolled()``
    backpropagates through.

    ``criterion="batch"`` ends the solve when the whole batch, as one vector, passes the residual
    test instead of every sample (see ``implicit.deq._root``).
    """

    tol: float = 1e-4
    abs_tol: float = 1e-8
    max_iter: int = 100
    criterion: str = "per_sample"
    damping: float = 1.0

    def __post_init__(self):
        check_tolerances("FixedPoint", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_criterion("FixedPoint", self.criterion)
        if not (isinstance(self.damping, (int, float)) and 0 < self.damping <= 1):
            raise ValueError(f"FixedPoint: damping must be in (0, 1], got {self.damping!r}")

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0)
        ev = Evaluator(f, z0)
        mon = Monitor(tol=self.tol, abs_tol=self.abs_tol, criterion=self.criterion)
        z = z0
        fz = ev(z)
        n_iter = 0
        while True:
            rel, conv, all_conv, all_finite = mon.check(z, fz)
            if all_conv or not all_finite or n_iter >= self.max_iter:
                break
            step = fz if self.damping == 1.0 else z + self.damping * (fz - z)
            z = torch.where(bview(conv, z), z, step)
            fz = ev(z)
            n_iter += 1
        return finish(z=z, rel=rel, conv=conv, all_conv=all_conv, all_finite=all_finite, n_iter=n_iter,
                      ev=ev, monitor=mon, max_iter=self.max_iter, name="FixedPoint")
