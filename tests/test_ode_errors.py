"""Bad input and failed solves: clear errors naming what came and what was expected, or outcomes."""

import math

import pytest
import torch
from torch import nn

from implicit import Outcome, SolverError
from implicit.ode import (
    RK4,
    Adjoint,
    Bosh3,
    Dopri5,
    Euler,
    KineticRegularizer,
    NeuralODE,
    Steer,
    TaylorRegularizer,
    Tsit5,
    odeint,
)

F64 = torch.float64
Y0 = torch.ones(2, 3, dtype=F64)
T = torch.tensor([0.0, 1.0], dtype=F64)


def decay(t, y):
    return -y


@pytest.mark.parametrize(
    "y0, t, exc, match",
    [
        (torch.ones(2, 3, dtype=torch.int64), T, TypeError, "y0 must be a floating-point tensor, got dtype torch.int64"),
        (torch.ones(3, dtype=F64), T, ValueError, r"y0 must have shape \(batch, ...\).*got shape \(3,\)"),
        ([[1.0]], T, TypeError, "y0 must be a torch.Tensor"),
        (torch.tensor([[1.0, math.nan]], dtype=F64), T, ValueError, "y0 contains NaN or Inf"),
        (torch.tensor([[1.0, math.inf]], dtype=F64), T, ValueError, "y0 contains NaN or Inf"),
        (Y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64), ValueError, "strictly increasing or strictly decreasing"),
        (Y0, torch.tensor([0.0, 1.0, 1.0], dtype=F64), ValueError, "strictly increasing or strictly decreasing"),
        (Y0, torch.tensor([0.0], dtype=F64), ValueError, "t must be 1-D with at least 2 times"),
        (Y0, torch.zeros(2, 2, dtype=F64), ValueError, "t must be 1-D"),
        (Y0, torch.tensor([0.0, 1.0]), TypeError, "t has dtype torch.float32 but y0 has dtype torch.float64"),
        (Y0, [0.0, 1.0], TypeError, "t must be a 1-D torch.Tensor"),
        (Y0, torch.tensor([0.0, math.nan], dtype=F64), ValueError, "t must be finite"),
        (Y0, torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True), ValueError, "t must not require grad"),
    ],
)
def test_bad_y0_and_t(y0, t, exc, match):
    with pytest.raises(exc, match=match):
        odeint(decay, y0, t)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(rtol=-1e-3), ValueError, "rtol must be a finite number >= 0, got -0.001"),
        (dict(rtol="1e-3"), TypeError, "rtol must be a real number, got str"),
        (dict(rtol=0.0, atol=0.0), ValueError, "rtol and atol must not both be 0"),
        (dict(dt0=0.0), ValueError, "dt0 must be a finite number > 0"),
        (dict(max_steps=0), ValueError, "max_steps must be a positive int, got 0"),
        (dict(max_steps=10.5), ValueError, "max_steps must be a positive int"),
        (dict(solver="dopri5"), TypeError, "solver must be a solver object"),
        (dict(solver=Euler()), ValueError, r"fixed-step solver: give it dt, e.g. Euler\(dt=0.01\)"),
        (dict(solver=RK4(dt=0.1), dt=0.2), ValueError, "dt given twice"),
        (dict(dt=0.1, dt0=0.1), ValueError, "dt0 .* and dt .* exclude each other"),
        (dict(stop=True), TypeError, "stop must be callable"),
        (dict(method="dopri5"), TypeError, "unexpected keyword argument 'method'"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        odeint(decay, Y0, T, **kwargs)


def test_stop_needs_two_times():
    with pytest.raises(ValueError, match=r"stop is allowed only with len\(t\) == 2.*got len\(t\) = 3"):
        odeint(decay, Y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), stop=lambda t, y, fy: False)


def test_f0_must_match_y0():
    with pytest.raises(ValueError, match=r"f0 must be f\(t\[0\], y0\).*\(2, 3\) torch.float64.*got Tensor \(3,\)"):
        odeint(decay, Y0, T, f0=torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match=r"f0 must be.*got float"):
        odeint(decay, Y0, T, f0=1.0)


def test_f_not_callable_or_wrong_output():
    with pytest.raises(TypeError, match="f must be callable"):
        odeint(3, Y0, T)
    with pytest.raises(ValueError, match=r"f\(t, y\) must return a tensor of y's shape, dtype and device: expected \(2, 3\).*got Tensor \(2,\)"):
        odeint(lambda t, y: y.sum(1), Y0, T)
    with pytest.raises(ValueError, match="got float"):
        odeint(lambda t, y: 1.0, Y0, T)


@pytest.mark.parametrize("solver", [Tsit5(), Dopri5(), Bosh3()])
def test_nonfinite_from_f_is_an_outcome(solver):
    def breaks_at_half(t, y):
        return -y if t < 0.5 else y * math.nan

    with pytest.raises(SolverError, match=r"f produced NaN/Inf in .*from t=0\.[45].*nonfinite") as info:
        odeint(breaks_at_half, Y0, T, solver=solver)
    assert info.value.outcome is Outcome.NONFINITE
    sol = odeint(breaks_at_half, Y0, torch.tensor([0.0, 0.25, 1.0], dtype=F64), solver=solver, throw=False)
    assert sol.stats.outcome is Outcome.NONFINITE
    assert 0.4 < sol.stats.t_final < 0.5
    assert torch.isfinite(sol.ys[1]).all() and torch.isnan(sol.ys[2]).all()


def test_nonfinite_at_start_and_in_fixed_steps():
    with pytest.raises(SolverError, match="NaN/Inf at the initial time t=0"):
        odeint(lambda t, y: y * math.inf, Y0, T)
    with pytest.raises(SolverError, match="state at output time t=1 .* is not finite"):
        odeint(lambda t, y: y / (0.5 - t), Y0, T, solver=RK4(dt=0.25))


def test_max_steps_reached_with_advice():
    with pytest.raises(SolverError, match="reached max_steps=5 at t=.* before t=1.*raise max_steps") as info:
        odeint(decay, Y0, T, rtol=1e-12, atol=1e-12, max_steps=5)
    assert info.value.outcome is Outcome.MAX_STEPS_REACHED
    assert info.value.stats.n_accepted + info.value.stats.n_rejected == 5
    sol = odeint(decay, Y0, T, rtol=1e-12, atol=1e-12, max_steps=5, throw=False)
    assert sol.stats.outcome is Outcome.MAX_STEPS_REACHED and not sol.stats.outcome.ok
    assert torch.isnan(sol.ys[-1]).all() and sol.stats.t_final < 1.0


def test_dt_underflow_near_a_singularity():
    # y' = y², y(0) = 1 blows up at t = 1: the controller shrinks h until it cannot move t.
    y0 = torch.ones(1, 1, dtype=F64)
    with pytest.raises(SolverError, match="step size h=.* underflowed at t=1.0000.*loosen rtol") as info:
        odeint(lambda t, y: y * y, y0, torch.tensor([0.0, 2.0], dtype=F64), max_steps=100_000)
    assert info.value.outcome is Outcome.DT_UNDERFLOW
    assert info.value.stats.nfe_forward < 5000  # ended by underflow detection, not by max_steps


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, z):
        return torch.tanh(self.lin(z))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(gradient=Adjoint()), ValueError, "torchdiffeq's odeint_adjoint, which has no Tsit5"),
        (dict(solver=Dopri5(), gradient=Adjoint(), regularizer=KineticRegularizer()), ValueError,
         r"needs gradient=Backprop\(\)"),
        (dict(gradient="adjoint"), TypeError, r"gradient must be Backprop\(\) or Adjoint"),
        (dict(regularizer="taylor"), TypeError, "regularizer must be"),
        (dict(steer=0.5), TypeError, r"steer must be Steer\(b=...\)"),
        (dict(steer=Steer(b=1.5)), ValueError, r"Steer\(b=1.5\) needs b < \|t\[-1\] - t\[-2\]\| = 1"),
        (dict(t=(0.0, 0.0)), ValueError, "strictly increasing or strictly decreasing"),
        (dict(solver=Dopri5, t=(0.0, 1.0)), TypeError, "solver must be a solver object"),
        (dict(foo=1), TypeError, "unexpected keyword argument 'foo'"),
    ],
)
def test_layer_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NeuralODE(Lin(), **kwargs)


def test_layer_bad_f_and_strategies():
    with pytest.raises(TypeError, match="f must be an nn.Module"):
        NeuralODE(lambda t, z: z)
    with pytest.raises(ValueError, match="order must be an int in 2..4"):
        TaylorRegularizer(order=1)
    with pytest.raises(ValueError, match="b must be a finite number > 0"):
        Steer(b=-0.1)
    with pytest.raises(ValueError, match="safety must be in"):
        Tsit5(safety=2.0)
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        RK4(dt=-0.1)
    with pytest.raises(TypeError):
        Tsit5(0.9)  # keyword-only
    with pytest.raises(ValueError, match="rtol must be a finite number > 0"):
        Adjoint(rtol=-1.0)


def test_layer_bad_input_and_failures():
    layer = NeuralODE(Lin())
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor"):
        layer([1.0, 2.0])
    with pytest.raises(ValueError, match="y0 must have shape"):
        layer(torch.ones(3, dtype=F64))
    adj = NeuralODE(Lin(), solver=Dopri5(), gradient=Adjoint(), rtol=1e-12, atol=1e-12, max_steps=3)
    with pytest.raises(SolverError, match="max_num_steps") as info:
        adj(torch.ones(2, 3, dtype=F64))
    assert info.value.outcome is Outcome.MAX_STEPS_REACHED
    quiet = NeuralODE(Lin(), rtol=1e-12, atol=1e-12, max_steps=3, throw=False)
    zs, stats = quiet(torch.ones(2, 3, dtype=F64))
    assert stats.outcome is Outcome.MAX_STEPS_REACHED and torch.isnan(zs[-1]).all()
