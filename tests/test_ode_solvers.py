"""Accuracy of implicit.ode's Runge-Kutta integration against exact solutions, scipy and torchdiffeq."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
import torchdiffeq

from implicit.ode import RK4, Bosh3, ButcherTableau, Dopri5, Euler, Tsit5, odeint
from implicit.ode import _tableau
from implicit.ode._solver import AbstractFixedSolver

F64 = torch.float64

# --- problems with exact solutions ---------------------------------------------------------
# y = φ(x), x' = A x, φ(x) = (x1, x2 + x1²), plus y3' = cos(t)·y3: a nonlinear, non-autonomous
# system whose exact solution is φ(expm(A t) x0) and y3(0)·exp(sin t). A scalar or linear problem
# would not exercise all order conditions of a 5th-order method.
A = np.array([[-0.3, 1.0], [-1.2, -0.1]])
A_T = torch.tensor(A, dtype=F64)


def warped(t, y):
    x1, x2 = y[:, 0], y[:, 1] - y[:, 0] ** 2
    ax1 = A_T[0, 0] * x1 + A_T[0, 1] * x2
    ax2 = A_T[1, 0] * x1 + A_T[1, 1] * x2
    return torch.stack([ax1, ax2 + 2 * x1 * ax1, torch.cos(t) * y[:, 2]], 1)


def warped_exact(t, y0):
    y0 = y0.numpy()
    x0 = np.stack([y0[:, 0], y0[:, 1] - y0[:, 0] ** 2], 1)
    x = x0 @ scipy.linalg.expm(A * t).T
    return torch.tensor(np.stack([x[:, 0], x[:, 1] + x[:, 0] ** 2, y0[:, 2] * np.exp(np.sin(t))], 1))


Y0 = torch.tensor([[0.5, -0.2, 1.0], [-0.8, 0.4, 0.5]], dtype=F64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _FixedTableau(AbstractFixedSolver):
    """Test-only: any tableau run with fixed steps (e.g. an embedded solution on its own)."""

    tab: ButcherTableau = _tableau.EULER

    @property
    def tableau(self):
        return self.tab


def _embedded(tab: ButcherTableau) -> ButcherTableau:
    bhat = tuple(b - e for b, e in zip(tab.b, tab.b_error))
    return ButcherTableau(name=tab.name + "-embedded", c=tab.c, a=tab.a, b=bhat, order=tab.order - 1)


def _slope(solver, t1=2.0, dts=(0.2, 0.1, 0.05, 0.025)):
    t = torch.tensor([0.0, t1], dtype=F64)
    exact = warped_exact(t1, Y0)
    errs = []
    for dt in dts:
        sol = odeint(warped, Y0, t, solver=solver, dt=dt if not isinstance(solver, (Euler, RK4)) else None)
        assert sol.stats.n_accepted == round(t1 / dt)
        errs.append((sol.ys[-1] - exact).abs().max().item())
    return np.polyfit(np.log(dts), np.log(errs), 1)[0], errs


@pytest.mark.parametrize(
    "solver, order",
    [(Tsit5(), 5), (Dopri5(), 5), (Bosh3(), 3), (Euler(dt=0.1), 1), (RK4(dt=0.1), 4)],
    ids=["tsit5", "dopri5", "bosh3", "euler", "rk4"],
)
def test_convergence_order(solver, order):
    if isinstance(solver, (Euler, RK4)):
        slopes = []
        for dt in (0.2, 0.1, 0.05, 0.025):
            slopes.append(dataclasses.replace(solver, dt=dt))
        t = torch.tensor([0.0, 2.0], dtype=F64)
        exact = warped_exact(2.0, Y0)
        errs = [(odeint(warped, Y0, t, solver=s).ys[-1] - exact).abs().max().item() for s in slopes]
        slope = np.polyfit(np.log([0.2, 0.1, 0.05, 0.025]), np.log(errs), 1)[0]
    else:
        slope, errs = _slope(solver)
    assert abs(slope - order) < 0.35, (slope, errs)


@pytest.mark.parametrize("tab, order", [(_tableau.TSIT5, 4), (_tableau.DOPRI5, 4), (_tableau.BOSH3, 2)],
                         ids=["tsit5", "dopri5", "bosh3"])
def test_embedded_solution_order(tab, order):
    # The error estimate b_error is right only if b − b_error is a solution of the stated lower order.
    slope, errs = _slope(_FixedTableau(tab=_embedded(tab)))
    assert abs(slope - order) < 0.35, (slope, errs)


def test_tsit5_propagates_fifth_order_not_fourth():
    # The two Tsit5 solutions differ: the propagated one must be clearly more accurate.
    _, e5 = _slope(Tsit5())
    _, e4 = _slope(_FixedTableau(tab=_embedded(_tableau.TSIT5)))
    assert e5[-1] < e4[-1] / 20


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(b=(0.5, 0.4)), "weights b sum to"),
        (dict(a=((), (0.4,))), "row 1 of a sums to"),
        (dict(a=((), (0.5, 0.0))), "strictly lower triangular"),
        (dict(b_error=(0.1, 0.0), error_order=2), "error weights sum to"),
        (dict(b_error=(0.1, -0.1)), "give both b_error and error_order"),
        (dict(c=(0.1, 0.5), a=((), (0.5,))), "c\\[0\\] must be 0"),
        (dict(stiffness_stages=(1, 1)), "are not two stages"),
    ],
)
def test_tableau_validates_itself(bad, match):
    good = dict(name="midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)
    ButcherTableau(**good)
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**{**good, **bad})


def test_fsal_property():
    assert _tableau.TSIT5.fsal and _tableau.DOPRI5.fsal and _tableau.BOSH3.fsal
    assert not _tableau.RK4.fsal and not _tableau.EULER.fsal


# --- scipy: tight-tolerance reference on a nonlinear, time-dependent problem -----------------
def vdp_forced(t, y):
    return torch.stack([y[:, 1], (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0] + 0.5 * torch.cos(1.3 * t)], 1)


def _scipy(rhs, y0, ts):
    out = []
    for row in y0.numpy():
        r = scipy.integrate.solve_ivp(rhs, (ts[0], ts[-1]), row, method="DOP853", t_eval=ts, rtol=1e-10, atol=1e-12)
        assert r.success
        out.append(r.y.T)
    return torch.tensor(np.stack(out, 1))


@pytest.mark.parametrize("solver", [Tsit5(), Dopri5(), Bosh3()], ids=["tsit5", "dopri5", "bosh3"])
def test_agrees_with_scipy_dop853(solver):
    ts = [0.0, 0.7, 2.0, 3.0]
    t = torch.tensor(ts, dtype=F64)
    y0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=F64)
    tol = 1e-7 if isinstance(solver, Bosh3) else 1e-9
    ref = _scipy(lambda s, y: [y[1], (1 - y[0] ** 2) * y[1] - y[0] + 0.5 * math.cos(1.3 * s)], y0, ts)
    ours = odeint(vdp_forced, y0, t, solver=solver, rtol=tol, atol=tol)
    assert (ours.ys - ref).abs().max().item() < 100 * tol
    # linear problem: scipy and the exact exponential
    yl = Y0[:, :2]
    lin = odeint(lambda s, y: y @ A_T.T, yl, t, solver=solver, rtol=tol, atol=tol)
    ref_l = _scipy(lambda s, y: A @ y, yl, ts)
    exact = torch.stack([yl @ torch.tensor(scipy.linalg.expm(A * s)).T for s in ts])
    assert (lin.ys - ref_l).abs().max().item() < 100 * tol
    assert (ref_l - exact).abs().max().item() < 1e-9


# --- torchdiffeq: same tableau, same controller, same steps -------------------------------
class _Counted(torch.nn.Module):
    def __init__(self, rhs):
        super().__init__()
        self.rhs, self.calls, self.accepted, self.rejected = rhs, 0, 0, 0

    def forward(self, t, y):
        self.calls += 1
        return self.rhs(t, y)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


@pytest.mark.parametrize("method, solver", [("dopri5", Dopri5()), ("bosh3", Bosh3())])
@pytest.mark.parametrize("ts", [[0.0, 0.5, 2.0, 6.0], [3.0, 1.0, -2.0]], ids=["forward", "backward"])
@pytest.mark.parametrize("dt0", [None, 0.3])
@pytest.mark.parametrize("rtol", [1e-3, 1e-5])
def test_matches_torchdiffeq_steps_and_solution(method, solver, ts, dt0, rtol):
    t = torch.tensor(ts, dtype=F64)
    if ts[-1] > ts[0]:
        rhs, y0 = vdp_forced, torch.tensor([[2.0, 0.0], [0.5, -1.0], [1.0, 1.0]], dtype=F64)
    else:  # Van der Pol blows up backward in time
        rhs, y0 = warped, Y0
    ours_f, ref_f = _Counted(rhs), _Counted(rhs)
    sol = odeint(ours_f, y0, t, solver=solver, rtol=rtol, atol=rtol * 1e-2, dt0=dt0)
    options = dict(step_t=t) if dt0 is None else dict(step_t=t, first_step=dt0)
    ref = torchdiffeq.odeint(ref_f, y0, t, rtol=rtol, atol=rtol * 1e-2, method=method, options=options)
    assert (sol.ys - ref).abs().max().item() < 1e-10
    assert sol.stats.nfe_forward == ours_f.calls == ref_f.calls
    assert sol.stats.n_accepted == ref_f.accepted
    assert sol.stats.n_rejected == ref_f.rejected
    assert len(sol.stats.step_sizes) == sol.stats.n_accepted
    # landed on each output time: |h| sums to the span
    assert sol.stats.step_sizes.sum().item() == pytest.approx(abs(ts[-1] - ts[0]), rel=1e-12)


def test_torchdiffeq_comparison_exercises_rejections():
    # The step-by-step comparison above means something only if rejections happen in it.
    f = _Counted(vdp_forced)
    t = torch.tensor([0.0, 0.5, 2.0, 6.0], dtype=F64)
    torchdiffeq.odeint(f, torch.tensor([[2.0, 0.0]], dtype=F64), t, rtol=1e-3, atol=1e-5, method="dopri5",
                       options=dict(step_t=t))
    assert f.rejected > 0


def test_float32_follows_input_dtype():
    y0 = Y0.float()
    sol = odeint(warped, y0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-6)
    assert sol.ys.dtype == torch.float32 and sol.stats.error_estimates.dtype == torch.float32
    assert (sol.ys[-1].double() - warped_exact(1.0, Y0)).abs().max().item() < 1e-3


def test_trailing_shape_is_kept():
    y0 = torch.randn(3, 2, 4, dtype=F64)
    sol = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), rtol=1e-8, atol=1e-10)
    assert sol.ys.shape == (3, 3, 2, 4)
    assert torch.allclose(sol.ys[-1], y0 * math.exp(-1.0), atol=1e-7)


def test_fixed_step_lands_on_output_times_without_drift():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    sol = odeint(lambda s, y: torch.ones_like(y) * torch.cos(s), Y0, t, solver=RK4(dt=0.1))
    assert sol.stats.n_accepted == 10  # 3 + 7, no sliver steps from rounding
    assert torch.allclose(sol.ys[1] - Y0, torch.full_like(Y0, math.sin(0.3)), atol=1e-7)
