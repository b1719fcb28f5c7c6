"""VCAB3 / VCABM3: order on uniform and non-uniform steps, adaptive accuracy, history after
rejections, NFE accounting, steady states and gradients, each against something independent."""

import math

import numpy as np
import pytest
import torch

import implicit
from implicit.ode import _adams
from implicit.ode._integrate import _Integrator

METHODS = [implicit.VCAB3(), implicit.VCABM3()]
IDS = ["vcab3", "vcabm3"]

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.3]], dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.5], [-0.2, 0.8]], dtype=torch.float64)


def linear(t, y):
    return y @ A.T


def exact_linear(t1):
    return Y0 @ torch.linalg.matrix_exp(A * t1).T


def logistic(t, y):  # y' = y(1 − y), y(t) = 1 / (1 + (1/y0 − 1) e^{−t})
    return y * (1 - y)


def exact_logistic(y0, t1):
    return 1 / (1 + (1 / y0 - 1) * math.exp(-t1))


def _slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def _on_grid(solver, f, y0, grid):
    """Steps through exactly ``grid`` (no control): the formulas on a given step sequence."""
    t = torch.tensor([grid[0], grid[-1]], dtype=y0.dtype)
    core = _Integrator(f, y0, [grid[0], grid[-1]], t, solver, 1e-6, 1e-9, None, 10**6, None, True, None, True,
                       None, solver.default_controller(), "detached")
    return _adams.run(core, solver, grid=grid)


def test_quadrature_weights_are_the_textbook_constant_step_adams_coefficients():
    w = _adams.quadrature_weights([0.0, -1.0, -2.0], 0.0, 1.0)
    assert np.allclose(np.array(w) * 12, [23, -16, 5], atol=1e-13)  # AB3
    w = _adams.quadrature_weights([1.0, 0.0, -1.0, -2.0], 0.0, 1.0)
    assert np.allclose(np.array(w) * 24, [9, 19, -5, 1], atol=1e-13)  # AM4
    # exact for cubics on arbitrary nodes, and for a backward step
    nodes = [0.3, -0.1, -0.45, -0.5]
    w = _adams.quadrature_weights(nodes, 0.3, -0.7)
    p = lambda s: 2 - s + 3 * s**2 - 0.5 * s**3  # noqa: E731
    P = lambda s: 2 * s - s**2 / 2 + s**3 - s**4 / 8  # noqa: E731
    assert abs(sum(wi * p(x) for wi, x in zip(w, nodes)) - (P(-0.4) - P(0.3))) < 1e-13


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_order_three_on_uniform_and_nonuniform_steps(solver):
    ns = [20, 40, 80, 160]
    for warp in (0.0, 0.3):  # 0: uniform; 0.3: a smooth non-uniform sequence (variable coefficients)
        errs, errs_nl = [], []
        for n in ns:
            u = np.linspace(0.0, 1.0, n + 1)
            grid = list(u + warp * np.sin(2 * np.pi * u) / (2 * np.pi))
            errs.append(float((_on_grid(solver, linear, Y0, grid).ys[-1] - exact_linear(1.0)).abs().max()))
            y0 = torch.tensor([[0.1], [0.7]], dtype=torch.float64)
            got = _on_grid(solver, logistic, y0, [2 * g for g in grid]).ys[-1]
            want = torch.tensor([[exact_logistic(0.1, 2.0)], [exact_logistic(0.7, 2.0)]], dtype=torch.float64)
            errs_nl.append(float((got - want).abs().max()))
        hs = [1.0 / n for n in ns]
        assert 2.7 < _slope(hs, errs) < 3.3, (warp, errs)
        assert 2.7 < _slope(hs, errs_nl) < 3.3, (warp, errs_nl)


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_adaptive_solve_error_falls_with_the_tolerance_within_the_accumulated_local_tolerance(solver):
    # the controller bounds each accepted step's estimated local error by atol + rtol·|y|; on this
    # non-expanding system the global error is at most the sum of the local ones
    errs = []
    for rtol in (1e-3, 1e-5, 1e-7):
        atol = rtol * 1e-3
        sol = implicit.odeint(linear, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), solver=solver,
                              rtol=rtol, atol=atol)
        assert sol.stats.outcome is implicit.Outcome.SUCCESSFUL
        err = float((sol.ys[-1] - exact_linear(1.0)).abs().max())
        assert err < 2 * sol.stats.n_accepted * (atol + rtol * float(Y0.abs().max())), (rtol, err)
        errs.append(err)
    assert errs[0] > 10 * errs[1] > 100 * errs[2]  # per-step control: about tol^(3/4) for order 3


class _Calls:
    def call(self, t, y):
        return linear(t, y)


@pytest.mark.parametrize("h", [0.08, 0.04, 0.02])
def test_error_estimates_against_the_true_local_error(h):
    # one step from exact history: VCABM3's estimate (order-4 minus order-3 corrector, both on the
    # predicted slope) is O(h⁴) like the true error; VCAB3's (AB3 minus AB2) is the order-2 formula's
    # error, O(h³), so it overestimates more the smaller h is
    t_n = 0.5
    hist = [(t, linear(t, exact_linear(t))) for t in (t_n, t_n - 0.7 * h, t_n - 1.5 * h)]
    ratios = {}
    for solver in METHODS:
        y1, err = solver.attempt(_Calls(), t_n, exact_linear(t_n), hist, h, t_n + h)
        ratios[type(solver).__name__] = float(err.norm()) / float((y1 - exact_linear(t_n + h)).norm())
    y1_half, err_half = implicit.VCAB3().attempt(_Calls(), t_n, exact_linear(t_n),
                                                 [(t, linear(t, exact_linear(t))) for t in (t_n, t_n - 0.35 * h, t_n - 0.75 * h)],
                                                 h / 2, t_n + h / 2)
    ratio_half = float(err_half.norm()) / float((y1_half - exact_linear(t_n + h / 2)).norm())
    assert 1.7 < ratio_half / ratios["VCAB3"] < 2.3
    assert ratios["VCAB3"] > 5
    # measured 1/6 here: the predictor's error reaches the corrector through f(y_p) and is missed
    assert 0.1 < ratios["VCABM3"] < 0.3


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_a_rejected_step_leaves_the_history_as_if_it_had_not_happened(solver):
    # a start step that is far too large forces rejections; replaying the accepted steps alone
    # (no rejection) must give the same states bit for bit
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    sol = implicit.odeint(linear, Y0, t, solver=solver, rtol=1e-6, atol=1e-9, dt0=2.0)
    assert sol.stats.n_rejected > 0
    grid = [0.0]
    for h in sol.stats.step_sizes.tolist():
        grid.append(grid[-1] + h)
    grid[-1] = 3.0
    replay = _on_grid(solver, linear, Y0, grid)
    assert torch.equal(replay.ys[-1], sol.ys[-1])


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_lands_exactly_on_every_output_time(solver):
    t = torch.tensor([0.0, 0.1, 0.35, 0.36, 1.0, 2.5], dtype=torch.float64)
    sol = implicit.odeint(linear, Y0, t, solver=solver, rtol=1e-8, atol=1e-11)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(sol.ys[i], exact_linear(ti), atol=1e-6), ti


def test_nfe_counts_every_call():
    calls = {"n": 0}

    def f(t, y):
        calls["n"] += 1
        return linear(t, y)

    for solver, per_step in ((implicit.VCAB3(), 1), (implicit.VCABM3(), 2)):
        calls["n"] = 0
        sol = implicit.odeint(f, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), solver=solver, rtol=1e-6,
                              atol=1e-9)
        st = sol.stats
        assert st.nfe_forward == calls["n"]
        # f(t0) + the initial-step probe + 2 Bogacki–Shampine starts (3 calls each) + the Adams steps;
        # VCAB3 rejections cost nothing, VCABM3's one predictor call each
        n_adams = st.n_accepted - 2
        rej_cost = 0 if per_step == 1 else st.n_rejected
        assert calls["n"] >= 2 + 6 + per_step * n_adams
        assert calls["n"] <= 2 + 3 * (2 + st.n_rejected) + per_step * n_adams + rej_cost


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_records_error_estimates_in_the_graph_and_no_stiffness(solver):
    w = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    sol = implicit.odeint(lambda t, y: -w * y + torch.sin(t), Y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                          solver=solver, rtol=1e-4, atol=1e-7)
    st = sol.stats
    assert st.stiffness_estimates is None and st.reg_stiffness is None
    assert st.error_estimates.shape == (st.n_accepted,) and st.error_estimates.requires_grad
    assert bool((st.error_estimates <= 1).all())
    (g,) = torch.autograd.grad(st.reg_error, w)
    assert torch.isfinite(g)


@pytest.mark.parametrize("solver", METHODS, ids=IDS)
def test_gradients_through_the_solve_match_finite_differences(solver):
    # fixed step sequence (detached path): the solve is a smooth function of the parameters
    w = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[0.4, -0.2]], dtype=torch.float64, requires_grad=True)

    def out(w, y0):
        f = lambda t, y: torch.tanh(y * w[0]) + w[1] * y.flip(-1)  # noqa: E731
        return _on_grid(solver, f, y0, [0.0, 0.1, 0.25, 0.3, 0.5, 0.8, 1.0]).ys[-1]

    assert torch.autograd.gradcheck(out, (w, y0))


def test_a_step_ending_a_sliver_short_of_an_output_time_lands_on_it():
    f = lambda t, y: -0.1 * y  # noqa: E731
    y0 = torch.ones(1, 2, dtype=torch.float64)
    sol = implicit.odeint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), solver=implicit.VCAB3(),
                          rtol=1e-1, atol=1e-3, dt0=1.0 - 1e-12)
    assert sol.stats.outcome is implicit.Outcome.SUCCESSFUL
    assert sol.stats.n_accepted == 1 and sol.stats.step_sizes.tolist() == [1.0]
