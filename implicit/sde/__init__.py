"""Neural SDEs whose adaptive solver records its own error and stiffness estimates (RegNSDE)."""

from implicit.sde._layer import NeuralSDE
from implicit.sde._schemes import (
    SRK,
    EulerHeun,
    EulerMaruyama,
    Milstein,
    SDEScheme,
    StratonovichHeun,
    StratonovichMidpoint,
)
from implicit.sde._sri import SOSRI, SOSRI2, SRIW1, SRIScheme
from implicit.sde._stats import SDEStats
from implicit.sde._stepping import Embedded, FixedSteps, SDEStepping, StepDoubling

__all__ = [
    "NeuralSDE",
    "SDEStats",
    "SDEScheme",
    "EulerMaruyama",
    "Milstein",
    "SRK",
    "StratonovichHeun",
    "StratonovichMidpoint",
    "EulerHeun",
    "SRIScheme",
    "SRIW1",
    "SOSRI",
    "SOSRI2",
    "SDEStepping",
    "StepDoubling",
    "FixedSteps",
    "Embedded",
]
