"""What every root solver shares: the interface, its statistics record, and the residual test.

A root solver looks for z* with f(z*) = z* on a batch (batch first, any trailing shape). Samples
are independent: f must not mix samples (GroupNorm is fine, BatchNorm in training mode is not).
Each sample stops on its own relative residual ``‖f(z) − z‖ / ‖f(z)‖ ≤ tol`` or absolute
residual ``‖f(z) − z‖ ≤ abs_tol``; a sample that has converged stops changing. The solve ends when
every sample has converged (``stopping_test="per_sample"``) or, with ``stopping_test="batch"``, when the
whole batch taken as one vector passes the same test: the test of solvers that treat the batch as
one system (DEQ.jl flattens the batch into one state; MDEQ's Broyden takes one norm over the
batch), cheaper, but single samples may stay above tol, which ``stats.converged`` and
``stats.residual`` still report per sample.

Every solver takes ``max_growth`` (default 1e3, None disables): a sample whose max(‖z‖, ‖f(z)‖)
grows beyond that factor over its start scale is DIVERGED, never converged, because a relative
test passes any iterate that runs far enough away (see :class:`Monitor`). A non-finite f(z) or
‖f(z)‖ ends the solve as NONFINITE. Options are checked by the shared ``check_*`` helpers
below, one per kind of argument.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
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
    for a solver stopping on the batch test (``stopping_test="batch"``), the batch's.
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


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(owner: str, name: str, value: object) -> None:
    """A finite number > 0 (tolerances, horizons); inf and NaN would disable what they bound."""
    if not (_real(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a positive finite number, got {value!r}")


def check_nonnegative(owner: str, name: str, value: object) -> None:
    if not (_real(value) and value >= 0):
        raise ValueError(f"{owner}: {name} must be a non-negative finite number, got {value!r}")


def check_unit(owner: str, name: str, value: object, *, what: str = "", closed: bool = True) -> None:
    """A number in (0, 1] (``closed``) or (0, 1): mixing, damping, forcing factors."""
    ok = _real(value) and 0 < value and (value <= 1 if closed else value < 1)
    if not ok:
        label = f"{name} ({what})" if what else name
        raise ValueError(f"{owner}: {label} must be in (0, {'1]' if closed else '1)'}, got {value!r}")


def check_int(owner: str, name: str, value: object, *, minimum: int, what: str = "") -> None:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum):
        label = f"{name} ({what})" if what else name
        raise ValueError(f"{owner}: {label} must be an int >= {minimum}, got {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")


def check_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_growth(owner: str, max_growth: object) -> None:
    if max_growth is not None and not (_real(max_growth) and max_growth > 1):
        raise ValueError(
            f"{owner}: max_growth must be a finite number > 1, or None to disable the runaway guard, "
            f"got {max_growth!r}"
        )


def check_tolerances(owner: str, *, tol: float, abs_tol: float, max_iter: int) -> None:
    check_positive(owner, "tol", tol)
    check_nonnegative(owner, "abs_tol", abs_tol)
    check_int(owner, "max_iter", max_iter, minimum=0)


# when a solve stops: "per_sample" when every sample passes the residual test, "batch" when the
# whole batch taken as one vector does. One name, ``stopping_test``, across solvers, models and CLIs
# (``criterion=`` is its deprecated alias on the solvers, see implicit.deq._renamed).
STOPPING_TESTS = ("per_sample", "batch")


def check_stopping_test(owner: str, stopping_test: object) -> None:
    if not (isinstance(stopping_test, str) and stopping_test in STOPPING_TESTS):
        raise ValueError(f"{owner}: stopping_test must be 'per_sample' or 'batch', got {stopping_test!r}")


# the solvers' linear algebra (QR in GMRES, LU in Anderson) has no half-precision kernels, and a
# half-precision norm overflows at 65504, which the residual test and runaway guard rely on
DTYPES = (torch.float32, torch.float64)


def check_start(z0: object, owner: str = "root solver") -> None:
    if not isinstance(z0, Tensor):
        raise TypeError(f"{owner}: z0 must be a torch.Tensor, got {type(z0).__name__}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(f"{owner}: z0 must have a non-empty batch dimension first, got shape {tuple(z0.shape)}")
    if not z0.is_floating_point():
        raise TypeError(f"{owner}: z0 must be a floating-point tensor, got dtype {z0.dtype}")
    if z0.dtype not in DTYPES:
        raise TypeError(
            f"{owner}: z0 must be float32 or float64, got {z0.dtype} (no half-precision root solves); "
            f"cast the start and f to float32, e.g. z0.float() and f.float()"
        )


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
    """Calls f for one solve: counts calls, checks the output's type, shape, dtype and device once.

    Local to a single solve (built and dropped inside ``solve``), so no counter outlives it.
    """

    def __init__(self, f: Fn, z0: Tensor, owner: str = "root solver"):
        self.f = f
        self.nfe = 0
        self.n_jvp = 0
        self._owner = owner
        self._like = z0
        self._checked = False

    def __call__(self, z: Tensor) -> Tensor:
        fz = self.f(z)
        self.nfe += 1
        if not self._checked:
            self._check(fz)
            self._checked = True
        return fz

    def _check(self, fz: object) -> None:
        like, owner = self._like, self._owner
        if not isinstance(fz, Tensor):
            raise TypeError(f"{owner}: f(z, x) must return a Tensor, got {type(fz).__name__}")
        if fz.shape != like.shape:
            raise ValueError(
                f"{owner}: f(z, x) must return a tensor of z's shape {tuple(like.shape)}, got shape "
                f"{tuple(fz.shape)}; make f map z to the same shape (or pass z_shape to the DEQ)"
            )
        # type promotion would silently turn the solve (and z*) into f's dtype, or fail deep inside
        if fz.dtype != like.dtype:
            raise TypeError(
                f"{owner}: f(z, x) returned dtype {fz.dtype} for z of dtype {like.dtype}; f must keep "
                f"z's dtype: cast f (and x) to one dtype, e.g. f.to({like.dtype}) or x.to(f's dtype)"
            )
        if fz.device != like.device:
            raise TypeError(
                f"{owner}: f(z, x) returned a tensor on {fz.device} for z on {like.device}; move f and "
                f"x to z's device"
            )


# a start at or near zero must not make every answer of ordinary size a runaway, so the start
# scale is at least an RMS of 1 per element
_SCALE_FLOOR_RMS = 1.0


@dataclasses.dataclass(frozen=True)
class Check:
    """One residual test of the batch.

    ``conv``: samples that pass the test and have not run away; ``frozen``: samples a solver
    must stop moving (converged or diverged); ``done``: the solve ends (the stopping test passed,
    or every sample is frozen); ``passed``: it ends successfully (test passed, none diverged).
    """

    rel: Tensor
    conv: Tensor
    frozen: Tensor
    done: bool
    passed: bool
    finite: bool


class Monitor:
    """Per-sample residual test, runaway guard, history, and the single host sync per iteration.

    A relative test ‖f(z) − z‖ ≤ tol·‖f(z)‖ passes any iterate that runs off to a large enough
    scale, fixed point or not. So a sample whose max(‖z‖, ‖f(z)‖) exceeds ``max_growth`` times
    its start scale max(‖z0‖, ‖f(z0)‖, √d) (d elements per sample) is marked diverged for the
    rest of the solve and never counted converged. None disables the guard.
    """

    def __init__(self, *, tol: float, abs_tol: float, stopping_test: str = "per_sample",
                 max_growth: float | None = None):
        self.tol = tol
        self.abs_tol = abs_tol
        # stopping test "batch": "all converged" means the residual of the whole batch, as one vector,
        # passes the test (the test of solvers that treat the batch as one system or ODE state);
        # the per-sample residuals and flags are still computed and reported as they are.
        self.batch = stopping_test == "batch"
        self.max_growth = max_growth
        self.history: list[float] = []
        self.start_scale: Tensor | None = None
        self.diverged: Tensor | None = None
        self.growth: Tensor | None = None  # latest max(‖z‖, ‖f(z)‖) / start scale
        self.diverged_at: int | None = None  # iteration (history index) of the first runaway

    def check(self, z: Tensor, fz: Tensor) -> Check:
        rn = norms(fz - z)
        fn = norms(fz)
        tiny = torch.finfo(fn.dtype).tiny
        rel = rn / fn.clamp_min(tiny)
        test = (rn <= self.tol * fn) | (rn <= self.abs_tol)
        # an overflowing ‖f(z)‖ would make the relative residual 0 and pass the test
        finite = (torch.isfinite(rn) & torch.isfinite(fn)).all()
        if self.max_growth is not None:
            size = torch.maximum(fn, norms(z))
            if self.start_scale is None:
                floor = _SCALE_FLOOR_RMS * math.sqrt(z[0].numel())
                self.start_scale = size.detach().clamp_min(floor)
                self.diverged = torch.zeros_like(test)
            self.growth = size.detach() / self.start_scale
            self.diverged = self.diverged | (self.growth > self.max_growth)
            conv = test & ~self.diverged
            frozen = conv | self.diverged
            any_div = self.diverged.any()
        else:
            conv = frozen = test
            any_div = torch.zeros((), dtype=torch.bool, device=test.device)
        if self.batch:
            keep = (~self.diverged).to(rn.dtype) if self.diverged is not None else torch.ones_like(rn)
            rn_all, fn_all = (rn.square() * keep).sum().sqrt(), (fn.square() * keep).sum().sqrt()
            crit = (rn_all <= self.tol * fn_all) | (rn_all <= self.abs_tol)
            measure = rn_all / fn_all.clamp_min(tiny)
        else:
            crit, measure = conv.all(), rel.max()
        done = crit | frozen.all()
        # one sync for all decisions
        flags = torch.stack([crit, done, finite, any_div]).to(rel.dtype)
        *summary, worst = torch.cat([flags, measure.detach().reshape(1)]).tolist()
        crit_ok, done_ok, finite_ok, any_div_ok = (bool(v) for v in summary)
        self.history.append(worst)
        if any_div_ok and self.diverged_at is None:
            self.diverged_at = len(self.history) - 1
        return Check(rel=rel, conv=conv, frozen=frozen, done=done_ok or not finite_ok,
                     passed=crit_ok and not any_div_ok, finite=finite_ok)


def finish(
    *,
    z: Tensor,
    check: Check,
    n_iter: int,
    ev: Evaluator,
    monitor: Monitor,
    max_iter: int,
    name: str,
) -> RootSolution:
    rel, conv = check.rel, check.conv
    if not check.finite:
        outcome = Outcome.NONFINITE
        message = f"{name}: f returned NaN/Inf at iteration {n_iter} (or ‖f(z)‖ overflowed)"
    elif monitor.diverged_at is not None:
        outcome = Outcome.DIVERGED
        div = monitor.diverged
        n_div = int(div.sum())
        worst = float(monitor.growth[div].max())
        message = (
            f"{name}: {n_div} of {div.numel()} samples ran away (from iteration {monitor.diverged_at}): "
            f"max(‖z‖, ‖f(z)‖) grew to {worst:.3e} times its start scale max(‖z0‖, ‖f(z0)‖, √d), "
            f"beyond max_growth={monitor.max_growth:g}; a relative residual test cannot be trusted there, "
            f"so these samples are not counted converged"
        )
    elif check.passed:
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
