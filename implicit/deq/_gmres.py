"""Batched restarted GMRES: one Krylov solve per sample, done as batched tensor ops.

Every sample has its own Krylov basis and least-squares problem. The residual of each is
tracked per iteration without Givens rotations: for the Hessenberg matrix H (k+1 × k) the
least-squares residual min‖β e₁ − H y‖ equals β / ‖n‖, where n spans the null space of Hᵀ
and follows the one-term recursion n₀ = 1, n_{j+1} = −(H[:j+1, j]·n[:j+1]) / H[j+1, j].
A sample that has converged gets padding columns e_{j+1} from then on, which leave its
least-squares solution (and so its iterate) unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from implicit.deq._root import combine, project


@dataclasses.dataclass(frozen=True, kw_only=True)
class KrylovStats:
    """``residual`` is per-sample ‖b − Ax‖ / ‖b‖ (the GMRES estimate); ``n_matvec`` batched products."""

    n_matvec: int
    n_iter: int
    residual: Tensor
    converged: Tensor


def gmres(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    tol: float | Tensor,
    abs_tol: float,
    restart: int,
    max_iter: int,
    give_up_below: float | None = None,
) -> tuple[Tensor, KrylovStats]:
    """Solve A x = b per sample, from x = 0, until ‖b − Ax‖ ≤ max(tol·‖b‖, abs_tol).

    ``matvec`` maps a tensor of b's shape to A times it (per sample). ``tol`` may be a
    per-sample (B,) tensor. ``max_iter`` bounds the total Arnoldi steps over all restarts.
    With ``give_up_below`` a sample stops after any restart cycle that shrank its residual by
    less than that factor (a stalled Krylov solve; the caller sees it in ``converged``).
    """
    B = b.shape[0]
    shape = b.shape
    bf = b.reshape(B, -1)
    tiny = torch.finfo(b.dtype).tiny
    bn = torch.linalg.vector_norm(bf, dim=1)
    target = torch.clamp_min(tol * bn, abs_tol)

    def A(v: Tensor) -> Tensor:
        return matvec(v.reshape(shape)).reshape(B, -1)

    x = torch.zeros_like(bf)
    r = bf
    beta = bn
    n_mv = 0
    its = 0
    res = bn
    alive = torch.ones_like(bn, dtype=torch.bool)
    while True:
        active = (beta > target) & alive
        if not bool(active.any()) or its >= max_iter:
            res = beta
            break
        m = min(restart, max_iter - its)
        V = bf.new_empty(B, m + 1, bf.shape[1])  # every column is written before it is read
        H = bf.new_zeros(B, m + 1, m)
        nvec = bf.new_zeros(B, m + 1)
        nvec[:, 0] = 1
        nsq = torch.ones_like(bn)
        V[:, 0] = r / beta.clamp_min(tiny).unsqueeze(-1)
        k = 0
        res = beta
        for j in range(m):
            w = A(V[:, j])
            n_mv += 1
            its += 1
            Vj = V[:, : j + 1]
            # classical Gram-Schmidt twice: as stable as modified GS, but two batched products
            h = project(Vj, w)
            w = w - combine(h, Vj)
            h2 = project(Vj, w)
            w = w - combine(h2, Vj)
            h = h + h2
            hn = torch.linalg.vector_norm(w, dim=1)
            act = active.unsqueeze(-1)
            H[:, : j + 1, j] = torch.where(act, h, torch.zeros_like(h))
            sub = torch.where(active, hn, torch.ones_like(hn))
            H[:, j + 1, j] = sub
            V[:, j + 1] = torch.where(act, w / hn.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(w))
            nj = -(H[:, : j + 1, j] * nvec[:, : j + 1]).sum(1) / sub.clamp_min(tiny)
            nvec[:, j + 1] = nj
            nsq = nsq + nj * nj
            est = beta / nsq.sqrt()
            res = torch.where(active, est, res)
            active = active & (res > target)
            k = j + 1
            if not bool(active.any()):
                break
        Hk = H[:, : k + 1, :k]
        Q, R = torch.linalg.qr(Hk)
        rhs = beta.unsqueeze(-1) * Q[:, 0, :]
        y = torch.linalg.solve_triangular(R, rhs.unsqueeze(-1), upper=True).squeeze(-1)
        dx = combine(y, V[:, :k])
        x = x + torch.nan_to_num(dx, nan=0.0, posinf=0.0, neginf=0.0)
        if give_up_below is not None:
            alive = alive & (res <= give_up_below * beta)
        if not bool(((res > target) & alive).any()) or its >= max_iter:
            break
        r = bf - A(x)
        n_mv += 1
        beta = torch.linalg.vector_norm(r, dim=1)
    rel = res / bn.clamp_min(tiny)
    return x.reshape(shape), KrylovStats(n_matvec=n_mv, n_iter=its, residual=rel, converged=res <= target)
