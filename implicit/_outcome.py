"""How a solve ended, and what a user can do about it.

Every solver in the library returns one of these in its statistics record instead of
raising from deep inside its loop. Layers take ``throw=``: when true, a non-successful
outcome is raised as :class:`SolverError`, whose message carries the advice.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    SUCCESSFUL = "successful"
    MAX_STEPS_REACHED = "max_steps_reached"
    DT_UNDERFLOW = "dt_underflow"
    NONFINITE = "nonfinite"
    NOT_CONVERGED = "not_converged"
    DIVERGED = "diverged"

    @property
    def ok(self) -> bool:
        return self is Outcome.SUCCESSFUL

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    Outcome.SUCCESSFUL: "",
    Outcome.MAX_STEPS_REACHED: (
        "the solver used all its steps/iterations before finishing; raise max_steps (max_iter), "
        "loosen rtol/atol (tol), or regularize the dynamics (ERNODE/SRNODE, Jacobian regularization)"
    ),
    Outcome.DT_UNDERFLOW: (
        "the adaptive step size fell below what float precision can resolve; the dynamics are "
        "probably stiff or blowing up: loosen rtol/atol, use float64, or regularize the dynamics"
    ),
    Outcome.NONFINITE: (
        "the function produced NaN or Inf; check the inputs and initialisation, lower the "
        "learning rate, or clip gradients"
    ),
    Outcome.NOT_CONVERGED: (
        "the root solve did not reach its tolerance; raise max_iter, start from a Skip "
        "initializer (init=SkipInit(g) or SkipRegInit()), or add Jacobian regularization"
    ),
    Outcome.DIVERGED: (
        "the iterates ran away instead of approaching a fixed point (f may have none, or the "
        "solver is unstable on it); check that f is contractive near the answer, start from a "
        "Skip initializer, use NewtonKrylov, or add Jacobian regularization"
    ),
}


class SolverError(RuntimeError):
    """Raised by a layer with ``throw=True`` when its solve did not succeed.

    ``outcome`` and ``stats`` are kept so a caller can inspect what happened.
    """

    def __init__(self, message: str, outcome: Outcome, stats: object = None):
        super().__init__(f"{message} ({outcome.value}): {outcome.advice}" if outcome.advice else message)
        self.outcome = outcome
        self.stats = stats
