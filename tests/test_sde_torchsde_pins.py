"""Pins for the torchsde internals implicit.sde drives, and agreement with torchsde.sdeint.

implicit.sde calls torchsde's private step functions (torchsde._core.methods), its ForwardSDE
wrapper and reproduces its step-doubling controller. If a torchsde upgrade changes any of
these, these tests fail instead of the layer silently drifting away from sdeint.
"""

import inspect
import itertools
import warnings

import pytest
import torch
import torchsde
from torch import nn
from torchsde._core import adaptive_stepping, base_solver, methods
from torchsde._core.base_sde import ForwardSDE

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
from implicit.sde._stepping import error_ratio, propose_step

# scheme -> the method name sdeint takes for it
SCHEMES = [
    (EulerMaruyama(), "euler"),
    (Milstein(), "milstein"),
    (Milstein(sde_type="stratonovich"), "milstein"),
    (Milstein(derivative_free=True), "milstein"),
    (SRK(), "srk"),
    (StratonovichHeun(), "heun"),
    (StratonovichMidpoint(), "midpoint"),
    (EulerHeun(), "euler_heun"),
]


def test_torchsde_version_is_the_pinned_one():
    assert torchsde.__version__ == "0.2.6"


@pytest.mark.parametrize("scheme,method", SCHEMES, ids=lambda x: repr(x))
def test_scheme_maps_to_the_class_sdeint_selects(scheme, method):
    cls = scheme._torchsde_solver_class()
    assert cls is methods.select(method=method, sde_type=scheme.sde_type)
    assert cls.sde_type == scheme.sde_type
    assert scheme.levy_area_approximation in cls.levy_area_approximations


def test_private_signatures_we_call():
    params = list(inspect.signature(base_solver.BaseSDESolver.__init__).parameters)
    assert params[:9] == ["self", "sde", "bm", "dt", "adaptive", "rtol", "atol", "dt_min", "options"]
    assert list(inspect.signature(base_solver.BaseSDESolver.step).parameters) == ["self", "t0", "t1", "y0", "extra0"]
    assert list(inspect.signature(ForwardSDE.__init__).parameters)[:2] == ["self", "sde"]
    # the step-doubling loop we mirror (a change here means our loop must be re-read against it)
    src = inspect.getsource(base_solver.BaseSDESolver.integrate)
    for line in (
        "next_t = min(curr_t + step_size, ts[-1])",
        "midpoint_t = 0.5 * (curr_t + next_t)",
        "if error_estimate <= 1 or step_size <= self.dt_min:",
        "interp.linear_interp(t0=prev_t, y0=prev_y, t1=curr_t, y1=curr_y, t=out_t)",
    ):
        assert line in src


def test_controller_equals_torchsde_update_step_size():
    errors = [1e-7, 0.01, 0.3, 0.9, 1.0, 1.0000001, 1.7, 40.0]
    steps = [1e-5, 0.01, 0.37]
    prevs = [None, 0.05, 1.0, 9.0]
    for error, step, prev in itertools.product(errors, steps, prevs):
        assert propose_step(error, step, prev) == adaptive_stepping.update_step_size(
            error_estimate=error, prev_step_size=step, prev_error_ratio=prev
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_error_ratio_equals_torchsde_compute_error(dtype):
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-6, 1e-3, 1.0, 50.0):
        a = torch.randn(5, 7, generator=gen, dtype=dtype) * scale
        b = a + torch.randn(5, 7, generator=gen, dtype=dtype) * scale * 1e-2
        ours = error_ratio(a, b, 1e-3, 1e-4)
        assert ours.item() == adaptive_stepping.compute_error(a, b, 1e-3, 1e-4)


class _Net(nn.Module):
    def __init__(self, d, sde_type):
        super().__init__()
        self.noise_type, self.sde_type = "diagonal", sde_type
        self.f_net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d))
        self.g_net = nn.Linear(d, d)

    def f(self, t, y):
        return self.f_net(y)

    def g(self, t, y):
        return 0.5 * torch.sigmoid(self.g_net(y))


def _pair(levy, seed, batch=6, d=3):
    def make():
        return torchsde.BrownianInterval(
            t0=0.0, t1=1.0, size=(batch, d), dtype=torch.float64, entropy=seed, levy_area_approximation=levy
        )
    return make(), make()


@pytest.mark.parametrize("scheme,method", SCHEMES, ids=lambda x: repr(x))
def test_adaptive_solve_equals_sdeint_on_same_brownian_path(scheme, method):
    torch.manual_seed(0)
    sde = _Net(3, scheme.sde_type).double()
    y0 = torch.randn(6, 3, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.3, 0.75, 1.0], dtype=torch.float64)
    bm_ref, bm_ours = _pair(scheme.levy_area_approximation, seed=7)
    options = {"grad_free": scheme.derivative_free} if isinstance(scheme, Milstein) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sdeint warns about adaptive Euler-Maruyama
        ref = torchsde.sdeint(
            sde, y0, ts, bm=bm_ref, method=method, dt=0.1, adaptive=True, rtol=1e-4, atol=1e-4,
            dt_min=1e-4, options=options,
        )
    layer = NeuralSDE(sde.f, sde.g, scheme=scheme, stepping=StepDoubling(dt0=0.1, rtol=1e-4, atol=1e-4, dt_min=1e-4))
    ys, stats = layer(y0, ts, bm=bm_ours)
    assert torch.equal(ys, ref)
    # a real adaptive run: some steps grew or were rejected, and every accepted E_j is within tolerance
    assert stats.n_accepted >= 3 and len(set(stats.step_sizes.tolist())) > 1
    assert (stats.error_estimates <= 1).all() or stats.n_forced > 0


@pytest.mark.parametrize("scheme,method", SCHEMES[:2] + SCHEMES[4:5], ids=lambda x: repr(x))
def test_plain_fixed_steps_equal_sdeint_fixed(scheme, method):
    torch.manual_seed(1)
    sde = _Net(3, scheme.sde_type).double()
    y0 = torch.randn(6, 3, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    bm_ref, bm_ours = _pair(scheme.levy_area_approximation, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torchsde.sdeint(sde, y0, ts, bm=bm_ref, method=method, dt=0.15)
    layer = NeuralSDE(sde.f, sde.g, scheme=scheme, stepping=FixedSteps(dt=0.15, estimate_error=False))
    ys, stats = layer(y0, ts, bm=bm_ours)
    assert torch.equal(ys, ref)
    assert stats.error_estimates is None and stats.reg_error is None and stats.n_accepted == 7
