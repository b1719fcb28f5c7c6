"""Solver strategies: small frozen objects naming a Runge-Kutta method and its controller knobs.

Adaptive solvers (:class:`Tsit5`, :class:`Dopri5`, :class:`Bosh3`) pick their steps from
``rtol``/``atol`` given to :func:`~implicit.ode.odeint`; the knobs here are the controller's
(defaults are torchdiffeq 0.2.5's). Fixed-step solvers (:class:`Euler`, :class:`RK4`) take ``dt``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import final

from implicit.ode import _tableau
from implicit.ode._checks import check_number, check_real


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractSolver(abc.ABC):
    """An ODE method. A Runge-Kutta method is described by its tableau; a multistep method
    (:class:`~implicit.ode.VCAB3`, :class:`~implicit.ode.VCABM3`) names the tableau of its starting steps."""

    @property
    @abc.abstractmethod
    def tableau(self) -> _tableau.ButcherTableau: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractAdaptiveSolver(AbstractSolver):
    """Embedded pair with error control: ``h_new = h·clip(safety·E^(-1/order), dfactor, ifactor)``.

    The shrink bound ``dfactor`` applies only after a rejection (E > 1), as in torchdiffeq.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    def __post_init__(self):
        check_real("safety", self.safety, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        check_real("ifactor", self.ifactor, lambda v: v > 1.0, "> 1")
        check_real("dfactor", self.dfactor, lambda v: 0.0 < v < 1.0, "in (0, 1)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractFixedSolver(AbstractSolver):
    """Fixed step ``dt`` (may instead be given to ``odeint(dt=...)``, not both)."""

    dt: float | None = None

    def __post_init__(self):
        if self.dt is not None:
            check_number("dt", self.dt)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Tsit5(AbstractAdaptiveSolver):
    """Tsitouras 5(4), FSAL, propagating the 5th-order solution; stiffness from stages 6/7 (c = 1)."""

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        return _tableau.TSIT5


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Dopri5(AbstractAdaptiveSolver):
    """Dormand-Prince 5(4), FSAL; the same tableau and error estimate as torchdiffeq's dopri5."""

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        return _tableau.DOPRI5


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Bosh3(AbstractAdaptiveSolver):
    """Bogacki-Shampine 3(2), FSAL. Its stiffness estimate is the secant over the step (see tableau)."""

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        return _tableau.BOSH3


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Euler(AbstractFixedSolver):
    """Forward Euler, fixed step. No error or stiffness estimate."""

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        return _tableau.EULER


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RK4(AbstractFixedSolver):
    """Classical 4th-order Runge-Kutta, fixed step; stiffness from stages 2/3 (c = 1/2)."""

    @property
    def tableau(self) -> _tableau.ButcherTableau:
        return _tableau.RK4
