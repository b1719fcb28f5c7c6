"""Neural ODEs whose adaptive solvers record their own error and stiffness estimates.

``odeint(f, y0, t, solver=Tsit5(), rtol=..., atol=...)`` integrates a batch ``y0`` of shape
(batch, ...) and lands exactly on every output time. Its ``ODEStats`` keep, per accepted step j,
the controller's error ratio E_j, the step size h_j and Shampine's stiffness estimate S_j, plus
R_E = Σ E_j·|h_j| (ERNODE) and R_S = Σ S_j·|h_j| (SRNODE; Pal et al., ICML 2021).

Design decisions a user should know:

- **Step-size path detached by default.** h_j, accept/reject decisions and the step sequence carry
  no gradient; gradients (of the solution, R_E, R_S) are exact for the discrete solve with its steps
  held fixed. ``Backprop(step_path="tracked")`` differentiates the controller too (the gradient of
  the adaptive solve while its accept/reject sequence is unchanged); ``"initial"`` follows only the
  initial step, as OrdinaryDiffEq under Tracker does.
- **Reductions.** ``stats.regularizer("error" | "stiffness", reduction="sum" | "mean" | "max")``
  gives R over the accepted steps of X_j·|h_j| from one solve; ``reg_error``/``reg_stiffness`` are
  the sums.
- **Batch aggregation.** The batch is one ODE system: E_j is the RMS over all elements (batch
  included) of err / (atol + rtol·max(|y0|, |y1|)), as torchdiffeq's default norm, so one step
  sequence serves the batch and R_E, R_S are scalars for the whole batch.
- **Stiffness estimate.** S_j = ‖k_p − k_q‖ / ‖Y_p − Y_q‖ over two stages at the same time (the last
  two of Tsit5/Dopri5, the two midpoints of RK4); Bosh3 has no such pair and uses the secant over
  the step (stages at c = 0 and 1), which also picks up ∂f/∂t; Euler has none (None in the stats).
  The denominator is floored at rounding level so 0/0 stays finite and gradients flow.
- **Controller.** ``IController()`` (default) is torchdiffeq 0.2.5's rules (RMS norm, safety 0.9, growth ≤ 10, shrink ≥ 0.2 after a
  rejection, exponent 1/order, Hairer's initial step), so Dopri5/Bosh3 take the very same steps as
  ``torchdiffeq.odeint(..., options=dict(step_t=t))``; ``PIController()`` is OrdinaryDiffEq's PI
  controller with its Tsit5 defaults.
- **Tolerances.** The controller is the one place that can hold everything about step-size
  control, tolerances included, as diffrax's ``PIController(rtol, atol)``:
  ``odeint(f, y0, t, controller=PIController(rtol=1e-6, atol=1e-8))`` takes the very steps of
  ``odeint(f, y0, t, rtol=1e-6, atol=1e-8, controller=PIController())``. The ``rtol``/``atol``
  arguments of ``odeint`` and ``NeuralODE`` stay; one may repeat the controller's value, a different
  one is a ValueError, and 1e-3, 1e-6 fill in what neither gives. ``NeuralODE(gradient=Adjoint())``
  runs torchdiffeq's controller and takes them from ``rtol``/``atol`` only.
- **Adjoint.** ``NeuralODE(gradient=Adjoint())`` runs torchdiffeq's ``odeint_adjoint``: the per-step
  records and R_E, R_S are then None and regularizers are refused.
"""

from implicit.ode._adams import VCAB3, VCABM3, AbstractAdamsSolver
from implicit.ode._controller import AbstractController, IController, PIController
from implicit.ode._integrate import REDUCTIONS, STEP_PATHS, ODESolution, ODEStats, odeint
from implicit.ode._layer import AbstractGradient, Adjoint, Backprop, NeuralODE
from implicit.ode._regularizer import AbstractRegularizer, KineticRegularizer, Steer, TaylorRegularizer
from implicit.ode._solver import (
    RK4,
    AbstractAdaptiveSolver,
    AbstractFixedSolver,
    AbstractSolver,
    Bosh3,
    Dopri5,
    Euler,
    Tsit5,
)
from implicit.ode._tableau import ButcherTableau

__all__ = [
    "odeint", "ODESolution", "ODEStats", "NeuralODE", "AbstractGradient", "Backprop", "Adjoint",
    "AbstractRegularizer", "TaylorRegularizer", "KineticRegularizer", "Steer", "AbstractSolver",
    "AbstractAdaptiveSolver", "AbstractFixedSolver", "Tsit5", "Dopri5", "Bosh3", "Euler", "RK4",
    "ButcherTableau", "VCAB3", "VCABM3", "AbstractAdamsSolver", "AbstractController", "IController", "PIController", "REDUCTIONS", "STEP_PATHS",
]
