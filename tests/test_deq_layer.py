"""DEQ layer: implicit gradients vs. converged unrolled solves and gradcheck, backward strategies,
memory use, Jacobian regularizer, Skip initializers, failure modes."""

import pytest
import torch
from torch import nn

from implicit import Outcome, SolverError
from implicit.deq import (
    DEQ,
    GMRES,
    Anderson,
    Broyden,
    FixedPoint,
    FixedPointBackward,
    ImplicitBackward,
    JacobianFreeBackward,
    JacobianRegularizer,
    NewtonKrylov,
    PhantomGradient,
    SkipInit,
    SkipRegInit,
    Unrolled,
    ZeroInit,
)

F64 = torch.float64


class Dense(nn.Module):
    """f(z, x) = tanh(W z + U x + c), with ‖W‖₂ = rho so f is a contraction in z."""

    def __init__(self, dz=6, dx=5, rho=0.6, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(dz, dz, generator=g, dtype=F64)
        self.W = nn.Parameter(rho * W / torch.linalg.matrix_norm(W, ord=2))
        self.U = nn.Parameter(torch.randn(dz, dx, generator=g, dtype=F64) / dx**0.5)
        self.c = nn.Parameter(0.1 * torch.randn(dz, generator=g, dtype=F64))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.c)


class Conv(nn.Module):
    """f(z, x) = GroupNorm(relu(conv(z)) ) + x style block, scaled down to stay contractive."""

    def __init__(self, c=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(c, c, 3, padding=1).to(F64)
        with torch.no_grad():
            self.conv.weight.mul_(0.5)
        self.norm = nn.GroupNorm(2, c).to(F64)

    def forward(self, z, x):
        return 0.5 * self.norm(torch.tanh(self.conv(z)) + x)


def unrolled_reference(f, x, z_shape, n=200):
    """Backprop through n plain iterations from zero: the exact gradient once converged."""
    z = torch.zeros(x.shape[0], *z_shape, dtype=x.dtype)
    for _ in range(n):
        z = f(z, x)
    return z


def grads(out, params, weight):
    return torch.autograd.grad((out * weight).sum(), params)


TIGHT = dict(tol=1e-13, abs_tol=1e-14)


@pytest.mark.parametrize("block", ["dense", "conv"])
@pytest.mark.parametrize(
    "solver,adjoint",
    [
        (NewtonKrylov(max_iter=30, **TIGHT), GMRES(tol=1e-13, abs_tol=0.0, max_iter=60)),
        (Broyden(max_iter=200, **TIGHT), FixedPointBackward(tol=1e-13, abs_tol=0.0, max_iter=200)),
        (Anderson(max_iter=200, **TIGHT), GMRES(tol=1e-13, abs_tol=0.0, restart=5, max_iter=200)),
    ],
    ids=["nk-gmres", "broyden-fp", "anderson-gmres5"],
)
def test_implicit_gradient_equals_converged_unrolled_gradient(block, solver, adjoint):
    if block == "dense":
        f, x, zs = Dense(), torch.randn(3, 5, dtype=F64), (6,)
    else:
        f, x, zs = Conv(), torch.randn(2, 4, 5, 5, dtype=F64), (4, 5, 5)
    x.requires_grad_(True)
    weight = torch.randn(x.shape[0], *zs, dtype=F64)
    params = [x, *f.parameters()]
    ref = unrolled_reference(f, x, zs)
    g_ref = grads(ref, params, weight)
    layer = DEQ(f, solver=solver, gradient=ImplicitBackward(solver=adjoint))
    z, stats = layer(x, z_shape=zs)
    assert stats.outcome is Outcome.SUCCESSFUL
    assert stats.nfe_backward == 0
    torch.testing.assert_close(z, ref, rtol=1e-10, atol=1e-11)
    g = grads(z, params, weight)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    assert stats.nfe_backward > 1
    assert stats.backward.outcome is Outcome.SUCCESSFUL


@pytest.mark.parametrize("block", ["dense", "conv"])
def test_implicit_backward_passes_float64_gradcheck(block):
    if block == "dense":
        f, x, zs = Dense(dz=3, dx=2), torch.randn(2, 2, dtype=F64), (3,)
        pname = "f.W"
    else:
        f, x, zs = Conv(c=2), torch.randn(1, 2, 3, 3, dtype=F64), (2, 3, 3)
        pname = "f.conv.weight"
    layer = DEQ(f, solver=NewtonKrylov(max_iter=30, **TIGHT),
                gradient=ImplicitBackward(solver=GMRES(tol=1e-13, abs_tol=0.0, max_iter=60)))
    p0 = dict(layer.named_parameters())[pname].detach().clone()

    def fn(x, p):
        return torch.func.functional_call(layer, {pname: p}, (x,), {"z_shape": zs}, strict=False)[0]

    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), p0.requires_grad_(True)), eps=1e-6, atol=1e-6)


def test_jacobian_free_and_phantom_backward_against_implicit():
    f, x = Dense(rho=0.7), torch.randn(4, 5, dtype=F64)
    weight = torch.randn(4, 6, dtype=F64)
    params = list(f.parameters())
    solver = NewtonKrylov(**TIGHT)

    def run(backward):
        z, stats = DEQ(f, solver=solver, gradient=backward)(x, z_shape=(6,))
        g = grads(z, params, weight)
        return torch.cat([t.flatten() for t in g]), stats

    g_ift, _ = run(ImplicitBackward(solver=GMRES(tol=1e-13, abs_tol=0.0)))
    g_jfb, st_jfb = run(JacobianFreeBackward())
    g_ph, st_ph = run(PhantomGradient(k=80, alpha=1.0))
    g_ph3, _ = run(PhantomGradient(k=3, alpha=0.5))
    rel = lambda a: float((a - g_ift).norm() / g_ift.norm())  # noqa: E731
    assert rel(g_jfb) > 1e-2  # JFB is an approximation (g = v) ...
    assert float(torch.dot(g_jfb, g_ift)) > 0  # ... but a descent direction here
    assert rel(g_ph) < 1e-9  # k undamped steps sum the Neumann series of (I − J)⁻ᵀ
    assert rel(g_ph3) > rel(g_ph)
    assert st_jfb.nfe_backward == 1 and st_ph.nfe_backward == 80


def test_unrolled_backward_agrees_and_needs_fixed_point():
    f, x = Dense(), torch.randn(3, 5, dtype=F64)
    weight = torch.randn(3, 6, dtype=F64)
    params = list(f.parameters())
    z_u, st_u = DEQ(f, solver=FixedPoint(max_iter=300, **TIGHT), gradient=Unrolled())(x, z_shape=(6,))
    z_i, _ = DEQ(f, solver=FixedPoint(max_iter=300, **TIGHT))(x, z_shape=(6,))
    for a, b in zip(grads(z_u, params, weight), grads(z_i, params, weight)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert st_u.nfe_backward == st_u.n_iter
    with pytest.raises(TypeError, match=r"Unrolled\(\) backward needs solver=FixedPoint"):
        DEQ(f, solver=Anderson(), gradient=Unrolled())(x, z_shape=(6,))


def saved_bytes(fn):
    """Bytes of all tensors autograd saves for backward while ``fn`` runs (graph size)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_implicit_backward_memory_is_flat_in_iteration_count():
    f, x = Dense(dz=32, dx=8, rho=0.9), torch.randn(8, 8, dtype=F64)
    sizes = {}
    for n in (5, 20, 60):
        solver = FixedPoint(tol=1e-30, abs_tol=0.0, max_iter=n)  # runs exactly n iterations
        for name, backward in (("implicit", ImplicitBackward()), ("unrolled", Unrolled())):
            sizes[name, n] = saved_bytes(lambda: DEQ(f, solver=solver, gradient=backward)(x, z_shape=(32,)))
    assert sizes["implicit", 5] == sizes["implicit", 20] == sizes["implicit", 60] > 0
    assert sizes["unrolled", 60] > 2.5 * sizes["unrolled", 20] > 2.5 * 3 * sizes["unrolled", 5] / 3.5
    assert sizes["unrolled", 20] > 5 * sizes["implicit", 20]


@pytest.mark.parametrize("block", ["dense", "conv"])
def test_jacobian_regularizer_estimates_mean_squared_jacobian(block):
    torch.manual_seed(0)
    if block == "dense":
        f, x, zs = Dense(dz=5, dx=3), torch.randn(2, 3, dtype=F64), (5,)
    else:
        f, x, zs = Conv(c=2), torch.randn(2, 2, 3, 3, dtype=F64), (2, 3, 3)
    layer = DEQ(f, solver=NewtonKrylov(**TIGHT), jacobian_reg=JacobianRegularizer(n_samples=1000))
    z, stats = layer(x, z_shape=zs)
    # exact ‖∂f/∂z‖²_F / d per sample at z*, averaged over the batch
    z_star = z.detach()
    exact = 0.0
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda zi: f(zi[None], x[i : i + 1])[0], z_star[i])
        exact += float(J.pow(2).sum()) / z_star[i].numel() / x.shape[0]
    est = float(stats.jacobian_loss.detach())
    assert abs(est - exact) < 0.08 * exact
    # it is differentiable in θ and its backward is counted
    before = stats.nfe_backward
    stats.jacobian_loss.backward()
    assert f.conv.weight.grad.abs().sum() > 0 if block == "conv" else f.W.grad.abs().sum() > 0
    assert stats.nfe_backward == before + 1000


def test_jacobian_regularizer_in_eval_mode_has_no_graph():
    f, x = Dense(), torch.randn(2, 5, dtype=F64)
    with torch.no_grad():
        z, stats = DEQ(f, jacobian_reg=JacobianRegularizer())(x, z_shape=(6,))
    assert stats.jacobian_loss is not None and not stats.jacobian_loss.requires_grad
    assert not z.requires_grad


def toy_task(seed=0):
    torch.manual_seed(seed)
    f = Dense(dz=8, dx=4, seed=seed).float()
    with torch.no_grad():  # all singular values 0.9 and tanh near-linear: a slow, steady contraction
        f.W.copy_(0.9 * torch.linalg.qr(torch.randn(8, 8))[0])
        f.U.mul_(0.3)
    for p in f.parameters():
        p.requires_grad_(False)  # f fixed: only the Skip network learns
    return f, torch.randn(128, 4)


@pytest.mark.slow
def test_skip_deq_needs_fewer_nfe_once_g_predicts_z_star():
    f, x = toy_task()
    solver = FixedPoint(tol=1e-5, abs_tol=0.0, max_iter=300)
    g = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 8))
    skip = DEQ(f, solver=solver, init=SkipInit(g))
    assert set(dict(skip.named_parameters())) >= {"init_net.0.weight", "init_net.2.bias"}
    opt = torch.optim.Adam(skip.init_net.parameters(), lr=3e-2)
    for _ in range(150):
        _, st = skip(x, z_shape=(8,))
        opt.zero_grad()
        st.skip_loss.backward()
        opt.step()
    x_test = torch.randn(128, 4)
    with torch.no_grad():
        z_star, vanilla = DEQ(f, solver=solver, init=ZeroInit())(x_test, z_shape=(8,))
        _, skipped = skip(x_test, z_shape=(8,))
    assert vanilla.outcome is Outcome.SUCCESSFUL and skipped.outcome is Outcome.SUCCESSFUL
    assert skipped.nfe_forward < 0.85 * vanilla.nfe_forward
    # the prediction itself moved toward z* (skip loss of the zero prediction is mean|z*|)
    assert float(skipped.skip_loss) < 0.3 * float(z_star.abs().mean())


def train_toy(init, lam, steps=60, seed=0):
    """Fit z* to a smooth target, adding lam·skip_loss; return the test-time forward NFE."""
    torch.manual_seed(seed)
    f = Dense(dz=8, dx=4, rho=0.8, seed=seed).float()
    M = torch.randn(4, 8)
    x = torch.randn(64, 4)
    layer = DEQ(f, solver=FixedPoint(tol=1e-5, abs_tol=0.0, max_iter=100), init=init)
    opt = torch.optim.Adam(layer.parameters(), lr=3e-3)
    for _ in range(steps):
        z, st = layer(x, z_shape=(8,))
        loss = (z - torch.tanh(x @ M)).pow(2).mean()
        if st.skip_loss is not None:
            loss = loss + lam * st.skip_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, st = layer(torch.randn(128, 4), z_shape=(8,))
    assert st.outcome is Outcome.SUCCESSFUL
    return st.nfe_forward


def test_skip_deq_and_v2_trained_jointly_need_fewer_nfe_than_vanilla():
    vanilla = train_toy(ZeroInit(), 0.0)
    v2 = train_toy(SkipRegInit(), 5.0)
    skip = train_toy(SkipInit(nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 8))), 5.0)
    assert v2 < 0.8 * vanilla
    assert skip < 0.8 * vanilla


def test_skip_losses_follow_their_definitions():
    f, x = Dense(), torch.randn(3, 5, dtype=F64)
    g = nn.Linear(5, 6).to(F64)
    z, st = DEQ(f, solver=NewtonKrylov(**TIGHT), init=SkipInit(g))(x, z_shape=(6,))
    torch.testing.assert_close(st.skip_loss, (z - g(x)).abs().mean())
    st.skip_loss.backward()
    assert g.weight.grad.abs().sum() > 0  # g trained through the aux loss
    z2, st2 = DEQ(f, solver=NewtonKrylov(**TIGHT), init=SkipRegInit())(x, z_shape=(6,))
    torch.testing.assert_close(st2.skip_loss, (z2 - f(torch.zeros(3, 6, dtype=F64), x)).abs().mean())
    _, st0 = DEQ(f)(x, z_shape=(6,))
    assert st0.skip_loss is None and st0.jacobian_loss is None


def test_fc_block_with_explicit_z_shape():
    torch.manual_seed(0)

    class FC(nn.Module):
        def __init__(self):
            super().__init__()
            self.W1 = nn.Linear(16, 16)
            self.W2 = nn.Linear(30, 16)
            with torch.no_grad():
                self.W1.weight.mul_(0.3)

        def forward(self, z, x):
            return torch.relu(self.W1(z)) + torch.relu(self.W2(x))

    for solver in (NewtonKrylov(), Broyden(), Anderson(), FixedPoint()):
        z, st = DEQ(FC(), solver=solver)(torch.randn(5, 30), z_shape=(16,))
        assert z.shape == (5, 16)
        assert st.outcome is Outcome.SUCCESSFUL and float(st.residual.max()) <= 1e-4


def test_not_converged_raises_with_advice_when_asked():
    f, x = Dense(rho=0.95), torch.randn(3, 5, dtype=F64)
    solver = FixedPoint(tol=1e-12, max_iter=3)
    z, st = DEQ(f, solver=solver)(x, z_shape=(6,))
    assert st.outcome is Outcome.NOT_CONVERGED and not bool(st.converged.any())
    with pytest.raises(SolverError, match="raise max_iter.*Skip.*Jacobian regularization") as info:
        DEQ(f, solver=solver, throw=True)(x, z_shape=(6,))
    assert info.value.outcome is Outcome.NOT_CONVERGED
    assert info.value.stats.n_iter == 3


def test_nonfinite_f_raises_naming_the_iteration():
    class Blowup(nn.Module):
        def forward(self, z, x):
            return torch.exp(50 * z) + x

    with pytest.raises(SolverError, match=r"NaN/Inf at iteration \d+"):
        DEQ(Blowup(), solver=FixedPoint())(torch.ones(2, 3))


def test_backward_keyword_is_a_deprecated_alias_of_gradient():
    torch.manual_seed(0)
    f, x = Dense(), torch.randn(3, 5, dtype=F64)
    weight = torch.randn(3, 6, dtype=F64)
    strategy = ImplicitBackward(solver=GMRES(tol=1e-12, abs_tol=0.0))
    new = DEQ(f, solver=NewtonKrylov(**TIGHT), gradient=strategy)
    with pytest.warns(DeprecationWarning, match="DEQ: backward= is deprecated, use gradient="):
        old = DEQ(f, solver=NewtonKrylov(**TIGHT), backward=strategy)
    assert old.gradient is strategy
    (z_new, st_new), (z_old, st_old) = new(x, z_shape=(6,)), old(x, z_shape=(6,))
    g_new = grads(z_new, list(f.parameters()), weight)
    g_old = grads(z_old, list(f.parameters()), weight)
    assert torch.equal(z_new, z_old) and st_new.nfe_forward == st_old.nfe_forward
    assert st_new.nfe_backward == st_old.nfe_backward > 0
    for a, b in zip(g_new, g_old):
        assert torch.equal(a, b)
    with pytest.warns(DeprecationWarning, match=r"DEQ\.backward is deprecated, read DEQ\.gradient"):
        assert old.backward is strategy
    with pytest.raises(TypeError, match="DEQ: got backward=.* and gradient=.*pass gradient= only"):
        DEQ(f, gradient=Unrolled(), backward=strategy)


def test_shape_mismatch_and_bad_arguments():
    class Wrong(nn.Module):
        def forward(self, z, x):
            return torch.cat([z, z], dim=1)

    with pytest.raises(ValueError, match=r"z's shape \(2, 3\), got shape \(2, 6\)"):
        DEQ(Wrong())(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"SkipInit: g\(x\) must return z's shape \(2, 3\), got \(2, 4\)"):
        DEQ(Dense(dz=3, dx=3), init=SkipInit(nn.Linear(3, 4).to(F64)))(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(TypeError, match="f must be an nn.Module"):
        DEQ(lambda z, x: z)
    with pytest.raises(TypeError, match="solver must be one of"):
        DEQ(Dense(), solver="broyden")
    with pytest.raises(TypeError, match="gradient must be one of"):
        DEQ(Dense(), gradient=GMRES())
    with pytest.raises(TypeError, match="ImplicitBackward: solver must be an AdjointSolver"):
        ImplicitBackward(solver=NewtonKrylov())
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        DEQ(Dense(), max_iter=3)
    with pytest.raises(ValueError, match="z_shape must be a tuple of positive ints"):
        DEQ(Dense())(torch.zeros(2, 5, dtype=F64), z_shape=6)
    with pytest.raises(ValueError, match="PhantomGradient: k must be an int >= 1, got 0"):
        PhantomGradient(k=0)
