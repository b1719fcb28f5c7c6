"""Newton–Krylov options: finite-difference JVPs, fixed-point warm start, the forcing floor."""

import pytest
import torch

from implicit import Outcome
from implicit.deq import NewtonKrylov
from implicit.deq._newton_krylov import _AutodiffLinearization, _FiniteDifferenceLinearization
from implicit.deq._root import Evaluator


def smooth_problem(B=3, d=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=dtype)
    W = 0.8 * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(B, d, generator=g, dtype=dtype)
    return lambda z: torch.tanh(z @ W.T + x), W, x


def linear_problem(B=4, d=10, seed=2):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    A = 0.7 * A / torch.linalg.matrix_norm(A, ord=2).reshape(B, 1, 1)
    b = torch.randn(B, d, generator=g, dtype=torch.float64)
    z_star = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - A, b)
    return (lambda z: torch.bmm(A, z.unsqueeze(-1)).squeeze(-1) + b), z_star


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-6), (torch.float32, 3e-3)])
def test_finite_difference_jvp_matches_autodiff_and_exact_jacobian(dtype, rtol):
    f, W, x = smooth_problem(dtype=dtype)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 12, generator=g, dtype=dtype)
    v = torch.randn(3, 12, generator=g, dtype=dtype)
    v[1] = 0.0  # a converged sample's zero direction must give a zero product, not NaN
    # exact: J v = diag(1 − tanh²(Wz + x)) W v
    exact = (1 - torch.tanh(z @ W.T + x) ** 2) * (v @ W.T)
    fd = _FiniteDifferenceLinearization(Evaluator(f, z), z).jvp(v)
    ad = _AutodiffLinearization(Evaluator(f, z), z).jvp(v)
    torch.testing.assert_close(ad, exact, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)
    scale = exact.norm(dim=1, keepdim=True).clamp_min(1.0)
    assert bool(((fd - exact).abs() / scale).max() < rtol)
    assert bool((fd[1] == 0).all())
    # and the error is not zero: it is an approximation, of the expected size (√eps)
    assert float((fd - exact).abs().max()) > 0


@pytest.mark.parametrize("jvp", ["autodiff", "finite_difference"])
@pytest.mark.parametrize("fixed_point_steps", [0, 3])
def test_newton_krylov_options_reach_linalg_solve_on_linear_contraction(jvp, fixed_point_steps):
    f, z_star = linear_problem()
    sol = NewtonKrylov(tol=1e-10, abs_tol=0.0, max_iter=30, jvp=jvp,
                       fixed_point_steps=fixed_point_steps).solve(f, torch.zeros_like(z_star))
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    torch.testing.assert_close(sol.z, z_star, rtol=1e-8, atol=1e-8)
    assert bool((sol.stats.residual <= 1e-10).all())
    assert sol.stats.n_jvp > 0
    # the warm start's iterations are counted and are plain iterations (one f call, no JVP)
    assert sol.stats.n_iter > fixed_point_steps


def test_finite_difference_counts_each_product_as_one_f_call():
    f, _, _ = smooth_problem()
    calls = []

    def counted(z):
        calls.append(1)
        return f(z)

    z0 = torch.zeros(3, 12, dtype=torch.float64)
    sol = NewtonKrylov(tol=1e-8, abs_tol=0.0, jvp="finite_difference").solve(counted, z0)
    assert sol.stats.outcome is Outcome.SUCCESSFUL
    assert sol.stats.n_jvp > 0
    assert sol.stats.nfe == len(calls)  # every JVP is an f call, counted once


def test_finite_difference_reaches_float32_benchmark_tolerance_on_nonlinear_f():
    f, _, _ = smooth_problem(B=8, d=64, dtype=torch.float32)
    z0 = torch.zeros(8, 64)
    fd = NewtonKrylov(tol=1e-5, abs_tol=0.0, max_iter=30, jvp="finite_difference").solve(f, z0)
    ref = NewtonKrylov(tol=1e-12, abs_tol=0.0, max_iter=30).solve(
        lambda z: f(z.float()).double(), z0.double())
    assert fd.stats.outcome is Outcome.SUCCESSFUL
    assert bool((fd.stats.residual <= 1e-5).all())
    torch.testing.assert_close(fd.z.double(), ref.z, rtol=1e-4, atol=1e-4)


def test_fixed_point_steps_are_plain_iterations():
    f, _, _ = smooth_problem()
    z0 = torch.zeros(3, 12, dtype=torch.float64)
    sol = NewtonKrylov(tol=1e-30, abs_tol=0.0, max_iter=2, fixed_point_steps=2).solve(f, z0)
    torch.testing.assert_close(sol.z, f(f(z0)), rtol=0, atol=0)
    assert sol.stats.n_jvp == 0


def test_bad_newton_krylov_options_are_rejected():
    with pytest.raises(ValueError, match=r"jvp must be one of 'autodiff', 'finite_difference', got 'forward'"):
        NewtonKrylov(jvp="forward")
    with pytest.raises(ValueError, match="fixed_point_steps must be an int >= 0, got -1"):
        NewtonKrylov(fixed_point_steps=-1)
    with pytest.raises(ValueError, match="fixed_point_steps must be an int >= 0, got True"):
        NewtonKrylov(fixed_point_steps=True)
