"""ERNODE in training: adding λ·R_E after a warm-up lowers test NFE against the same run without it."""

import copy
import math

import pytest
import torch
from torch import nn

from implicit.ode import NeuralODE, Tsit5


def circles(n, g):
    """Two concentric classes: a disc of radius 0.5 and a ring 1 ≤ r ≤ 1.5."""
    y = torch.randint(0, 2, (n,), generator=g)
    r = torch.where(y == 0, 0.5 * torch.rand(n, generator=g), 1.0 + 0.5 * torch.rand(n, generator=g))
    a = 2 * math.pi * torch.rand(n, generator=g)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1), y


class Field(nn.Module):
    def __init__(self, d=4, hidden=32):
        super().__init__()
        self.l1, self.l2 = nn.Linear(d + 1, hidden), nn.Linear(hidden, d)

    def forward(self, t, z):
        return self.l2(torch.tanh(self.l1(torch.cat([z, t.expand(z.shape[0], 1)], 1))))


class Classifier(nn.Module):
    # 2-D concentric classes are not separable by a 2-D flow (homeomorphism): lift to 4-D first.
    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(2, 4), nn.Linear(4, 2)
        self.ode = NeuralODE(Field(), solver=Tsit5(), rtol=1e-4, atol=1e-4)

    def forward(self, x):
        zs, stats = self.ode(self.inp(x))
        return self.out(zs[-1]), stats


def _train(model, opt, x, y, iters, lam=0.0, ramp=10):
    for it in range(iters):
        logits, stats = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if lam:
            loss = loss + lam * min(1.0, (it + 1) / ramp) * stats.reg_error
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def _evaluate(model, x, y):
    model.eval()
    logits, stats = model(x)
    model.train()
    return (logits.argmax(1) == y).float().mean().item(), stats.nfe_forward


@pytest.mark.slow
def test_error_regularization_after_warmup_lowers_nfe():
    g = torch.Generator().manual_seed(0)
    x_train, y_train = circles(256, g)
    x_test, y_test = circles(256, g)
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    _train(model, opt, x_train, y_train, 30)  # warm-up without R_E: λ on from step 0 collapses the dynamics

    runs = {}
    for lam in (0.0, 1.0):  # same weights, optimizer state and data from here on
        m = copy.deepcopy(model)
        o = torch.optim.Adam(m.parameters(), lr=0.03)
        o.load_state_dict(opt.state_dict())
        _train(m, o, x_train, y_train, 40, lam=lam)
        runs[lam] = _evaluate(m, x_test, y_test)
    (acc_plain, nfe_plain), (acc_reg, nfe_reg) = runs[0.0], runs[1.0]
    assert acc_plain > 0.9 and acc_reg > 0.9
    assert nfe_reg <= 0.7 * nfe_plain, runs
