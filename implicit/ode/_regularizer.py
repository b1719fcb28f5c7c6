"""Baseline regularizers for neural ODEs, integrated by augmenting the state, and STEER.

ERNODE/SRNODE need nothing here: their R_E and R_S come out of the solver's own loop (see
``_integrate.py``). The baselines below add per-sample channels to the ODE state whose time
derivative is the integrand; the layer reads the integrals at the end time and averages them over
the batch. The extra channels take part in the error control like any other state component.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, final

import torch
from torch import Tensor

from implicit.ode._checks import check_number


@dataclasses.dataclass(frozen=True, kw_only=True)
class AbstractRegularizer(abc.ABC):
    """An integral ∫ g(t, z) dt, computed alongside the state."""

    @property
    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """ODEStats fields that receive the integrals, one per extra channel."""

    @abc.abstractmethod
    def dynamics(self, f: Callable, t: Tensor, z: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Return ``(dz/dt, integrands)``, integrands of shape (batch, len(names))."""

    def needs_noise(self) -> bool:
        return False


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class TaylorRegularizer(AbstractRegularizer):
    """TayNODE (Kelly et al. 2020): ∫ ‖dᴷz/dtᴷ‖² dt, per sample, averaged over the batch.

    dᴷz/dtᴷ is the (K−1)-th total derivative of f along the flow, (∂_t + f·∇_z)^(K−1) f, from nested
    forward-mode derivatives (``torch.func.jvp``); the cost grows roughly 3× per order, so K ≤ 4.
    f must be differentiable in t as a tensor (no ``float(t)`` inside f).
    """

    order: int = 2

    def __post_init__(self):
        if isinstance(self.order, bool) or not isinstance(self.order, int) or not 2 <= self.order <= 4:
            raise ValueError(f"order must be an int in 2..4 (K=1 is the kinetic energy: KineticRegularizer), got {self.order!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return ("reg_taylor",)

    def dynamics(self, f, t, z, noise):
        dz = f(t, z)
        g = f
        for _ in range(self.order - 1):
            g = _total_derivative(g, f)
        dk = g(t, z)
        return dz, dk.pow(2).flatten(1).sum(1, keepdim=True)


def _total_derivative(g: Callable, f: Callable) -> Callable:
    """(t, z) ↦ d/dt g(t, z(t)) along dz/dt = f(t, z)."""

    def dg(t, z):
        return torch.func.jvp(g, (t, z), (torch.ones_like(t), f(t, z)))[1]

    return dg


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class KineticRegularizer(AbstractRegularizer):
    """RNODE (Finlay et al. 2020): ∫ ‖f‖² dt and ∫ ‖∂f/∂z‖²_F dt, per sample, batch-averaged.

    The Frobenius norm uses Hutchinson's estimator ‖J ε‖² with one Gaussian ε per solve (fixed
    over the time interval, as in RNODE), computed by forward mode together with f itself.
    """

    @property
    def names(self) -> tuple[str, ...]:
        return ("reg_kinetic", "reg_jacobian")

    def needs_noise(self) -> bool:
        return True

    def dynamics(self, f, t, z, noise):
        dz, jv = torch.func.jvp(lambda zz: f(t, zz), (z,), (noise,))
        return dz, torch.stack([dz.pow(2).flatten(1).sum(1), jv.pow(2).flatten(1).sum(1)], 1)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class Steer:
    """STEER (Ghosh et al. 2020): in training, the end time is drawn from U(t1 − b, t1 + b).

    ``b`` must be smaller than the last interval of ``t`` (so times stay strictly monotone);
    evaluation uses t1 itself.
    """

    b: float = 0.5

    def __post_init__(self):
        check_number("b", self.b)
