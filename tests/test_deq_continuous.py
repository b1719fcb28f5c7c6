"""Continuous DEQ: the steady state of dz/dt = f(z, x) − z (implicit.ode) is the discrete z*."""

import pytest
import torch

from implicit import Outcome, SolverError
from implicit.deq import DEQ, GMRES, ImplicitBackward, NewtonKrylov, SteadyState
from implicit.ode import RK4, VCAB3, VCABM3, Dopri5

from test_deq_layer import Conv, Dense
from test_deq_solvers import linear_problem, two_speed_problem

F64 = torch.float64


def test_steady_state_of_linear_contraction_matches_linalg_solve():
    f, z_star = linear_problem()
    sol = SteadyState(solver=Dopri5(), rtol=1e-9, atol=1e-12).solve(f, torch.zeros_like(z_star))
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    # stopping at relative residual 1e-9 with ‖(I − A)⁻¹‖ ≤ 1/(1 − 0.7) bounds the error
    torch.testing.assert_close(sol.z, z_star, rtol=0, atol=1e-8 * float(z_star.abs().max()) * 10)
    assert float(sol.stats.residual.max()) <= 1e-9
    assert sol.stats.nfe > sol.stats.n_iter > 0


@pytest.mark.parametrize("block", ["dense", "conv"])
def test_continuous_deq_reaches_the_discrete_fixed_point_and_gradient(block):
    if block == "dense":
        f, x, zs = Dense(), torch.randn(3, 5, dtype=F64), (6,)
    else:
        f, x, zs = Conv(), torch.randn(2, 4, 5, 5, dtype=F64), (4, 5, 5)
    back = ImplicitBackward(solver=GMRES(tol=1e-12, abs_tol=0.0, max_iter=60))
    z_c, st_c = DEQ(f, solver=SteadyState(solver=Dopri5(), rtol=1e-9, atol=1e-12), gradient=back)(x, z_shape=zs)
    z_d, st_d = DEQ(f, solver=NewtonKrylov(tol=1e-12, abs_tol=1e-14), gradient=back)(x, z_shape=zs)
    assert st_c.outcome is Outcome.SUCCESSFUL and st_d.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(z_c, z_d, rtol=1e-7, atol=1e-8)
    w = torch.randn_like(z_d)
    g_c = torch.autograd.grad((z_c * w).sum(), list(f.parameters()))
    g_d = torch.autograd.grad((z_d * w).sum(), list(f.parameters()))
    for a, b in zip(g_c, g_d):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_start_is_evaluated_once_and_every_evaluation_is_counted():
    f, z_star = linear_problem()
    calls = []

    def counted(z):
        calls.append(z)
        return f(z)

    z0 = torch.zeros_like(z_star)
    sol = SteadyState(rtol=1e-6, atol=1e-9).solve(counted, z0)
    assert sol.stats.outcome is Outcome.SUCCESSFUL and sol.stats.n_iter > 0
    assert sol.stats.nfe == len(calls)
    assert sum(torch.equal(z, z0) for z in calls) == 1  # the start check's f(z0) seeds the integrator


def test_start_at_the_root_takes_no_step():
    f, z_star = linear_problem()
    sol = SteadyState(rtol=1e-6).solve(f, f(z_star))
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    assert sol.stats.n_iter == 0 and sol.stats.nfe == 1


def test_failures_are_outcomes_and_raise_when_asked():
    f, z_star = linear_problem()
    z0 = torch.zeros_like(z_star)
    short = SteadyState(rtol=1e-9, t_max=0.5).solve(f, z0)
    assert short.stats.outcome is Outcome.NOT_CONVERGED
    assert "reached t_max=0.5" in short.stats.message
    few = SteadyState(rtol=1e-9, max_steps=3).solve(f, z0)
    assert few.stats.outcome is Outcome.MAX_STEPS_REACHED
    assert torch.isfinite(few.z).all()  # the last accepted state, not a NaN placeholder
    with pytest.raises(SolverError, match="t_max=0.5.*raise max_iter"):
        DEQ(Dense(), solver=SteadyState(rtol=1e-9, t_max=0.5), throw=True)(torch.randn(2, 5, dtype=F64), z_shape=(6,))


def test_bad_options():
    with pytest.raises(TypeError, match="SteadyState: solver must be an adaptive ODE solver"):
        SteadyState(solver=RK4(dt=0.1))
    with pytest.raises(ValueError, match="SteadyState: t_max must be a positive finite number, got 0"):
        SteadyState(t_max=0)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        SteadyState(max_steps=0)


def test_batch_stopping_test_tests_the_batch_norm_and_still_reports_each_sample():
    f = two_speed_problem()
    z0 = torch.zeros(2, 6, dtype=F64)
    rtol = 1e-3
    per_sample = SteadyState(rtol=rtol, atol=1e-12, ode_atol=1e-8).solve(f, z0)
    batch = SteadyState(rtol=rtol, atol=1e-12, ode_atol=1e-8, stopping_test="batch").solve(f, z0)
    assert per_sample.stats.outcome is Outcome.SUCCESSFUL and batch.stats.outcome is Outcome.SUCCESSFUL
    assert batch.stats.n_iter < per_sample.stats.n_iter
    # independent check of what each solve promised, from the returned z
    for sol in (per_sample, batch):
        fz = f(sol.z)
        rel = (fz - sol.z).norm(dim=1) / fz.norm(dim=1)
        torch.testing.assert_close(sol.stats.residual, rel, rtol=1e-10, atol=0)
        assert torch.equal(sol.stats.converged, rel <= rtol)
        if sol is per_sample:
            assert bool((rel <= rtol).all())
    fz = f(batch.z)
    batch_rel = float((fz - batch.z).norm() / fz.norm())
    assert batch_rel <= rtol
    assert batch.stats.history[-1] == pytest.approx(batch_rel, rel=1e-10)
    # the slow, small sample is honestly reported above tolerance
    assert not bool(batch.stats.converged[1]) and float(batch.stats.residual[1]) > rtol


def test_integrator_tolerances_are_separate_from_the_stopping_test():
    f, z_star = linear_problem()
    z0 = torch.zeros_like(z_star)
    default = SteadyState(rtol=1e-6, atol=1e-9).solve(f, z0)
    explicit = SteadyState(rtol=1e-6, atol=1e-9, ode_rtol=1e-6, ode_atol=1e-9).solve(f, z0)
    assert explicit.stats.nfe == default.stats.nfe and torch.equal(explicit.z, default.z)
    tight = SteadyState(rtol=1e-6, atol=1e-9, ode_rtol=1e-10, ode_atol=1e-12).solve(f, z0)
    assert tight.stats.nfe > default.stats.nfe
    for sol in (default, tight):  # the stopping test is the same, whatever the step sizes
        assert sol.stats.outcome is Outcome.SUCCESSFUL
        assert float(sol.stats.residual.max()) <= 1e-6
        torch.testing.assert_close(sol.z, z_star, rtol=0, atol=1e-5 * float(z_star.abs().max()))
    # why they are separate: an integrator tolerance far above the stopping test lets the explicit
    # solver step at its stability limit, where the residual stalls near the integrator tolerance;
    # the solve says so instead of claiming success
    loose = SteadyState(rtol=1e-6, atol=1e-9, ode_rtol=1e-2, ode_atol=1e-2).solve(f, z0)
    assert loose.stats.outcome is Outcome.NOT_CONVERGED and "reached t_max" in loose.stats.message
    assert 1e-6 < float(loose.stats.residual.max()) < 1e-2
    assert not bool(loose.stats.converged.all())


def test_bad_steady_state_options_name_the_argument():
    with pytest.raises(ValueError, match="SteadyState: stopping_test must be 'per_sample' or 'batch', got 'mean'"):
        SteadyState(stopping_test="mean")
    # the old keyword still builds the same solver for one release, and says which name to use
    with pytest.warns(DeprecationWarning, match="SteadyState: criterion= is deprecated, use stopping_test="):
        assert SteadyState(criterion="batch", rtol=1e-3) == SteadyState(stopping_test="batch", rtol=1e-3)
    with pytest.raises(ValueError, match="SteadyState: ode_atol must be a positive finite number, got 0"):
        SteadyState(ode_atol=0)
    with pytest.raises(ValueError, match="SteadyState: ode_rtol must be a positive finite number, got -1"):
        SteadyState(ode_rtol=-1)


@pytest.mark.parametrize("integrator", [VCAB3(), VCABM3()], ids=["vcab3", "vcabm3"])
def test_adams_steady_state_matches_the_linear_solve_and_newtons_fixed_point_and_gradient(integrator):
    f, z_star = linear_problem()
    sol = SteadyState(solver=integrator, rtol=1e-8, atol=1e-12, max_steps=20_000).solve(f, torch.zeros_like(z_star))
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(sol.z, z_star, rtol=0, atol=1e-7 * float(z_star.abs().max()) * 10)
    cell, x = Dense(), torch.randn(3, 5, dtype=F64)
    back = ImplicitBackward(solver=GMRES(tol=1e-12, abs_tol=0.0, max_iter=60))
    steady = SteadyState(solver=integrator, rtol=1e-8, atol=1e-12, max_steps=20_000)
    z_c, st_c = DEQ(cell, solver=steady, gradient=back)(x, z_shape=(6,))
    z_d, st_d = DEQ(cell, solver=NewtonKrylov(tol=1e-12, abs_tol=1e-14), gradient=back)(x, z_shape=(6,))
    assert st_c.outcome is Outcome.SUCCESSFUL and st_d.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(z_c, z_d, rtol=1e-6, atol=1e-7)
    # backprop through the whole integration tends to the implicit gradient at the steady state
    w = torch.randn_like(z_d)
    params = list(cell.parameters())
    g_ift = torch.autograd.grad((z_d * w).sum(), params)
    z_bp = steady.solve(lambda z: cell(z, x), torch.zeros(3, 6, dtype=F64)).z
    g_bp = torch.autograd.grad((z_bp * w).sum(), params)
    for a, b in zip(g_bp, g_ift):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
