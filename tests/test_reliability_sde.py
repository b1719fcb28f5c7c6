"""Reliability battery for the SDE layer: Brownian motions that do not fit, hostile drift and
diffusion, bad options, and legitimate edge inputs checked against exact or replayed answers."""

from __future__ import annotations

import math

import pytest
import torch
import torchsde
from _battery import Battery, fails, raises

from implicit import Outcome, SolverError
from implicit.sde import (
    SRK,
    EulerHeun,
    EulerMaruyama,
    FixedSteps,
    Milstein,
    NeuralSDE,
    StepDoubling,
    StratonovichHeun,
    StratonovichMidpoint,
)

BATTERY = Battery("sde")
F64 = torch.float64


def _y0(batch=2, d=3, dtype=F64, value=1.0):
    return torch.full((batch, d), value, dtype=dtype)


def _bm(t0=0.0, t1=1.0, size=(2, 3), dtype=F64, levy="none", seed=0):
    return torchsde.BrownianInterval(t0=t0, t1=t1, size=size, dtype=dtype, entropy=seed,
                                     levy_area_approximation=levy)


def _layer(drift=lambda t, y: -y, diffusion=lambda t, y: 0.5 * torch.ones_like(y), **kw):
    kw.setdefault("scheme", EulerMaruyama())
    kw.setdefault("stepping", FixedSteps(dt=0.1))
    return NeuralSDE(drift, diffusion, **kw)


def _fails_both_ways(make, args, outcome, *fragments):
    ys, stats = make(throw=False)(*args)
    fails(stats, outcome, *fragments)
    with pytest.raises(SolverError) as info:
        make(throw=True)(*args)
    fails(info.value, outcome, *fragments)
    return ys, stats


# -- clear errors: the Brownian motion ----------------------------------------------------------


@BATTERY.error
def bm_ends_before_the_solve():
    raises(lambda: _layer()(_y0(), [0.0, 1.0], bm=_bm(t1=0.5)), ValueError,
           "bm must cover the solve's time span [0, 1]", "[0, 0.5]")


@BATTERY.error
def bm_starts_after_the_solve():
    raises(lambda: _layer(scheme=Milstein())(_y0(), [0.0, 0.5, 1.0], bm=_bm(t0=0.2)), ValueError,
           "bm must cover", "[0.2, 1]")


@BATTERY.error
def brownian_path_shorter_than_span():
    bm = torchsde.BrownianPath(t0=0.0, w0=torch.zeros(2, 3, dtype=F64))  # defined on [0, 1]
    raises(lambda: _layer()(_y0(), [0.0, 2.0], bm=bm), ValueError, "bm must cover the solve's time span [0, 2]")


@BATTERY.error
def bm_dtype_differs_from_state():
    raises(lambda: _layer()(_y0(), [0.0, 1.0], bm=_bm(dtype=torch.float32)), TypeError,
           "bm must have y0's dtype torch.float64", "got torch.float32")


@BATTERY.error
def bm_size_differs_from_state():
    raises(lambda: _layer(scheme=EulerHeun())(_y0(), [0.0, 1.0], bm=_bm(size=(3, 3))), ValueError,
           "bm must have shape (2, 3)", "got (3, 3)")


@BATTERY.error
def srk_needs_levy_area_from_bm():
    raises(lambda: _layer(scheme=SRK())(_y0(), [0.0, 1.0], bm=_bm()), ValueError,
           "SRK needs Lévy area", "space-time")


@BATTERY.error
def bm_not_a_brownian_motion():
    raises(lambda: _layer()(_y0(), [0.0, 1.0], bm=lambda ta, tb: torch.zeros(2, 3)), TypeError,
           "bm must be a torchsde Brownian motion")


# -- clear errors: drift and diffusion outputs ---------------------------------------------------


@BATTERY.error
def drift_returns_float32_for_float64_state():
    raises(lambda: _layer(drift=lambda t, y: (-y).float())(_y0(), [0.0, 1.0]), ValueError,
           "drift(t, y) must return", "expected (2, 3) torch.float64", "got tensor (2, 3) torch.float32")


@BATTERY.error
def diffusion_returns_float64_for_float32_state():
    raises(lambda: _layer(diffusion=lambda t, y: torch.ones_like(y, dtype=F64), scheme=StratonovichHeun())(
        _y0(dtype=torch.float32), [0.0, 1.0]), ValueError, "diffusion(t, y) must return", "diagonal noise",
        "got tensor (2, 3) torch.float64")


@BATTERY.error
def diffusion_returns_general_noise_matrix():
    raises(lambda: _layer(diffusion=lambda t, y: torch.ones(2, 3, 3, dtype=F64))(_y0(), [0.0, 1.0]), ValueError,
           "diffusion(t, y)", "expected (2, 3)", "got tensor (2, 3, 3)")


@BATTERY.error
def drift_returns_broadcastable_row():
    raises(lambda: _layer(drift=lambda t, y: -y[:1], scheme=Milstein(), stepping=StepDoubling())(_y0(), [0.0, 1.0]),
           ValueError, "drift(t, y)", "got tensor (1, 3)")


@BATTERY.error
def drift_returns_tensor_on_another_device():
    raises(lambda: _layer(drift=lambda t, y: torch.empty_like(y, device="meta"))(_y0(), [0.0, 1.0]), ValueError,
           "drift(t, y)", "on meta")


# -- clear errors: state, times, options --------------------------------------------------------


@BATTERY.error
def half_precision_state_refused():
    for dtype in (torch.float16, torch.bfloat16):
        raises(lambda: _layer()(_y0(dtype=dtype), [0.0, 1.0]), TypeError, "y0 must be float32 or float64", str(dtype))


@BATTERY.error
def ts_decreasing_refused():
    raises(lambda: _layer(scheme=StratonovichMidpoint())(_y0(), [1.0, 0.0]), ValueError, "ts must be strictly increasing")


@BATTERY.error
def ts_single_point():
    raises(lambda: _layer()(_y0(), torch.tensor([0.0])), ValueError, "at least 2 times")


@BATTERY.error
def ts_requires_grad():
    raises(lambda: _layer()(_y0(), torch.tensor([0.0, 1.0], requires_grad=True)), ValueError, "ts must not require grad")


@BATTERY.error
def y0_nonfinite_or_empty():
    raises(lambda: _layer()(_y0(value=math.nan), [0.0, 1.0]), ValueError, "y0 contains NaN or Inf")
    raises(lambda: _layer()(torch.ones(0, 3, dtype=F64), [0.0, 1.0]), ValueError, "y0 must be non-empty")


@BATTERY.error
def step_options_not_finite():
    raises(lambda: StepDoubling(atol=math.inf), ValueError, "StepDoubling(atol=...) must be finite")
    raises(lambda: FixedSteps(dt=math.nan), ValueError, "FixedSteps(dt=...) must be finite and > 0")
    raises(lambda: StepDoubling(dt0="0.1"), TypeError, "StepDoubling(dt0=...) must be a float")


@BATTERY.error
def dt_min_above_dt0():
    raises(lambda: StepDoubling(dt0=1e-3, dt_min=1e-2), ValueError, "StepDoubling(dt_min=...) must be <= dt0")


@BATTERY.error
def max_steps_and_throw_as_in_the_ode_layer():
    raises(lambda: _layer(max_steps=0), ValueError, "max_steps must be a positive int, got 0")
    raises(lambda: _layer(max_steps=2.5), ValueError, "max_steps must be a positive int")
    raises(lambda: _layer(throw="no"), TypeError, "throw must be a bool")


@BATTERY.error
def scheme_with_unknown_noise_reading():
    raises(lambda: Milstein(sde_type="weak"), ValueError, "Milstein(sde_type=...) must be 'ito' or 'stratonovich'")
    raises(lambda: _layer(scheme="euler"), TypeError, "scheme must be an SDEScheme")


# -- honest failures ---------------------------------------------------------------------------


@BATTERY.failure
def diffusion_nan_without_error_estimate():
    make = lambda throw: _layer(diffusion=lambda t, y: y * math.nan,  # noqa: E731
                                stepping=FixedSteps(dt=0.1, estimate_error=False), throw=throw)
    ys, _ = _fails_both_ways(make, (_y0(), [0.0, 0.5, 1.0], _bm()), Outcome.NONFINITE, "NaN or Inf")
    assert torch.isnan(ys[-1]).all()


@BATTERY.failure
def diffusion_nan_midway_step_doubling():
    make = lambda throw: _layer(diffusion=lambda t, y: y * math.nan if float(t) > 0.3 else 0.2 * y,  # noqa: E731
                                scheme=Milstein(), stepping=StepDoubling(dt0=0.05), throw=throw)
    _, stats = _fails_both_ways(make, (_y0(), [0.0, 1.0], _bm()), Outcome.NONFINITE, "error estimate is NaN")
    assert 0.25 < stats.t_final <= 0.35


@BATTERY.failure
def drift_inf_srk():
    make = lambda throw: _layer(drift=lambda t, y: y * math.inf, scheme=SRK(), stepping=FixedSteps(dt=0.25),  # noqa: E731
                                throw=throw)
    _fails_both_ways(make, (_y0(), [0.0, 1.0]), Outcome.NONFINITE, "NaN or Inf")


@BATTERY.failure
def max_steps_reached_adaptive_stratonovich():
    make = lambda throw: _layer(scheme=StratonovichHeun(), stepping=StepDoubling(dt0=1e-3), max_steps=5,  # noqa: E731
                                throw=throw)
    ys, stats = _fails_both_ways(make, (_y0(), [0.0, 1.0], _bm()), Outcome.MAX_STEPS_REACHED, "max_steps=5")
    assert stats.n_accepted + stats.n_rejected == 5 and torch.isnan(ys[-1]).all()


@BATTERY.failure
def max_steps_reached_fixed_steps():
    make = lambda throw: _layer(stepping=FixedSteps(dt=0.01), max_steps=50, throw=throw)  # noqa: E731
    _fails_both_ways(make, (_y0(), [0.0, 1.0], _bm()), Outcome.MAX_STEPS_REACHED, "max_steps=50")


@BATTERY.failure
def fixed_step_too_small_for_float32_time():
    make = lambda throw: _layer(stepping=FixedSteps(dt=1e-9, estimate_error=False), max_steps=10**6,  # noqa: E731
                                throw=throw)
    args = (_y0(dtype=torch.float32), torch.tensor([1000.0, 1001.0]), _bm(1000.0, 1001.0, dtype=torch.float32))
    _fails_both_ways(make, args, Outcome.DT_UNDERFLOW, "does not advance")


# -- correct results ---------------------------------------------------------------------------


@BATTERY.correct
def zero_diffusion_is_the_ode_solution():
    ys, stats = _layer(drift=lambda t, y: -2.0 * y, diffusion=lambda t, y: torch.zeros_like(y), scheme=SRK(),
                       stepping=FixedSteps(dt=0.01))(_y0(), [0.0, 0.5, 1.0])
    assert stats.outcome.ok
    # SRK with zero noise is a third-order-accurate Runge-Kutta method for y' = -2y
    torch.testing.assert_close(ys[-1], _y0() * math.exp(-2.0), rtol=1e-6, atol=0)


@BATTERY.correct
def bm_covering_exactly_the_span_replays_torchsde():
    drift, diffusion = (lambda t, y: -y), (lambda t, y: 0.5 * torch.ones_like(y))
    bm = _bm(0.0, 1.0, seed=3)
    ys, stats = _layer(drift, diffusion, stepping=FixedSteps(dt=0.1, estimate_error=False))(
        _y0(), [0.0, 0.5, 1.0], bm=bm)
    assert stats.outcome.ok

    class SDE(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return drift(t, y)

        def g(self, t, y):
            return diffusion(t, y)

    ref = torchsde.sdeint(SDE(), _y0(), torch.tensor([0.0, 0.5, 1.0], dtype=F64), bm=bm, method="euler", dt=0.1, adaptive=False)
    torch.testing.assert_close(ys, ref, rtol=1e-12, atol=1e-12)


@BATTERY.correct
def additive_noise_euler_maruyama_exact_increments():
    # dy = c dW: Euler-Maruyama is exact, y(t) = y0 + c·W(t)
    bm = _bm(0.0, 2.0, seed=7)
    ys, stats = _layer(drift=lambda t, y: torch.zeros_like(y), diffusion=lambda t, y: 0.3 * torch.ones_like(y))(
        _y0(), [0.0, 1.0, 2.0], bm=bm)
    assert stats.outcome.ok
    # the same object answers consistently (up to its bisection tolerance) on an interval it has sampled
    for i, t in enumerate((1.0, 2.0)):
        torch.testing.assert_close(ys[i + 1], _y0() + 0.3 * bm(0.0, t), rtol=1e-7, atol=1e-7)


@BATTERY.correct
def bm_longer_than_span_and_float32_times():
    # ts rounded to float32 (0.1 is just above the Python float 0.1) must still fit a bm built on [0, 0.1]
    ys, stats = _layer(stepping=FixedSteps(dt=0.01))(_y0(dtype=torch.float32), torch.tensor([0.0, 0.1]),
                                                      bm=_bm(0.0, 0.1, dtype=torch.float32))
    assert stats.outcome.ok and ys.dtype == torch.float32
    ys2, stats2 = _layer(stepping=FixedSteps(dt=0.01))(_y0(), [0.2, 0.3], bm=_bm(0.0, 5.0))
    assert stats2.outcome.ok and torch.isfinite(ys2).all()


@BATTERY.correct
def brownian_tree_covering_span():
    bm = torchsde.BrownianTree(t0=0.0, t1=1.0, w0=torch.zeros(2, 3, dtype=F64), entropy=1)
    ys, stats = _layer(diffusion=lambda t, y: torch.zeros_like(y), stepping=FixedSteps(dt=0.001, estimate_error=False))(_y0(), [0.0, 1.0], bm=bm)
    assert stats.outcome.ok
    torch.testing.assert_close(ys[-1], _y0() * (1 - 0.001) ** 1000, rtol=1e-9, atol=0)


@BATTERY.correct
def geometric_brownian_motion_strong_error_milstein():
    # dy = mu y dt + s y dW: y(1) = y0·exp((mu - s²/2) + s·W(1)) exactly
    mu, s = 0.5, 0.4
    bm = _bm(0.0, 1.0, size=(64, 1), seed=11)
    ys, stats = _layer(drift=lambda t, y: mu * y, diffusion=lambda t, y: s * y, scheme=Milstein(),
                       stepping=FixedSteps(dt=1 / 256))(_y0(64, 1), [0.0, 1.0], bm=bm)
    assert stats.outcome.ok
    w1 = bm(0.0, 1.0)
    exact = torch.exp((mu - s * s / 2) + s * w1)
    assert float((ys[-1] - exact).abs().max()) < 0.02


@BATTERY.correct
def stratonovich_gbm_adaptive():
    # Stratonovich dy = s y ∘ dW: y(1) = y0·exp(s·W(1))
    s = 0.3
    bm = _bm(0.0, 1.0, size=(16, 1), seed=5)
    ys, stats = _layer(drift=lambda t, y: torch.zeros_like(y), diffusion=lambda t, y: s * y,
                       scheme=StratonovichHeun(), stepping=StepDoubling(dt0=0.01, rtol=1e-4, atol=1e-4))(
        _y0(16, 1), [0.0, 1.0], bm=bm)
    assert stats.outcome.ok
    w1 = bm(0.0, 1.0)
    torch.testing.assert_close(ys[-1], torch.exp(s * w1), rtol=5e-3, atol=5e-3)


@BATTERY.correct
def single_step_within_max_steps_one():
    ys, stats = _layer(drift=lambda t, y: -y, diffusion=lambda t, y: torch.zeros_like(y),
                       stepping=FixedSteps(dt=1.0, estimate_error=False), max_steps=1)(_y0(), [0.0, 1.0])
    assert stats.outcome.ok and stats.n_accepted == 1
    torch.testing.assert_close(ys[-1], torch.zeros_like(_y0()))  # one Euler step of y' = -y with h = 1


test_battery = BATTERY.test()
