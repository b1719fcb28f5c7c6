"""The record every NeuralSDE solve returns (same field names as the ODE solvers' ODEStats)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from implicit._counting import BackwardCounter
from implicit._outcome import Outcome
from implicit.ode._integrate import step_regularizer


@dataclass(frozen=True, kw_only=True)
class SDEStats:
    """Statistics of one NeuralSDE solve.

    Per accepted step j: ``error_estimates`` E_j (in the graph; the step-doubling error
    scaled by rtol/atol, so E_j <= 1 means within tolerance), ``step_sizes`` |h_j| (detached
    float64) and ``stiffness_estimates`` S_j (in the graph; secant estimate of the drift's
    Lipschitz constant along the step, see NeuralSDE). ``reg_error`` R_E = sum_j E_j |h_j| and
    ``reg_stiffness`` R_S = sum_j S_j |h_j| are scalar tensors ready for a loss. These four are
    None when the stepping does not estimate errors (``FixedSteps(estimate_error=False)``).

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
    error_estimates: torch.Tensor | None
    step_sizes: torch.Tensor
    stiffness_estimates: torch.Tensor | None
    reg_error: torch.Tensor | None
    reg_stiffness: torch.Tensor | None
    t_final: float
    outcome: Outcome
    message: str = ""
    # the first attempted step, as a 0-d tensor (in the graph with Embedded(step_path="initial"));
    # None for steppings without one chosen by the solver
    initial_step: torch.Tensor | None = None
    # |h_j| in y's dtype in the graph (Embedded(step_path="initial")), else None
    step_sizes_in_graph: torch.Tensor | None = None
    backward_counter: BackwardCounter = field(default_factory=BackwardCounter, repr=False, compare=False)

    def regularizer(self, name: str, reduction: str = "sum") -> torch.Tensor | None:
        """R over the accepted steps of X_j·|h_j|, X = E (``name="error"``) or S (``"stiffness"``).

        ``reduction``: ``"sum"`` (equals ``reg_error``/``reg_stiffness``), ``"mean"`` or ``"max"``;
        a solve without accepted steps gives 0. None when the estimate was not recorded.
        """
        return step_regularizer(self, name, reduction)

    @property
    def nfe_backward(self) -> int:
        """Drift/diffusion vector-Jacobian products made by backward passes so far (0 before)."""
        return self.backward_counter.value
