"""Reliability battery for the DEQ layer and its root solvers (issue #12).

No root solve may report success on a wrong answer (runaway iterates, overflowing norms, maps
without a fixed point), bad options and inputs get a clear error naming the argument, and the
guards do not reject legitimate solves (answers checked against dense solves or known roots).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from _battery import Battery, fails, raises
from implicit import Outcome, SolverError
from implicit.deq import (
    DEQ, GMRES, Anderson, Broyden, FixedPoint, FixedPointBackward, ImplicitBackward, JacobianFreeBackward,
    JacobianRegularizer, NewtonKrylov, PhantomGradient, SteadyState, Unrolled,
)

BATTERY = Battery("deq")
F64 = torch.float64
DISCRETE = (FixedPoint, Anderson, Broyden, NewtonKrylov)
ALL = DISCRETE + (SteadyState,)


class Cell(nn.Module):
    """f(z, x) from a plain function, so a test map can run inside a DEQ."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, z, x):
        return self.fn(z, x)


def contraction(B, d, rho, seed, dtype=F64):
    """Per-sample A (B, d, d) with ‖A‖₂ = rho and b (B, d); z* = (I − A)⁻¹ b by a dense solve."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, d, d, generator=g, dtype=F64)
    A = rho * A / torch.linalg.matrix_norm(A, ord=2)[:, None, None]
    b = torch.randn(B, d, generator=g, dtype=F64)
    z_star = torch.linalg.solve(torch.eye(d, dtype=F64) - A, b)
    return A.to(dtype), b.to(dtype), z_star


def affine(A):
    """z ↦ A z + x, per sample, for z of any trailing shape."""
    def fn(z, x):
        B = z.shape[0]
        return (torch.bmm(A, z.reshape(B, -1, 1)).squeeze(-1)).reshape(z.shape) + x
    return fn


def fail_both(solver, fn, x, outcome, *fragments, z_shape=None):
    """The solver reports ``outcome`` (not success) on f = fn(·, x) from zeros, and a DEQ with
    ``throw=True`` around the same map and solver raises SolverError with that outcome."""
    shape = (x.shape[0], *(z_shape or x.shape[1:]))
    sol = solver.solve(lambda z: fn(z, x), torch.zeros(shape, dtype=x.dtype))
    fails(sol.stats, outcome, *fragments)
    assert not bool(sol.stats.converged.all())
    err = raises(lambda: DEQ(Cell(fn), solver=solver, throw=True)(x, z_shape=z_shape), SolverError)
    fails(err, outcome, *fragments)
    return sol


def assert_root(sol, z_star, *, rtol=1e-8, atol=1e-8):
    assert sol.stats.outcome is Outcome.SUCCESSFUL, sol.stats.message
    assert bool(sol.stats.converged.all())
    torch.testing.assert_close(sol.z.to(F64), z_star.reshape(sol.z.shape).to(F64), rtol=rtol, atol=atol)


def tight(cls, **options):
    if cls is SteadyState:
        return SteadyState(rtol=1e-10, atol=1e-12, **options)
    return cls(tol=1e-10, abs_tol=0.0, max_iter=options.pop("max_iter", 400), **options)


# ---------------------------------------------------------------- clear errors: options


def _option_case(name, make, exc, *fragments):
    def case():
        raises(make, exc, *fragments)
    case.__name__ = name
    BATTERY.error(case)


@BATTERY.error
def tol_inf_on_every_discrete_solver():
    for cls in DISCRETE:
        raises(lambda: cls(tol=math.inf), ValueError, f"{cls.__name__}: tol must be a positive finite number", "got inf")


_option_case("steady_state_rtol_nan", lambda: SteadyState(rtol=math.nan), ValueError,
             "SteadyState: rtol must be a positive finite number", "nan")
_option_case("steady_state_t_max_inf", lambda: SteadyState(t_max=math.inf), ValueError,
             "SteadyState: t_max must be a positive finite number", "inf")
_option_case("steady_state_ode_atol_negative", lambda: SteadyState(ode_atol=-1e-6), ValueError,
             "SteadyState: ode_atol must be a positive finite number", "-1e-06")
_option_case("steady_state_max_steps_float", lambda: SteadyState(max_steps=100.0), ValueError,
             "SteadyState: max_steps must be an int >= 1", "100.0")
_option_case("broyden_abs_tol_nan", lambda: Broyden(abs_tol=math.nan), ValueError,
             "Broyden: abs_tol must be a non-negative finite number", "nan")
_option_case("fixed_point_max_iter_float", lambda: FixedPoint(max_iter=10.0), ValueError,
             "FixedPoint: max_iter must be an int >= 0", "10.0")
_option_case("anderson_max_iter_bool", lambda: Anderson(max_iter=True), ValueError,
             "Anderson: max_iter must be an int >= 0", "True")
_option_case("anderson_beta_zero", lambda: Anderson(beta=0.0), ValueError,
             "Anderson: beta (mixing) must be in (0, 1]", "0.0")
_option_case("anderson_lam_inf", lambda: Anderson(lam=math.inf), ValueError,
             "Anderson: lam must be a non-negative finite number", "inf")
_option_case("anderson_m_float", lambda: Anderson(m=2.5), ValueError,
             "Anderson: m (history size) must be an int >= 1", "2.5")
_option_case("broyden_memory_zero", lambda: Broyden(memory=0), ValueError, "Broyden: memory must be an int >= 1", "0")
_option_case("fixed_point_damping_above_one", lambda: FixedPoint(damping=1.5), ValueError,
             "FixedPoint: damping must be in (0, 1]", "1.5")
_option_case("newton_krylov_gmres_tol_one", lambda: NewtonKrylov(gmres_tol=1.0), ValueError,
             "NewtonKrylov: gmres_tol must be in (0, 1)", "1.0")
_option_case("newton_krylov_restart_zero", lambda: NewtonKrylov(gmres_restart=0), ValueError,
             "NewtonKrylov: gmres_restart must be an int >= 1", "0")
_option_case("newton_krylov_line_search_int", lambda: NewtonKrylov(line_search=1), TypeError,
             "NewtonKrylov: line_search must be a bool", "int")
_option_case("newton_krylov_backtracks_bool", lambda: NewtonKrylov(max_backtracks=False), ValueError,
             "NewtonKrylov: max_backtracks must be an int >= 0", "False")
_option_case("gmres_adjoint_tol_inf", lambda: GMRES(tol=math.inf), ValueError,
             "GMRES: tol must be a positive finite number", "inf")
_option_case("fixed_point_backward_abs_tol_negative", lambda: FixedPointBackward(abs_tol=-1.0), ValueError,
             "FixedPointBackward: abs_tol must be a non-negative finite number", "-1.0")
_option_case("phantom_alpha_nan", lambda: PhantomGradient(alpha=math.nan), ValueError,
             "PhantomGradient: alpha must be in (0, 1]", "nan")
_option_case("jacobian_reg_samples_float", lambda: JacobianRegularizer(n_samples=1.0), ValueError,
             "JacobianRegularizer: n_samples must be an int >= 1", "1.0")
_option_case("deq_differentiate_failed_not_bool", lambda: DEQ(Cell(lambda z, x: z), differentiate_failed="yes"),
             TypeError, "DEQ: differentiate_failed must be a bool", "str")


@BATTERY.error
def max_growth_must_exceed_one_or_be_none():
    for cls in ALL:
        for bad in (1.0, 0.5, math.inf, math.nan, "big", True):
            raises(lambda: cls(max_growth=bad), ValueError, f"{cls.__name__}: max_growth must be a finite number > 1",
                   "None to disable", repr(bad))
        assert cls(max_growth=None).max_growth is None


# ---------------------------------------------------------------- clear errors: inputs


@BATTERY.error
def f_changing_the_dtype_on_every_solver():
    x = torch.randn(3, 4)
    # a float64 parameter promotes f's output: the solve would silently run (and return z*) in float64
    w = torch.full((4,), 0.5, dtype=F64)
    for cls in ALL:
        raises(lambda: cls().solve(lambda z: w * z + x, torch.zeros(3, 4)), TypeError,
               f"{cls.__name__}: f(z, x) returned dtype torch.float64 for z of dtype torch.float32", "cast f")


@BATTERY.error
def half_precision_start_on_every_solver():
    for cls in ALL:
        for dtype in (torch.float16, torch.bfloat16):
            z0 = torch.zeros(2, 3, dtype=dtype)
            raises(lambda: cls().solve(lambda z: 0.5 * z + 1, z0), TypeError,
                   f"{cls.__name__}: z0 must be float32 or float64", str(dtype), "float()")


@BATTERY.error
def deq_refuses_half_precision_input_before_calling_f():
    calls = []

    def fn(z, x):
        calls.append(1)
        return 0.5 * z + x

    for dt in (torch.float16, torch.bfloat16):
        raises(lambda: DEQ(Cell(fn))(torch.randn(2, 3).to(dt)), TypeError, "DEQ: x must be float32 or float64",
               str(dt), "x.float()")
    assert not calls


@BATTERY.error
def deq_f_on_a_float64_module_with_float32_input():
    lin = nn.Linear(5, 5).to(F64)
    raises(lambda: DEQ(Cell(lambda z, x: 0.1 * lin(z.double()) + x), solver=Anderson())(torch.randn(2, 5)),
           TypeError, "f(z, x) returned dtype torch.float64 for z of dtype torch.float32")


@BATTERY.error
def f_on_another_device():
    z0 = torch.zeros(2, 3)
    raises(lambda: Broyden().solve(lambda z: torch.zeros(2, 3, device="meta"), z0), TypeError,
           "Broyden: f(z, x) returned a tensor on meta for z on cpu", "device")


@BATTERY.error
def steady_state_f_changing_shape():
    raises(lambda: SteadyState().solve(lambda z: z[:, :2], torch.zeros(3, 4)), ValueError,
           "SteadyState: f(z, x) must return a tensor of z's shape (3, 4), got shape (3, 2)")


@BATTERY.error
def start_not_a_tensor_names_the_solver():
    raises(lambda: NewtonKrylov().solve(lambda z: z, [[0.0]]), TypeError, "NewtonKrylov: z0 must be a torch.Tensor",
           "list")


@BATTERY.error
def backward_through_a_failed_solve_is_refused():
    A, b, _ = contraction(3, 5, 0.9, seed=3)
    x = b.clone().requires_grad_(True)
    for back in (ImplicitBackward(), JacobianFreeBackward(), PhantomGradient(k=2)):
        z, st = DEQ(Cell(affine(A)), solver=FixedPoint(tol=1e-12, max_iter=2), gradient=back)(x)
        assert st.outcome is Outcome.NOT_CONVERGED
        err = raises(lambda: z.sum().backward(), SolverError, "DEQ backward refused", "differentiate_failed=True",
                     "max_iter=2")
        assert err.outcome is Outcome.NOT_CONVERGED and x.grad is None


@BATTERY.error
def skip_loss_of_a_failed_solve_is_refused_too():
    from implicit.deq import SkipInit

    A, b, _ = contraction(2, 4, 0.9, seed=4)
    g = nn.Linear(4, 4).to(F64)
    _, st = DEQ(Cell(affine(A)), solver=Broyden(tol=1e-12, max_iter=1), init=SkipInit(g))(b)
    assert st.outcome is Outcome.NOT_CONVERGED
    raises(lambda: st.skip_loss.backward(), SolverError, "differentiate_failed")


@BATTERY.error
def batchnorm_in_training_mode_warns_once_naming_the_module():
    class BNCell(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6)
            self.norm = nn.BatchNorm1d(6)

        def forward(self, z, x):
            return 0.3 * torch.tanh(self.norm(self.lin(z))) + x

    layer = DEQ(BNCell(), solver=Anderson())
    with pytest.warns(UserWarning, match=r"DEQ: f\.norm \(BatchNorm1d\) is in training mode") as rec:
        layer(torch.randn(4, 6))
    assert any("GroupNorm" in str(w.message) and "f.norm.eval()" in str(w.message) for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(4, 6))  # once per layer


# ---------------------------------------------------------------- honest failures


@BATTERY.failure
def fixed_point_tripling_map_float32_runs_away():
    x = torch.randn(2, 3, 4)
    sol = fail_both(FixedPoint(), lambda z, x: 3 * z - x, x, Outcome.DIVERGED, "ran away", "max_growth=1000")
    assert float(sol.stats.residual.min()) > 0.1  # the relative residual is honest, not overflowed to 0


@BATTERY.failure
def fixed_point_without_guard_overflows_to_nonfinite_not_success():
    # with the runaway guard off, ‖f(z)‖ overflows in float32 before the iterate does
    x = torch.ones(2, 8)
    sol = FixedPoint(max_growth=None, max_iter=500).solve(lambda z: 2 * z + x, torch.zeros(2, 8))
    fails(sol.stats, Outcome.NONFINITE, "NaN/Inf", "overflowed")
    raises(lambda: DEQ(Cell(lambda z, x: 2 * z + x), solver=FixedPoint(max_growth=None, max_iter=500))(x),
           SolverError, "nonfinite")


@BATTERY.failure
def broyden_on_a_shift_without_fixed_point():
    # f(z) − z = 2 + cos z ≥ 1: no fixed point; the relative residual shrinks as z runs off
    x = torch.zeros(3, 2)
    fail_both(Broyden(), lambda z, x: z + 2 + torch.cos(z) + x, x, Outcome.DIVERGED, "Broyden", "ran away")


@BATTERY.failure
def broyden_batch_stopping_test_with_one_runaway_sample():
    # with one norm over the batch, a runaway sample used to dominate and pass the batch test
    shift = torch.tensor([[0.0], [0.0], [1.5]], dtype=F64)
    x = torch.randn(3, 4, dtype=F64)
    fn = lambda z, x: torch.where(shift > 0, z + shift + 0.5 * torch.sin(z), 0.5 * torch.tanh(z) + x)  # noqa: E731
    sol = fail_both(Broyden(stopping_test="batch"), fn, x, Outcome.DIVERGED, "1 of 3 samples ran away")
    assert not bool(sol.stats.converged[2])


@BATTERY.failure
def anderson_one_sample_without_fixed_point_others_solved():
    # samples 0 and 1 contract; sample 2, f(z) = z + 1 + 0.3 sin z, has no fixed point
    a = torch.tensor([0.5, 0.3, 1.0], dtype=F64)[:, None]
    x = torch.randn(3, 5, dtype=F64)
    fn = lambda z, x: torch.where(a < 1, a * z + x, z + 1 + 0.3 * torch.sin(z))  # noqa: E731
    sol = fail_both(Anderson(tol=1e-10, abs_tol=0.0, max_iter=400), fn, x, Outcome.DIVERGED, "1 of 3 samples ran away")
    assert sol.stats.converged.tolist() == [True, True, False]
    torch.testing.assert_close(sol.z[:2], x[:2] / (1 - a[:2]), rtol=1e-8, atol=1e-8)


@BATTERY.failure
def fixed_point_on_an_expanding_map_with_a_repelling_root():
    # f(z) = 1.5 z + 1 + 0.1 sin z has a root near −2, but it repels Picard iterates, which run off
    x = torch.zeros(2, 3, dtype=F64)
    fail_both(FixedPoint(max_iter=200), lambda z, x: 1.5 * z + 1 + 0.1 * torch.sin(z) + x, x, Outcome.DIVERGED,
              "ran away")


@BATTERY.failure
def newton_krylov_without_fixed_point():
    x = torch.zeros(2, 3)
    fail_both(NewtonKrylov(max_iter=60), lambda z, x: z + 1 + 0.5 * torch.sin(z) + x, x,
              Outcome.NOT_CONVERGED, "NewtonKrylov", "did not converge")


@BATTERY.failure
def steady_state_flow_without_rest_point():
    # dz/dt = 0.3 + 0.2 cos z > 0 forever: a long horizon used to end in "converged" at large z
    x = torch.zeros(2, 2, dtype=F64)
    sol = fail_both(SteadyState(t_max=1e6, max_steps=100_000), lambda z, x: z + 0.3 + 0.2 * torch.cos(z) + x, x,
                    Outcome.DIVERGED, "SteadyState", "ran away")
    assert float(sol.z.abs().max()) < 1e4


@BATTERY.failure
def steady_state_batch_stopping_test_with_a_runaway_sample():
    x = torch.tensor([[0.5, -0.5], [0.0, 0.0]], dtype=F64)
    shift = torch.tensor([[0.0], [1.0]], dtype=F64)
    fn = lambda z, x: torch.where(shift > 0, z + shift, 0.5 * z + x)  # noqa: E731
    fail_both(SteadyState(stopping_test="batch", t_max=1e6, max_steps=20_000), fn, x, Outcome.DIVERGED, "1 of 2")


@BATTERY.failure
def steady_state_horizon_too_short():
    A, b, _ = contraction(2, 3, 0.8, seed=5)
    fail_both(SteadyState(t_max=0.2), affine(A), b, Outcome.NOT_CONVERGED, "t_max=0.2")


@BATTERY.failure
def steady_state_step_budget():
    A, b, _ = contraction(2, 3, 0.8, seed=6)
    fail_both(SteadyState(max_steps=2, rtol=1e-12, atol=1e-14), affine(A), b, Outcome.MAX_STEPS_REACHED,
              "the ODE solve failed")


@BATTERY.failure
def anderson_iteration_budget():
    A, b, _ = contraction(4, 6, 0.95, seed=7)
    fail_both(Anderson(tol=1e-12, abs_tol=0.0, max_iter=2), affine(A), b, Outcome.NOT_CONVERGED, "max_iter=2")


@BATTERY.failure
def broyden_log_of_negative_is_nonfinite():
    x = torch.zeros(2, 3, dtype=F64)
    sol = Broyden().solve(lambda z: torch.log(z - 1), x)
    fails(sol.stats, Outcome.NONFINITE, "NaN/Inf at iteration 0")
    # the layer has no usable z*: it raises even with throw=False
    raises(lambda: DEQ(Cell(lambda z, x: torch.log(z - 1) + x), solver=Broyden())(x), SolverError, "nonfinite")


@BATTERY.failure
def deq_diverged_forward_refuses_backward_and_reports_outcome():
    lin = nn.Linear(4, 4, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(2.0 * torch.eye(4, dtype=F64))
    x = torch.randn(3, 4, dtype=F64)
    z, st = DEQ(Cell(lambda z, x: lin(z) + x), solver=FixedPoint())(x)
    fails(st, Outcome.DIVERGED, "ran away")
    err = raises(lambda: z.sum().backward(), SolverError, "DEQ backward refused")
    assert err.outcome is Outcome.DIVERGED and lin.weight.grad is None
    err = raises(lambda: DEQ(Cell(lambda z, x: lin(z) + x), solver=FixedPoint(), throw=True)(x), SolverError,
                 "iterates ran away")
    assert err.outcome is Outcome.DIVERGED


@BATTERY.failure
def fixed_point_damped_expansion_with_conv_shape():
    x = torch.randn(2, 3, 4, 4)
    fail_both(FixedPoint(damping=0.5, max_iter=300), lambda z, x: -3.5 * z + x + 1, x, Outcome.DIVERGED,
              "2 of 2 samples ran away")


# ---------------------------------------------------------------- correct results


def _dense_case(cls, *, dtype=F64, shape=(2, 3), rho=0.8, seed=0):
    def case():
        d = math.prod(shape)
        A, b, z_star = contraction(3, d, rho, seed, dtype)
        solver = tight(cls) if dtype == F64 else cls(tol=1e-6, abs_tol=0.0, max_iter=200) if cls is not SteadyState \
            else SteadyState(rtol=1e-6, atol=1e-7)
        sol = solver.solve(lambda z: affine(A)(z, b.reshape(3, *shape)), torch.zeros(3, *shape, dtype=dtype))
        tol = 1e-7 if dtype == F64 else 1e-4
        assert_root(sol, z_star, rtol=tol, atol=tol)
        assert sol.z.dtype == dtype
    case.__name__ = f"{cls.__name__.lower()}_{str(dtype).split('.')[-1]}_matches_dense_solve"
    BATTERY.correct(case)


for _cls in ALL:
    _dense_case(_cls)
for _cls in DISCRETE:
    _dense_case(_cls, dtype=torch.float32, shape=(2, 2, 2), rho=0.6, seed=1)


def _far_case(cls):
    def case():
        # z* = x / (1 − a) lies 100× beyond the start scale: inside max_growth, so it converges
        a = 0.99
        x = torch.randn(2, 4, dtype=F64)
        solver = SteadyState(rtol=1e-9, atol=1e-12, t_max=1e4, max_steps=5000) if cls is SteadyState else tight(cls)
        sol = solver.solve(lambda z: a * z + x, torch.zeros_like(x))
        assert_root(sol, x / (1 - a), rtol=1e-6, atol=1e-6)
    case.__name__ = f"{cls.__name__.lower()}_fixed_point_far_from_start"
    BATTERY.correct(case)


for _cls in (Anderson, Broyden, NewtonKrylov, SteadyState):
    _far_case(_cls)


@BATTERY.correct
def growth_limit_off_allows_a_very_distant_root():
    x = torch.rand(2, 3, dtype=F64) + 0.5
    f = lambda z: 0.9999 * z + x  # noqa: E731
    fails(NewtonKrylov(tol=1e-10, jvp="autodiff", fixed_point_steps=0).solve(f, torch.zeros_like(x)).stats,
          Outcome.DIVERGED, "max_growth")
    sol = NewtonKrylov(tol=1e-10, jvp="autodiff", fixed_point_steps=0, max_growth=None).solve(f, torch.zeros_like(x))
    assert_root(sol, x / 1e-4, rtol=1e-6, atol=0)


@BATTERY.correct
def zero_fixed_point_from_a_random_start():
    # only the absolute test can pass at z* = 0 (the relative residual stays near 1)
    z0 = torch.randn(4, 3, dtype=F64)
    for cls in ALL:
        sol = cls(max_growth=10.0).solve(lambda z: 0.5 * torch.tanh(z), z0)
        assert_root(sol, torch.zeros_like(z0), atol=1e-5)


@BATTERY.correct
def tiny_input_large_answer_is_not_a_runaway():
    # z = tanh(2z + c) with c ~ 1e-7: from z0 = 0 the start scale is 1e-7, but the start-scale
    # floor (RMS 1) keeps the O(1) root, which bisection gives independently
    c = torch.full((2, 3), 1e-7, dtype=F64)
    lo, hi = torch.full_like(c, 0.5), torch.full_like(c, 1.5)
    for _ in range(200):
        mid = (lo + hi) / 2
        pos = torch.tanh(2 * mid + c) - mid > 0
        lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
    # (the secant and Newton solvers may take the unstable root near −c instead: also a root)
    for solver in (tight(FixedPoint), tight(FixedPoint, damping=0.5), tight(SteadyState)):
        sol = solver.solve(lambda z: torch.tanh(2 * z + c), torch.zeros_like(c))
        assert_root(sol, lo, rtol=1e-8, atol=1e-8)


@BATTERY.correct
def large_scale_problem_converges():
    x = 1e8 * torch.randn(3, 4, dtype=F64)
    for cls in DISCRETE:
        assert_root(tight(cls).solve(lambda z: 0.5 * z + x, torch.zeros_like(x)), 2 * x, rtol=1e-8, atol=0)


@BATTERY.correct
def start_at_the_root_takes_no_iteration():
    A, b, z_star = contraction(2, 5, 0.7, seed=8)
    for cls in ALL:
        sol = tight(cls).solve(lambda z: affine(A)(z, b), z_star.clone())
        assert_root(sol, z_star, rtol=1e-9, atol=1e-9)
        assert sol.stats.n_iter == 0


@BATTERY.correct
def deq_value_and_gradient_match_the_dense_implicit_function():
    A, b, z_star = contraction(3, 6, 0.7, seed=9)
    x = b.clone().requires_grad_(True)
    for cls in (Broyden, Anderson, NewtonKrylov):
        x.grad = None
        z, st = DEQ(Cell(affine(A)), solver=tight(cls), gradient=ImplicitBackward(solver=GMRES(tol=1e-12)))(x)
        assert st.outcome is Outcome.SUCCESSFUL
        torch.testing.assert_close(z, z_star, rtol=1e-8, atol=1e-8)
        z.sum().backward()
        # d(Σz*)/dx = (I − A)⁻ᵀ 1
        g = torch.linalg.solve((torch.eye(6, dtype=F64) - A).transpose(1, 2), torch.ones(3, 6, dtype=F64))
        torch.testing.assert_close(x.grad, g, rtol=1e-8, atol=1e-8)


@BATTERY.correct
def unrolled_backward_of_a_short_solve_is_the_exact_gradient_of_its_iterations():
    # 3 unrolled steps from 0 of z ← A z + x give z₃ = (I + A + A²) x, whose gradient is exact, so
    # Unrolled() needs no opt-in (it does not assume a fixed point); with it the result is the same
    A, b, _ = contraction(2, 4, 0.9, seed=10)
    At = A.transpose(1, 2)
    one = torch.ones(2, 4, 1, dtype=F64)
    expected = (one + At @ one + At @ (At @ one)).squeeze(-1)
    for opt_in in (False, True):
        x = b.clone().requires_grad_(True)
        layer = DEQ(Cell(affine(A)), solver=FixedPoint(tol=1e-12, max_iter=3), gradient=Unrolled(),
                    differentiate_failed=opt_in)
        z, st = layer(x)
        assert st.outcome is Outcome.NOT_CONVERGED
        z.sum().backward()
        torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-10)


@BATTERY.correct
def batchnorm_in_eval_mode_is_silent_and_affine():
    norm = nn.BatchNorm1d(5).double().eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.linspace(-1, 1, 5))
        norm.running_var.fill_(4.0)
    x = torch.randn(3, 5, dtype=F64)
    layer = DEQ(Cell(lambda z, x: 0.5 * norm(z) + x), solver=tight(Broyden))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, st = layer(x)
    # BN in eval mode is (z − μ)/√(σ² + eps): solve z = 0.5 (z − μ)/s + x elementwise
    s = torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(z, (x - 0.5 * norm.running_mean / s) / (1 - 0.5 / s), rtol=1e-8, atol=1e-8)


@BATTERY.correct
def groupnorm_cell_converges_without_warning():
    conv = nn.Conv2d(4, 4, 3, padding=1).double()
    gn = nn.GroupNorm(2, 4).double()
    with torch.no_grad():
        conv.weight.mul_(0.2)
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    fn = lambda z, x: gn(torch.tanh(conv(z)) + x)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, st = DEQ(Cell(fn), solver=NewtonKrylov(tol=1e-9, abs_tol=0.0), gradient=JacobianFreeBackward())(x)
    assert st.outcome is Outcome.SUCCESSFUL
    # checked by its own residual and against a second, independent solver
    torch.testing.assert_close(fn(z, x), z, rtol=1e-7, atol=1e-7)
    ref = tight(Anderson).solve(lambda z: fn(z, x), torch.zeros_like(x))
    torch.testing.assert_close(z, ref.z, rtol=1e-7, atol=1e-7)


@BATTERY.correct
def per_sample_divergence_leaves_other_samples_correct_with_newton():
    a = torch.tensor([0.6, 1.0], dtype=F64)[:, None]
    x = torch.randn(2, 3, dtype=F64)
    # sample 1: f(z) = z + 1 has no fixed point; sample 0 is a contraction
    fn = lambda z: torch.where(a < 1, a * z + x, z + 1)  # noqa: E731
    sol = NewtonKrylov(tol=1e-10, abs_tol=0.0, max_iter=40).solve(fn, torch.zeros_like(x))
    fails(sol.stats, Outcome.DIVERGED, "1 of 2 samples ran away")
    assert sol.stats.converged.tolist() == [True, False]
    torch.testing.assert_close(sol.z[0], x[0] / 0.4, rtol=1e-8, atol=1e-8)


def _seeded(run):
    def seeded():
        torch.manual_seed(0)
        run()
    return seeded


# each case draws from the same seed, so its inputs do not depend on which cases ran before it
BATTERY.cases[:] = [dataclasses.replace(c, run=_seeded(c.run)) for c in BATTERY.cases]
test_battery = BATTERY.test()
