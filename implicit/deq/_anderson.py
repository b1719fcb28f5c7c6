"""Anderson acceleration (type II, Walker & Ni) for batched fixed points."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import (
    Evaluator, Fn, Monitor, RootSolution, RootSolver, bview, check_stopping_test, check_growth, check_int,
    check_nonnegative, check_start, check_tolerances, check_unit, combine, finish, project,
)


@renamed_keyword("criterion", "stopping_test")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Anderson(RootSolver):
    """Anderson mixing over the last ``m`` iterates.

    Each step picks weights α (Σα = 1) minimising ‖Σ αᵢ (f(zᵢ) − zᵢ)‖² + λ‖α‖², with
    λ = ``lam`` × mean diagonal of the residual Gram matrix (relative, so the regularisation
    does not swamp the fit as residuals shrink), then mixes
    z ← β Σ αᵢ f(zᵢ) + (1 − β) Σ αᵢ zᵢ.

    ``stopping_test="batch"`` ends the solve when the whole batch, as one vector, passes the residual
    test instead of every sample (see ``implicit.deq._root``).
    """

    tol: float = 1e-4
    abs_tol: float = 1e-8
    max_iter: int = 50
    stopping_test: str = "per_sample"
    m: int = 5
    beta: float = 1.0
    lam: float = 1e-4
    max_growth: float | None = 1e3

    def __post_init__(self):
        check_tolerances("Anderson", tol=self.tol, abs_tol=self.abs_tol, max_iter=self.max_iter)
        check_stopping_test("Anderson", self.stopping_test)
        check_int("Anderson", "m", self.m, minimum=1, what="history size")
        check_unit("Anderson", "beta", self.beta, what="mixing")
        check_nonnegative("Anderson", "lam", self.lam)
        check_growth("Anderson", self.max_growth)

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0, "Anderson")
        ev = Evaluator(f, z0, "Anderson")
        mon = Monitor(tol=self.tol, abs_tol=self.abs_tol, stopping_test=self.stopping_test, max_growth=self.max_growth)
        B, m = z0.shape[0], self.m
        d = z0[0].numel()
        # only slots already written are ever read, so no zero fill
        X = z0.new_empty(B, m, d)
        Fb = z0.new_empty(B, m, d)
        G = z0.new_empty(B, m, d)
        gram = z0.new_empty(B, m, m)
        eye = torch.eye(m + 1, dtype=z0.dtype, device=z0.device)
        z = z0
        fz = ev(z)
        n_iter = 0
        while True:
            chk = mon.check(z, fz)
            if chk.done or n_iter >= self.max_iter:
                break
            s = n_iter % m
            n = min(n_iter + 1, m)
            X[:, s] = z.reshape(B, d)
            Fb[:, s] = fz.reshape(B, d)
            G[:, s] = Fb[:, s] - X[:, s]
            row = project(G[:, :n], G[:, s])  # (B, n)
            gram[:, s, :n] = row
            gram[:, :n, s] = row
            if n == 1:
                mixed_f, mixed_x = Fb[:, 0], X[:, 0]
            else:
                H = gram[:, :n, :n]
                scale = torch.diagonal(H, dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(z0.dtype).tiny)
                A = z0.new_zeros(B, n + 1, n + 1)
                A[:, 0, 1:] = 1
                A[:, 1:, 0] = 1
                A[:, 1:, 1:] = H + (self.lam * scale)[:, None, None] * eye[:n, :n]
                rhs = z0.new_zeros(B, n + 1, 1)
                rhs[:, 0] = 1
                alpha = torch.linalg.solve(A, rhs)[:, 1:, 0]  # (B, n)
                mixed_f = combine(alpha, Fb[:, :n])
                mixed_x = combine(alpha, X[:, :n])
            new = mixed_f if self.beta == 1.0 else self.beta * mixed_f + (1 - self.beta) * mixed_x
            z = torch.where(bview(chk.frozen, z), z, new.reshape(z.shape))
            fz = ev(z)
            n_iter += 1
        return finish(z=z, check=chk, n_iter=n_iter, ev=ev, monitor=mon, max_iter=self.max_iter,
                      name="Anderson")
