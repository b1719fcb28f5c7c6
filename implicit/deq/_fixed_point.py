"""Plain (optionally damped) fixed-point iteration z ← z + damping·(f(z) − z)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import (
    Evaluator, Fn, Monitor, RootSolution, RootSolver, bview, check_stopping_test, check_start,
    check_growth, check_tolerances, check_unit, finish,
)


@renamed_keyword("criterion", "stopping_test")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FixedPoint(RootSolver):
    """Picard iteration; converges when f is a contraction (linearly, at rate ‖∂f/∂z‖).

    Its loop is plain differentiable tensor algebra, so it is also the solver ``Unrolled()``
    backpropagates through.

    ``stopping_test="batch"`` ends the solve when the whole batch, as one vector, passes the residual
    test instead of every sample (see ``implicit.deq._root``).
    """

    tol: float = 1e-4
    abs_tol: float = 1e-8
    max_iter: int = 100
    stopping_test: str = "per_sample"
    damping: float = 1.0
    max_growth: float | None = 1e3

    def __post_init__(self):
        check_tolerances("FixedPoint", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_stopping_test("FixedPoint", self.stopping_test)
        check_unit("FixedPoint", "damping", self.damping)
        check_growth("FixedPoint", self.max_growth)

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0, "FixedPoint")
        ev = Evaluator(f, z0, "FixedPoint")
        mon = Monitor(tol=self.tol, abs_tol=self.abs_tol, stopping_test=self.stopping_test, max_growth=self.max_growth)
        z = z0
        fz = ev(z)
        n_iter = 0
        while True:
            chk = mon.check(z, fz)
            if chk.done or n_iter >= self.max_iter:
                break
            step = fz if self.damping == 1.0 else z + self.damping * (fz - z)
            z = torch.where(bview(chk.frozen, z), z, step)
            fz = ev(z)
            n_iter += 1
        return finish(z=z, check=chk, n_iter=n_iter, ev=ev, monitor=mon, max_iter=self.max_iter,
                      name="FixedPoint")
