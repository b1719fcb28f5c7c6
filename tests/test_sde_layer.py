"""NeuralSDE: gradients through the recorded heuristics, statistics, outcomes and input checks."""

import math

import pytest
import torch
import torchsde
from torch import nn

from implicit import Outcome, SolverError
from implicit.sde import SRK, EulerMaruyama, FixedSteps, Milstein, NeuralSDE, SDEStats, StepDoubling

F64 = torch.float64


def _bm(batch, d, seed=0, levy="space-time"):
    return torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(batch, d), dtype=F64, entropy=seed, levy_area_approximation=levy
    )


def _functional_layer(wf, bf, wg, scheme, stepping):
    return NeuralSDE(
        lambda t, y: torch.tanh(y @ wf.T + bf),
        lambda t, y: 0.3 * torch.sigmoid(y @ wg.T),
        scheme=scheme,
        stepping=stepping,
    )


@pytest.mark.parametrize("scheme,dt", [(EulerMaruyama(), 0.25), (Milstein(), 0.25), (SRK(), 0.5)], ids=repr)
def test_gradcheck_through_regularizers_and_state(scheme, dt):
    # A fixed step sequence: adaptive step sizes are a piecewise-constant-in-decisions but
    # continuous function of the parameters that backprop (rightly) does not differentiate, so
    # only fixed steps make R_E a smooth function that gradcheck can compare against.
    gen = torch.Generator().manual_seed(0)
    wf = torch.randn(3, 3, generator=gen, dtype=F64, requires_grad=True)
    bf = torch.randn(3, generator=gen, dtype=F64, requires_grad=True)
    wg = torch.randn(3, 3, generator=gen, dtype=F64, requires_grad=True)
    y0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    stepping = FixedSteps(dt=dt, rtol=1e-3, atol=1e-3)

    def run(wf, bf, wg, y0):
        layer = _functional_layer(wf, bf, wg, scheme, stepping)
        ys, stats = layer(y0, [0.0, 1.0], bm=_bm(2, 3, levy=scheme.levy_area_approximation))
        assert stats.n_accepted == round(1 / dt)
        return stats.reg_error, stats.reg_stiffness, ys[-1]

    assert torch.autograd.gradcheck(run, (wf, bf, wg, y0), atol=1e-6, rtol=1e-5)


def test_stiffness_estimate_is_exact_for_linear_drift():
    # f(y) = lam * y: the secant |f(y_mid) - f(y0)| / |y_mid - y0| is exactly |lam|
    lam = -7.5
    layer = NeuralSDE(lambda t, y: lam * y, lambda t, y: 0.2 * y, scheme=Milstein(),
                      stepping=StepDoubling(dt0=0.05, rtol=1e-3, atol=1e-3))
    y0 = torch.ones(4, 2, dtype=F64)
    _, stats = layer(y0, [0.0, 1.0], bm=_bm(4, 2, levy="none"))
    torch.testing.assert_close(stats.stiffness_estimates, torch.full_like(stats.stiffness_estimates, abs(lam)))
    torch.testing.assert_close(stats.reg_stiffness, torch.tensor(abs(lam), dtype=F64))  # steps cover [0, 1]


def test_stats_are_consistent_with_the_step_sequence():
    torch.manual_seed(0)
    drift, diffusion = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
    layer = NeuralSDE(lambda t, y: 3 * torch.tanh(drift(y)), lambda t, y: 0.5 * diffusion(y),
                      scheme=EulerMaruyama(), stepping=StepDoubling(dt0=0.5, rtol=1e-2, atol=1e-2))
    y0 = torch.randn(5, 3, dtype=F64)
    ys, stats = layer(y0, [0.0, 0.5, 1.0], bm=_bm(5, 3, levy="none"))
    assert isinstance(stats, SDEStats) and stats.outcome is Outcome.SUCCESSFUL
    assert stats.n_rejected >= 1  # dt0=0.5 is too large for this tolerance
    attempts = stats.n_accepted + stats.n_rejected
    # step doubling with Euler-Maruyama: 3 steps per attempt, each one drift and one diffusion call
    assert stats.nfe_drift == stats.nfe_diffusion == 3 * attempts
    assert stats.nfe_forward == stats.nfe_drift + stats.nfe_diffusion
    assert stats.step_sizes.shape == stats.error_estimates.shape == (stats.n_accepted,)
    assert math.isclose(stats.step_sizes.sum().item(), 1.0, rel_tol=1e-12)
    assert (stats.error_estimates <= 1).all() and stats.n_forced == 0
    assert stats.step_sizes.dtype == F64 and not stats.step_sizes.requires_grad
    torch.testing.assert_close(stats.reg_error, (stats.error_estimates * stats.step_sizes).sum())
    assert stats.t_final == 1.0 and ys.shape == (3, 5, 3)
    # backward through the state touches only the two half steps of accepted attempts
    ys[-1].sum().backward(retain_graph=True)
    assert stats.nfe_backward == 4 * stats.n_accepted
    # R_E also reaches the full steps
    stats.reg_error.backward()
    assert stats.nfe_backward == 4 * stats.n_accepted + 6 * stats.n_accepted


def test_regularizing_error_estimate_cuts_steps():
    torch.manual_seed(0)
    drift = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    with torch.no_grad():
        drift[2].weight.mul_(8.0)
    layer = NeuralSDE(lambda t, y: drift(y), lambda t, y: 0.1 * torch.ones_like(y),
                      scheme=EulerMaruyama(), stepping=StepDoubling(dt0=0.1, rtol=1e-3, atol=1e-3))
    y0 = torch.randn(8, 4, dtype=F64)
    opt = torch.optim.Adam(drift.parameters(), lr=0.05)
    steps = []
    for it in range(16):
        _, stats = layer(y0, [0.0, 1.0], bm=_bm(8, 4, seed=it, levy="none"))
        steps.append(stats.n_accepted)
        opt.zero_grad()
        stats.reg_error.backward()
        opt.step()
    assert sum(steps[-4:]) < 0.7 * sum(steps[:4]), steps


def test_default_brownian_motion_follows_torch_seed_and_dtype():
    layer = NeuralSDE(lambda t, y: -y, lambda t, y: 0.5 * torch.ones_like(y), scheme=SRK(),
                      stepping=StepDoubling(dt0=0.1, rtol=1e-3, atol=1e-3))
    y0 = torch.ones(3, 2)
    torch.manual_seed(5)
    a, stats = layer(y0, torch.tensor([0.0, 1.0]))
    torch.manual_seed(5)
    b, _ = layer(y0, torch.tensor([0.0, 1.0]))
    torch.manual_seed(6)
    c, _ = layer(y0, torch.tensor([0.0, 1.0]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and stats.error_estimates.dtype == torch.float32


def test_max_steps_raises_with_advice_or_returns_outcome():
    kwargs = dict(scheme=EulerMaruyama(), stepping=StepDoubling(dt0=0.01, rtol=1e-6, atol=1e-6), max_steps=3)
    y0 = torch.ones(2, 2, dtype=F64)
    with pytest.raises(SolverError, match="used max_steps=3 step attempts.*raise max_steps") as info:
        NeuralSDE(lambda t, y: -y, lambda t, y: y, **kwargs)(y0, [0.0, 0.5, 1.0], bm=_bm(2, 2, levy="none"))
    assert info.value.outcome is Outcome.MAX_STEPS_REACHED
    assert info.value.stats.n_accepted + info.value.stats.n_rejected == 3
    ys, stats = NeuralSDE(lambda t, y: -y, lambda t, y: y, throw=False, **kwargs)(
        y0, [0.0, 0.5, 1.0], bm=_bm(2, 2, levy="none")
    )
    assert stats.outcome is Outcome.MAX_STEPS_REACHED
    assert torch.equal(ys[0], y0) and torch.isnan(ys[1:]).all()


def test_nonfinite_dynamics_is_an_outcome():
    layer = NeuralSDE(lambda t, y: y * float("inf"), lambda t, y: y, scheme=EulerMaruyama(),
                      stepping=StepDoubling(dt0=0.1), throw=False)
    _, stats = layer(torch.ones(2, 2, dtype=F64), [0.0, 1.0], bm=_bm(2, 2, levy="none"))
    assert stats.outcome is Outcome.NONFINITE
    with pytest.raises(SolverError, match="error estimate is NaN or Inf at t=0 .*check the inputs"):
        NeuralSDE(lambda t, y: y * float("inf"), lambda t, y: y, scheme=EulerMaruyama(),
                  stepping=StepDoubling(dt0=0.1))(torch.ones(2, 2, dtype=F64), [0.0, 1.0])


def _ok_layer(**kwargs):
    return NeuralSDE(lambda t, y: -y, lambda t, y: torch.ones_like(y), **kwargs)


@pytest.mark.parametrize(
    "y0,ts,error,match",
    [
        (torch.ones(2, 3, 4), [0.0, 1.0], ValueError, r"y0 must have shape \(batch, state\), got \(2, 3, 4\)"),
        (torch.tensor([[1.0, float("nan")]]), [0.0, 1.0], ValueError, "y0 contains NaN"),
        (torch.ones(2, 3, dtype=torch.int64), [0.0, 1.0], TypeError, "y0 must be a floating-point"),
        ([[1.0, 2.0]], [0.0, 1.0], TypeError, "y0 must be a torch.Tensor"),
        (torch.ones(2, 3), [0.0, 1.0, 0.5], ValueError, "ts must be strictly increasing"),
        (torch.ones(2, 3), [0.0], ValueError, "ts must be 1-D with at least 2 times"),
        (torch.ones(2, 3), torch.tensor([0.0, float("nan")]), ValueError, "ts must be finite"),
        (torch.ones(2, 3), "0,1", TypeError, "ts must be a 1-D tensor or a list"),
    ],
)
def test_bad_state_and_times(y0, ts, error, match):
    with pytest.raises(error, match=match):
        _ok_layer(scheme=EulerMaruyama())(y0, ts)


def test_bad_network_outputs_and_brownian_motion():
    y0 = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"drift\(t, y\) must return a tensor of y's shape.*expected \(2, 3\).*got Tensor \(2, 4\)"):
        NeuralSDE(lambda t, y: torch.ones(2, 4), lambda t, y: y, scheme=EulerMaruyama())(y0, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"diffusion\(t, y\) must return a tensor of y's shape.*diagonal.*expected \(2, 3\)"):
        NeuralSDE(lambda t, y: y, lambda t, y: torch.ones(2, 3, 3), scheme=EulerMaruyama())(y0, [0.0, 1.0])
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(2, 5))
    with pytest.raises(ValueError, match=r"bm must have shape \(2, 3\).*got \(2, 5\)"):
        _ok_layer(scheme=EulerMaruyama())(y0, [0.0, 1.0], bm=bm)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(2, 3))
    with pytest.raises(ValueError, match="SRK needs Lévy area.*levy_area_approximation='space-time'"):
        _ok_layer(scheme=SRK())(y0, [0.0, 1.0], bm=bm)
    with pytest.raises(TypeError, match="bm must be a torchsde Brownian motion"):
        _ok_layer(scheme=EulerMaruyama())(y0, [0.0, 1.0], bm=torch.zeros(2, 3))


def test_bad_strategies_and_options():
    with pytest.raises(ValueError, match=r"StepDoubling\(dt0=...\) must be finite and > 0, got 0"):
        StepDoubling(dt0=0.0)
    with pytest.raises(ValueError, match=r"FixedSteps\(dt=...\) must be finite and > 0, got -0.1"):
        FixedSteps(dt=-0.1)
    with pytest.raises(ValueError, match=r"StepDoubling\(rtol=...\) must be finite and >= 0, got -1"):
        StepDoubling(rtol=-1e0)
    with pytest.raises(ValueError, match="at least one tolerance"):
        StepDoubling(rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match=r"Milstein\(sde_type=...\) must be 'ito' or 'stratonovich', got 'weak'"):
        Milstein(sde_type="weak")
    with pytest.raises(TypeError):
        StepDoubling(0.1)  # keyword-only
    with pytest.raises(TypeError, match="scheme must be an SDEScheme"):
        _ok_layer(scheme="srk")
    with pytest.raises(TypeError, match="stepping must be StepDoubling"):
        _ok_layer(stepping=0.01)
    with pytest.raises(ValueError, match="max_steps must be a positive int, got 0"):
        _ok_layer(max_steps=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rtol'"):
        _ok_layer(rtol=1e-3)


def test_a_brownian_motion_built_on_cuda_matches_a_state_on_the_current_cuda_device():
    # torchsde keeps device="cuda" as given; y0 on the current device is the same device
    from implicit.sde._layer import _same_device

    D = torch.device
    assert _same_device(D("cuda"), D("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0))
    assert not _same_device(D("cuda", 1), D("cuda", 0)) and not _same_device(D("cpu"), D("cuda", 0))
    assert _same_device(D("cpu"), D("cpu"))
