"""Reliability battery for the ODE layer: bad inputs, hostile dynamics, legitimate edge cases.

Every boundary (``odeint``, ``NeuralODE`` with ``Backprop()`` and with ``Adjoint()``) must refuse
the same invalid input with the same words, report a failed solve as the outcome it is, and
still accept the legitimate edge inputs (decreasing time, pure absolute or relative
tolerances, half precision where it works) with answers checked against exact solutions or
scipy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _battery import Battery, fails, raises
from scipy.integrate import solve_ivp
from torch import nn

from implicit import Outcome, SolverError
from implicit.ode import (
    RK4,
    Adjoint,
    Backprop,
    Bosh3,
    Dopri5,
    Euler,
    IController,
    NeuralODE,
    PIController,
    Steer,
    VCAB3,
    VCABM3,
    Tsit5,
    odeint,
)

BATTERY = Battery("ode")
F64 = torch.float64


class Linear(nn.Module):
    """dz/dt = a·z: z(t) = z0·exp(a·(t - t0)), the exact solution every correct case checks."""

    def __init__(self, a=-1.0, dtype=F64):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=dtype))

    def forward(self, t, z):
        return self.a * z


class Hostile(nn.Module):
    """dz/dt = -z, then ``out`` applied to it (a cast, a slice, a NaN from ``t_bad`` on)."""

    def __init__(self, out=lambda t, r: r):
        super().__init__()
        self.out = out

    def forward(self, t, z):
        return self.out(t, -z)


def _nan_from(t_bad):
    return Hostile(lambda t, r: r * math.nan if float(t) >= t_bad else r)


def _z(*shape, dtype=F64, value=1.0):
    return torch.full(shape or (2, 3), value, dtype=dtype)


def _t(*times, dtype=F64):
    return torch.tensor(times or (0.0, 1.0), dtype=dtype)


ADJ = dict(solver=Dopri5(), gradient=Adjoint())
BACK = dict(solver=Tsit5(), gradient=Backprop())


def _both_paths(make, exc, *fragments):
    """The same bad option gets the same error on both gradient paths."""
    for path in (BACK, ADJ):
        raises(lambda: make(path), exc, *fragments)


def _fails_both_ways(call, outcome, *fragments):
    """``call(throw)`` returns (ys, stats): throw=False reports ``outcome``, throw=True raises it."""
    ys, stats = call(False)
    fails(stats, outcome, *fragments)
    with pytest.raises(SolverError) as info:
        call(True)
    fails(info.value, outcome, *fragments)
    return ys, stats


# -- clear errors: step options, the same on every gradient path --------------------------------


@BATTERY.error
def adjoint_negative_rtol_as_backprop():
    _both_paths(lambda p: NeuralODE(Linear(), rtol=-1.0, **p), ValueError, "rtol must be a finite number >= 0", "-1")


@BATTERY.error
def adjoint_nan_atol_as_backprop():
    _both_paths(lambda p: NeuralODE(Linear(), atol=math.nan, **p), ValueError, "atol must be", "nan")


@BATTERY.error
def adjoint_zero_tolerances_as_backprop():
    _both_paths(lambda p: NeuralODE(Linear(), rtol=0.0, atol=0.0, **p), ValueError, "rtol and atol must not both be 0")


@BATTERY.error
def adjoint_negative_dt0_as_backprop():
    _both_paths(lambda p: NeuralODE(Linear(), dt0=-0.1, **p), ValueError, "dt0 must be a finite number > 0", "-0.1")


@BATTERY.error
def adjoint_infinite_dt0_as_odeint():
    raises(lambda: NeuralODE(Linear(), dt0=math.inf, **ADJ), ValueError, "dt0 must be", "inf")
    raises(lambda: odeint(Linear(), _z(), _t(), dt0=math.inf), ValueError, "dt0 must be", "inf")


@BATTERY.error
def max_steps_zero_refused_on_every_path():
    _both_paths(lambda p: NeuralODE(Linear(), max_steps=0, **p), ValueError, "max_steps must be a positive int, got 0")
    raises(lambda: odeint(Linear(), _z(), _t(), solver=RK4(dt=0.1), max_steps=0), ValueError, "max_steps")


@BATTERY.error
def max_steps_bool_refused():
    _both_paths(lambda p: NeuralODE(Linear(), max_steps=True, **p), ValueError, "max_steps must be a positive int")


@BATTERY.error
def tolerance_given_as_string():
    _both_paths(lambda p: NeuralODE(Linear(), rtol="1e-3", **p), TypeError, "rtol must be a real number", "str")


@BATTERY.error
def adjoint_backward_tolerance_nonpositive():
    raises(lambda: Adjoint(atol=0.0), ValueError, "atol must be a finite number > 0")
    raises(lambda: Adjoint(rtol=math.inf), ValueError, "rtol must be", "inf")


@BATTERY.error
def adjoint_refuses_a_controller():
    raises(lambda: NeuralODE(Linear(), controller=IController(), **ADJ), ValueError, "leave controller=None")
    raises(lambda: NeuralODE(Linear(), controller=PIController(), **ADJ), ValueError, "needs gradient=Backprop()")


@BATTERY.error
def controller_knob_not_finite():
    raises(lambda: PIController(qmax=math.nan), ValueError, "qmax must be > 1", "nan")
    raises(lambda: IController(safety="high"), TypeError, "safety must be a real number", "str")


@BATTERY.error
def solver_knob_wrong_type():
    raises(lambda: Dopri5(safety="0.9"), TypeError, "safety must be a real number")
    raises(lambda: Bosh3(dfactor=1.5), ValueError, "dfactor must be in (0, 1)", "1.5")


@BATTERY.error
def fixed_step_dt_infinite_or_bool():
    raises(lambda: RK4(dt=math.inf), ValueError, "dt must be a finite number > 0", "inf")
    raises(lambda: Euler(dt=True), TypeError, "dt must be a real number", "bool")


@BATTERY.error
def fixed_solver_without_dt_refused_at_construction():
    raises(lambda: NeuralODE(Linear(), solver=RK4()), ValueError, "RK4 is a fixed-step solver: give it dt")
    raises(lambda: NeuralODE(Linear(), solver=Euler(), gradient=Adjoint()), ValueError,
           "Euler is a fixed-step solver: give it dt")


@BATTERY.error
def throw_and_record_must_be_bool():
    _both_paths(lambda p: NeuralODE(Linear(), throw="yes", **p), TypeError, "throw must be a bool", "str")
    raises(lambda: odeint(Linear(), _z(), _t(), record=None), TypeError, "record must be a bool")


@BATTERY.error
def steer_b_infinite():
    raises(lambda: Steer(b=math.inf), ValueError, "b must be a finite number > 0", "inf")


# -- clear errors: output times ---------------------------------------------------------------


@BATTERY.error
def layer_t_requiring_grad_refused_like_odeint():
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)
    _both_paths(lambda p: NeuralODE(Linear(), t=t, **p), ValueError, "t must not require grad")
    raises(lambda: odeint(Linear(), _z(), t), ValueError, "t must not require grad")


@BATTERY.error
def t_single_point():
    _both_paths(lambda p: NeuralODE(Linear(), t=(0.5,), **p), ValueError, "at least 2 times", "(1,)")


@BATTERY.error
def t_not_monotone():
    raises(lambda: odeint(Linear(), _z(), _t(0.0, 0.5, 0.3), solver=Bosh3()), ValueError,
           "strictly increasing or strictly decreasing", "0.3")
    _both_paths(lambda p: NeuralODE(Linear(), t=(0.0, 1.0, 1.0), **p), ValueError, "strictly increasing")


@BATTERY.error
def t_not_finite():
    _both_paths(lambda p: NeuralODE(Linear(), t=(0.0, math.inf), **p), ValueError, "t must be finite")


@BATTERY.error
def t_of_strings_or_a_scalar():
    raises(lambda: NeuralODE(Linear(), t=("0", "1")), TypeError, "t must be a tuple of floats or a 1-D tensor")
    raises(lambda: NeuralODE(Linear(), t=1.0, **ADJ), TypeError, "t must be a tuple of floats or a 1-D tensor")
    raises(lambda: NeuralODE(Linear(), t=torch.tensor([False, True])), TypeError, "t must hold real output times")


@BATTERY.error
def t_dtype_differs_from_y0():
    raises(lambda: odeint(Linear(), _z(), _t(dtype=torch.float32), solver=RK4(dt=0.5)), TypeError,
           "t has dtype torch.float32 but y0 has dtype torch.float64")


# -- clear errors: the state and f's output ------------------------------------------------------


@BATTERY.error
def y0_nonfinite_on_adjoint_path():
    raises(lambda: NeuralODE(Linear(), **ADJ)(_z(value=math.inf)), ValueError, "y0 contains NaN or Inf")


@BATTERY.error
def y0_empty_batch_on_both_paths():
    for p in (BACK, ADJ):
        raises(lambda: NeuralODE(Linear(), **p)(torch.ones(0, 3, dtype=F64)), ValueError, "y0 must not be empty")


@BATTERY.error
def y0_integer_dtype():
    raises(lambda: odeint(Linear(), torch.ones(2, 3, dtype=torch.int32), _t()), TypeError,
           "y0 must be a floating-point tensor", "int32")


@BATTERY.error
def f_returns_float64_for_float32_state_odeint():
    raises(lambda: odeint(lambda t, y: (-y).double(), _z(dtype=torch.float32), _t(dtype=torch.float32)),
           ValueError, "f(t, y) must return", "expected (2, 3) torch.float32", "got tensor (2, 3) torch.float64")


@BATTERY.error
def f_returns_float64_for_float32_state_layer_both_paths():
    f = Hostile(lambda t, r: r.double())
    for p in (BACK, ADJ):
        raises(lambda: NeuralODE(f, **p)(_z(dtype=torch.float32)), ValueError,
               "f(t, y) must return", "torch.float32", "got tensor (2, 3) torch.float64")


@BATTERY.error
def f_returns_float32_for_float64_state_adjoint():
    # torchdiffeq would silently mix the precisions; the check names the cast instead
    raises(lambda: NeuralODE(Hostile(lambda t, r: r.float()), solver=Bosh3(), gradient=Adjoint())(_z()),
           ValueError, "expected (2, 3) torch.float64", "got tensor (2, 3) torch.float32")


@BATTERY.error
def f_broadcastable_shape_adjoint():
    raises(lambda: NeuralODE(Hostile(lambda t, r: r[:1]), **ADJ)(_z()), ValueError,
           "f(t, y) must return", "expected (2, 3)", "got tensor (1, 3)")


@BATTERY.error
def f_wrong_shape_fixed_steps_layer():
    raises(lambda: NeuralODE(Hostile(lambda t, r: r.reshape(3, 2)), solver=RK4(dt=0.25))(_z()), ValueError,
           "expected (2, 3)", "got tensor (3, 2)")


@BATTERY.error
def f_returns_a_float():
    raises(lambda: odeint(lambda t, y: 1.0, _z(), _t(), solver=Bosh3()), ValueError, "f(t, y) must return", "got float")


@BATTERY.error
def f_returns_tensor_on_another_device():
    raises(lambda: odeint(lambda t, y: torch.empty_like(y, device="meta"), _z(), _t()), ValueError,
           "y's shape, dtype and device", "on cpu", "on meta")


@BATTERY.error
def adjoint_half_precision_refused():
    f = Hostile()
    raises(lambda: NeuralODE(f, **ADJ)(_z(dtype=torch.float16)), ValueError,
           "gradient=Adjoint() with Dopri5 needs a float32 or float64 state", "float16")
    raises(lambda: NeuralODE(f, solver=Bosh3(), gradient=Adjoint())(_z(dtype=torch.bfloat16)), ValueError,
           "float32 or float64", "bfloat16")


@BATTERY.error
def bfloat16_rtol_below_its_eps():
    raises(lambda: odeint(Hostile(), _z(dtype=torch.bfloat16), _t(dtype=torch.bfloat16)), ValueError,
           "rtol must be >= 0.0078125", "bfloat16", "got 0.001")


# -- honest failures ---------------------------------------------------------------------------


@BATTERY.failure
def adjoint_nan_from_f_is_nonfinite_not_underflow():
    layer = lambda throw: NeuralODE(_nan_from(0.0), throw=throw, **ADJ)  # noqa: E731
    ys, _ = _fails_both_ways(lambda throw: layer(throw)(_z()), Outcome.NONFINITE, "f produced NaN/Inf at t=0")
    assert torch.isnan(ys[-1]).all()


@BATTERY.failure
def adjoint_nan_midway_bosh3():
    call = lambda throw: NeuralODE(_nan_from(0.5), solver=Bosh3(), gradient=Adjoint(), throw=throw)(_z())  # noqa: E731
    _fails_both_ways(call, Outcome.NONFINITE, "f produced NaN/Inf at t=0.5")


@BATTERY.failure
def adjoint_euler_nan_state():
    call = lambda throw: NeuralODE(_nan_from(0.3), solver=Euler(dt=0.1), gradient=Adjoint(), throw=throw)(_z())  # noqa: E731
    _fails_both_ways(call, Outcome.NONFINITE, "not finite")


@BATTERY.failure
def backprop_nan_from_f_layer_tsit5():
    call = lambda throw: NeuralODE(_nan_from(0.25), throw=throw)(_z())  # noqa: E731
    ys, stats = _fails_both_ways(call, Outcome.NONFINITE, "NaN/Inf")
    assert 0.2 < stats.t_final < 0.25 and torch.isnan(ys[-1]).all()


@BATTERY.failure
def backprop_nan_in_one_sample_tracked_step_path():
    def f(t, y):
        r = -y
        return torch.cat([r[:1], r[1:] * math.nan]) if float(t) > 0.4 else r

    call = lambda throw: odeint(f, _z(3, 2), _t(), throw=throw, step_path="tracked")  # noqa: E731
    sol = call(False)
    fails(sol.stats, Outcome.NONFINITE, "NaN/Inf")
    with pytest.raises(SolverError) as info:
        call(True)
    fails(info.value, Outcome.NONFINITE)


@BATTERY.failure
def backprop_inf_in_fixed_steps_rk4():
    # y' = y / (0.5 - t): the stage at the output time t = 0.5 divides by zero
    call = lambda throw: NeuralODE(Hostile(lambda t, r: -r / (0.5 - t)), t=(0.0, 0.5, 1.0), solver=RK4(dt=0.125),  # noqa: E731
                                   throw=throw)(_z())
    _fails_both_ways(call, Outcome.NONFINITE, "not finite")


@BATTERY.failure
def nan_at_initial_time_without_records():
    sol = odeint(lambda t, y: y * math.nan, _z(), _t(), solver=Dopri5(), record=False, throw=False)
    fails(sol.stats, Outcome.NONFINITE, "initial time")
    with pytest.raises(SolverError) as info:
        odeint(lambda t, y: y * math.nan, _z(), _t(), solver=Dopri5(), record=False)
    fails(info.value, Outcome.NONFINITE)


@BATTERY.failure
def float16_overflow_is_nonfinite():
    call = lambda throw: odeint(lambda t, y: y, _z(1, 1, dtype=torch.float16, value=100.0),  # noqa: E731
                                _t(0.0, 10.0, dtype=torch.float16), throw=throw)
    sol = call(False)
    fails(sol.stats, Outcome.NONFINITE, "NaN/Inf")
    with pytest.raises(SolverError) as info:
        call(True)
    fails(info.value, Outcome.NONFINITE)


@BATTERY.failure
def max_steps_fixed_steps_same_on_both_paths():
    for p in (dict(solver=Euler(dt=0.01)), dict(solver=Euler(dt=0.01), gradient=Adjoint())):
        ys, stats = _fails_both_ways(lambda throw: NeuralODE(Linear(), max_steps=10, throw=throw, **p)(_z()),
                                     Outcome.MAX_STEPS_REACHED, "max_steps=10")
        assert torch.isnan(ys[-1]).all()


@BATTERY.failure
def max_steps_adjoint_tight_tolerance():
    call = lambda throw: NeuralODE(Hostile(lambda t, r: torch.sin(10 * t) * r), rtol=1e-10, atol=1e-12,  # noqa: E731
                                   max_steps=4, throw=throw, **ADJ)(_z())
    _fails_both_ways(call, Outcome.MAX_STEPS_REACHED, "max_num_steps")


@BATTERY.failure
def max_steps_pi_controller():
    call = lambda throw: NeuralODE(Linear(), rtol=1e-10, atol=1e-12, max_steps=3, controller=PIController(),  # noqa: E731
                                   throw=throw)(_z())
    _, stats = _fails_both_ways(call, Outcome.MAX_STEPS_REACHED, "reached max_steps=3")
    assert stats.n_accepted + stats.n_rejected == 3


@BATTERY.failure
def dt_underflow_backwards_in_time():
    # y' = -y², y(0) = 1 is y = 1/(1 + t): singular at t = -1 when integrating towards t = -2
    sol = odeint(lambda t, y: -y * y, _z(1, 1), _t(0.0, -2.0), solver=Dopri5(), max_steps=100_000, throw=False)
    fails(sol.stats, Outcome.DT_UNDERFLOW, "underflowed")
    assert -1.0 < sol.stats.t_final < -0.99
    with pytest.raises(SolverError) as info:
        odeint(lambda t, y: -y * y, _z(1, 1), _t(0.0, -2.0), solver=Dopri5(), max_steps=100_000)
    fails(info.value, Outcome.DT_UNDERFLOW)


@BATTERY.failure
def dt_underflow_adjoint_finite_blowup():
    # y' = y², y(0) = 1 blows up at t = 1 while f stays finite: a genuine underflow, not NONFINITE
    call = lambda throw: NeuralODE(Hostile(lambda t, r: r * r), t=(0.0, 2.0), max_steps=100_000,  # noqa: E731
                                   throw=throw, **ADJ)(_z(1, 1))
    _fails_both_ways(call, Outcome.DT_UNDERFLOW, "underflow")


# -- correct results, including legitimate edge inputs ------------------------------------------


def _exact(z0, a, ts):
    return torch.stack([z0 * math.exp(a * (t - ts[0])) for t in ts])


@BATTERY.correct
def exponential_tsit5_float64():
    ts = (0.0, 0.3, 1.0, 2.0)
    zs, stats = NeuralODE(Linear(-0.7), t=ts, rtol=1e-9, atol=1e-12)(_z())
    assert stats.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(zs, _exact(_z(), -0.7, ts), rtol=1e-7, atol=1e-9)


@BATTERY.correct
def decreasing_t_both_paths_agree_with_exact():
    ts = (1.0, 0.5, -0.5)
    for p in (BACK, ADJ):
        zs, stats = NeuralODE(Linear(0.8), t=ts, rtol=1e-8, atol=1e-10, **p)(_z())
        assert stats.outcome.ok
        torch.testing.assert_close(zs, _exact(_z(), 0.8, ts), rtol=1e-6, atol=1e-8)


@BATTERY.correct
def float32_adjoint_bosh3():
    ts = (0.0, 1.0)
    zs, stats = NeuralODE(Linear(-1.5, dtype=torch.float32), t=ts, solver=Bosh3(), gradient=Adjoint(),
                          rtol=1e-5, atol=1e-7)(_z(dtype=torch.float32))
    assert stats.outcome.ok and zs.dtype == torch.float32
    torch.testing.assert_close(zs, _exact(_z(dtype=torch.float32), -1.5, ts), rtol=1e-4, atol=1e-5)


@BATTERY.correct
def float16_backprop_tsit5():
    ts = (0.0, 1.0)
    zs, stats = NeuralODE(Linear(-1.0, dtype=torch.float16), t=ts)(_z(dtype=torch.float16))
    assert stats.outcome.ok and zs.dtype == torch.float16
    assert abs(float(zs[-1, 0, 0]) - math.exp(-1.0)) < 5e-3


@BATTERY.correct
def bfloat16_with_rtol_at_its_eps():
    sol = odeint(lambda t, y: -y, _z(dtype=torch.bfloat16), _t(dtype=torch.bfloat16), rtol=1e-2, atol=1e-3)
    assert sol.stats.outcome.ok and sol.ys.dtype == torch.bfloat16
    assert abs(float(sol.ys[-1, 0, 0]) - math.exp(-1.0)) < 0.02


@BATTERY.correct
def float16_fixed_steps_adjoint_euler():
    zs, stats = NeuralODE(Linear(-1.0, dtype=torch.float16), solver=Euler(dt=0.125), gradient=Adjoint())(
        _z(dtype=torch.float16))
    assert stats.outcome.ok
    assert abs(float(zs[-1, 0, 0]) - (1 - 0.125) ** 8) < 2e-3


@BATTERY.correct
def pure_absolute_tolerance():
    sol = odeint(Linear(-2.0), _z(), _t(), solver=Dopri5(), rtol=0.0, atol=1e-10)
    assert sol.stats.outcome.ok
    torch.testing.assert_close(sol.ys[-1], _z() * math.exp(-2.0), rtol=0, atol=1e-8)


@BATTERY.correct
def pure_relative_tolerance_adjoint():
    zs, stats = NeuralODE(Linear(-2.0), rtol=1e-9, atol=0.0, **ADJ)(_z())
    assert stats.outcome.ok
    torch.testing.assert_close(zs[-1], _z() * math.exp(-2.0), rtol=1e-7, atol=0)


@BATTERY.correct
def one_step_within_max_steps_one():
    # one RK4 step of y' = -y with h = 1: 1 - 1 + 1/2 - 1/6 + 1/24
    sol = odeint(lambda t, y: -y, _z(), _t(), solver=RK4(dt=1.0), max_steps=1)
    assert sol.stats.outcome.ok and sol.stats.n_accepted == 1
    torch.testing.assert_close(sol.ys[-1], _z() * (1 - 1 + 1 / 2 - 1 / 6 + 1 / 24))


@BATTERY.correct
def adjoint_euler_exactly_max_steps():
    zs, stats = NeuralODE(Linear(-1.0), solver=Euler(dt=0.1), gradient=Adjoint(), max_steps=10)(_z())
    assert stats.outcome.ok
    torch.testing.assert_close(zs[-1], _z() * 0.9 ** 10)


@BATTERY.correct
def adjoint_gradient_matches_exact_derivative():
    # z(1) = z0·exp(a): d(sum z(1))/da = sum z0·exp(a)
    for p in (BACK, ADJ):
        f = Linear(-0.5)
        zs, _ = NeuralODE(f, rtol=1e-10, atol=1e-12, **p)(_z())
        zs[-1].sum().backward()
        assert math.isclose(float(f.a.grad), 6 * math.exp(-0.5), rel_tol=1e-6)


@BATTERY.correct
def float32_tensor_t_many_outputs():
    t = torch.linspace(0.0, 2.0, 9)
    zs, stats = NeuralODE(Linear(-1.0, dtype=torch.float32), t=t, solver=Dopri5(), rtol=1e-6, atol=1e-8)(
        _z(dtype=torch.float32))
    assert stats.outcome.ok and zs.shape == (9, 2, 3)
    torch.testing.assert_close(zs, _exact(_z(dtype=torch.float32), -1.0, t.tolist()), rtol=1e-5, atol=1e-6)


@BATTERY.correct
def t_as_list_and_first_step_longer_than_span():
    zs, stats = NeuralODE(Linear(-1.0), t=[0.0, 0.25], dt0=10.0, rtol=1e-8, atol=1e-10)(_z())
    assert stats.outcome.ok
    torch.testing.assert_close(zs[-1], _z() * math.exp(-0.25), rtol=1e-7, atol=1e-9)


@BATTERY.correct
def image_shaped_state_rk4():
    z0 = torch.randn(2, 3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    zs, stats = NeuralODE(Linear(-1.0), solver=RK4(dt=0.01))(z0)
    assert stats.outcome.ok and zs.shape == (2, 2, 3, 4, 4)
    torch.testing.assert_close(zs[-1], z0 * math.exp(-1.0), rtol=1e-9, atol=1e-10)


@BATTERY.correct
def nonlinear_system_against_scipy():
    # van der Pol, mu = 1, two samples
    def vdp(t, y):
        x, v = y[:, :1], y[:, 1:]
        return torch.cat([v, (1 - x * x) * v - x], 1)

    y0 = torch.tensor([[2.0, 0.0], [0.5, -0.5]], dtype=F64)
    ts = (0.0, 1.5, 3.0)
    for solver in (Tsit5(), Dopri5(), Bosh3()):
        sol = odeint(vdp, y0, _t(*ts), solver=solver, rtol=1e-9, atol=1e-11, max_steps=100_000)
        for i, row in enumerate(y0.numpy()):
            ref = solve_ivp(lambda t, y: [y[1], (1 - y[0] ** 2) * y[1] - y[0]], (ts[0], ts[-1]), row,
                            t_eval=ts, rtol=1e-12, atol=1e-13, method="DOP853")
            np.testing.assert_allclose(sol.ys[:, i].numpy(), ref.y.T, rtol=1e-6, atol=1e-7)


@BATTERY.correct
def single_sample_single_feature_pi_controller():
    zs, stats = NeuralODE(Linear(1.0), controller=PIController(), rtol=1e-8, atol=1e-10)(_z(1, 1))
    assert stats.outcome.ok
    torch.testing.assert_close(zs[-1], _z(1, 1) * math.e, rtol=1e-6, atol=0)


@BATTERY.correct
def nan_in_a_rejected_attempt_is_survived():
    # f breaks only outside y > 0; a first step of 3 overshoots there and is rejected, smaller steps succeed
    def f(t, y):
        return torch.where(y > 0, -y, torch.full_like(y, math.nan))

    sol = odeint(f, _z(), _t(), dt0=3.0, rtol=1e-8, atol=1e-10)
    assert sol.stats.outcome.ok and sol.stats.n_rejected >= 1
    torch.testing.assert_close(sol.ys[-1], _z() * math.exp(-1.0), rtol=1e-7, atol=1e-9)


@BATTERY.error
def adams_with_the_adjoint_is_refused():
    raises(lambda: NeuralODE(Linear(), solver=VCAB3(), gradient=Adjoint()), ValueError, "no VCAB3", "Backprop")


@BATTERY.error
def adams_with_a_tracked_step_path_is_refused():
    raises(lambda: odeint(Linear(), _z(), _t(), solver=VCABM3(), step_path="tracked"), ValueError,
           "step_path='tracked'", "VCABM3", "detached")


@BATTERY.failure
def adams_max_steps_is_an_outcome():
    for throw in (False, True):
        call = lambda: odeint(Linear(-50.0), _z(), _t(), solver=VCAB3(), rtol=1e-10, atol=1e-12,  # noqa: E731
                              max_steps=5, throw=throw)
        if throw:
            fails(raises(call, SolverError), Outcome.MAX_STEPS_REACHED, "max_steps=5")
        else:
            fails(call().stats, Outcome.MAX_STEPS_REACHED, "max_steps=5")


@BATTERY.failure
def adams_nan_from_f_is_nonfinite():
    def f(t, y):
        return torch.where(t < 0.5, -y, torch.full_like(y, math.nan))

    for solver in (VCAB3(), VCABM3()):
        fails(odeint(f, _z(), _t(), solver=solver, throw=False).stats, Outcome.NONFINITE, "NaN")


@BATTERY.correct
def adams_neural_ode_backward_through_the_solve():
    for solver in (VCAB3(), VCABM3()):
        f = Linear(-0.7)
        zs, stats = NeuralODE(f, solver=solver, rtol=1e-9, atol=1e-12)(_z())
        assert stats.outcome.ok and stats.stiffness_estimates is None
        torch.testing.assert_close(zs[-1], _z() * math.exp(-0.7), rtol=1e-6, atol=0)
        (g,) = torch.autograd.grad(zs[-1].sum(), [f.a])
        # d/da of z0·e^{a} at a = −0.7, the discrete solve's gradient up to its tolerance
        torch.testing.assert_close(g, (_z() * math.exp(-0.7)).sum(), rtol=1e-5, atol=0)


test_battery = BATTERY.test()
