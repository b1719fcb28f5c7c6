"""SDE schemes: which torchsde step function to drive, for which SDE interpretation.

Each scheme is a frozen dataclass naming one of torchsde's one-step methods for diagonal
noise. The layer builds the torchsde solver object per solve and calls only its ``step``;
the stepping loop (step doubling, step-size control, statistics) is ours, in ``_solve.py``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from torchsde._core import methods as _tsde_methods  # private: pinned by tests/test_sde_torchsde_pins.py

_ITO = "ito"
_STRATONOVICH = "stratonovich"


class SDEScheme(abc.ABC):
    """A one-step method for diagonal-noise SDEs, backed by a torchsde step function."""

    @property
    @abc.abstractmethod
    def sde_type(self) -> str:
        """'ito' or 'stratonovich': the interpretation of the noise this scheme integrates."""

    @property
    @abc.abstractmethod
    def strong_order(self) -> float:
        """Strong order of convergence for diagonal (non-additive) noise."""

    @property
    @abc.abstractmethod
    def levy_area_approximation(self) -> str:
        """What the Brownian motion must provide besides increments ('none' or 'space-time')."""

    @abc.abstractmethod
    def _torchsde_solver_class(self) -> type:
        """The torchsde solver class whose ``step`` this scheme drives."""

    @abc.abstractmethod
    def _torchsde_options(self) -> dict:
        """Options passed to the torchsde solver's constructor."""


@dataclass(frozen=True, kw_only=True)
class EulerMaruyama(SDEScheme):
    """Itô Euler–Maruyama: one drift and one diffusion evaluation per step, strong order 0.5."""

    @property
    def sde_type(self) -> str:
        return _ITO

    @property
    def strong_order(self) -> float:
        return 0.5

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.Euler

    def _torchsde_options(self) -> dict:
        return {}


@dataclass(frozen=True, kw_only=True)
class Milstein(SDEScheme):
    """Milstein, strong order 1.0, Itô or Stratonovich.

    With ``derivative_free=False`` the correction term g g' uses a vector-Jacobian product of
    the diffusion (autograd); with ``True`` it uses a finite-difference substitute (one extra
    diffusion evaluation, no autograd inside the step).
    """

    sde_type: Literal["ito", "stratonovich"] = _ITO
    derivative_free: bool = False

    def __post_init__(self):
        if self.sde_type not in (_ITO, _STRATONOVICH):
            raise ValueError(f"Milstein(sde_type=...) must be 'ito' or 'stratonovich', got {self.sde_type!r}")
        if not isinstance(self.derivative_free, bool):
            raise TypeError(f"Milstein(derivative_free=...) must be a bool, got {type(self.derivative_free).__name__}")

    @property
    def strong_order(self) -> float:
        return 1.0

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.MilsteinIto if self.sde_type == _ITO else _tsde_methods.MilsteinStratonovich

    def _torchsde_options(self) -> dict:
        return {"grad_free": self.derivative_free}


@dataclass(frozen=True, kw_only=True)
class SRK(SDEScheme):
    """Rößler's stochastic Runge–Kutta (SRI, tableau SRID2), Itô, strong order 1.5.

    Needs the space-time Lévy area from the Brownian motion. torchsde's step re-evaluates
    earlier stages, so one step costs 10 drift and 10 diffusion evaluations.
    """

    @property
    def sde_type(self) -> str:
        return _ITO

    @property
    def strong_order(self) -> float:
        return 1.5

    @property
    def levy_area_approximation(self) -> str:
        return "space-time"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.SRK

    def _torchsde_options(self) -> dict:
        return {}


@dataclass(frozen=True, kw_only=True)
class StratonovichHeun(SDEScheme):
    """Stratonovich Heun (predictor-corrector on drift and diffusion), strong order 1.0 for diagonal noise."""

    @property
    def sde_type(self) -> str:
        return _STRATONOVICH

    @property
    def strong_order(self) -> float:
        return 1.0

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.Heun

    def _torchsde_options(self) -> dict:
        return {}


@dataclass(frozen=True, kw_only=True)
class StratonovichMidpoint(SDEScheme):
    """Stratonovich midpoint, strong order 1.0 for diagonal noise."""

    @property
    def sde_type(self) -> str:
        return _STRATONOVICH

    @property
    def strong_order(self) -> float:
        return 1.0

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.Midpoint

    def _torchsde_options(self) -> dict:
        return {}


@dataclass(frozen=True, kw_only=True)
class EulerHeun(SDEScheme):
    """Stratonovich Euler–Heun (Euler drift, Heun diffusion), strong order 1.0 for diagonal noise."""

    @property
    def sde_type(self) -> str:
        return _STRATONOVICH

    @property
    def strong_order(self) -> float:
        return 1.0

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def _torchsde_solver_class(self) -> type:
        return _tsde_methods.EulerHeun

    def _torchsde_options(self) -> dict:
        return {}
