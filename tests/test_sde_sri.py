"""SRI tableaus (SRIW1, SOSRI, SOSRI2): order conditions on construction, strong order 1.5 on GBM."""

import dataclasses
import math

import pytest
import torch
import torchsde

from implicit.sde import SOSRI, SOSRI2, Embedded, NeuralSDE
from implicit.sde._sri import SOSRI2_TABLEAU, SOSRI_TABLEAU, SRIW1_TABLEAU, error_norm, order_conditions, sri_step

TABLEAUS = [SRIW1_TABLEAU, SOSRI_TABLEAU, SOSRI2_TABLEAU]


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_published_tableaus_satisfy_every_order_condition(tab):
    assert all(order_conditions(tab).values())


def test_a_perturbed_coefficient_is_refused():
    beta4 = list(SOSRI_TABLEAU.beta4)
    beta4[3] += 1e-3
    with pytest.raises(ValueError, match=r"SOSRI.*\[5, 9, 16, 20, 24\]"):
        dataclasses.replace(SOSRI_TABLEAU, beta4=tuple(beta4))


def test_weights_on_stages_the_tableau_does_not_compute_are_refused():
    alpha = (1 / 3, 1 / 3, 1 / 3, 0.0)  # SRIW1 evaluates only 2 drift stages
    with pytest.raises(ValueError, match="SRIW1: only its first drift_stages=2"):
        dataclasses.replace(SRIW1_TABLEAU, alpha=alpha)
    A0 = [list(r) for r in SOSRI_TABLEAU.A0]
    A0[1][1] = 0.5
    with pytest.raises(ValueError, match="strictly lower triangular"):
        dataclasses.replace(SOSRI_TABLEAU, A0=tuple(tuple(r) for r in A0))


def _gbm_errors(tab, ns, paths=2000, mu=1.5, sigma=0.5):
    y0 = torch.ones(paths, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(paths, 1), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=7)
    exact = y0 * torch.exp(torch.tensor(mu - sigma**2 / 2, dtype=torch.float64) + sigma * bm(0.0, 1.0))
    errs = []
    for n in ns:
        y, h = y0, 1.0 / n
        for k in range(n):
            dW, U = bm(k * h, (k + 1) * h, return_U=True)
            # torchsde's U is ∫(W_s − W_t) ds = h (ΔW/2 + H)
            y, *_ = sri_step(tab, lambda t, y: mu * y, lambda t, y: sigma * y, k * h, h, y, dW, U / h - dW / 2)
        errs.append(float((y - exact).abs().mean()))
    return errs


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_strong_order_one_and_a_half_on_geometric_brownian_motion(tab):
    ns = (8, 16, 32, 64)
    errs = _gbm_errors(tab, ns)
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(ns[-1]) - math.log(ns[0]))
    assert 1.3 < slope < 1.7, (errs, slope)


def test_natural_error_estimate_vanishes_for_pure_additive_noise_without_drift():
    # g constant, f = 0: E1 = 0 and E2 = (Σβ3) chi2 g + (Σβ4) chi3 g = 0; the step is exactly y + ΔW
    y0 = torch.zeros(5, 3, dtype=torch.float64)
    dW = torch.randn(5, 3, dtype=torch.float64) * 0.1
    H = torch.randn(5, 3, dtype=torch.float64) * 0.03
    for tab in TABLEAUS:
        y1, E1, E2, _ = sri_step(tab, lambda t, y: torch.zeros_like(y), lambda t, y: torch.ones_like(y),
                                 0.0, 0.01, y0, dW, H)
        torch.testing.assert_close(y1, y0 + dW)
        assert float(error_norm(tab, E1, E2, y0, y1, 0.1, 0.1)) < 1e-12


def _gbm_adaptive(tol, paths=500, mu=1.5, sigma=0.5):
    y0 = torch.ones(paths, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(paths, 1), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=11)
    exact = y0 * torch.exp(torch.tensor(mu - sigma**2 / 2, dtype=torch.float64) + sigma * bm(0.0, 1.0))
    sde = NeuralSDE(lambda t, y: mu * y, lambda t, y: sigma * y, scheme=SOSRI(), stepping=Embedded(rtol=tol, atol=tol))
    ys, stats = sde(y0, [0.0, 1.0], bm)
    return float((ys[-1] - exact).abs().mean()), stats


def test_adaptive_strong_error_falls_with_the_tolerance():
    errs = [_gbm_adaptive(tol)[0] for tol in (3e-1, 1e-1, 3e-2)]
    assert errs[0] > errs[1] > errs[2], errs


def _accepted_times(stats):
    return [0.0] + torch.cumsum(stats.step_sizes, 0).tolist()


def test_accepted_steps_tile_the_span_on_one_brownian_path():
    # the diffusion jumps at t = 0.5, which forces a rejection there; a path made of re-sampled
    # increments would not add up to the interval's own increment
    y0 = torch.ones(200, 1, dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(200, 1), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=3)
    sde = NeuralSDE(lambda t, y: -y, lambda t, y: y * (0.1 + (5.0 if t > 0.5 else 0.0)), scheme=SOSRI(),
                    stepping=Embedded(rtol=0.1, atol=0.1))
    _, stats = sde(y0, [0.0, 1.0], bm)
    assert stats.n_rejected > 0 and stats.outcome.ok
    ts = _accepted_times(stats)
    assert ts[0] == 0.0 and all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[-1] == pytest.approx(1.0, abs=1e-12) and stats.t_final == 1.0
    total = sum(bm(a, b) for a, b in zip(ts, ts[1:]))
    torch.testing.assert_close(total, bm(0.0, 1.0))
    dW1 = bm(ts[1], ts[2])
    torch.testing.assert_close(bm(ts[1], ts[2]), dW1, rtol=0, atol=0)  # a re-query returns the same increment


def test_the_embedded_estimate_bounds_the_local_error_and_falls_with_the_step():
    # the natural embedding compares with a lower-order method: its estimate is first order in h
    # while the true local error of the order-1.5 step falls like h² (mean over paths), so it is a
    # conservative bound that grows looser as h shrinks
    mu, sigma, paths = 1.5, 0.5, 20000
    hs = (0.2, 0.1, 0.05, 0.025)
    for tab in TABLEAUS:
        est, true = [], []
        for h in hs:
            y0 = torch.ones(paths, 1, dtype=torch.float64)
            bm = torchsde.BrownianInterval(t0=0.0, t1=h, size=(paths, 1), dtype=torch.float64,
                                           levy_area_approximation="space-time", entropy=5)
            dW, U = bm(0.0, h, return_U=True)
            y1, E1, E2, _ = sri_step(tab, lambda t, y: mu * y, lambda t, y: sigma * y, 0.0, h, y0, dW, U / h - dW / 2)
            exact = y0 * torch.exp((mu - sigma**2 / 2) * h + sigma * dW)
            est.append(float((tab.delta * E1 + E2).abs().mean()))
            true.append(float((y1 - exact).abs().mean()))
        slope = lambda v: (math.log(v[0]) - math.log(v[-1])) / (math.log(hs[0]) - math.log(hs[-1]))  # noqa: E731
        assert all(e > t for e, t in zip(est, true)), (tab.name, est, true)
        assert 0.8 < slope(est) < 1.2 and slope(true) > 1.6, (tab.name, slope(est), slope(true))


def _manual_fixed(tab, f, g, y0, bm, n):
    y, h, out = y0, 1.0 / n, []
    for k in range(n):
        dW, U = bm(k * h, (k + 1) * h, return_U=True)
        y1, E1, E2, _ = sri_step(tab, f, g, k * h, h, y, dW, U / h - dW / 2)
        out.append(error_norm(tab, E1, E2, y, y1, 0.1, 0.1))
        y = y1
    return y, torch.stack(out)


def test_fixed_steps_in_the_layer_equal_the_step_by_hand():
    from implicit.sde import FixedSteps

    f, g = (lambda t, y: torch.sin(y) - 0.5 * y), (lambda t, y: 0.3 * torch.cos(y))
    y0 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 3), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=2)
    ys, stats = NeuralSDE(f, g, scheme=SOSRI(), stepping=FixedSteps(dt=0.125, rtol=0.1, atol=0.1))(y0, [0.0, 1.0], bm)
    y_hand, e_hand = _manual_fixed(SOSRI_TABLEAU, f, g, y0, bm, 8)
    torch.testing.assert_close(ys[-1], y_hand, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(stats.error_estimates, e_hand, rtol=1e-14, atol=1e-14)
    assert stats.n_accepted == 8 and stats.nfe_drift == 32 and stats.nfe_diffusion == 32


def test_gradcheck_through_the_error_regularizer_on_fixed_steps():
    from implicit.sde import FixedSteps

    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=4)
    y0 = torch.tensor([[0.3, -0.2], [0.1, 0.5], [-0.4, 0.2]], dtype=torch.float64)

    def reg(a, b):
        sde = NeuralSDE(lambda t, y: torch.tanh(a * y), lambda t, y: b * y, scheme=SOSRI2(),
                        stepping=FixedSteps(dt=0.25, rtol=0.1, atol=0.1))
        ys, stats = sde(y0, [0.0, 1.0], bm)
        return stats.reg_error, stats.reg_stiffness, ys[-1]

    a = torch.tensor([-1.0, 0.4], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(reg, (a, b))


def test_an_adaptive_solve_is_deterministic_given_the_brownian_path():
    def once():
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(50, 2), dtype=torch.float64,
                                       levy_area_approximation="space-time", entropy=9)
        sde = NeuralSDE(lambda t, y: -2 * y + torch.sin(y), lambda t, y: 0.4 * y, scheme=SOSRI(),
                        stepping=Embedded(rtol=0.05, atol=0.05))
        return sde(torch.full((50, 2), 0.7, dtype=torch.float64), [0.0, 0.5, 1.0], bm)

    (ys1, s1), (ys2, s2) = once(), once()
    assert torch.equal(ys1, ys2) and torch.equal(s1.step_sizes, s2.step_sizes)
    assert torch.equal(s1.error_estimates, s2.error_estimates) and s1.n_accepted > 5
    # the output time 0.5 is hit exactly: a step ends there
    assert 0.5 in [round(v, 15) for v in torch.cumsum(s1.step_sizes, 0).tolist()]


def test_scalar_noise_strong_order_on_a_problem_with_an_exact_solution():
    # dX = (a²/2) X dt + a sqrt(1 + X²) dW (Itô) has X_t = sinh(a W_t + asinh X_0)
    a, paths, ns = 1.0, 4000, (8, 16, 32, 64)
    x0 = torch.full((paths, 1), 0.5, dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(paths, 1), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=13)
    exact = torch.sinh(a * bm(0.0, 1.0) + torch.asinh(x0))
    for tab in (SRIW1_TABLEAU, SOSRI_TABLEAU):
        errs = []
        for n in ns:
            y, h = x0, 1.0 / n
            for k in range(n):
                dW, U = bm(k * h, (k + 1) * h, return_U=True)
                y, *_ = sri_step(tab, lambda t, y: a**2 / 2 * y, lambda t, y: a * torch.sqrt(1 + y**2), k * h, h, y, dW,
                                 U / h - dW / 2)
            errs.append(float((y - exact).abs().mean()))
        slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(ns[-1]) - math.log(ns[0]))
        assert 1.3 < slope < 1.8, (tab.name, errs, slope)


def test_the_initial_step_path_is_in_the_graph_and_the_clip_cancels_it():
    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(20, 2), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=1)
    sde = NeuralSDE(lambda t, y: -w * y, lambda t, y: 0.2 * y, scheme=SOSRI(),
                    stepping=Embedded(rtol=0.1, atol=0.1, step_path="initial"))
    y0 = torch.ones(20, 2, dtype=torch.float64)
    _, stats = sde(y0, [0.0, 1.0], bm)
    (g0,) = torch.autograd.grad(stats.initial_step, w, retain_graph=True)
    # the heuristic's value moved by finite differences in w
    from implicit.sde._sri import initial_step

    def h0(wv):
        return float(initial_step(lambda t, y: -wv * y, lambda t, y: 0.2 * y, 0.0, y0, 0.1, 0.1, 1.0))

    fd = (h0(1.3 + 1e-6) - h0(1.3 - 1e-6)) / 2e-6
    assert g0.item() == pytest.approx(fd, rel=1e-5) and abs(fd) > 0
    # the accepted steps sum to the span whatever w is: the last step's clip carries -h0's dependence
    (g_sum,) = torch.autograd.grad(stats.step_sizes_in_graph.sum(), w, retain_graph=True)
    assert abs(g_sum.item()) < 1e-12
    torch.testing.assert_close(stats.step_sizes_in_graph.detach(), stats.step_sizes)


def test_sri_stepping_mismatches_and_failures_are_reported():
    from implicit import SolverError
    from implicit.sde import Milstein, StepDoubling
    from implicit._outcome import Outcome

    f, g = (lambda t, y: -y), (lambda t, y: 0.1 * y)
    with pytest.raises(ValueError, match="SRI schemes estimate their error by their natural embedding"):
        NeuralSDE(f, g, scheme=SOSRI(), stepping=StepDoubling())
    with pytest.raises(ValueError, match=r"Embedded\(...\) needs an SRI scheme .* got scheme=Milstein\(\)"):
        NeuralSDE(f, g, scheme=Milstein(), stepping=Embedded())
    with pytest.raises(ValueError, match=r"Embedded\(step_path=...\) must be one of \('detached', 'initial'\), got 'x'"):
        Embedded(step_path="x")
    with pytest.raises(ValueError, match="cannot be combined with a given dt0"):
        Embedded(step_path="initial", dt0=0.1)
    y0 = torch.ones(4, 2)
    _, stats = NeuralSDE(f, g, scheme=SOSRI(), stepping=Embedded(rtol=1e-4, atol=1e-4), max_steps=3, throw=False)(y0, [0.0, 1.0])
    assert stats.outcome is Outcome.MAX_STEPS_REACHED and "max_steps=3" in stats.message
    with pytest.raises(SolverError, match="max_steps=3"):
        NeuralSDE(f, g, scheme=SOSRI(), stepping=Embedded(rtol=1e-4, atol=1e-4), max_steps=3)(y0, [0.0, 1.0])
    ys, stats = NeuralSDE(lambda t, y: y * float("nan"), g, scheme=SOSRI(), stepping=Embedded(dt0=0.1),
                          throw=False)(y0, [0.0, 1.0])
    assert stats.outcome is Outcome.NONFINITE and bool(torch.isnan(ys[-1]).all())


def test_regularizer_reductions():
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(10, 2), dtype=torch.float64,
                                   levy_area_approximation="space-time", entropy=6)
    _, stats = NeuralSDE(lambda t, y: -3 * y, lambda t, y: 0.3 * y, scheme=SOSRI2(),
                         stepping=Embedded(rtol=0.05, atol=0.05))(torch.ones(10, 2, dtype=torch.float64), [0.0, 1.0], bm)
    terms = stats.error_estimates * stats.step_sizes
    torch.testing.assert_close(stats.regularizer("error"), stats.reg_error)
    torch.testing.assert_close(stats.regularizer("error", "mean"), terms.mean())
    torch.testing.assert_close(stats.regularizer("stiffness", "max"), (stats.stiffness_estimates * stats.step_sizes).amax())
    # the drift is linear with rate 3: the secant stiffness estimate is exactly 3 on every step
    torch.testing.assert_close(stats.stiffness_estimates, torch.full_like(stats.stiffness_estimates, 3.0))
    with pytest.raises(ValueError, match="reduction must be one of"):
        stats.regularizer("error", "median")
