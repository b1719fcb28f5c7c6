"""Step-size strategies for the SDE loop, and the step-doubling controller's arithmetic.

The adaptive controller reproduces torchsde 0.2.6 (``_core/adaptive_stepping.py`` and the
loop in ``_core/base_solver.py``) number for number, so that with the regularizer off a solve
equals ``torchsde.sdeint(..., adaptive=True)`` on the same Brownian path. What we add is that
the error estimate stays a tensor in the autograd graph. tests/test_sde_torchsde_pins.py
checks both functions below against torchsde's own.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch

# torchsde's controller constants (update_step_size defaults and compute_error's eps).
_SAFETY = 0.9
_FACMIN = 0.2
_FACMAX = 1.4
_EPS = 1e-7


class SDEStepping(abc.ABC):
    """How the loop chooses its steps."""

    @property
    @abc.abstractmethod
    def estimates_error(self) -> bool:
        """Whether each step is doubled (one full step vs two half steps) to estimate its error."""


def _check_positive(owner: str, name: str, value, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}({name}=...) must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}({name}=...) must be finite and {expected}, got {value}")


@dataclass(frozen=True, kw_only=True)
class StepDoubling(SDEStepping):
    """Adaptive steps by step doubling, with torchsde's controller.

    Each attempt takes one step of size h and two of size h/2 from the same Brownian path; the
    scaled RMS difference is the error estimate E. The step is accepted when E <= 1 (or when h
    has hit ``dt_min``, which torchsde also accepts) and continues from the two-half-step
    solution. ``dt0`` is the first step size tried.
    """

    dt0: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-4
    dt_min: float = 1e-5

    def __post_init__(self):
        _check_positive("StepDoubling", "dt0", self.dt0)
        _check_positive("StepDoubling", "rtol", self.rtol, allow_zero=True)
        _check_positive("StepDoubling", "atol", self.atol, allow_zero=True)
        _check_positive("StepDoubling", "dt_min", self.dt_min)
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("StepDoubling(rtol=0, atol=0): at least one tolerance must be > 0")
        if self.dt_min > self.dt0:
            raise ValueError(f"StepDoubling(dt_min=...) must be <= dt0={self.dt0}, got {self.dt_min}")

    @property
    def estimates_error(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class FixedSteps(SDEStepping):
    """Steps of constant size ``dt`` (the last one shortened to land on the final time).

    With ``estimate_error=True`` each step is doubled exactly as in :class:`StepDoubling` (same
    E_j, continuing from the two-half-step solution) but never rejected or resized: the step
    sequence does not depend on the parameters, so R_E is a smooth function of them (this is
    what gradcheck needs). With ``False`` it is plain fixed stepping, equal to
    ``torchsde.sdeint(..., adaptive=False)``, and no error or stiffness is recorded.
    """

    dt: float
    estimate_error: bool = True
    # rtol/atol only scale the recorded error estimate; they never change a step.
    rtol: float = 1e-5
    atol: float = 1e-4

    def __post_init__(self):
        _check_positive("FixedSteps", "dt", self.dt)
        _check_positive("FixedSteps", "rtol", self.rtol, allow_zero=True)
        _check_positive("FixedSteps", "atol", self.atol, allow_zero=True)
        if not isinstance(self.estimate_error, bool):
            raise TypeError(f"FixedSteps(estimate_error=...) must be a bool, got {type(self.estimate_error).__name__}")
        if self.estimate_error and self.rtol == 0 and self.atol == 0:
            raise ValueError("FixedSteps(rtol=0, atol=0): at least one tolerance must be > 0 to scale the error")

    @property
    def estimates_error(self) -> bool:
        return self.estimate_error


def error_ratio(y_full: torch.Tensor, y_half: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """Scaled RMS difference between the full step and the two half steps, as a 0-d tensor.

    Same arithmetic as torchsde's ``compute_error`` but kept in the autograd graph.
    """
    scale = (rtol * torch.maximum(y_full.abs(), y_half.abs()) + atol).clamp_min(_EPS)
    scaled = (y_full - y_half) / scale
    return torch.sqrt((scaled**2.0).sum() / scaled.numel()).clamp_min(_EPS)


def propose_step(error: float, step_size: float, prev_error_ratio: float | None) -> tuple[float, float | None]:
    """Next step size from the error of the attempt just made (torchsde's PI rule).

    Returns the new step size and the error ratio to remember for the next proposal.
    """
    if error > 1:
        pfactor, ifactor = 0.0, 1 / 1.5
    else:
        pfactor, ifactor = 0.13, 1 / 4.5
    ratio = _SAFETY / error
    if prev_error_ratio is None:
        prev_error_ratio = ratio
    factor = ratio**ifactor * (ratio / prev_error_ratio) ** pfactor
    facmin = _FACMIN
    if error <= 1:
        # an accepted step never shrinks the next one
        prev_error_ratio = ratio
        facmin = 1.0
    factor = min(_FACMAX, max(facmin, factor))
    return step_size * factor, prev_error_ratio


STEP_PATHS = ("detached", "initial")


@dataclass(frozen=True, kw_only=True)
class Embedded(SDEStepping):
    """Adaptive steps from an SRI scheme's natural embedded error estimate (SRIW1, SOSRI, SOSRI2).

    One attempt is one SRI step: its error E (the embedding's δ·E_drift + E_noise, scaled by
    rtol/atol, RMS over the batch) decides acceptance (E <= 1) and feeds StochasticDiffEq's PI
    controller (v6.30.1, tag commit a1e6d374: ``src/alg_utils.jl`` and ``src/solve.jl`` defaults for
    an order-3/2 method: beta1 7/15, beta2 4/15, gamma 0.9, qmin 0.2, qmax 9/8, qoldinit 1e-4).
    The step never exceeds the solve's span. ``dt0=None`` starts from StochasticDiffEq's
    initial-step heuristic (``src/initdt.jl``); the rtol/atol defaults are its own (1e-2).

    ``step_path``: ``"detached"`` holds the step sequence fixed in the gradient; ``"initial"``
    puts the initial step (from the heuristic, a function of y0 and the parameters) in the graph,
    as StochasticDiffEq under Tracker does: a rejected attempt shrinks it by a detached factor,
    the step proposed after an accepted one is detached, and the last step's clip to the final
    time carries the initial step's dependence. Brownian increments are data in both modes.
    """

    rtol: float = 1e-2
    atol: float = 1e-2
    dt0: float | None = None
    step_path: str = "detached"

    def __post_init__(self):
        _check_positive("Embedded", "rtol", self.rtol, allow_zero=True)
        _check_positive("Embedded", "atol", self.atol, allow_zero=True)
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("Embedded(rtol=0, atol=0): at least one tolerance must be > 0")
        if self.dt0 is not None:
            _check_positive("Embedded", "dt0", self.dt0)
        if self.step_path not in STEP_PATHS:
            raise ValueError(f"Embedded(step_path=...) must be one of {STEP_PATHS}, got {self.step_path!r}")
        if self.step_path == "initial" and self.dt0 is not None:
            raise ValueError("Embedded(step_path='initial') differentiates the initial-step heuristic; "
                             f"it cannot be combined with a given dt0={self.dt0}")

    @property
    def estimates_error(self) -> bool:
        return True
