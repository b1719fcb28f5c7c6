"""Strong order of every supported scheme on geometric Brownian motion (exact solution known)."""

import math

import pytest
import torch
import torchsde

from implicit.sde import (
    SRK,
    EulerHeun,
    EulerMaruyama,
    FixedSteps,
    Milstein,
    NeuralSDE,
    StratonovichHeun,
    StratonovichMidpoint,
)

MU, SIGMA, T = 1.0, 1.0, 1.0
PATHS = 2000
DTS = [2.0**-k for k in range(2, 7)]


def _gbm_exact(x0, w, sde_type):
    # Itô: X = X0 exp((mu - sigma^2/2) t + sigma W); Stratonovich: X = X0 exp(mu t + sigma W)
    drift = MU - 0.5 * SIGMA**2 if sde_type == "ito" else MU
    return x0 * torch.exp(drift * T + SIGMA * w)


def _strong_errors(scheme, entropy=1234):
    x0 = torch.full((PATHS, 1), 1.0, dtype=torch.float64)
    layer = NeuralSDE(
        lambda t, y: MU * y,
        lambda t, y: SIGMA * y,
        scheme=scheme,
        stepping=FixedSteps(dt=1.0, estimate_error=False),  # replaced per dt below
    )
    errors = []
    for dt in DTS:
        layer.stepping = FixedSteps(dt=dt, estimate_error=False)
        bm = torchsde.BrownianInterval(
            t0=0.0, t1=T, size=(PATHS, 1), dtype=torch.float64, entropy=entropy,
            levy_area_approximation=scheme.levy_area_approximation,
        )
        ys, stats = layer(x0, [0.0, T], bm=bm)
        assert stats.n_accepted == round(T / dt)
        exact = _gbm_exact(x0, bm(0.0, T), scheme.sde_type)
        errors.append((ys[-1] - exact).abs().mean().item())
    return errors


@pytest.mark.parametrize(
    "scheme",
    [
        EulerMaruyama(),
        Milstein(),
        Milstein(derivative_free=True),
        Milstein(sde_type="stratonovich"),
        SRK(),
        StratonovichHeun(),
        StratonovichMidpoint(),
        EulerHeun(),
    ],
    ids=repr,
)
def test_strong_order_on_gbm(scheme):
    errors = _strong_errors(scheme)
    log_dt = torch.tensor([math.log(dt) for dt in DTS], dtype=torch.float64)
    log_err = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    slope = (((log_dt - log_dt.mean()) * (log_err - log_err.mean())).sum() / ((log_dt - log_dt.mean()) ** 2).sum()).item()
    assert errors[-1] < errors[0]
    assert abs(slope - scheme.strong_order) < 0.2, f"slope {slope:.3f}, errors {errors}"
