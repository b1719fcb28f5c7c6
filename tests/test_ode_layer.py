"""NeuralODE: regularizer integrals against quadrature of exact solutions, STEER, the stop hook."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
from torch import nn

from implicit.ode import (
    Dopri5,
    KineticRegularizer,
    NeuralODE,
    Steer,
    TaylorRegularizer,
    Tsit5,
    odeint,
)

F64 = torch.float64
A = np.array([[-0.5, 1.0], [-1.0, -0.2]])


class Linear(nn.Module):
    """f(t, z) = z Aᵀ: z(t) = expm(A t) z0, and every time derivative is a power of A."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor(A, dtype=F64))

    def forward(self, t, z):
        return z @ self.A.T


class CosScaled(nn.Module):
    """f(t, z) = cos(t)·z: z = z0·exp(sin t), z'' = (cos²t − sin t)·z (exercises ∂f/∂t)."""

    def forward(self, t, z):
        return torch.cos(t) * z


Z0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=F64)
TIGHT = dict(rtol=1e-9, atol=1e-11)


def _quad(integrand, t1):
    return scipy.integrate.quad(integrand, 0.0, t1, epsabs=1e-13, epsrel=1e-12)[0]


def _z(t):
    return Z0.numpy() @ scipy.linalg.expm(A * t).T


@pytest.mark.parametrize("order", [2, 3])
def test_taylor_regularizer_matches_quadrature(order):
    layer = NeuralODE(Linear(), t=(0.0, 1.5), regularizer=TaylorRegularizer(order=order), **TIGHT)
    zs, stats = layer(Z0)
    Ak = np.linalg.matrix_power(A, order)
    expected = _quad(lambda s: np.mean(np.sum((_z(s) @ Ak.T) ** 2, 1)), 1.5)
    assert stats.reg_taylor.item() == pytest.approx(expected, rel=1e-7)
    assert stats.reg_kinetic is None and stats.reg_jacobian is None
    assert np.allclose(zs[-1].detach().numpy(), _z(1.5), atol=1e-8)
    # gradient reaches the parameters through the nested forward-mode derivatives
    (g,) = torch.autograd.grad(stats.reg_taylor, layer.f.A)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_taylor_includes_the_time_derivative():
    zs, stats = NeuralODE(CosScaled(), t=(0.0, 2.0), regularizer=TaylorRegularizer(order=2), **TIGHT)(Z0)
    z0sq = (Z0**2).sum(1).mean().item()
    expected = _quad(lambda s: z0sq * math.exp(2 * math.sin(s)) * (math.cos(s) ** 2 - math.sin(s)) ** 2, 2.0)
    assert stats.reg_taylor.item() == pytest.approx(expected, rel=1e-7)


def test_kinetic_regularizer_matches_quadrature_and_hutchinson():
    torch.manual_seed(11)
    noise = torch.randn_like(Z0)  # the layer draws its ε the same way, first thing in forward
    torch.manual_seed(11)
    zs, stats = NeuralODE(Linear(), t=(0.0, 1.0), regularizer=KineticRegularizer(), **TIGHT)(Z0)
    kinetic = _quad(lambda s: np.mean(np.sum((_z(s) @ A.T) ** 2, 1)), 1.0)
    # ε fixed over the solve and J = A constant: ∫‖J ε‖² dt = ‖A ε‖² per sample
    jac = np.mean(np.sum((noise.numpy() @ A.T) ** 2, 1))
    assert stats.reg_kinetic.item() == pytest.approx(kinetic, rel=1e-7)
    assert stats.reg_jacobian.item() == pytest.approx(jac, rel=1e-7)
    assert stats.reg_taylor is None


def test_regularizers_integrate_forward_when_time_runs_backward():
    _, fwd = NeuralODE(Linear(), t=(0.0, 1.0), regularizer=TaylorRegularizer(order=2), **TIGHT)(Z0)
    zs_b, bwd = NeuralODE(Linear(), t=(1.0, 0.0), regularizer=TaylorRegularizer(order=2), **TIGHT)(
        torch.tensor(_z(1.0), dtype=F64)
    )
    assert bwd.reg_taylor.item() == pytest.approx(fwd.reg_taylor.item(), rel=1e-6)
    assert torch.allclose(zs_b[-1], Z0, atol=1e-7)


def test_steer_samples_the_end_time_in_training_only():
    layer = NeuralODE(Linear(), t=(0.0, 1.0), steer=Steer(b=0.4), **TIGHT)
    ends = []
    for seed in range(12):
        torch.manual_seed(seed)
        zs, stats = layer(Z0)
        u = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
        assert stats.t_final == pytest.approx(1.0 + (2 * u - 1) * 0.4, abs=1e-6)  # U(t1 − b, t1 + b)
        assert np.allclose(zs[-1].detach().numpy(), _z(stats.t_final), atol=1e-8)
        ends.append(stats.t_final)
    assert min(ends) >= 0.6 and max(ends) <= 1.4 and max(ends) - min(ends) > 0.3
    layer.eval()
    zs, stats = layer(Z0)
    assert stats.t_final == 1.0 and np.allclose(zs[-1].detach().numpy(), _z(1.0), atol=1e-8)


def test_layer_output_shape_and_stats_record():
    layer = NeuralODE(Linear(), t=torch.tensor([0.0, 0.5, 1.0]), solver=Dopri5())
    zs, stats = layer(Z0)
    assert zs.shape == (3, *Z0.shape)
    assert stats.nfe_forward == 2 + 6 * (stats.n_accepted + stats.n_rejected)  # f0, initial-step probe, FSAL
    assert stats.reg_error.ndim == 0 and stats.reg_error.requires_grad
    assert stats.reg_stiffness.requires_grad and stats.step_sizes.requires_grad is False
    assert stats.error_estimates.shape == (stats.n_accepted,) and stats.outcome.ok


# --- the stop hook: integrate to steady state ---------------------------------------------
@pytest.mark.parametrize("solver", [Tsit5(), Dopri5()])
def test_stop_hook_ends_at_steady_state(solver):
    # dz/dt = b − z from z = 0: |b − z(t)| = |b|·exp(−t) falls below tol at t* = log(max|b| / tol).
    b = torch.tensor([[2.0, -1.0, 0.5]], dtype=F64)
    tol = 1e-4
    seen = []

    def stop(t, z, fz):
        seen.append(float(t))
        assert torch.equal(fz, b - z)  # fy is f(t, y) at the accepted state
        return fz.abs().max() < tol

    sol = odeint(lambda t, z: b - z, torch.zeros_like(b), torch.tensor([0.0, 100.0], dtype=F64),
                 solver=solver, rtol=1e-8, atol=1e-10, stop=stop)
    t_star = math.log(2.0 / tol)
    assert sol.stats.outcome.ok and sol.stats.t_final == seen[-1]
    assert len(seen) == sol.stats.n_accepted
    assert seen[-2] < t_star <= sol.stats.t_final  # fired on the first accepted step past t*
    assert sol.ys.shape == (2, 1, 3) and sol.ts[-1].item() == sol.stats.t_final
    assert (b - sol.ys[-1]).abs().max() < tol
    assert torch.allclose(sol.ys[-1], b * (1 - math.exp(-sol.stats.t_final)), rtol=1e-6)


def test_known_f0_replaces_the_first_evaluation():
    # same steps, same solution, one evaluation fewer; the caller's f0 is the one the solver uses
    b = torch.tensor([[2.0, -1.0, 0.5]], dtype=F64)
    calls = []

    def f(t, z):
        calls.append(z)
        return b - z

    t = torch.tensor([0.0, 3.0], dtype=F64)
    y0 = torch.zeros_like(b)
    plain = odeint(f, y0, t, rtol=1e-6, atol=1e-9)
    n_plain = len(calls)
    calls.clear()
    known = odeint(f, y0, t, rtol=1e-6, atol=1e-9, f0=b - y0)
    assert len(calls) == n_plain - 1 and known.stats.nfe_forward == plain.stats.nfe_forward - 1
    assert not any(z is y0 for z in calls)  # the start was never evaluated again
    assert torch.equal(known.ys, plain.ys) and torch.equal(known.stats.step_sizes, plain.stats.step_sizes)


def test_stop_hook_that_never_fires_reaches_the_end():
    sol = odeint(lambda t, z: -z, Z0, torch.tensor([0.0, 1.0], dtype=F64), stop=lambda t, z, fz: False)
    assert sol.stats.t_final == 1.0 and sol.ts.tolist() == [0.0, 1.0]
