"""Tolerances held by a step-size controller: the same solve as by argument, and clear refusals."""

from __future__ import annotations

import math

import pytest
import torch

from implicit.ode import VCABM3, Adjoint, Backprop, Dopri5, IController, NeuralODE, PIController, Tsit5, odeint
from implicit.ode import KineticRegularizer

F64 = torch.float64


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(1.5 * torch.randn(3, 3, dtype=F64, generator=g))
    b = torch.randn(3, dtype=F64, generator=g)
    y0 = torch.randn(2, 3, dtype=F64, generator=g)

    def f(t, y):
        return torch.tanh(y @ W.T + b * torch.sin(t)) - 0.3 * y

    return f, W, y0


def _solve_and_grad(solve, W):
    sol = solve()
    loss = sol.ys[-1].square().sum() + sol.stats.reg_error + sol.stats.reg_stiffness
    (gW,) = torch.autograd.grad(loss, W)
    return sol, gW


def _same(a, b):
    assert torch.equal(a.ys, b.ys)
    assert torch.equal(a.stats.step_sizes, b.stats.step_sizes)
    assert torch.equal(a.stats.error_estimates, b.stats.error_estimates)
    assert (a.stats.nfe_forward, a.stats.n_accepted, a.stats.n_rejected) == \
        (b.stats.nfe_forward, b.stats.n_accepted, b.stats.n_rejected)


@pytest.mark.parametrize("kind, solver, step_path", [
    (IController, Tsit5(), "detached"), (PIController, Tsit5(), "detached"), (PIController, VCABM3(), "detached"),
    (IController, Tsit5(), "tracked"), (PIController, Tsit5(), "tracked"),  # Adams solvers run detached only
], ids=["I", "PI", "PI-adams", "I-tracked", "PI-tracked"])
def test_odeint_controller_tolerances_equal_arguments_bit_for_bit(kind, solver, step_path):
    f, W, y0 = _problem()
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    common = dict(solver=solver, step_path=step_path)
    if isinstance(solver, VCABM3):
        # no stiffness pair: compare the solution and E only
        a = odeint(f, y0, t, controller=kind(rtol=1e-6, atol=1e-8), **common)
        b = odeint(f, y0, t, rtol=1e-6, atol=1e-8, controller=kind(), **common)
        _same(a, b)
        return
    a, ga = _solve_and_grad(lambda: odeint(f, y0, t, controller=kind(rtol=1e-6, atol=1e-8), **common), W)
    b, gb = _solve_and_grad(lambda: odeint(f, y0, t, rtol=1e-6, atol=1e-8, controller=kind(), **common), W)
    _same(a, b)
    assert torch.equal(ga, gb)
    # repeating the controller's value is allowed, and is still the same solve
    c = odeint(f, y0, t, rtol=1e-6, controller=kind(rtol=1e-6, atol=1e-8), **common)
    _same(a, c)
    # the tolerances do change the solve: the comparison above is not vacuous
    assert odeint(f, y0, t, controller=kind(), **common).stats.n_accepted < a.stats.n_accepted


def test_one_tolerance_on_the_controller_the_other_by_argument_or_default():
    f, W, y0 = _problem(1)
    t = torch.tensor([0.0, 1.5], dtype=F64)
    _same(odeint(f, y0, t, atol=1e-9, controller=PIController(rtol=1e-5)),
          odeint(f, y0, t, rtol=1e-5, atol=1e-9, controller=PIController()))
    _same(odeint(f, y0, t, controller=IController(rtol=1e-5)),
          odeint(f, y0, t, rtol=1e-5, atol=1e-6, controller=IController()))
    # None is "not given": the old defaults, 1e-3 and 1e-6
    _same(odeint(f, y0, t, rtol=None, atol=None), odeint(f, y0, t, rtol=1e-3, atol=1e-6))
    _same(odeint(f, y0, t), odeint(f, y0, t, controller=IController(rtol=1e-3, atol=1e-6)))


@pytest.mark.parametrize("regularizer", [None, KineticRegularizer()], ids=["plain", "kinetic"])
def test_layer_controller_tolerances_equal_arguments_bit_for_bit(regularizer):
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    z0 = torch.randn(4, 3, dtype=F64)
    kw = dict(t=(0.0, 1.0), solver=Tsit5(), regularizer=regularizer, gradient=Backprop())
    held = NeuralODE(_Wrap(f), controller=PIController(rtol=1e-7, atol=1e-9), **kw)
    given = NeuralODE(_Wrap(f), rtol=1e-7, atol=1e-9, controller=PIController(), **kw)
    assert (held.rtol, held.atol) == (given.rtol, given.atol) == (1e-7, 1e-9)
    results = []
    for layer in (held, given):
        torch.manual_seed(1)  # the kinetic regularizer's Hutchinson noise
        zs, stats = layer(z0)
        loss = zs[-1].square().sum() + stats.reg_error
        if regularizer is not None:
            loss = loss + stats.reg_kinetic
        grads = torch.autograd.grad(loss, list(f.parameters()))
        results.append((zs, stats, grads))
    (za, sa, ga), (zb, sb, gb) = results
    assert torch.equal(za, zb) and torch.equal(sa.step_sizes, sb.step_sizes)
    assert (sa.nfe_forward, sa.n_accepted, sa.n_rejected) == (sb.nfe_forward, sb.n_accepted, sb.n_rejected)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    # the layer's own defaults are unchanged
    plain = NeuralODE(_Wrap(f))
    assert (plain.rtol, plain.atol) == (1e-3, 1e-6)


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, z):
        return self.net(z)


def test_conflicting_tolerances_name_both():
    f, W, y0 = _problem()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"controller\.rtol=1e-06 conflicts with rtol=0\.001"):
        odeint(f, y0, t, rtol=1e-3, controller=PIController(rtol=1e-6))
    with pytest.raises(ValueError, match=r"controller\.atol=1e-08 conflicts with atol=1e-06"):
        odeint(f, y0, t, atol=1e-6, controller=IController(atol=1e-8))
    with pytest.raises(ValueError, match=r"controller\.rtol=1e-06 conflicts with rtol=0\.001"):
        NeuralODE(_Wrap(torch.nn.Linear(3, 3)), rtol=1e-3, controller=PIController(rtol=1e-6))
    # the explicit argument is checked before it is compared
    with pytest.raises(TypeError, match="rtol must be a real number"):
        odeint(f, y0, t, rtol="1e-3", controller=PIController(rtol=1e-6))


@pytest.mark.parametrize("kind", [IController, PIController])
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rtol=-1e-3), ValueError, r"rtol must be a finite number >= 0, got -0\.001"),
    (dict(atol=math.nan), ValueError, r"atol must be a finite number >= 0, got nan"),
    (dict(rtol=math.inf), ValueError, r"rtol must be a finite number >= 0, got inf"),
    (dict(rtol=0.0, atol=0.0), ValueError, "rtol and atol must not both be 0"),
    (dict(rtol="1e-3"), TypeError, r"rtol must be a real number, got str '1e-3'"),
    (dict(atol=True), TypeError, r"atol must be a real number, got bool True"),
])
def test_bad_controller_tolerances_are_refused_like_odeint_arguments(kind, kwargs, error, message):
    with pytest.raises(error, match=message):
        kind(**kwargs)
    # the very words odeint uses for the same values given by argument
    f, W, y0 = _problem()
    with pytest.raises(error, match=message):
        odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), **kwargs)


def test_tolerance_zero_on_one_side_is_allowed_and_both_zero_after_resolution_is_not():
    f, W, y0 = _problem()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    _same(odeint(f, y0, t, controller=PIController(rtol=0.0, atol=1e-6)),
          odeint(f, y0, t, rtol=0.0, atol=1e-6, controller=PIController()))
    with pytest.raises(ValueError, match="must not both be 0"):
        odeint(f, y0, t, atol=0.0, controller=PIController(rtol=0.0))


def test_adjoint_takes_tolerances_by_argument_only():
    with pytest.raises(ValueError, match="tolerances from rtol=/atol=; leave controller=None"):
        NeuralODE(_Wrap(torch.nn.Linear(3, 3)), solver=Dopri5(), gradient=Adjoint(),
                  controller=IController(rtol=1e-6, atol=1e-8))


def test_controller_repr_and_equality_include_tolerances():
    assert PIController(rtol=1e-6) != PIController()
    assert "rtol=1e-06" in repr(PIController(rtol=1e-6))
    assert IController().rtol is None and IController().atol is None
