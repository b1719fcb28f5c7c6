"""Limited-memory ("good") Broyden on g(z) = f(z) − z for batched fixed points."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import (
    Evaluator, Fn, Monitor, RootSolution, RootSolver, check_stopping_test, check_growth, check_int,
    check_start, check_tolerances, combine, finish, project,
)


def _lowrank(P: Tensor, Q: Tensor, v: Tensor) -> Tensor:
    """Σᵢ pᵢ (qᵢ·v) for stacked rows P, Q (B, n, d) and v (B, d)."""
    return combine(project(Q, v), P)


@renamed_keyword("criterion", "stopping_test")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Broyden(RootSolver):
    """Quasi-Newton with a low-rank inverse Jacobian of g = f − id, started at −I.

    The inverse is kept as −I + Σ uᵢ vᵢᵀ over the last ``memory`` updates (oldest dropped
    first), so one step costs one f call and O(memory·d) per sample. Full steps, no line search.

    ``stopping_test="batch"`` ends the solve when the whole batch, as one vector, passes the residual
    test instead of every sample (see ``implicit.deq._root``).
    """

    tol: float = 1e-4
    abs_tol: float = 1e-8
    max_iter: int = 50
    stopping_test: str = "per_sample"
    memory: int = 20
    max_growth: float | None = 1e3

    def __post_init__(self):
        check_tolerances("Broyden", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_stopping_test("Broyden", self.stopping_test)
        check_int("Broyden", "memory", self.memory, minimum=1)
        check_growth("Broyden", self.max_growth)

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0, "Broyden")
        ev = Evaluator(f, z0, "Broyden")
        mon = Monitor(tol=self.tol, abs_tol=self.abs_tol, stopping_test=self.stopping_test, max_growth=self.max_growth)
        B, m = z0.shape[0], self.memory
        d = z0[0].numel()
        tiny = torch.finfo(z0.dtype).tiny
        # only slots already written are ever read, so no zero fill
        U = z0.new_empty(B, m, d)
        VT = z0.new_empty(B, m, d)
        z = z0
        fz = ev(z)
        g = (fz - z).reshape(B, d)
        n_iter = 0
        while True:
            chk = mon.check(z, fz)
            if chk.done or n_iter >= self.max_iter:
                break
            n = min(n_iter, m)
            active = (~chk.frozen).unsqueeze(-1)
            # Newton direction −J⁻¹g with J⁻¹ = −I + U Vᵀ
            dz = g - _lowrank(U[:, :n], VT[:, :n], g) if n else g
            dz = torch.where(active, dz, torch.zeros_like(dz))
            z = z + dz.reshape(z.shape)
            fz = ev(z)
            g_new = (fz - z).reshape(B, d)
            dg = g_new - g
            g = g_new
            jinv_dg = -dg + _lowrank(U[:, :n], VT[:, :n], dg) if n else -dg
            vt = -dz + _lowrank(VT[:, :n], U[:, :n], dz) if n else -dz
            denom = (vt * dg).sum(-1, keepdim=True)
            ok = active & (denom.abs() > tiny)
            u = torch.where(ok, (dz - jinv_dg) / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(dz))
            s = n_iter % m
            U[:, s] = u
            VT[:, s] = torch.where(ok, vt, torch.zeros_like(vt))
            n_iter += 1
        return finish(z=z, check=chk, n_iter=n_iter, ev=ev, monitor=mon, max_iter=self.max_iter,
                      name="Broyden")
