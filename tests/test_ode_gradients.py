"""Gradients through the solver and through the recorded heuristics R_E and R_S.

The step-size path is detached by design, so the gradient we compute is the exact derivative of the
discrete solve *with its step sequence held fixed*. That is what these tests prove: (1) float64
gradcheck (finite differences) on fixed-step paths, where perturbing inputs cannot move a step;
(2) an adaptive solve's gradients equal those of replaying its accepted steps as a fixed path;
(3) at tight tolerances the gradient also matches the continuous one (torchdiffeq's adjoint).
"""


import pytest
import torch
from torch import nn

from implicit.ode import RK4, Adjoint, Bosh3, Dopri5, NeuralODE, Tsit5, odeint

F64 = torch.float64


def rhs(W, b):
    def f(t, y):
        return torch.tanh(y @ W.T + b * torch.sin(t)) - 0.3 * y

    return f


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(3, 2, dtype=F64, generator=g).requires_grad_()
    W = (1.5 * torch.randn(2, 2, dtype=F64, generator=g)).requires_grad_()
    b = torch.randn(2, dtype=F64, generator=g).requires_grad_()
    return y0, W, b


@pytest.mark.parametrize("solver, dt", [(Tsit5(), 0.25), (Dopri5(), 0.25), (Bosh3(), 0.2), (RK4(), 0.25)],
                         ids=["tsit5", "dopri5", "bosh3", "rk4"])
def test_gradcheck_fixed_path_through_solution_RE_and_RS(solver, dt):
    t = torch.tensor([0.0, 0.6, 1.5], dtype=F64)

    def run(y0, W, b):
        st = odeint(rhs(W, b), y0, t, solver=solver, dt=dt, rtol=1e-3, atol=1e-4)
        outs = [st.ys[1:]]
        if st.stats.reg_error is not None:
            outs.append(st.stats.reg_error)
        outs.append(st.stats.reg_stiffness)
        return tuple(outs)

    sol = odeint(rhs(*_inputs()[1:]), _inputs()[0], t, solver=solver, dt=dt)
    assert sol.stats.reg_stiffness is not None and sol.stats.n_accepted >= 6
    assert torch.autograd.gradcheck(run, _inputs(), eps=1e-6, atol=1e-7, rtol=1e-5)


def _replay(sol, t0):
    """The accepted step grid of an adaptive solve, as output times for a fixed-step replay."""
    times = [t0]
    for h in sol.stats.step_sizes.tolist():
        times.append(times[-1] + h)
    return torch.tensor(times, dtype=F64)


@pytest.mark.parametrize("solver", [Tsit5(), Dopri5(), Bosh3()], ids=["tsit5", "dopri5", "bosh3"])
def test_adaptive_gradient_is_the_fixed_step_sequence_gradient(solver):
    y0, W, b = _inputs(1)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    sol = odeint(rhs(W, b), y0, t, solver=solver, rtol=1e-3, atol=1e-5)
    assert sol.stats.n_accepted >= 5
    loss = sol.ys[-1].pow(2).sum() + sol.stats.reg_error + 0.1 * sol.stats.reg_stiffness
    g_adaptive = torch.autograd.grad(loss, (y0, W, b))

    grid = _replay(sol, 0.0)
    rep = odeint(rhs(W, b), y0, grid, solver=solver, dt=10.0, rtol=1e-3, atol=1e-5)  # dt > every step: clipped to grid
    assert rep.stats.n_accepted == sol.stats.n_accepted
    assert torch.allclose(rep.stats.error_estimates, sol.stats.error_estimates, rtol=1e-9, atol=1e-12)
    assert torch.allclose(rep.stats.stiffness_estimates, sol.stats.stiffness_estimates, rtol=1e-9)
    loss_r = rep.ys[-1].pow(2).sum() + rep.stats.reg_error + 0.1 * rep.stats.reg_stiffness
    g_replay = torch.autograd.grad(loss_r, (y0, W, b))
    for a, r in zip(g_adaptive, g_replay):
        assert torch.allclose(a, r, rtol=1e-8, atol=1e-10)

    # ... and the replay path's gradient is the finite-difference one (the step grid is fixed data).
    def run(y0_, W_, b_):
        s = odeint(rhs(W_, b_), y0_, grid, solver=solver, dt=10.0, rtol=1e-3, atol=1e-5)
        return s.ys[-1], s.stats.reg_error, s.stats.reg_stiffness

    assert torch.autograd.gradcheck(run, (y0, W, b), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_reg_error_gradient_matches_central_differences():
    y0, W, b = _inputs(2)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def RE(W_):
        # tight tolerances make E_j O(1) so its rounding noise does not swamp the differences
        return odeint(rhs(W_, b), y0, t, solver=Tsit5(), dt=0.25, rtol=1e-6, atol=1e-8).stats.reg_error

    direction = torch.randn(2, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    (g,) = torch.autograd.grad(RE(W), W)
    eps = 1e-4
    with torch.no_grad():
        fd = (RE(W + eps * direction) - RE(W - eps * direction)) / (2 * eps)
    assert RE(W).item() > 0
    assert (g * direction).sum().item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-10)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, z):
        return torch.tanh(self.lin(z)) * torch.cos(t)


def test_backprop_matches_adjoint_at_tight_tolerance_and_counts_backward_nfe():
    z0 = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    grads, stats = [], []
    for gradient in (None, Adjoint(rtol=1e-10, atol=1e-10)):
        net = Net()
        kw = dict(solver=Dopri5(), rtol=1e-10, atol=1e-10, t=(0.0, 0.5, 1.5))
        layer = NeuralODE(net, **kw) if gradient is None else NeuralODE(net, gradient=gradient, **kw)
        zs, st = layer(z0)
        assert st.nfe_backward == 0
        zs[1:].pow(2).sum().backward()
        assert st.nfe_backward > 0
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        stats.append(st)
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    backprop, adjoint = stats
    # Backprop: one VJP per forward evaluation the loss depends on: all but the initial-step probe
    # (taken without grad), the last step's FSAL stage (it only feeds E_j/S_j) and rejected steps.
    assert backprop.n_rejected == 0
    assert backprop.nfe_backward == backprop.nfe_forward - 2
    assert adjoint.error_estimates is None and adjoint.reg_error is None and adjoint.reg_stiffness is None
    assert adjoint.n_accepted == len(adjoint.step_sizes) > 0


@pytest.mark.parametrize("solver", [Tsit5(), Dopri5(), RK4(dt=0.05), Bosh3()], ids=["tsit5", "dopri5", "rk4", "bosh3"])
def test_stiffness_estimate_is_the_eigenvalue_for_linear_problems(solver):
    # For y' = λ y, k_p − k_q = λ (Y_p − Y_q) exactly: S_j = |λ| on every step.
    lam = -7.5
    y0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    sol = odeint(lambda t, y: lam * y, y0, torch.tensor([0.0, 1.0], dtype=F64), solver=solver, rtol=1e-6, atol=1e-9)
    S = sol.stats.stiffness_estimates
    assert len(S) == sol.stats.n_accepted > 2
    assert torch.allclose(S, torch.full_like(S, abs(lam)), rtol=1e-6)
    assert sol.stats.reg_stiffness.item() == pytest.approx(abs(lam) * 1.0, rel=1e-6)
    # A diagonal system: the batch-wide quotient lies between the smallest and largest |λ|.
    lams = torch.tensor([[-1.0, -20.0]], dtype=F64)
    S2 = odeint(lambda t, y: lams * y, y0, torch.tensor([0.0, 0.3], dtype=F64), solver=solver).stats.stiffness_estimates
    assert (S2 >= 1.0 - 1e-9).all() and (S2 <= 20.0 + 1e-9).all()


def test_stiffness_guard_keeps_zero_dynamics_finite():
    y0 = torch.ones(2, 2, dtype=F64, requires_grad=True)
    sol = odeint(lambda t, y: 0.0 * y, y0, torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.equal(sol.stats.stiffness_estimates, torch.zeros_like(sol.stats.stiffness_estimates))
    (g,) = torch.autograd.grad(sol.stats.reg_stiffness + sol.stats.reg_error, y0)
    assert torch.isfinite(g).all()


def test_record_false_skips_heuristics_but_not_the_solution():
    y0, W, b = _inputs(4)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    a = odeint(rhs(W, b), y0, t, record=False)
    r = odeint(rhs(W, b), y0, t)
    assert a.stats.error_estimates is None and a.stats.reg_error is None and a.stats.reg_stiffness is None
    assert torch.equal(a.ys, r.ys) and a.stats.nfe_forward == r.stats.nfe_forward
    assert torch.equal(a.stats.step_sizes, r.stats.step_sizes)
