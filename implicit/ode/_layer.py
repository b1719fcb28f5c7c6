"""The neural-ODE layer: z(t) from dz/dt = f(t, z), with its solve statistics."""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import final

import torch
import torchdiffeq
from torch import Tensor, nn

from implicit._counting import BackwardCounter
from implicit._outcome import Outcome, SolverError
from implicit.ode._controller import AbstractController, IController
from implicit.ode._checks import HALF, check_bool, check_output
from implicit.ode._integrate import (
    ODEStats, _check_number, _check_step_options, _check_y0_t, check_step_path, odeint,
)
from implicit.ode._regularizer import AbstractRegularizer, Steer
from implicit.ode._solver import AbstractFixedSolver, AbstractSolver, Bosh3, Dopri5, Euler, Tsit5


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractGradient(abc.ABC):
    """How the layer's backward pass is computed."""


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Backprop(AbstractGradient):
    """Backpropagate through the solver's operations (discretise-then-optimise).

    Required for R_E/R_S and the augmented regularizers. Memory grows with the number of steps.
    ``step_path`` (``"detached"``, ``"tracked"`` or ``"initial"``; see :func:`~implicit.odeint`)
    says how much of the step-size path the gradient follows; the default holds the step sequence
    fixed.
    """

    step_path: str = "detached"

    def __post_init__(self):
        check_step_path(self.step_path)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Adjoint(AbstractGradient):
    """torchdiffeq 0.2.5's ``odeint_adjoint`` (optimise-then-discretise), for unregularized use.

    The forward solve is torchdiffeq's, so the solver must exist there (Dopri5, Bosh3, Euler; not
    Tsit5, absent from torchdiffeq 0.2.5). R_E, R_S and their per-step records are None in the
    stats, and regularizers are refused. ``rtol``/``atol`` of the backward solve default to the
    forward ones.
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name))


_TORCHDIFFEQ_NAME = {Dopri5: "dopri5", Bosh3: "bosh3", Euler: "euler"}


class NeuralODE(nn.Module):
    """Integrate ``dz/dt = f(t, z)`` from ``t[0]``; ``forward(z0) -> (zs, stats)``.

    ``zs`` has shape ``(len(t), *z0.shape)``; ``stats`` is an :class:`ODEStats` with NFE, steps,
    rejections, the per-step error/stiffness records and R_E = Σ E_j·|h_j|, R_S = Σ S_j·|h_j| (in the
    autograd graph with ``gradient=Backprop()`` and ``record=True``), and the regularizer
    integrals (``reg_taylor``, or ``reg_kinetic`` and ``reg_jacobian``; None when not used).

    ``steer=Steer(b=...)`` draws the end time from U(t1 − b, t1 + b) in training mode
    (``stats.t_final`` says which); eval mode integrates to t1. A failed solve raises
    :class:`~implicit.SolverError` when ``throw`` (else ``stats.outcome`` tells).

    Tolerances are :func:`~implicit.odeint`'s: ``controller=PIController(rtol=..., atol=...)`` holds
    them with the rest of step-size control, ``rtol``/``atol`` may repeat but not contradict it,
    and 1e-3, 1e-6 fill in what neither gives; ``self.rtol``/``self.atol`` are the values solved
    with. ``gradient=Adjoint()`` runs torchdiffeq's own controller, so there they go in ``rtol``/``atol``.
    """

    def __init__(
        self,
        f: nn.Module,
        *,
        t: tuple[float, ...] | Tensor = (0.0, 1.0),
        solver: AbstractSolver = Tsit5(),
        rtol: float | None = None,
        atol: float | None = None,
        dt0: float | None = None,
        max_steps: int = 10_000,
        gradient: AbstractGradient = Backprop(),
        regularizer: AbstractRegularizer | None = None,
        steer: Steer | None = None,
        throw: bool = True,
        record: bool = True,
        controller: AbstractController | None = None,
    ):
        super().__init__()
        if controller is not None and not isinstance(controller, AbstractController):
            raise TypeError(f"controller must be IController(...), PIController(...) or None, got {controller!r}")
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be an nn.Module f(t, z) -> dz/dt, got {type(f).__name__}")
        if not isinstance(solver, AbstractSolver):
            raise TypeError(f"solver must be a solver object such as Tsit5(), got {solver!r}")
        if not isinstance(gradient, AbstractGradient):
            raise TypeError(f"gradient must be Backprop() or Adjoint(...), got {gradient!r}")
        if regularizer is not None and not isinstance(regularizer, AbstractRegularizer):
            raise TypeError(f"regularizer must be TaylorRegularizer(...), KineticRegularizer() or None, got {regularizer!r}")
        if steer is not None and not isinstance(steer, Steer):
            raise TypeError(f"steer must be Steer(b=...) or None, got {steer!r}")
        ts = _layer_times(t)
        rtol, atol, dt0 = _check_step_options(rtol, atol, dt0, max_steps, controller)
        check_bool("throw", throw)
        check_bool("record", record)
        if isinstance(solver, AbstractFixedSolver) and solver.dt is None:
            name = type(solver).__name__
            raise ValueError(f"{name} is a fixed-step solver: give it dt, e.g. {name}(dt=0.01)")
        if steer is not None and not steer.b < abs(ts[-1] - ts[-2]):
            raise ValueError(f"Steer(b={steer.b}) needs b < |t[-1] - t[-2]| = {abs(ts[-1] - ts[-2]):g} to keep t monotone")
        if isinstance(gradient, Adjoint):
            if type(solver) not in _TORCHDIFFEQ_NAME:
                raise ValueError(
                    f"gradient=Adjoint() runs torchdiffeq's odeint_adjoint, which has no {type(solver).__name__}; "
                    "use solver=Dopri5() (or Bosh3(), Euler(dt=...)), or gradient=Backprop()"
                )
            if regularizer is not None:
                raise ValueError(f"regularizer={regularizer!r} needs gradient=Backprop() (the adjoint path records nothing)")
            if controller is not None and not isinstance(controller, IController):
                raise ValueError(f"gradient=Adjoint() runs torchdiffeq's controller; controller={controller!r} needs "
                                 "gradient=Backprop()")
            if controller is not None:
                raise ValueError("gradient=Adjoint() takes the controller knobs from the solver (safety, ifactor, "
                                 "dfactor) and the tolerances from rtol=/atol=; leave controller=None")
        self.f = f
        self.t = tuple(ts)
        self.solver, self.rtol, self.atol, self.dt0 = solver, rtol, atol, dt0
        self.max_steps, self.gradient, self.regularizer, self.steer = max_steps, gradient, regularizer, steer
        self.throw, self.record, self.controller = throw, record, controller

    def extra_repr(self) -> str:
        return (f"t={self.t}, solver={self.solver}, controller={self.controller}, rtol={self.rtol}, atol={self.atol}, "
                f"gradient={self.gradient}, "
                f"regularizer={self.regularizer}, steer={self.steer}")

    def times(self, like: Tensor) -> Tensor:
        ts = list(self.t)
        if self.steer is not None and self.training:
            u = float(torch.rand(()))
            ts[-1] = ts[-1] + (2.0 * u - 1.0) * self.steer.b
        return torch.tensor(ts, dtype=like.dtype, device=like.device)

    def forward(self, z0: Tensor) -> tuple[Tensor, ODEStats]:
        if not isinstance(z0, Tensor):
            raise TypeError(f"z0 must be a torch.Tensor of shape (batch, ...), got {type(z0).__name__}")
        t = self.times(z0)
        if isinstance(self.gradient, Adjoint):
            return self._adjoint(z0, t)
        if self.regularizer is None:
            sol = odeint(self.f, z0, t, solver=self.solver, rtol=self.rtol, atol=self.atol, dt0=self.dt0,
                         max_steps=self.max_steps, throw=self.throw, record=self.record, controller=self.controller,
                         step_path=self.gradient.step_path)
            return sol.ys, sol.stats
        return self._augmented(z0, t)

    def _augmented(self, z0: Tensor, t: Tensor) -> tuple[Tensor, ODEStats]:
        reg, f = self.regularizer, self.f
        _check_y0_t(z0, t)
        batch, shape = z0.shape[0], z0.shape[1:]
        d = math.prod(shape)
        m = len(reg.names)
        noise = torch.randn_like(z0) if reg.needs_noise() else None

        def dynamics(tt: Tensor, s: Tensor) -> Tensor:
            dz, rate = reg.dynamics(f, tt, s[:, :d].reshape(batch, *shape), noise)
            return torch.cat([dz.reshape(batch, d), rate], 1)

        s0 = torch.cat([z0.reshape(batch, d), z0.new_zeros(batch, m)], 1)
        sol = odeint(dynamics, s0, t, solver=self.solver, rtol=self.rtol, atol=self.atol, dt0=self.dt0,
                     max_steps=self.max_steps, throw=self.throw, record=self.record, controller=self.controller,
                     step_path=self.gradient.step_path)
        zs = sol.ys[..., :d].reshape(len(t), batch, *shape)
        # Integrals over |t1 - t0|: positive whichever way time runs.
        sign = 1.0 if float(t[-1]) > float(t[0]) else -1.0
        values = sol.ys[-1, :, d:].mean(0) * sign
        return zs, dataclasses.replace(sol.stats, **{name: values[i] for i, name in enumerate(reg.names)})

    def _adjoint(self, z0: Tensor, t: Tensor) -> tuple[Tensor, ODEStats]:
        _check_y0_t(z0, t)
        solver = self.solver
        func = _CountingFunc(self.f)
        fixed = isinstance(solver, Euler)
        if not fixed and z0.dtype in HALF:
            # torchdiffeq's adaptive solvers underflow (float16) or stop at a wrong answer (bfloat16)
            raise ValueError(f"gradient=Adjoint() with {type(solver).__name__} needs a float32 or float64 state, got "
                             f"{z0.dtype}; use gradient=Backprop() or z0.float()")
        if fixed:
            options = dict(step_size=solver.dt)
            adjoint_options = dict(options)
        else:
            adjoint_options = dict(safety=solver.safety, ifactor=solver.ifactor, dfactor=solver.dfactor,
                                   max_num_steps=self.max_steps)
            options = dict(adjoint_options, step_t=t)
            if self.dt0 is not None:
                options["first_step"] = self.dt0
        outcome, message = Outcome.SUCCESSFUL, ""
        # torchdiffeq's fixed grid ignores max_num_steps: its ceil(span/dt) steps are counted here,
        # so max_steps bounds a solve the same way on both gradient paths
        n_fixed = math.ceil(abs(float(t[-1]) - float(t[0])) / solver.dt * (1 - 1e-12)) if fixed else 0
        if n_fixed > self.max_steps:
            outcome = Outcome.MAX_STEPS_REACHED
            message = (f"Euler(dt={solver.dt}) needs {n_fixed} steps over [{float(t[0]):.10g}, {float(t[-1]):.10g}], "
                       f"more than max_steps={self.max_steps}")
            ys = torch.full((len(t), *z0.shape), math.nan, dtype=z0.dtype, device=z0.device)
        else:
            ys, outcome, message = self._torchdiffeq(func, z0, t, options, adjoint_options)
        func.backward_phase = True
        if outcome.ok and not bool(torch.isfinite(ys).all()):
            bad = next(i for i in range(len(t)) if not bool(torch.isfinite(ys[i]).all()))
            outcome = Outcome.NONFINITE
            message = (f"f produced NaN/Inf: torchdiffeq's state at output time t={float(t[bad]):.10g} "
                       f"(index {bad}) is not finite")
        stats = ODEStats(
            nfe_forward=func.nfe, n_accepted=func.n_accepted, n_rejected=func.n_rejected,
            error_estimates=None, step_sizes=torch.tensor(func.steps, dtype=torch.float64, device=z0.device),
            stiffness_estimates=None, reg_error=None, reg_stiffness=None,
            t_final=float(t[-1]), outcome=outcome, message=message, backward_counter=func.backward,
        )
        if not outcome.ok and self.throw:
            raise SolverError(message, outcome, stats)
        return ys, stats

    def _torchdiffeq(self, func, z0, t, options, adjoint_options):
        grad = self.gradient
        outcome, message = Outcome.SUCCESSFUL, ""
        try:
            ys = torchdiffeq.odeint_adjoint(
                func, z0, t, rtol=self.rtol, atol=self.atol, method=_TORCHDIFFEQ_NAME[type(self.solver)], options=options,
                adjoint_rtol=grad.rtol, adjoint_atol=grad.atol, adjoint_options=adjoint_options,
            )
        except AssertionError as e:  # torchdiffeq reports failures by assert
            text = str(e)
            if func.nonfinite_t is not None and "max_num_steps" not in text:
                # a NaN error estimate only shrinks torchdiffeq's step until it "underflows":
                # name the cause, as the Backprop path does
                outcome = Outcome.NONFINITE
                message = (f"f produced NaN/Inf at t={func.nonfinite_t:.10g} ({func.n_nonfinite} evaluations); "
                           f"torchdiffeq's solve then failed: {text[:200]}")
            else:
                outcome = (Outcome.MAX_STEPS_REACHED if "max_num_steps" in text else
                           Outcome.DT_UNDERFLOW if "underflow" in text else Outcome.NONFINITE)
                message = f"torchdiffeq's solve failed: {text[:200]}"
            ys = torch.full((len(t), *z0.shape), math.nan, dtype=z0.dtype, device=z0.device)
        return ys, outcome, message


def _layer_times(t) -> list[float]:
    """The layer's output times as floats, checked as odeint checks its t."""
    if isinstance(t, Tensor):
        if t.requires_grad:
            raise ValueError("t must not require grad: the layer's output times are fixed data (no gradient through t)")
        if t.dtype is torch.bool or t.is_complex():
            raise TypeError(f"t must hold real output times, got dtype {t.dtype}")
        ts = t.detach().double().cpu()
    elif isinstance(t, (tuple, list)) and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in t):
        ts = torch.tensor([float(x) for x in t], dtype=torch.float64)
    else:
        raise TypeError(f"t must be a tuple of floats or a 1-D tensor of output times, got {t!r}")
    return _check_y0_t(torch.zeros(1, 1, dtype=torch.float64), ts)


class _CountingFunc(nn.Module):
    """Per-solve wrapper (never reused) counting torchdiffeq's calls via its step callbacks."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f
        self.nfe = self.n_accepted = self.n_rejected = 0
        self.steps: list[float] = []
        self.backward = BackwardCounter()
        self.backward_phase = False
        self.nonfinite_t: float | None = None  # the first time f returned NaN/Inf in the forward solve
        self.n_nonfinite = 0

    def forward(self, t, z):
        if self.backward_phase:
            self.backward.add_backward(1)
            return self.f(t, z)
        self.nfe += 1
        out = check_output("f(t, y)", self.f(t, z), z)
        with torch.no_grad():
            finite = bool(torch.isfinite(out).all())
        if not finite:
            self.n_nonfinite += 1
            if self.nonfinite_t is None:
                self.nonfinite_t = float(t)
        return out

    def callback_accept_step(self, t0, y0, dt):
        self.n_accepted += 1
        self.steps.append(abs(float(dt)))

    def callback_reject_step(self, t0, y0, dt):
        self.n_rejected += 1
