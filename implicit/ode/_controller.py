"""Step-size controllers: how the next step size follows from the error ratio E of the last attempt.

A controller is a small frozen object. The integrator calls ``propose(h, E, accepted, state)``
after every attempted step and gets ``(h_next, state)``; ``state`` is whatever the controller
remembers between steps (the PI controller's previous accepted error). ``h`` and ``E`` arrive as
Python floats when the step-size path is detached, or as float64 0-dim tensors in the autograd
graph when it is tracked (``Backprop(step_path="tracked")``): the same formula serves both, so
its clamps and branches hold in the graph too (a clamped factor has zero derivative, as the
formula says).

A controller may also hold the solve's tolerances, ``rtol`` and ``atol`` (None: not held), as
diffrax's ``PIController(rtol, atol)`` does, so that one object says everything about step-size
control; a solve then reads them from it (see :func:`resolve_tolerances`).

* :class:`IController` — torchdiffeq 0.2.5's integral controller (the library's default).
* :class:`PIController` — OrdinaryDiffEq's PI controller (Hairer & Wanner's, with Gustafsson's
  steady-region hold), the default that OrdinaryDiffEq gives Tsit5; its defaults are those.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, final

from torch import Tensor

from implicit.ode._checks import check_number, check_real

Scalar = float | Tensor


def _pow(x: Scalar, p: float) -> Scalar:
    return x.pow(p) if isinstance(x, Tensor) else x ** p


def _clip(x: Scalar, lo: float, hi: float) -> Scalar:
    return x.clamp(lo, hi) if isinstance(x, Tensor) else min(hi, max(x, lo))


def _value(x: Scalar) -> float:
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def _tolerance(name: str, value) -> float | None:
    return None if value is None else check_number(name, value, allow_zero=True)


def check_tolerances(rtol, atol) -> tuple[float | None, float | None]:
    """rtol/atol as every solve accepts them: finite, >= 0, not both 0. None (not given) passes."""
    rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0")
    return rtol, atol


def resolve_tolerances(rtol, atol, controller, defaults: tuple[float, float]) -> tuple[float, float]:
    """The checked tolerances of a solve from its ``rtol``/``atol`` arguments (None: not given) and
    its controller.

    A tolerance the controller holds is the solve's; an argument may repeat it but not contradict
    it, since silently preferring either would hide which one the user meant. What neither gives
    comes from ``defaults``.
    """
    given = (_tolerance("rtol", rtol), _tolerance("atol", atol))
    out = []
    for name, arg, default in zip(("rtol", "atol"), given, defaults):
        held = getattr(controller, name, None) if isinstance(controller, AbstractController) else None
        if held is not None and arg is not None and float(held) != arg:
            raise ValueError(f"controller.{name}={held!r} conflicts with {name}={arg!r}; give {name} in one place "
                             "(the controller or the argument)")
        out.append(held if held is not None else arg if arg is not None else default)
    return check_tolerances(*out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractController(abc.ABC):
    """Maps (attempted step h, its error ratio E, accepted?, memory) to the next step size.

    ``rtol``/``atol``, when not None, are the tolerances of every solve given this controller: the
    error ratio E that ``propose`` receives is measured against them. They do not enter
    ``propose`` itself, so a controller holding them steps exactly as one given them by argument.
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        check_tolerances(self.rtol, self.atol)

    @abc.abstractmethod
    def init_state(self) -> Any:
        """The memory before the first step."""

    @abc.abstractmethod
    def max_step(self, span: float) -> float | None:
        """The largest |h| this controller proposes in a solve over an interval of length ``span``."""

    @property
    @abc.abstractmethod
    def nonfinite_factor(self) -> float:
        """Shrink factor of a step whose error estimate was NaN/Inf."""

    @abc.abstractmethod
    def propose(self, h: Scalar, error_ratio: Scalar, accepted: bool, state: Any, order: int) -> tuple[Scalar, Any]:
        """Next step size after an attempt of size ``h`` (signed) with error ratio ``E``; ``order`` is
        the method's controller order (``tableau.error_order``)."""


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class IController(AbstractController):
    """``h_next = h·clip(safety·E^(−1/order), lower, ifactor)``, lower = 1 after an accepted step
    (never shrink) and ``dfactor`` after a rejection; ``E = 0`` gives ``ifactor``.

    torchdiffeq 0.2.5's ``_optimal_step_size`` rules, so Dopri5/Bosh3 take the very steps of
    ``torchdiffeq.odeint``. The default controller of every adaptive solve.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        check_real("safety", self.safety, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        check_real("ifactor", self.ifactor, lambda v: v > 1.0, "> 1")
        check_real("dfactor", self.dfactor, lambda v: 0.0 < v < 1.0, "in (0, 1)")

    def init_state(self) -> None:
        return None

    def max_step(self, span: float) -> None:
        return None  # torchdiffeq has no maximum step

    @property
    def nonfinite_factor(self) -> float:
        return self.dfactor

    def propose(self, h, error_ratio, accepted, state, order):
        r = _value(error_ratio)
        if r == 0.0:
            return h * self.ifactor, state
        lower = 1.0 if r < 1.0 else self.dfactor
        if isinstance(error_ratio, Tensor):
            return h * _clip(self.safety / error_ratio.pow(1.0 / order), lower, self.ifactor), state
        # the detached path keeps torchdiffeq's exact float expression (bit-for-bit step sequences)
        return h * min(self.ifactor, max(self.safety / r ** (1.0 / order), lower)), state


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class PIController(AbstractController):
    """OrdinaryDiffEq's PI step-size controller (``PIController`` in its ``integrator_utils``).

    After every attempt ``q11 = E^beta1``, ``q = clip(q11 / qold^beta2 / gamma, 1/qmax, 1/qmin)``.
    Accepted: ``q = 1`` when ``qsteady_min ≤ q ≤ qsteady_max``, ``h_next = h / q`` and
    ``qold = max(E, qoldinit)``. Rejected: ``h_next = h / min(1/qmin, q11/gamma)``, qold kept.

    Defaults are OrdinaryDiffEq's for Tsit5 (algorithm order 5): ``beta1 = 7/(10·5) = 7/50``,
    ``beta2 = 2/(5·5) = 2/25``, ``gamma = 9/10``, ``qmin = 1/5``, ``qmax = 10``,
    ``qsteady_min = qsteady_max = 1``, ``qoldinit = 1e-4``, and steps at most the whole time span
    (its default dtmax); E = 0 grows the step by qmax, as there. Sources: OrdinaryDiffEq.jl v5.50.0
    (tag commit e6c0a9f9), ``src/alg_utils.jl`` (beta1_default, beta2_default, alg_order(Tsit5) = 5),
    ``src/solve.jl`` (gamma, qmin, qmax, qsteady, qoldinit, dtmax) and
    ``src/integrators/controllers.jl`` (the formulas). The order enters through beta1/beta2 only, so
    ``order`` is not used.
    """

    beta1: float = 7 / 50
    beta2: float = 2 / 25
    gamma: float = 0.9
    qmin: float = 0.2
    qmax: float = 10.0
    qsteady_min: float = 1.0
    qsteady_max: float = 1.0
    qoldinit: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        check_real("beta1", self.beta1, lambda v: v > 0, "> 0")
        check_real("beta2", self.beta2, lambda v: v >= 0, ">= 0")
        check_real("gamma", self.gamma, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        check_real("qmin", self.qmin, lambda v: 0.0 < v < 1.0, "in (0, 1)")
        check_real("qmax", self.qmax, lambda v: v > 1.0, "> 1")
        check_real("qsteady_min", self.qsteady_min, lambda v: v > 0, "> 0")
        check_real("qsteady_max", self.qsteady_max, lambda v: v >= self.qsteady_min, f">= qsteady_min={self.qsteady_min}")
        check_real("qoldinit", self.qoldinit, lambda v: v > 0, "> 0")

    def init_state(self) -> float:
        return self.qoldinit

    def max_step(self, span: float) -> float:
        return span  # OrdinaryDiffEq's default dtmax: the whole time span

    @property
    def nonfinite_factor(self) -> float:
        return self.qmin  # OrdinaryDiffEq's shrink for a step out of the domain (isoutofdomain)

    def propose(self, h, error_ratio, accepted, state, order):
        qold = state
        if _value(error_ratio) == 0.0:  # E^beta1 has no finite derivative at 0: grow by qmax, as the clamp would
            return h * self.qmax, (self.qoldinit if accepted else qold)
        q11 = _pow(error_ratio, self.beta1)
        if not accepted:
            return h / _clip(q11 / self.gamma, -math.inf, 1.0 / self.qmin), qold
        q = _clip(q11 / _pow(qold, self.beta2) / self.gamma, 1.0 / self.qmax, 1.0 / self.qmin)
        if self.qsteady_min <= _value(q) <= self.qsteady_max:
            q = 1.0
        if isinstance(error_ratio, Tensor):
            qold_next = error_ratio.clamp(min=self.qoldinit)
        else:
            qold_next = max(error_ratio, self.qoldinit)
        return h / q, qold_next
