"""Argument checks shared by every public entry point of the ODE and SDE layers.

One helper per kind of argument, so that ``odeint``, ``NeuralODE`` on either gradient path, the
solver and controller strategies and ``NeuralSDE`` accept and refuse exactly the same values
with the same words.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import Tensor

# Half-precision states: the Backprop integrator keeps times in float64 and works, but an
# error estimate computed in the state's precision cannot resolve a tolerance below its eps.
HALF = (torch.float16, torch.bfloat16)


def check_real(name: str, value, ok: Callable[[float], bool], expected: str) -> float:
    """A finite real number (not a bool) for which ``ok`` holds; TypeError for a non-number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def check_number(name: str, value, *, positive: bool = True, allow_zero: bool = False) -> float:
    if not positive:
        return check_real(name, value, lambda v: True, "a finite number")
    if allow_zero:
        return check_real(name, value, lambda v: v >= 0, "a finite number >= 0")
    return check_real(name, value, lambda v: v > 0, "a finite number > 0")


def check_max_steps(max_steps) -> int:
    """0 steps cannot solve anything, so it is refused rather than reported as a failed solve."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    return max_steps


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def describe(x) -> str:
    if isinstance(x, Tensor):
        return f"Tensor {tuple(x.shape)} {x.dtype} on {x.device}"
    return type(x).__name__


def check_output(name: str, out, y: Tensor, what: str = "y's shape, dtype and device") -> Tensor:
    """A user function's value must be exactly like the state: a silent cast or broadcast in the
    solver would hide a model bug (e.g. a float64 layer in a float32 model)."""
    if not (isinstance(out, Tensor) and out.shape == y.shape and out.dtype == y.dtype and out.device == y.device):
        raise ValueError(
            f"{name} must return a tensor of {what}: expected {tuple(y.shape)} {y.dtype} on {y.device}, "
            f"got {describe(out)}"
        )
    return out


def check_half_tolerance(dtype: torch.dtype, rtol: float) -> None:
    if dtype in HALF and rtol < torch.finfo(dtype).eps:
        raise ValueError(
            f"rtol must be >= {torch.finfo(dtype).eps:g} (the eps of {dtype}) for a {dtype} state, "
            f"got {rtol!r}; its error estimate cannot resolve less: raise rtol or use float32"
        )
