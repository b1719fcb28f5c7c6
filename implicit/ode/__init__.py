"""Neural ODEs whose adaptive solvers record their own error and stiffness estimates."""

from implicit.ode._integrate import ODESolution, ODEStats, odeint
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
    "ButcherTableau",
]
