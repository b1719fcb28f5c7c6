"""The one backward-work counter that the ODE and SDE records read."""

from __future__ import annotations

import torch
import torchsde
from torch import nn

from implicit import BackwardRecord, NeuralODE, odeint
from implicit._counting import BackwardCounter, BackwardTally, count_backward
from implicit.ode import Adjoint, Dopri5, IController
from implicit.sde import SRK, FixedSteps, Milstein, NeuralSDE

F64 = torch.float64


def test_count_backward_adds_n_per_backward_pass():
    c = BackwardCounter()
    x = torch.ones(3, requires_grad=True)
    y = count_backward(x * 2, c, 3)
    assert c.value == 0
    y.sum().backward(retain_graph=True)
    assert c.value == 3
    y.sum().backward()
    assert c.value == 6 and repr(c) == "BackwardCounter(6)"
    assert isinstance(c, BackwardTally)


def test_an_unarmed_counter_ignores_gradients_until_armed():
    c = BackwardCounter(armed=False)
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    y.register_hook(c.tick)
    z = count_backward(y, c)
    # a VJP taken inside a forward solve: not backward work
    torch.autograd.grad(z.sum(), x, retain_graph=True)
    assert c.value == 0
    c.arm()
    z.sum().backward()
    assert c.value == 2  # one from the hook, one from count_backward


def test_ode_records_on_both_gradient_paths_hold_the_one_counter():
    f = nn.Linear(3, 3).double()
    z0 = torch.randn(2, 3, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = odeint(lambda t, y: f(y), z0, t, controller=IController(rtol=1e-6))
    assert type(sol.stats.backward_counter) is BackwardCounter
    for gradient in ({}, dict(gradient=Adjoint())):
        zs, stats = NeuralODE(_Autonomous(f), solver=Dopri5(), **gradient)(z0)
        assert type(stats.backward_counter) is BackwardCounter and stats.nfe_backward == 0
        zs[-1].sum().backward()
        assert stats.nfe_backward > 0


def test_sde_records_hold_the_one_counter_armed_after_the_solve():
    torch.manual_seed(0)
    wf, wg = torch.randn(3, 3, dtype=F64, requires_grad=True), torch.randn(3, 3, dtype=F64)
    y0 = torch.randn(4, 3, dtype=F64)
    for scheme, dt in ((Milstein(), 0.25), (SRK(), 0.5)):
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 3), dtype=F64, entropy=1,
                                       levy_area_approximation="space-time")
        layer = NeuralSDE(lambda t, y: torch.tanh(y @ wf.T), lambda t, y: 0.3 * torch.sigmoid(y @ wg.T),
                          scheme=scheme, stepping=FixedSteps(dt=dt))
        ys, stats = layer(y0, [0.0, 1.0], bm=bm)
        counter = stats.backward_counter
        # Milstein's g·g' is a VJP of the diffusion inside the forward solve: not counted
        assert type(counter) is BackwardCounter and counter.armed and stats.nfe_backward == 0
        ys[-1].sum().backward()
        assert stats.nfe_backward > 0


def test_the_deq_record_is_a_tally_of_its_own():
    rec = BackwardRecord()
    assert isinstance(rec, BackwardTally) and not isinstance(rec, BackwardCounter)
    rec.add_backward(2)
    assert rec.nfe == 2


class _Autonomous(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, z):
        return self.net(z)
