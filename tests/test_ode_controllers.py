"""Step-size controllers, the step-size path in the graph, and the reductions of R_E / R_S.

References are independent of the integrator under test: a NumPy Runge-Kutta loop written from
the controllers' formulas (step sequences), central finite differences of the *adaptive* solve
with the controller re-choosing its steps (gradients through the step-size path), a replayed
step grid (the "initial" path), and sums written by hand (reductions).
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from implicit.ode import (
    RK4, Adjoint, Backprop, Dopri5, IController, NeuralODE, PIController, Tsit5, odeint,
)
from implicit.ode._tableau import TSIT5

F64 = torch.float64


def rhs(W, b):
    def f(t, y):
        return torch.tanh(y @ W.T + b * torch.sin(t)) - 0.3 * y

    return f


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = 1.5 * torch.randn(3, 3, dtype=F64, generator=g)
    b = torch.randn(3, dtype=F64, generator=g)
    y0 = torch.randn(2, 3, dtype=F64, generator=g)
    return W, b, y0


# --- controllers against a reference loop -------------------------------------------------------


def _reference_steps(A, y0, t1, rtol, atol, controller, h0):
    """Tsit5 on y' = A y in NumPy, with the controller's rules written out from its formulas."""
    tab = TSIT5
    y, t, h = y0.copy(), 0.0, h0
    qold = 1e-4
    accepted, rejected = [], 0
    while t < t1:
        hh = min(h, t1 - t)
        ks = []
        for i in range(tab.stages):
            yi = y + hh * sum(a * k for a, k in zip(tab.a[i], ks)) if i else y
            ks.append(yi @ A.T)
        y_new = y + hh * sum(bb * k for bb, k in zip(tab.b, ks))
        err = hh * sum(e * k for e, k in zip(tab.b_error, ks))
        scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
        E = math.sqrt(np.mean((err / scale) ** 2))
        ok = E <= 1.0
        if isinstance(controller, IController):
            lower = 1.0 if E < 1.0 else controller.dfactor
            fac = controller.ifactor if E == 0 else min(controller.ifactor, max(controller.safety / E ** 0.2, lower))
            h = hh * fac
        else:
            c = controller
            q11 = E ** c.beta1
            if ok:
                q = max(1 / c.qmax, min(1 / c.qmin, q11 / qold ** c.beta2 / c.gamma))
                if c.qsteady_min <= q <= c.qsteady_max:
                    q = 1.0
                h = min(hh / q, t1)  # OrdinaryDiffEq's dtmax: the span
                qold = max(E, c.qoldinit)
            else:
                h = hh / min(1 / c.qmin, q11 / c.gamma)
        if ok:
            y, t = y_new, (t1 if hh == t1 - t else t + hh)
            accepted.append(hh)
        else:
            rejected += 1
    return accepted, rejected, y


@pytest.mark.parametrize("controller", [IController(), PIController(), PIController(qsteady_max=1.2, beta2=0.04)],
                         ids=["I", "PI", "PI-custom"])
def test_controller_step_sequence_equals_reference_loop(controller):
    rng = np.random.default_rng(0)
    M = rng.standard_normal((4, 4))
    A = -(M @ M.T) / 2 - 0.5 * np.eye(4)  # stable, stiff enough to force rejections with a large h0
    y0 = rng.standard_normal((1, 4))
    ys = {}
    for h0 in (0.9, 0.01):
        sol = odeint(lambda t, y: y @ torch.from_numpy(A).T, torch.from_numpy(y0), torch.tensor([0.0, 3.0], dtype=F64),
                     solver=Tsit5(), rtol=1e-4, atol=1e-6, dt0=h0, controller=controller)
        ref_acc, ref_rej, ref_y = _reference_steps(A, y0, 3.0, 1e-4, 1e-6, controller, h0)
        assert sol.stats.n_rejected == ref_rej
        assert sol.stats.step_sizes.tolist() == pytest.approx(ref_acc, rel=1e-7, abs=0)
        assert sol.ys[-1].numpy() == pytest.approx(ref_y, rel=1e-10)
        ys[h0] = sol
    assert ys[0.9].stats.n_rejected >= 1  # the rejection branch was exercised
    exact = y0 @ scipy.linalg.expm(3.0 * A).T
    assert ys[0.01].ys[-1].numpy() == pytest.approx(exact, rel=1e-3, abs=1e-5)


def test_default_controller_is_the_integral_one_bit_for_bit():
    W, b, y0 = _problem()
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    a = odeint(rhs(W, b), y0, t, solver=Dopri5(), rtol=1e-5, atol=1e-7)
    c = odeint(rhs(W, b), y0, t, solver=Dopri5(), rtol=1e-5, atol=1e-7, controller=IController())
    assert torch.equal(a.ys, c.ys) and torch.equal(a.stats.step_sizes, c.stats.step_sizes)
    p = odeint(rhs(W, b), y0, t, solver=Dopri5(), rtol=1e-5, atol=1e-7, controller=PIController())
    assert not torch.equal(a.stats.step_sizes, p.stats.step_sizes)


# --- reductions -----------------------------------------------------------------------------


def test_reductions_equal_hand_sums():
    W, b, y0 = _problem(1)
    st = odeint(rhs(W, b), y0, torch.tensor([0.0, 2.0], dtype=F64), solver=Tsit5(), rtol=1e-5, atol=1e-7).stats
    E, S, h = st.error_estimates.tolist(), st.stiffness_estimates.tolist(), st.step_sizes.tolist()
    assert len(E) == st.n_accepted >= 5
    terms_E = [e * x for e, x in zip(E, h)]
    terms_S = [s * x for s, x in zip(S, h)]
    assert float(st.regularizer("error", "sum")) == pytest.approx(math.fsum(terms_E), rel=1e-12)
    assert float(st.regularizer("error")) == float(st.reg_error)
    assert float(st.regularizer("error", "mean")) == pytest.approx(math.fsum(terms_E) / len(E), rel=1e-12)
    assert float(st.regularizer("stiffness", "max")) == pytest.approx(max(terms_S), rel=1e-12)
    assert float(st.regularizer("stiffness", "sum")) == float(st.reg_stiffness)
    with pytest.raises(ValueError, match="reduction must be one of"):
        st.regularizer("error", "median")
    with pytest.raises(ValueError, match="name must be one of"):
        st.regularizer("kinetic")


# --- gradients through the step-size path ------------------------------------------------------


def _fd5(fun, x, d, eps):
    """Five-point central difference of fun along d (truncation O(eps^4))."""
    v = [fun(x + k * eps * d) for k in (-2, -1, 1, 2)]
    return (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12 * eps)


@pytest.mark.parametrize("controller", [IController(), PIController()], ids=["I", "PI"])
def test_tracked_step_path_gradient_equals_adaptive_finite_differences(controller):
    W, b, y0 = _problem()
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)

    def solve(W_, step_path):
        # loose tolerances keep E_j well above its rounding noise, so differences resolve it
        sol = odeint(rhs(W_, b), y0, t, solver=Tsit5(), rtol=1e-3, atol=1e-4, controller=controller,
                     step_path=step_path)
        st = sol.stats
        outs = (sol.ys[-1].sum() + sol.ys[1].square().sum(), st.regularizer("error", "mean"),
                st.regularizer("stiffness", "sum"))
        return outs, (st.n_accepted, st.n_rejected)

    Wg = W.clone().requires_grad_()
    outs, seq = solve(Wg, "tracked")
    outs_detached, _ = solve(Wg, "detached")
    d = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    for i in range(3):
        (g,) = torch.autograd.grad(outs[i], Wg, retain_graph=True)
        (g_det,) = torch.autograd.grad(outs_detached[i], Wg, retain_graph=True)
        seqs = []

        def value(W_):
            with torch.no_grad():
                o, s = solve(W_, "detached")
            seqs.append(s)
            return float(o[i])

        fd = _fd5(value, W, d, 1e-3)
        assert all(s == seq for s in seqs)  # the perturbations kept the accept/reject sequence
        assert float((g * d).sum()) == pytest.approx(fd, rel=1e-5)
        if i > 0:  # the regularizers depend on the steps: the frozen-grid gradient is another number
            assert abs(float((g_det * d).sum()) - fd) > 1e-3 * abs(fd)


def test_initial_step_path_follows_only_the_initial_step():
    W, b, y0 = _problem(3)
    T = 1.5
    t = torch.tensor([0.0, T], dtype=F64)

    def solve(W_, step_path, dt0=None):
        return odeint(rhs(W_, b), y0, t, solver=Tsit5(), rtol=1e-5, atol=1e-6, controller=PIController(),
                      step_path=step_path, dt0=dt0)

    Wg = W.clone().requires_grad_()
    sol = solve(Wg, "initial")
    st = sol.stats
    assert st.n_rejected == 0 and float(st.initial_step) == st.step_sizes[0].item() and st.n_accepted >= 5
    loss = sol.ys[-1].square().sum() + st.regularizer("error", "sum")
    (g,) = torch.autograd.grad(loss, Wg)

    # Reference: the accepted grid with its first step recomputed from the perturbed parameters
    # (the initial-step rule), the middle steps held, the last step clipped to T; replayed as fixed steps.
    middle = st.step_sizes[1:-1].tolist()

    def value(W_):
        with torch.no_grad():
            h0 = float(odeint(rhs(W_, b), y0, t, solver=Tsit5(), rtol=1e-5, atol=1e-6, controller=PIController(),
                              max_steps=1, throw=False).stats.initial_step)
            grid = [0.0, h0]
            for h in middle:
                grid.append(grid[-1] + h)
            grid.append(T)
            rep = odeint(rhs(W_, b), y0, torch.tensor(grid, dtype=F64), solver=Tsit5(), dt=10.0, rtol=1e-5,
                         atol=1e-6)
            return float(rep.ys[-1].square().sum() + rep.stats.reg_error)

    d = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    fd = _fd5(value, W, d, 1e-4)
    assert float((g * d).sum()) == pytest.approx(fd, rel=1e-5)

    # with the initial step given, nothing of the step path depends on the parameters
    a = solve(Wg, "initial", dt0=0.05)
    c = solve(Wg, "detached", dt0=0.05)
    ga = torch.autograd.grad(a.ys[-1].sum() + a.stats.reg_error, Wg)[0]
    gc = torch.autograd.grad(c.ys[-1].sum() + c.stats.reg_error, Wg)[0]
    assert torch.allclose(ga, gc, rtol=1e-9, atol=1e-12)  # equal up to the rounding of y0 + h·Σa·k vs Σ(h·a)·k


def test_tracked_step_path_through_the_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, z):
            return self.net(z) * torch.cos(t)

    layer = NeuralODE(F(), solver=Tsit5(), rtol=1e-4, atol=1e-6, controller=PIController(),
                      gradient=Backprop(step_path="tracked"))
    z0 = torch.randn(3, 2, dtype=F64)
    zs, st = layer(z0)
    assert st.step_sizes_in_graph.requires_grad and st.initial_step.requires_grad
    (zs[-1].sum() + st.regularizer("error", "mean")).backward()
    assert all(p.grad is not None for p in net.parameters())

    g_tracked = [p.grad.clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = None
    detached = NeuralODE(F(), solver=Tsit5(), rtol=1e-4, atol=1e-6, controller=PIController())
    zs_d, st_d = detached(z0)
    # the same forward (up to rounding: h·Σa·k vs Σ(h·a)·k), another gradient
    assert torch.allclose(zs_d, zs, rtol=1e-10, atol=1e-12) and st_d.step_sizes_in_graph is None
    (zs_d[-1].sum() + st_d.regularizer("error", "mean")).backward()
    assert not all(torch.allclose(a, p.grad) for a, p in zip(g_tracked, net.parameters()))


# --- bad options ---------------------------------------------------------------------------


def test_bad_controller_and_step_path_options_get_clear_errors():
    W, b, y0 = _problem()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="step_path must be one of"):
        odeint(rhs(W, b), y0, t, step_path="through")
    with pytest.raises(ValueError, match="step_path must be one of"):
        Backprop(step_path=True)
    with pytest.raises(ValueError, match="fixed steps"):
        odeint(rhs(W, b), y0, t, solver=RK4(dt=0.1), step_path="tracked")
    with pytest.raises(TypeError, match="controller must be"):
        odeint(rhs(W, b), y0, t, controller="pi")
    with pytest.raises(ValueError, match="controller knobs given twice"):
        odeint(rhs(W, b), y0, t, solver=Tsit5(safety=0.8), controller=PIController())
    with pytest.raises(ValueError, match="qmin must be in"):
        PIController(qmin=2.0)
    with pytest.raises(ValueError, match="qsteady_max must be"):
        PIController(qsteady_min=1.2, qsteady_max=1.0)
    with pytest.raises(ValueError, match="safety must be in"):
        IController(safety=0.0)
    with pytest.raises(ValueError, match="Adjoint"):
        NeuralODE(torch.nn.Linear(3, 3), solver=Dopri5(), gradient=Adjoint(), controller=PIController())


@pytest.mark.parametrize("kwargs, message", [
    (dict(rtol=-1.0), "rtol must be a finite number"), (dict(atol=math.nan), "atol must be a finite number"),
    (dict(rtol=0.0, atol=0.0), "must not both be 0"), (dict(dt0=-0.1), "dt0 must be a finite number"),
    (dict(max_steps=0), "max_steps must be a positive int"),
    (dict(t=torch.tensor([0.0, 1.0], requires_grad=True)), "t must not require grad"),
])
@pytest.mark.parametrize("gradient", [Backprop(), Adjoint()], ids=["backprop", "adjoint"])
def test_layer_options_are_checked_on_every_gradient_path(kwargs, message, gradient):
    with pytest.raises(ValueError, match=message):
        NeuralODE(torch.nn.Linear(3, 3), solver=Dopri5(), gradient=gradient, **kwargs)
