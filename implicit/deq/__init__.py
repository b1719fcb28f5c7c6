"""Deep equilibrium models: root solvers, implicit backward strategies, Skip initializers, the DEQ layer."""

from implicit.deq._anderson import Anderson
from implicit.deq._backward import (
    AdjointSolver,
    Backward,
    BackwardRecord,
    FixedPointBackward,
    GMRES,
    ImplicitBackward,
    JacobianFreeBackward,
    PhantomGradient,
    Unrolled,
)
from implicit.deq._broyden import Broyden
from implicit.deq._fixed_point import FixedPoint
from implicit.deq._gmres import KrylovStats, gmres
from implicit.deq._init import Initializer, SkipInit, SkipRegInit, ZeroInit
from implicit.deq._jacobian import JacobianRegularizer
from implicit.deq._layer import DEQ, DEQStats
from implicit.deq._newton_krylov import NewtonKrylov
from implicit.deq._root import RootSolution, RootSolver, RootStats
from implicit.deq._steady_state import SteadyState

__all__ = [
    "AdjointSolver",
    "Anderson",
    "Backward",
    "BackwardRecord",
    "Broyden",
    "DEQ",
    "DEQStats",
    "FixedPoint",
    "FixedPointBackward",
    "GMRES",
    "ImplicitBackward",
    "Initializer",
    "JacobianFreeBackward",
    "JacobianRegularizer",
    "KrylovStats",
    "NewtonKrylov",
    "PhantomGradient",
    "RootSolution",
    "RootSolver",
    "RootStats",
    "SkipInit",
    "SkipRegInit",
    "SteadyState",
    "Unrolled",
    "ZeroInit",
    "gmres",
]
