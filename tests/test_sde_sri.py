"""SRI tableaus (SRIW1, SOSRI, SOSRI2): order conditions on construction, strong order 1.5 on GBM."""

import dataclasses
import math

import pytest
import torch
import torchsde

from implicit.sde import SOSRI, Embedded, NeuralSDE
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
