"""Explicit Runge-Kutta integration over batched tensors, recording the solver's own heuristics.

For every accepted step j the loop keeps the controller's error ratio E_j, the step size h_j and a
stiffness estimate S_j; E_j and S_j stay in the autograd graph so R_E = Σ E_j·|h_j| (ERNODE) and
R_S = Σ S_j·|h_j| (SRNODE, Pal et al. 2021) can be added to a loss. By default the step-size path
is detached: h_j, the accept/reject decisions and the step sequence are data, not functions of the
parameters; ``step_path="tracked"`` or ``"initial"`` puts (part of) it in the graph, the
accept/reject decisions staying discrete.

Batch aggregation: the whole batch is one ODE system. E_j is the RMS over *all* elements (batch
included) of err / (atol + rtol·max(|y0|, |y1|)), exactly torchdiffeq's norm, so one step sequence
serves the batch; S_j is ‖k_p − k_q‖ / ‖Y_p − Y_q‖ with Euclidean norms over the whole batch, i.e.
a Rayleigh-type quotient of the block-diagonal Jacobian (a weighted mean of the per-sample
estimates, at most their maximum).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import Tensor

from implicit._counting import BackwardCounter, count_backward
from implicit._outcome import Outcome, SolverError
from implicit.ode._checks import check_bool, check_half_tolerance, check_max_steps, check_output
from implicit.ode._checks import check_number as _check_number
from implicit.ode import _adams
from implicit.ode._adams import AbstractAdamsSolver
from implicit.ode._controller import AbstractController, IController, resolve_tolerances
from implicit.ode._solver import AbstractAdaptiveSolver, AbstractFixedSolver, AbstractSolver, Tsit5

# Rejections caused by NaN/Inf (each shrinking h by dfactor) before the solve is declared NONFINITE,
# in a row and in total: a blow-up that a smaller step cures is survived, a broken f fails fast
# (the total stops the controller from creeping up on a point where f breaks).
_MAX_NONFINITE_RETRIES = 5
_MAX_NONFINITE_TOTAL = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class ODEStats:
    """What one solve did. Tensors in graph: ``error_estimates``, ``stiffness_estimates``, ``reg_*``.

    ``error_estimates``/``stiffness_estimates``/``reg_error``/``reg_stiffness`` are None when not
    recorded (``record=False``, the adjoint, or a method without an embedded error estimate / a
    stiffness stage pair, e.g. Euler). ``step_sizes`` are detached float64 |h_j| of accepted steps.
    ``reg_taylor``/``reg_kinetic``/``reg_jacobian`` are filled by :class:`NeuralODE` when it
    integrates the matching regularizer, else None. ``nfe_backward`` reads a counter that the
    backward pass increments: 0 until backward runs. With the step-size path tracked
    (``step_path`` other than ``"detached"``), ``step_sizes_in_graph`` holds |h_j| in y's dtype in the graph (else
    None); ``initial_step`` is |h| of the first attempted step (in the graph when tracked; None for
    fixed steps).
    """

    nfe_forward: int
    n_accepted: int
    n_rejected: int
    error_estimates: Tensor | None
    step_sizes: Tensor
    stiffness_estimates: Tensor | None
    reg_error: Tensor | None
    reg_stiffness: Tensor | None
    t_final: float
    outcome: Outcome
    message: str = ""
    reg_taylor: Tensor | None = None
    reg_kinetic: Tensor | None = None
    reg_jacobian: Tensor | None = None
    step_sizes_in_graph: Tensor | None = None
    initial_step: Tensor | None = None
    backward_counter: BackwardCounter = dataclasses.field(default_factory=BackwardCounter, repr=False, compare=False)

    @property
    def nfe_backward(self) -> int:
        """Evaluations of f (or of its vector-Jacobian product) made by the backward pass so far."""
        return self.backward_counter.value

    def regularizer(self, name: str, reduction: str = "sum") -> Tensor | None:
        """R over the accepted steps of X_j·|h_j|, X = E (``name="error"``) or S (``"stiffness"``).

        ``reduction``: ``"sum"`` (Pal et al.'s formula; equals ``reg_error``/``reg_stiffness``),
        ``"mean"`` (divided by the number of accepted steps, as the authors' code trains) or
        ``"max"``. A solve without accepted steps gives 0. |h_j| is in the graph when the solve
        tracked its step-size path. None when the estimate was not recorded.
        """
        return step_regularizer(self, name, reduction)


_RECORDS = {"error": "error_estimates", "stiffness": "stiffness_estimates"}
REDUCTIONS = ("sum", "mean", "max")


def step_regularizer(record, name: str, reduction: str) -> Tensor | None:
    """Σ/mean/max over the accepted steps of X_j·|h_j| from a solve record (ODEStats, SDEStats): X its
    ``error_estimates`` or ``stiffness_estimates``, |h_j| its ``step_sizes_in_graph`` when it kept them in
    the graph, else its ``step_sizes``. 0 without accepted steps; None when X was not recorded."""
    if name not in _RECORDS:
        raise ValueError(f"name must be one of {tuple(_RECORDS)}, got {name!r}")
    check_reduction(reduction)
    x = getattr(record, _RECORDS[name])
    if x is None:
        return None
    h = record.step_sizes_in_graph if record.step_sizes_in_graph is not None else record.step_sizes.to(x)
    terms = x * h
    if terms.numel() == 0:
        return terms.sum()
    return {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[reduction](terms)
STEP_PATHS = ("detached", "tracked", "initial")


def check_step_path(step_path) -> str:
    if step_path not in STEP_PATHS:
        raise ValueError(f"step_path must be one of {STEP_PATHS}, got {step_path!r}")
    return step_path


def check_reduction(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


@dataclasses.dataclass(frozen=True, kw_only=True)
class ODESolution:
    """``ys[i]`` is the state at ``ts[i]``; shape ``(len(ts), *y0.shape)``."""

    ys: Tensor
    ts: Tensor
    stats: ODEStats


class _LinComb(torch.autograd.Function):
    """``base + Σ c_j·k_j`` (base may be None) with Python-float c_j: one output buffer, updated in
    place, and a backward that saves nothing (the c_j are detached step-size data)."""

    @staticmethod
    def forward(ctx, coeffs, base, *ks):
        ctx.coeffs = coeffs
        ctx.has_base = base is not None
        if base is None:
            out = torch.mul(ks[0], coeffs[0])
            rest = zip(coeffs[1:], ks[1:])
        else:
            out = base.clone()
            rest = zip(coeffs, ks)
        for c, k in rest:
            out.add_(k, alpha=c)
        return out

    @staticmethod
    def backward(ctx, g):
        needs = ctx.needs_input_grad
        grads = [g * c if needs[2 + j] else None for j, c in enumerate(ctx.coeffs)]
        return (None, g if ctx.has_base and needs[1] else None, *grads)


def _lincomb(base: Tensor | None, coeffs, ks) -> Tensor:
    pairs = [(c, k) for c, k in zip(coeffs, ks) if c != 0.0]
    if not pairs:
        return base if base is not None else torch.zeros_like(ks[0])
    cs, kk = zip(*pairs)
    return _LinComb.apply(tuple(cs), base, *kk)


# rtol, atol of a solve whose arguments and controller give none
DEFAULT_TOLERANCES = (1e-3, 1e-6)


def _check_step_options(rtol, atol, dt0, max_steps, controller) -> tuple[float, float, float | None]:
    """The adaptive solve's options, checked alike by ``odeint`` and ``NeuralODE`` (every gradient path);
    ``rtol``/``atol`` None are the controller's, else the defaults."""
    rtol, atol = resolve_tolerances(rtol, atol, controller, DEFAULT_TOLERANCES)
    if dt0 is not None:
        dt0 = _check_number("dt0", dt0)
    check_max_steps(max_steps)
    return rtol, atol, dt0


def _check_y0_t(y0, t) -> list[float]:
    if not isinstance(y0, Tensor):
        raise TypeError(f"y0 must be a torch.Tensor of shape (batch, ...), got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}; convert it, e.g. y0.float()")
    if y0.ndim < 2:
        raise ValueError(
            f"y0 must have shape (batch, ...) with at least 2 dimensions, got shape {tuple(y0.shape)}; "
            "add a batch dimension, e.g. y0.unsqueeze(0)"
        )
    if y0.numel() == 0:
        raise ValueError(f"y0 must not be empty, got shape {tuple(y0.shape)}")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 contains NaN or Inf; the initial state must be finite")
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a 1-D torch.Tensor of output times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"t must be 1-D with at least 2 times (start and end), got shape {tuple(t.shape)}")
    if t.dtype != y0.dtype:
        raise TypeError(f"t has dtype {t.dtype} but y0 has dtype {y0.dtype}; pass t.to(y0.dtype)")
    if t.device != y0.device:
        raise ValueError(f"t is on {t.device} but y0 is on {y0.device}; pass t.to(y0.device)")
    if t.requires_grad:
        raise ValueError("t must not require grad: output times are step-size data (no gradient through h or t)")
    ts = t.tolist()
    if not all(math.isfinite(x) for x in ts):
        raise ValueError(f"t must be finite, got {ts}")
    d = [b - a for a, b in zip(ts[:-1], ts[1:])]
    if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
        raise ValueError(f"t must be strictly increasing or strictly decreasing, got {ts}")
    return ts


def odeint(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t: Tensor,
    *,
    solver: AbstractSolver = Tsit5(),
    rtol: float | None = None,
    atol: float | None = None,
    dt0: float | None = None,
    max_steps: int = 10_000,
    dt: float | None = None,
    throw: bool = True,
    stop: Callable[[Tensor, Tensor, Tensor], bool] | None = None,
    record: bool = True,
    f0: Tensor | None = None,
    controller: AbstractController | None = None,
    step_path: str = "detached",
) -> ODESolution:
    """Solve dy/dt = f(t, y), y(t[0]) = y0, returning y at every time in ``t``.

    ``y0`` has shape (batch, ...); ``f(t, y)`` gets a 0-dim tensor ``t`` (y's dtype/device) and
    returns dy of y's shape. ``t`` is strictly increasing or decreasing; steps are clipped to land
    exactly on every output time (no interpolation). Adaptive solvers keep the error of each step
    within ``rtol``/``atol`` (see below; 1e-3 and 1e-6 when neither they nor the controller give
    them) and start from ``dt0`` (None: Hairer's initial-step heuristic, as torchdiffeq); ``dt`` (or a
    fixed-step solver's own ``dt``) runs fixed steps with any tableau. ``max_steps`` bounds
    attempted steps (accepted + rejected). ``stop(t, y, fy)``, allowed when ``len(t) == 2``, is
    called after each accepted step with fy = f(t, y); when it returns true the solve ends there
    (``ys[-1]`` is that state, ``stats.t_final`` its time). ``record=False`` skips the in-graph
    error/stiffness records (their stats fields are then None). ``f0`` is f(t[0], y0) when the
    caller already has it (a steady-state solve checks its start first); it replaces the first
    evaluation and is not counted in ``stats.nfe_forward``.

    ``controller`` picks the next step from the last error ratio: :class:`IController` (default,
    built from the solver's ``safety``/``ifactor``/``dfactor``) or :class:`PIController`. The
    controller is the one place that can hold all of step-size control, tolerances included:
    ``controller=PIController(rtol=1e-6, atol=1e-8)`` solves exactly as ``rtol=1e-6, atol=1e-8,
    controller=PIController()``. The ``rtol``/``atol`` arguments may repeat a tolerance the
    controller holds; a different value is a ValueError naming both.
    ``step_path`` says how much of the step-size path the autograd graph holds (see
    :data:`STEP_PATHS`); accept/reject decisions stay discrete in every mode:

    * ``"detached"`` (default): h_j and t_j are data; gradients are those of the solve with its
      step sequence held fixed.
    * ``"tracked"``: the initial step, every h_{j+1} (the controller's formula from the in-graph
      E_j, clamps included), the times t_j and the last step's clip to an output time, so
      gradients are those of the *adaptive* solve for perturbations that leave the accept/reject
      sequence unchanged.
    * ``"initial"``: what OrdinaryDiffEq 5.50 differentiates under Tracker: the initial step (and
      the shrinking of a rejected attempt by a detached factor) is in the graph, the step proposed
      after an accepted step is detached (its controller strips tracking from q), and the times and
      the last step's clip carry the initial step's dependence.

    With a tracked path memory also holds every rejected attempt; bound it with ``max_steps``.

    A failed solve (outcome not SUCCESSFUL) raises :class:`~implicit.SolverError` when ``throw``;
    otherwise it returns the outcome, with NaN at the output times it did not reach.

    ``f`` must return exactly y's shape, dtype and device (a ValueError names what came instead).
    float16/bfloat16 states are integrated (times and steps are kept in float64), but an adaptive
    solve needs ``rtol`` at least the dtype's eps. ``max_steps=0`` is refused: no solve fits in it.
    """
    if not callable(f):
        raise TypeError(f"f must be callable f(t, y) -> dy, got {type(f).__name__}")
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver must be a solver object such as Tsit5() or RK4(dt=0.1), got {solver!r}")
    ts = _check_y0_t(y0, t)
    rtol, atol, dt0 = _check_step_options(rtol, atol, dt0, max_steps, controller)
    check_bool("throw", throw)
    check_bool("record", record)
    if dt is not None:
        dt = _check_number("dt", dt)
    if stop is not None:
        if not callable(stop):
            raise TypeError(f"stop must be callable stop(t, y, fy) -> bool, got {type(stop).__name__}")
        if len(ts) != 2:
            raise ValueError(f"stop is allowed only with len(t) == 2 (start, end), got len(t) = {len(ts)}")
    if isinstance(solver, AbstractFixedSolver):
        if dt is not None and solver.dt is not None and dt != solver.dt:
            raise ValueError(f"dt given twice: odeint(dt={dt}) and {solver!r}; give one")
        dt = dt if dt is not None else solver.dt
        if dt is None:
            raise ValueError(f"{type(solver).__name__} is a fixed-step solver: give it dt, e.g. {type(solver).__name__}(dt=0.01)")
    elif dt is not None and dt0 is not None:
        raise ValueError("dt0 (first adaptive step) and dt (fixed steps) exclude each other; give one")
    if dt is None:
        check_half_tolerance(y0.dtype, rtol)
    adams = isinstance(solver, AbstractAdamsSolver)
    if controller is None:
        if adams:
            controller = solver.default_controller()
        elif isinstance(solver, AbstractAdaptiveSolver):
            controller = IController(**{k: getattr(solver, k) for k in ("safety", "ifactor", "dfactor")})
        else:
            controller = IController()
    elif not isinstance(controller, AbstractController):
        raise TypeError(f"controller must be IController(...) or PIController(...), got {controller!r}")
    elif isinstance(solver, AbstractAdaptiveSolver) and (solver.safety, solver.ifactor, solver.dfactor) != (0.9, 10.0, 0.2):
        raise ValueError(f"controller knobs given twice: {solver!r} and controller={controller!r}; "
                         "put safety/ifactor/dfactor on the controller only")
    check_step_path(step_path)
    if adams and step_path != "detached":
        raise ValueError(f"step_path={step_path!r} is implemented for the Runge-Kutta solvers; {type(solver).__name__} "
                         "runs with step_path='detached' (its step sequence held fixed)")
    if step_path != "detached" and dt is not None:
        raise ValueError(f"step_path={step_path!r} differentiates the step-size controller, but this solve takes fixed "
                         f"steps (dt={dt}); use an adaptive solver without dt, or step_path='detached'")
    if f0 is not None and not (isinstance(f0, Tensor) and f0.shape == y0.shape and f0.dtype == y0.dtype
                               and f0.device == y0.device):
        got = f"{type(f0).__name__} {tuple(f0.shape)} {f0.dtype} on {f0.device}" if isinstance(f0, Tensor) \
            else type(f0).__name__
        raise ValueError(f"f0 must be f(t[0], y0): a tensor of y0's shape, dtype and device "
                         f"{tuple(y0.shape)} {y0.dtype} on {y0.device}, got {got}")
    core = _Integrator(f, y0, ts, t, solver, rtol, atol, dt0, max_steps, dt, throw, stop, record, f0,
                       controller, step_path)
    return _adams.run(core, solver) if adams else core.run()


class _Integrator:
    """State of one solve. Times and step sizes are Python floats (float64, detached by design)."""

    def __init__(self, f, y0, ts, t, solver, rtol, atol, dt0, max_steps, dt, throw, stop, record, f0=None,
                 controller=None, step_path="detached"):
        self.f, self.y0, self.ts, self.t, self.solver = f, y0, ts, t, solver
        self.controller = controller if controller is not None else IController()
        # Tracked mode: times and steps are float64 0-dim tensors in the graph (float64 so that t
        # accumulates exactly as the detached path's Python floats do); their values drive the
        # same control flow through float(...).
        self.track = step_path != "detached" and torch.is_grad_enabled()
        self.detach_proposals = step_path == "initial"
        self.hmax = self.controller.max_step(abs(ts[-1] - ts[0]))
        self.h_first = None  # the first attempted step (stats.initial_step)
        self.f0 = f0
        self.tab = solver.tableau
        self.rtol, self.atol, self.dt0, self.max_steps, self.dt = rtol, atol, dt0, max_steps, dt
        self.throw, self.stop = throw, stop
        self.sign = 1.0 if ts[1] > ts[0] else -1.0
        self.counter = BackwardCounter()
        self.grad = torch.is_grad_enabled()
        self.record = record
        self.nfe = 0
        self.inv_sqrt_n = 1.0 / math.sqrt(y0.numel())
        self.eps = torch.finfo(y0.dtype).eps
        self.tiny = torch.finfo(y0.dtype).tiny

    # -- evaluations -------------------------------------------------------------------------
    def time(self, tt, like: Tensor) -> Tensor:
        if isinstance(tt, Tensor):
            return tt.to(like.dtype)
        return torch.tensor(tt, dtype=like.dtype, device=like.device)

    def call(self, tt, y: Tensor) -> Tensor:
        self.nfe += 1
        k = check_output("f(t, y)", self.f(self.time(tt, y), y), y)
        if self.grad and k.requires_grad:
            k = count_backward(k, self.counter)
        return k

    def step(self, t0: float, y0: Tensor, k0: Tensor, h: float, t1: float):
        """One Runge-Kutta step; returns (y1, f1 or None, err or None, stages Y, slopes k)."""
        tab = self.tab
        if isinstance(h, Tensor):
            return self.step_tracked(t0, y0, k0, h, t1)
        ks, ys = [k0], [y0]
        for i in range(1, tab.stages):
            yi = _lincomb(y0, [h * a for a in tab.a[i]], ks)
            ti = t1 if tab.c[i] == 1.0 else t0 + tab.c[i] * h
            ys.append(yi)
            ks.append(self.call(ti, yi))
        if tab.fsal:
            y1, f1 = ys[-1], ks[-1]
        else:
            y1, f1 = _lincomb(y0, [h * b for b in tab.b], ks), None
        err = None if tab.b_error is None else _lincomb(None, [h * e for e in tab.b_error], ks)
        return y1, f1, err, ys, ks

    def step_tracked(self, t0: Tensor, y0: Tensor, k0: Tensor, h: Tensor, t1: Tensor):
        """The same step with h, t0, t1 in the graph: y_i = y0 + h·Σ a_ij k_j, t_i = t0 + c_i·h."""
        tab = self.tab
        hy = h.to(y0.dtype)
        ks, ys = [k0], [y0]
        for i in range(1, tab.stages):
            yi = y0 + hy * _lincomb(None, tab.a[i], ks)
            ys.append(yi)
            ks.append(self.call(t1 if tab.c[i] == 1.0 else t0 + tab.c[i] * h, yi))
        if tab.fsal:
            y1, f1 = ys[-1], ks[-1]
        else:
            y1, f1 = y0 + hy * _lincomb(None, tab.b, ks), None
        err = None if tab.b_error is None else hy * _lincomb(None, tab.b_error, ks)
        return y1, f1, err, ys, ks

    def error_ratio(self, err: Tensor, y0: Tensor, y1: Tensor) -> Tensor:
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        return torch.linalg.vector_norm(err / scale) * self.inv_sqrt_n

    def stiffness(self, ys, ks) -> Tensor:
        p, q = self.tab.stiffness_stages
        num = torch.linalg.vector_norm(ks[p] - ks[q])
        den = torch.linalg.vector_norm(ys[p] - ys[q])
        # Guard 0/0 (e.g. f constant) while keeping the gradient through both norms whenever the
        # denominator is above rounding level.
        floor = self.eps * torch.linalg.vector_norm(ys[q]).detach() + self.tiny
        return num / torch.maximum(den, floor)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> ODESolution:
        ts, sign, tab = self.ts, self.sign, self.tab
        y0 = self.y0
        track = self.track
        f64 = dict(dtype=torch.float64, device=y0.device)
        # output times as the loop compares and lands on them: floats, or constant tensors
        T_of = [torch.tensor(x, **f64) for x in ts] if track else ts
        t0 = T_of[0]
        outs = [y0]
        cstate = self.controller.init_state()
        E_list, S_list, h_list = [], [], []
        n_acc = n_rej = attempts = 0
        outcome, message = Outcome.SUCCESSFUL, ""
        fixed = self.dt is not None
        want_E = self.record and tab.b_error is not None
        want_S = self.record and tab.stiffness_stages is not None

        if self.f0 is None:
            k0 = self.call(t0, y0)
        else:
            k0 = self.f0
            if self.grad and k0.requires_grad:
                # its graph is the caller's, but backward through it is still one VJP of f
                k0 = count_backward(k0, self.counter)
        if not fixed:
            if not bool(torch.isfinite(k0).all()):
                return self.finish(outs, E_list, S_list, h_list, 0, 0, float(t0), Outcome.NONFINITE,
                                   f"f produced NaN/Inf at the initial time t={float(t0):.10g} (initial state)")
            if self.dt0 is not None:
                h = torch.tensor(sign * self.dt0, **f64) if track else sign * self.dt0
            elif track:
                h = sign * self.initial_step_tracked(t0, y0, k0)
            else:
                h = sign * self.initial_step(t0, y0, k0)
            h = self.limit(h)  # OrdinaryDiffEq's initial step is at most dtmax too
            self.h_first = h
        else:
            h = sign * self.dt
            n_fixed = 0  # steps since the last output time: t = T_prev + n·dt avoids drift
            t_anchor = t0

        i_out = 1
        nonfinite_run = n_nonfinite = 0
        t_nonfinite = t0
        while i_out < len(ts):
            T = T_of[i_out]
            if attempts >= self.max_steps:
                outcome, message = self.max_steps_failure(t0, n_acc, n_rej)
                break
            if fixed:
                t1 = t_anchor + (n_fixed + 1) * h
                if sign * (T - t1) <= 1e-10 * abs(h):
                    t1 = T
                hh = t1 - t0
            else:
                if self.step_underflows(h, t0):
                    outcome, message = self.underflow_failure(h, t0, attempts, n_nonfinite, t_nonfinite)
                    break
                t1 = t0 + h
                if bool(sign * (t1 - T) > 0):  # would pass the output time: clip to land on it
                    t1 = T
                hh = t1 - t0
            attempts += 1
            if k0 is None:
                k0 = self.call(t0, y0)
            y1, f1, err, ys, ks = self.step(t0, y0, k0, hh, t1)

            if fixed:
                accept = True
                E = self.error_ratio(err, y0, y1) if want_E else None
            else:
                if want_E:
                    E = self.error_ratio(err, y0, y1)
                    r = float(E.detach())
                else:
                    with torch.no_grad():
                        r = float(self.error_ratio(err, y0, y1))
                if not math.isfinite(r):
                    n_rej += 1
                    nonfinite_run += 1
                    n_nonfinite += 1
                    t_nonfinite = t0
                    if nonfinite_run >= _MAX_NONFINITE_RETRIES or n_nonfinite >= _MAX_NONFINITE_TOTAL:
                        outcome = Outcome.NONFINITE
                        message = (f"f produced NaN/Inf in the step from t={t0:.10g} (step {attempts}, h={hh:.3g}); "
                                   f"{n_nonfinite} such steps, {nonfinite_run} in a row")
                        break
                    h = hh * self.controller.nonfinite_factor
                    continue
                nonfinite_run = 0
                accept = r <= 1.0
                if track and not self.detach_proposals:
                    h, cstate = self.controller.propose(hh, E.double(), accept, cstate, tab.error_order)
                elif track:  # "initial": the factor is data; h keeps the graph of the step it scales
                    h_val, cstate = self.controller.propose(float(hh.detach()), r, accept, cstate, tab.error_order)
                    h = torch.tensor(h_val, **f64) if accept else hh * (h_val / float(hh.detach()))
                else:
                    h, cstate = self.controller.propose(hh, r, accept, cstate, tab.error_order)
                h = self.limit(h)

            if not accept:
                n_rej += 1
                continue
            n_acc += 1
            h_list.append(abs(hh))
            if want_E:
                E_list.append(E)
            if want_S:
                S_list.append(self.stiffness(ys, ks))
            t0, y0, k0 = t1, y1, f1
            if fixed:
                n_fixed += 1
            if bool(t1 == T):
                outs.append(y1)
                i_out += 1
                if fixed:
                    t_anchor, n_fixed = T, 0
            if self.stop is not None:
                if k0 is None:
                    k0 = self.call(t0, y0)
                if bool(self.stop(self.time(t0, y0).detach(), y0, k0)):
                    if not bool(t1 == T):
                        outs.append(y0)
                    break

        if fixed and outcome is Outcome.SUCCESSFUL and not bool(torch.isfinite(outs[-1]).all()):
            bad = next(i for i, y in enumerate(outs) if not bool(torch.isfinite(y).all()))
            outcome = Outcome.NONFINITE
            message = f"f produced NaN/Inf: the state at output time t={ts[bad]:.10g} (index {bad}) is not finite"
        return self.finish(outs, E_list, S_list, h_list, n_acc, n_rej, float(t0), outcome, message)

    def max_steps_failure(self, t0, n_acc: int, n_rej: int) -> tuple[Outcome, str]:
        return Outcome.MAX_STEPS_REACHED, (f"reached max_steps={self.max_steps} at t={t0:.10g} before "
                                           f"t={self.ts[-1]:.10g} ({n_acc} accepted, {n_rej} rejected steps)")

    def step_underflows(self, h, t0) -> bool:
        """The step no longer advances t in float precision."""
        return bool(h == 0.0) or bool(t0 + h == t0) or bool(abs(h) < self.eps * abs(t0))

    def underflow_failure(self, h, t0, attempts: int, n_nonfinite: int, t_nonfinite) -> tuple[Outcome, str]:
        if n_nonfinite:  # the controller crept up to where f breaks: name the cause
            return Outcome.NONFINITE, (f"f produced NaN/Inf in {n_nonfinite} attempted steps, the last from "
                                       f"t={t_nonfinite:.10g}; the step size shrank to h={h:.3g} at t={t0:.10g} "
                                       f"without getting past it (step {attempts})")
        return Outcome.DT_UNDERFLOW, f"step size h={h:.3g} underflowed at t={t0:.17g} (step {attempts})"

    def limit(self, h):
        """|h| at most the controller's maximum step (None: no bound)."""
        if self.hmax is None:
            return h
        return h.clamp(-self.hmax, self.hmax) if isinstance(h, Tensor) else min(self.hmax, max(-self.hmax, h))

    @torch.no_grad()
    def initial_step(self, t0: float, y0: Tensor, k0: Tensor) -> float:
        """Hairer, Nørsett & Wanner, Solving ODEs I, II.4, in torchdiffeq 0.2.5's variant (one f eval)."""
        rms = lambda x: float(torch.linalg.vector_norm(x)) * self.inv_sqrt_n  # noqa: E731
        scale = y0.abs() * self.rtol + self.atol
        d0, d1 = rms(y0 / scale), rms(k0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        k1 = self.call(t0 + self.sign * h0, y0 + (self.sign * h0) * k0)
        d2 = rms((k1 - k0) / scale) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / self.tab.error_order)
        return min(100 * h0, h1)

    def initial_step_tracked(self, t0: Tensor, y0: Tensor, k0: Tensor) -> Tensor:
        """:meth:`initial_step` with its result in the graph (a function of y0 and of f's parameters);
        its branches are taken on values, as there."""
        rms = lambda x: torch.linalg.vector_norm(x).double() * self.inv_sqrt_n  # noqa: E731
        scale = y0.abs() * self.rtol + self.atol
        d0, d1 = rms(y0 / scale), rms(k0 / scale)
        if float(d0.detach()) < 1e-5 or float(d1.detach()) < 1e-5:
            h0 = torch.tensor(1e-6, dtype=torch.float64, device=y0.device)
        else:
            h0 = 0.01 * d0 / d1
        k1 = self.call(t0 + self.sign * h0, y0 + (self.sign * h0).to(y0.dtype) * k0)
        d2 = rms((k1 - k0) / scale) / h0
        dmax = torch.maximum(d1, d2)
        if float(dmax.detach()) <= 1e-15:
            h1 = torch.clamp(h0 * 1e-3, min=1e-6)
        else:
            h1 = (0.01 / dmax) ** (1.0 / self.tab.error_order)
        return torch.minimum(100 * h0, h1)

    def finish(self, outs, E_list, S_list, h_list, n_acc, n_rej, t_final, outcome, message) -> ODESolution:
        y0 = self.y0
        if len(outs) < len(self.ts):  # failed early (or stopped, which appended its state already)
            outs = outs + [torch.full_like(y0, math.nan)] * (len(self.ts) - len(outs))
        ys = torch.stack(outs)
        if self.stop is not None and outcome.ok:
            ts = torch.tensor([self.ts[0], t_final], dtype=y0.dtype, device=y0.device)
        else:
            ts = self.t
        if self.track:
            h_graph = torch.stack(h_list).to(y0.dtype) if h_list else y0.new_zeros(0)
            steps = torch.tensor([float(x.detach()) for x in h_list], dtype=torch.float64, device=y0.device)
        else:
            steps = torch.tensor(h_list, dtype=torch.float64, device=y0.device)
            h_graph = None
        want_E = self.record and self.tab.b_error is not None
        want_S = self.record and self.tab.stiffness_stages is not None
        empty = y0.new_zeros(0)
        E = (torch.stack(E_list) if E_list else empty) if want_E else None
        S = (torch.stack(S_list) if S_list else empty) if want_S else None
        h = steps.to(y0.dtype) if h_graph is None else h_graph
        h_first = self.h_first
        if h_first is not None:
            h_first = abs(h_first).to(y0.dtype) if isinstance(h_first, Tensor) else \
                torch.tensor(abs(h_first), dtype=y0.dtype, device=y0.device)
        stats = ODEStats(
            nfe_forward=self.nfe,
            n_accepted=n_acc,
            n_rejected=n_rej,
            error_estimates=E,
            step_sizes=steps,
            stiffness_estimates=S,
            reg_error=None if E is None else (E * h).sum(),
            reg_stiffness=None if S is None else (S * h).sum(),
            t_final=t_final,
            outcome=outcome,
            message=message,
            step_sizes_in_graph=h_graph,
            initial_step=h_first,
            backward_counter=self.counter,
        )
        if not outcome.ok and self.throw:
            raise SolverError(message, outcome, stats)
        return ODESolution(ys=ys, ts=ts, stats=stats)
