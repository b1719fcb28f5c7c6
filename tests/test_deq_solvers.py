"""Root solvers and batched GMRES against exact linear solves; Newton–Krylov convergence order."""

import dataclasses
import math

import pytest
import torch

from implicit import Outcome
from implicit.deq import Anderson, Broyden, FixedPoint, NewtonKrylov, gmres

SOLVERS = {
    "fixed_point": FixedPoint(tol=1e-11, abs_tol=0.0, max_iter=400),
    "anderson": Anderson(tol=1e-11, abs_tol=0.0, max_iter=200),
    "broyden": Broyden(tol=1e-11, abs_tol=0.0, max_iter=200),
    "newton_krylov": NewtonKrylov(tol=1e-11, abs_tol=0.0, max_iter=20),
}


def linear_problem(B=3, shape=(2, 5), rho=0.7, seed=0):
    """f(z) = A z + b per sample with spectral norm ‖A‖ = rho < 1; z* = (I − A)⁻¹ b exactly."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    A = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    A = rho * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]
    b = torch.randn(B, d, generator=g, dtype=torch.float64)

    def f(z):
        return (torch.bmm(A, z.reshape(B, d, 1)).squeeze(-1) + b).reshape(z.shape)

    z_star = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - A, b).reshape(B, *shape)
    return f, z_star


def two_speed_problem():
    """Sample 0: large and fast (‖A‖ = 0.3, ‖b‖ ~ 10); sample 1: small and slow (‖A‖ = 0.95, ‖b‖ ~ 0.1),
    so the batch's residual norm is dominated by the sample that settles first."""
    g = torch.Generator().manual_seed(1)
    d = 6
    A = torch.randn(2, d, d, generator=g, dtype=torch.float64)
    A = torch.tensor([0.3, 0.95], dtype=torch.float64)[:, None, None] * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]
    b = torch.randn(2, d, generator=g, dtype=torch.float64) * torch.tensor([[10.0], [0.1]], dtype=torch.float64)

    def f(z):
        return torch.bmm(A, z.unsqueeze(-1)).squeeze(-1) + b

    return f


@pytest.mark.parametrize("cls", [FixedPoint, Anderson, Broyden, NewtonKrylov])
def test_batch_stopping_test_tests_the_batch_norm_and_still_reports_each_sample(cls):
    f = two_speed_problem()
    z0 = torch.zeros(2, 6, dtype=torch.float64)
    tol = 1e-3
    per_sample = cls(tol=tol, abs_tol=0.0).solve(f, z0)
    batch = cls(tol=tol, abs_tol=0.0, stopping_test="batch").solve(f, z0)
    assert per_sample.stats.outcome is Outcome.SUCCESSFUL and batch.stats.outcome is Outcome.SUCCESSFUL
    assert batch.stats.n_iter < per_sample.stats.n_iter and batch.stats.nfe < per_sample.stats.nfe
    for sol in (per_sample, batch):  # independent residuals of the returned z
        fz = f(sol.z)
        rel = (fz - sol.z).norm(dim=1) / fz.norm(dim=1)
        torch.testing.assert_close(sol.stats.residual, rel, rtol=1e-10, atol=0)
        assert torch.equal(sol.stats.converged, rel <= tol)
    assert bool(per_sample.stats.converged.all())
    fz = f(batch.z)
    batch_rel = float((fz - batch.z).norm() / fz.norm())
    assert batch_rel <= tol
    assert batch.stats.history[-1] == pytest.approx(batch_rel, rel=1e-10)
    # the small, slow sample is honestly reported above tolerance
    assert not bool(batch.stats.converged[1]) and float(batch.stats.residual[1]) > tol


@pytest.mark.parametrize("name", SOLVERS)
def test_per_sample_stopping_test_is_the_default(name):
    f, z_star = linear_problem()
    solver = SOLVERS[name]
    a = solver.solve(f, torch.zeros_like(z_star))
    b = dataclasses.replace(solver, stopping_test="per_sample").solve(f, torch.zeros_like(z_star))
    assert solver.stopping_test == "per_sample"
    assert torch.equal(a.z, b.z) and a.stats.nfe == b.stats.nfe and a.stats.history == b.stats.history


@pytest.mark.parametrize("name", SOLVERS)
def test_criterion_is_a_deprecated_alias_of_stopping_test(name):
    f = two_speed_problem()
    z0 = torch.zeros(2, 6, dtype=torch.float64)
    cls = type(SOLVERS[name])
    new = cls(tol=1e-3, stopping_test="batch")
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}: criterion= is deprecated, use stopping_test="):
        old = cls(tol=1e-3, criterion="batch")
    assert old == new  # the same solver object, field for field
    a, b = old.solve(f, z0), new.solve(f, z0)
    assert torch.equal(a.z, b.z) and a.stats.nfe == b.stats.nfe and a.stats.history == b.stats.history
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\.criterion is deprecated, read {cls.__name__}\.stopping_test"):
        assert old.criterion == "batch"
    with pytest.raises(TypeError, match=r"got criterion='batch' and stopping_test='per_sample'.*pass stopping_test= only"):
        cls(criterion="batch", stopping_test="per_sample")


def test_batch_stopping_test_failure_names_the_batch_residual():
    f = two_speed_problem()
    z0 = torch.zeros(2, 6, dtype=torch.float64)
    sol = FixedPoint(tol=1e-8, abs_tol=0.0, max_iter=3, stopping_test="batch").solve(f, z0)
    assert sol.stats.outcome is Outcome.NOT_CONVERGED
    assert f"batch relative residual {sol.stats.history[-1]:.3e}" in sol.stats.message


@pytest.mark.parametrize("name", SOLVERS)
def test_linear_contraction_matches_linalg_solve(name):
    f, z_star = linear_problem()
    sol = SOLVERS[name].solve(f, torch.zeros_like(z_star))
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    assert bool(sol.stats.converged.all())
    assert float(sol.stats.residual.max()) <= 1e-11
    torch.testing.assert_close(sol.z, z_star, rtol=1e-9, atol=1e-9)
    # the reported residual is the one of the returned z
    r = (f(sol.z) - sol.z).flatten(1).norm(dim=1) / f(sol.z).flatten(1).norm(dim=1)
    torch.testing.assert_close(sol.stats.residual, r)


@pytest.mark.parametrize("name", SOLVERS)
def test_converged_sample_stops_changing(name):
    f, z_star = linear_problem(B=3)
    z0 = torch.zeros_like(z_star)
    z0[1] = f(z_star)[1]  # sample 1 starts at its root (to rounding)
    sol = SOLVERS[name].solve(f, z0)
    assert torch.equal(sol.z[1], z0[1])
    torch.testing.assert_close(sol.z, z_star, rtol=1e-9, atol=1e-9)


# Newton's own behaviour (convergence order, JVP counts, line search) is tested without the
# default warm-up iterations and with exact JVPs
PURE_NEWTON = dict(jvp="autodiff", fixed_point_steps=0)


def nonlinear_problem(B=4, d=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    W = 0.9 * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    return lambda z: torch.tanh(z @ W.T + x), torch.zeros(B, d, dtype=torch.float64)


def test_newton_krylov_converges_superlinearly():
    f, z0 = nonlinear_problem()
    # pure Newton (exact JVPs, no warm-up iterations): the property under test is Newton's own
    nk = NewtonKrylov(tol=1e-14, abs_tol=0.0, max_iter=20, gmres_restart=16, gmres_max_iter=32,
                      **PURE_NEWTON).solve(f, z0)
    fp = FixedPoint(tol=1e-14, abs_tol=0.0, max_iter=400).solve(f, z0)
    assert nk.stats.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(nk.z, fp.z, rtol=1e-11, atol=1e-11)
    h = [r for r in nk.stats.history if r > 1e-13]
    ratios = [b / a for a, b in zip(h, h[1:])]
    assert len(ratios) >= 3
    # superlinear: the contraction factor of the residual itself shrinks step after step ...
    assert all(q2 < q1 for q1, q2 in zip(ratios[-3:], ratios[-2:])), ratios
    assert ratios[-1] < 1e-2
    # ... while plain iteration keeps a roughly constant factor (linear convergence)
    hf = fp.stats.history
    assert hf[-1] / hf[-2] > 0.05
    assert nk.stats.n_iter < fp.stats.n_iter / 5


def test_newton_krylov_counts_jvps_and_calls():
    f, z0 = nonlinear_problem()
    calls = []

    def counted(z):
        calls.append(1)
        return f(z)

    sol = NewtonKrylov(tol=1e-10, max_iter=10, **PURE_NEWTON).solve(counted, z0)
    assert sol.stats.n_jvp > 0
    assert sol.stats.nfe == len(calls) + sol.stats.n_jvp


def test_line_search_rescues_a_bad_newton_direction():
    # f(z) = z − atan(z) scaled: Newton on g(z) = −atan(z)·c overshoots from far away without damping
    def f(z):
        return z - torch.atan(z)

    z0 = torch.full((2, 1), 3.0, dtype=torch.float64)
    with_ls = NewtonKrylov(tol=1e-10, abs_tol=1e-12, max_iter=30, line_search=True, **PURE_NEWTON).solve(f, z0)
    without = NewtonKrylov(tol=1e-10, abs_tol=1e-12, max_iter=30, line_search=False, **PURE_NEWTON).solve(f, z0)
    assert with_ls.stats.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(with_ls.z, torch.zeros_like(z0), rtol=0, atol=1e-8)
    assert without.stats.outcome is not Outcome.SUCCESSFUL


@pytest.mark.parametrize("restart", [3, 40])
def test_batched_gmres_matches_linalg_solve(restart):
    g = torch.Generator().manual_seed(3)
    B, d = 4, 25
    A = torch.eye(d, dtype=torch.float64) + 0.4 * torch.randn(B, d, d, generator=g, dtype=torch.float64) / d**0.5
    b = torch.randn(B, 5, 5, generator=g, dtype=torch.float64)
    b[2] = 0.0
    x, st = gmres(lambda v: torch.bmm(A, v.reshape(B, d, 1)).reshape(v.shape), b,
                  tol=1e-12, abs_tol=0.0, restart=restart, max_iter=300)
    ref = torch.linalg.solve(A, b.reshape(B, d)).reshape(B, 5, 5)
    torch.testing.assert_close(x, ref, rtol=1e-9, atol=1e-9)
    assert bool(st.converged.all())
    assert torch.equal(x[2], torch.zeros_like(x[2]))
    true_res = (torch.bmm(A, x.reshape(B, d, 1)).reshape(B, d) - b.reshape(B, d)).norm(dim=1)
    assert float(true_res.max()) <= 1e-10


def test_gmres_per_sample_tolerance_leaves_loose_sample_less_refined():
    g = torch.Generator().manual_seed(4)
    B, d = 2, 40
    A = torch.eye(d, dtype=torch.float64) + 0.6 * torch.randn(B, d, d, generator=g, dtype=torch.float64) / d**0.5
    A[1] = A[0]
    b = torch.randn(1, d, generator=g, dtype=torch.float64).expand(B, d).clone()
    x, st = gmres(lambda v: torch.bmm(A, v.unsqueeze(-1)).squeeze(-1), b,
                  tol=torch.tensor([1e-2, 1e-12], dtype=torch.float64), abs_tol=0.0, restart=50, max_iter=50)
    ref = torch.linalg.solve(A, b)
    err = (x - ref).norm(dim=1) / ref.norm(dim=1)
    assert float(err[1]) < 1e-9 < float(err[0])
    assert float(st.residual[0]) <= 1e-2


def test_not_converged_is_reported_per_sample():
    f, z_star = linear_problem(B=3)
    z0 = torch.zeros_like(z_star)
    z0[0] = z_star[0]
    sol = FixedPoint(tol=1e-10, abs_tol=0.0, max_iter=3).solve(f, z0)
    assert sol.stats.outcome is Outcome.NOT_CONVERGED
    assert sol.stats.converged.tolist() == [True, False, False]
    assert "2 of 3 samples did not converge within max_iter=3" in sol.stats.message


@pytest.mark.parametrize("name", SOLVERS)
def test_nonfinite_f_stops_and_names_the_iteration(name):
    f, z_star = linear_problem(B=2)
    calls = []

    def bad(z):
        calls.append(1)
        out = f(z)
        return out * float("nan") if len(calls) >= 3 else out

    sol = SOLVERS[name].solve(bad, torch.zeros_like(z_star))
    assert sol.stats.outcome is Outcome.NONFINITE
    assert f"NaN/Inf at iteration {sol.stats.n_iter}" in sol.stats.message
    # stops right there (Newton–Krylov first backtracks its line search away from the NaN)
    assert len(calls) <= (3 + NewtonKrylov().max_backtracks if name == "newton_krylov" else 3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"z's shape \(2, 3\), got shape \(2, 4\)"):
        FixedPoint().solve(lambda z: torch.zeros(2, 4), torch.zeros(2, 3))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="tol must be a positive finite number, got -1"):
        NewtonKrylov(tol=-1)
    with pytest.raises(ValueError, match="gmres_restart must be an int >= 1, got 0"):
        NewtonKrylov(gmres_restart=0)
    with pytest.raises(ValueError, match=r"m \(history size\) must be an int >= 1"):
        Anderson(m=0)
    with pytest.raises(ValueError, match="memory must be an int >= 1"):
        Broyden(memory=0)
    for cls in (FixedPoint, Anderson, Broyden, NewtonKrylov):
        with pytest.raises(ValueError, match=f"{cls.__name__}: stopping_test must be 'per_sample' or 'batch', got 'max'"):
            cls(stopping_test="max")
    with pytest.raises(TypeError, match="unexpected keyword argument 'restart'"):
        NewtonKrylov(restart=5)
    with pytest.raises(TypeError):
        FixedPoint(1e-3)  # keyword-only
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor, got list"):
        FixedPoint().solve(lambda z: z, [1.0])
