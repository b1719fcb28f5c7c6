"""The record every NeuralSDE solve returns (same field names as the ODE solvers' ODEStats)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from implicit._outcome import Outcome


class _BackwardCount:
    """Counts drift/diffusion vector-Jacobian products once the solve is finished.

    Hooks on the drift and diffusion outputs tick it during backward; it is armed only after
    the forward solve so that VJPs taken inside a step (Milstein's g g') are not counted.
    """

    __slots__ = ("armed", "count")

    def __init__(self) -> None:
        self.armed = False
        self.count = 0

    def tick(self, grad: torch.Tensor) -> None:
        if self.armed:
            self.count += 1


@dataclass(frozen=True, kw_only=True)
class SDEStats:
    """Statistics of one NeuralSDE solve.

    Per accepted step j: ``error_estimates`` E_j (differentiable; the step-doubling error
    scaled by rtol/atol, so E_j <= 1 means within tolerance), ``step_sizes`` h_j and
    ``stiffness_estimates`` S_j (differentiable; secant estimate of the drift's Lipschitz
    constant along the step, see NeuralSDE). ``reg_error`` R_E = sum_j E_j |h_j| and
    ``reg_stiffness`` R_S = sum_j S_j |h_j| are scalar tensors ready for a loss. All four are
    empty / zero when the stepping does not estimate errors (``FixedSteps(estimate_error=False)``).

    ``nfe_forward`` = ``nfe_drift`` + ``nfe_diffusion`` evaluations made by the solve (including
    the full steps of step doubling and rejected attempts); ``nfe_backward`` counts
    vector-Jacobian products through the drift and diffusion and grows when backward runs.
    """

    nfe_forward: int
    nfe_drift: int
    nfe_diffusion: int
    n_accepted: int
    n_rejected: int
    # accepted only because the step size had reached dt_min (torchsde's rule); their E_j > 1
    n_forced: int
    error_estimates: torch.Tensor
    step_sizes: torch.Tensor
    stiffness_estimates: torch.Tensor
    reg_error: torch.Tensor
    reg_stiffness: torch.Tensor
    t_final: float
    outcome: Outcome
    _backward: _BackwardCount = field(default_factory=_BackwardCount, repr=False, compare=False)

    @property
    def nfe_backward(self) -> int:
        return self._backward.count
