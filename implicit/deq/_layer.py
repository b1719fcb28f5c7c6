"""The DEQ layer: z* = f(z*, x), solved by a root solver, differentiated by a gradient strategy."""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import Tensor, nn

from implicit._outcome import Outcome, SolverError
from implicit._counting import count_backward
from implicit.deq._backward import BackwardRecord, Backward, ImplicitBackward
from implicit.deq._init import Initializer, ZeroInit
from implicit.deq._jacobian import JacobianRegularizer
from implicit.deq._newton_krylov import NewtonKrylov
from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import DTYPES, RootSolver, check_bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class DEQStats:
    """Statistics of one DEQ forward pass (and, once it has run, its backward pass).

    ``nfe_forward`` counts f calls and JVPs of the forward pass (solve, start, output);
    ``nfe_backward`` the VJPs of the backward pass, 0 until it runs. ``residual`` and
    ``converged`` are per sample: relative residual ‖f(z*) − z*‖ / ‖f(z*)‖ of the solve.
    ``skip_loss`` / ``jacobian_loss`` are scalars with their graphs (None if not configured).
    """

    nfe_forward: int
    n_iter: int
    residual: Tensor
    converged: Tensor
    outcome: Outcome
    message: str
    skip_loss: Tensor | None
    jacobian_loss: Tensor | None
    backward: BackwardRecord = dataclasses.field(repr=False)

    @property
    def nfe_backward(self) -> int:
        return self.backward.nfe


@renamed_keyword("backward", "gradient")
class DEQ(nn.Module):
    """Deep equilibrium layer: returns (z_out, stats) with z_out ≈ z* = f(z*, x).

    ``f`` is an ``nn.Module`` called as ``f(z, x)`` that maps z to z's shape; samples must not
    interact inside f. The shape of z is x's shape unless ``forward(x, z_shape=...)`` gives the
    per-sample shape (e.g. ``z_shape=(128,)`` for a 784-feature x). ``z_out`` is f(z*, x) for
    ``ImplicitBackward``/``JacobianFreeBackward``, the last phantom step for ``PhantomGradient``
    and the last iterate for ``Unrolled``.

    ``gradient`` says how gradients are computed, the keyword ``NeuralODE`` uses for the same idea
    (``backward=`` is its deprecated alias for one release). Example::

        layer = DEQ(cell, solver=Broyden(tol=1e-4), gradient=ImplicitBackward(solver=GMRES(tol=1e-4)))
        z, stats = layer(x)
        stats.nfe_forward, stats.residual.max(), stats.outcome

    Failure: samples that miss the tolerance are flagged in ``stats.converged`` and
    ``stats.outcome``; with ``throw=True`` that raises :class:`SolverError` with advice.
    NaN/Inf from f always raises SolverError (naming the iteration): there is no usable z*.
    Samples whose iterates ran away (``Outcome.DIVERGED``, see the solvers' ``max_growth``)
    are never counted converged.

    Gradients of a failed solve: with ``throw=False`` the forward returns the failed z and its
    stats, but backpropagating through it raises :class:`SolverError` at backward time, since
    the implicit gradient (and its Jacobian-free and phantom approximations) assumes
    z* = f(z*, x) and the returned z is not one. Pass ``differentiate_failed=True`` to
    backpropagate anyway (e.g. to keep training through occasional solves that stop a little
    above tol). ``Unrolled()`` is exempt: its gradient is exact for the iterations that ran.

    f and x must be float32 or float64 (the solvers have no half-precision path), and f must
    return z's dtype and device. Samples must not interact in f: a BatchNorm module of f in
    training mode makes each z* depend on the rest of the batch, which the layer warns about
    once (use eval mode or GroupNorm).
    """

    def __init__(
        self,
        f: nn.Module,
        *,
        solver: RootSolver = NewtonKrylov(),
        gradient: Backward = ImplicitBackward(),
        init: Initializer = ZeroInit(),
        jacobian_reg: JacobianRegularizer | None = None,
        throw: bool = False,
        differentiate_failed: bool = False,
    ):
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"DEQ: f must be an nn.Module called as f(z, x), got {type(f).__name__}")
        for name, value, cls, hint in (
            ("solver", solver, RootSolver, "NewtonKrylov(), Broyden(), Anderson(), FixedPoint(), SteadyState()"),
            ("gradient", gradient, Backward,
             "ImplicitBackward(), JacobianFreeBackward(), PhantomGradient(), Unrolled()"),
            ("init", init, Initializer, "ZeroInit(), SkipInit(g), SkipRegInit()"),
        ):
            if not isinstance(value, cls):
                raise TypeError(f"DEQ: {name} must be one of {hint}; got {type(value).__name__}")
        if jacobian_reg is not None and not isinstance(jacobian_reg, JacobianRegularizer):
            raise TypeError(
                f"DEQ: jacobian_reg must be None or JacobianRegularizer(...), got {type(jacobian_reg).__name__}"
            )
        check_bool("DEQ", "throw", throw)
        check_bool("DEQ", "differentiate_failed", differentiate_failed)
        self.f = f
        self.solver = solver
        self.gradient = gradient
        self.init = init
        self.jacobian_reg = jacobian_reg
        self.throw = throw
        self.differentiate_failed = differentiate_failed
        self._warned_batchnorm = False
        # registered so the Skip network's parameters reach the optimizer and .to(device)
        self.init_net = init.module()

    def extra_repr(self) -> str:
        return (f"solver={self.solver}, gradient={self.gradient}, init={self.init}, jacobian_reg={self.jacobian_reg}"
                + (", differentiate_failed=True" if self.differentiate_failed else ""))

    def forward(self, x: Tensor, z_shape: tuple[int, ...] | None = None) -> tuple[Tensor, DEQStats]:
        if not isinstance(x, Tensor):
            raise TypeError(f"DEQ: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"DEQ: x must have a non-empty batch dimension first, got shape {tuple(x.shape)}")
        if x.is_floating_point() and x.dtype not in DTYPES:
            raise TypeError(
                f"DEQ: x must be float32 or float64, got {x.dtype} (the root solvers have no half-precision "
                f"path); run the layer in float32: x.float() and f.float(), or autocast outside the DEQ"
            )
        self._warn_batchnorm()
        if z_shape is None:
            z_shape = tuple(x.shape[1:])
        elif not (isinstance(z_shape, (tuple, list)) and all(isinstance(s, int) and s > 0 for s in z_shape)):
            raise ValueError(f"DEQ: z_shape must be a tuple of positive ints (per-sample, no batch), got {z_shape!r}")
        shape = (x.shape[0], *z_shape)

        def f_x(z: Tensor) -> Tensor:
            return self.f(z, x)

        start = self.init.start(self.f, x, shape)
        record = BackwardRecord()
        att = self.gradient.run(self.solver, f_x, start.z0.detach(), record)
        st = att.solution.stats
        nfe = st.nfe + start.nfe + att.extra_nfe
        if st.outcome is Outcome.NONFINITE:
            raise SolverError(f"DEQ forward solve stopped: {st.message}", st.outcome, st)
        out = att.out
        if not st.outcome.ok and self.gradient.assumes_fixed_point and not self.differentiate_failed \
                and out.requires_grad:
            out = _RefuseBackward.apply(out, st)
        skip_loss = None
        if start.anchor is not None:
            skip_loss = (out - start.anchor).abs().mean()
        jac_loss = None
        if self.jacobian_reg is not None:
            train = torch.is_grad_enabled()
            z_leaf, fz = att.z_leaf, att.fz
            with torch.enable_grad():
                if z_leaf is None:
                    z_leaf = att.solution.z.detach().requires_grad_(True)
                    fz = f_x(z_leaf)
                    nfe += 1
                jac_loss = self.jacobian_reg.loss(z_leaf, fz, create_graph=train)
            nfe += self.jacobian_reg.n_samples
            if train and jac_loss.requires_grad:
                jac_loss = count_backward(jac_loss, record, self.jacobian_reg.n_samples)
        stats = DEQStats(
            nfe_forward=nfe,
            n_iter=st.n_iter,
            residual=st.residual,
            converged=st.converged,
            outcome=st.outcome,
            message=st.message,
            skip_loss=skip_loss,
            jacobian_loss=jac_loss,
            backward=record,
        )
        if self.throw and not st.outcome.ok:
            raise SolverError(f"DEQ forward solve failed: {st.message}", st.outcome, stats)
        return out, stats

    def _warn_batchnorm(self) -> None:
        if self._warned_batchnorm:
            return
        for name, m in self.f.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
                self._warned_batchnorm = True
                where = f"f.{name}" if name else "f"
                warnings.warn(
                    f"DEQ: {where} ({type(m).__name__}) is in training mode: it normalises with the "
                    f"statistics of the batch, so each sample's z* depends on the other samples (and its "
                    f"running statistics change at every solver iteration); call {where}.eval() or use "
                    f"GroupNorm/LayerNorm instead",
                    UserWarning,
                    stacklevel=3,
                )
                return


class _RefuseBackward(torch.autograd.Function):
    """Identity whose backward raises: the layer output of a failed solve, not opted in."""

    @staticmethod
    def forward(ctx, out, stats):
        ctx.stats = stats
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        st = ctx.stats
        raise SolverError(
            f"DEQ backward refused: the forward solve did not succeed ({st.message}), so its z is not a "
            f"fixed point and the implicit gradient would be wrong; fix the solve, or pass "
            f"DEQ(..., differentiate_failed=True) to backpropagate through it anyway",
            st.outcome,
            st,
        )
