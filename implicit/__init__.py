"""implicit: implicit-layer deep learning in PyTorch.

This file is the public API; internals live in private modules named after what they hold
(one solver family per file, one layer per file).
"""

from implicit._outcome import Outcome, SolverError

__all__ = ["Outcome", "SolverError"]

# --- neural ODEs (implicit/ode) ---
from implicit.ode import (  # noqa: E402
    RK4, Adjoint, Backprop, Bosh3, ButcherTableau, Dopri5, Euler, KineticRegularizer, NeuralODE,
    ODESolution, ODEStats, Steer, TaylorRegularizer, Tsit5, odeint, IController, PIController, VCAB3, VCABM3,
)

__all__ += [
    "RK4", "Adjoint", "Backprop", "Bosh3", "ButcherTableau", "Dopri5", "Euler", "KineticRegularizer",
    "NeuralODE", "ODESolution", "ODEStats", "Steer", "TaylorRegularizer", "Tsit5", "odeint", "IController",
    "PIController", "VCAB3", "VCABM3",
]

# --- deep equilibrium models (implicit/deq) ---
from implicit.deq import (  # noqa: E402
    DEQ, GMRES, Anderson, BackwardRecord, Broyden, DEQStats, FixedPoint, FixedPointBackward,
    ImplicitBackward, JacobianFreeBackward, JacobianRegularizer, NewtonKrylov, PhantomGradient,
    RootSolution, RootStats, SkipInit, SkipRegInit, SteadyState, Unrolled, ZeroInit,
)

__all__ += [
    "DEQ", "DEQStats", "BackwardRecord", "NewtonKrylov", "Broyden", "Anderson", "FixedPoint",
    "SteadyState", "RootSolution", "RootStats", "ImplicitBackward", "GMRES", "FixedPointBackward",
    "JacobianFreeBackward", "PhantomGradient", "Unrolled", "ZeroInit", "SkipInit", "SkipRegInit",
    "JacobianRegularizer",
]

# --- neural SDEs (implicit/sde) ---
from implicit.sde import (  # noqa: E402
    SRK,
    EulerHeun,
    EulerMaruyama,
    FixedSteps,
    Milstein,
    NeuralSDE,
    SDEScheme,
    SDEStats,
    SDEStepping,
    StepDoubling,
    StratonovichHeun,
    StratonovichMidpoint,
)

__all__ += [
    "NeuralSDE", "SDEStats", "SDEScheme", "EulerMaruyama", "Milstein", "SRK", "StratonovichHeun",
    "StratonovichMidpoint", "EulerHeun", "SDEStepping", "StepDoubling", "FixedSteps",
]

__version__ = "0.1.0"
