"""Butcher tableaus of explicit Runge-Kutta methods, as self-checking data.

A new explicit method is a new :class:`ButcherTableau`, not new stepping code: the integrator in
``_integrate.py`` reads everything it needs (stages, weights, error weights, FSAL property, which
stages give a stiffness estimate) from here.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

_TOL = 1e-12  # published coefficients are rounded to ~16 digits; conditions hold to a few ulp


def _f(*xs) -> tuple[float, ...]:
    return tuple(float(Fraction(x)) if isinstance(x, str) else float(x) for x in xs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method (float64 numbers).

    Stage ``i`` (0-based) is evaluated at ``t0 + c[i]·h`` on ``y0 + h·Σ_j a[i][j]·k_j``; ``a`` holds
    the strictly lower triangle, row ``i`` having ``i`` entries (row 0 is empty). The propagated
    solution is ``y0 + h·Σ b_i k_i``; ``b_error`` (None for methods without an embedded pair) gives the
    local error estimate ``h·Σ b_error_i k_i``. ``order`` is the order of the propagated solution;
    ``error_order`` is the exponent denominator the step-size controller uses (1/error_order).
    ``stiffness_stages`` names two stages ``(p, q)`` whose difference gives the stiffness estimate
    ``‖k_p − k_q‖ / ‖Y_p − Y_q‖`` (None: the method has no such pair).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    stiffness_stages: tuple[int, int] | None = None

    def __post_init__(self):
        s = len(self.c)
        if s < 1 or len(self.b) != s or len(self.a) != s:
            raise ValueError(f"tableau {self.name}: c, a and b must all have one entry per stage ({s})")
        if self.c[0] != 0.0:
            raise ValueError(f"tableau {self.name}: c[0] must be 0 for an explicit method, got {self.c[0]}")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(
                    f"tableau {self.name}: a must be strictly lower triangular; row {i} has {len(row)} "
                    f"entries, expected {i}"
                )
            if abs(math.fsum(row) - self.c[i]) > _TOL:
                raise ValueError(f"tableau {self.name}: row {i} of a sums to {math.fsum(row)}, c[{i}] = {self.c[i]}")
        if abs(math.fsum(self.b) - 1.0) > _TOL:
            raise ValueError(f"tableau {self.name}: weights b sum to {math.fsum(self.b)}, expected 1")
        if (self.b_error is None) != (self.error_order is None):
            raise ValueError(f"tableau {self.name}: give both b_error and error_order, or neither")
        if self.b_error is not None:
            if len(self.b_error) != s:
                raise ValueError(f"tableau {self.name}: b_error needs {s} entries, got {len(self.b_error)}")
            if abs(math.fsum(self.b_error)) > _TOL:
                raise ValueError(f"tableau {self.name}: error weights sum to {math.fsum(self.b_error)}, expected 0")
        if self.stiffness_stages is not None:
            p, q = self.stiffness_stages
            if not (0 <= p < s and 0 <= q < s and p != q):
                raise ValueError(f"tableau {self.name}: stiffness_stages {self.stiffness_stages} are not two stages")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is ``f(t0 + h, y1)``, so the next step reuses it."""
        return self.c[-1] == 1.0 and self.b[-1] == 0.0 and self.a[-1] == self.b[:-1]


# Tsitouras (2011), "Runge-Kutta pairs of order 5(4) satisfying only the first column simplifying
# assumption". The 5th-order solution is the one propagated (b equals the last row of a: FSAL).
TSIT5 = ButcherTableau(
    name="tsit5",
    c=_f(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        _f(0.161),
        _f(-0.008480655492356989, 0.335480655492357),
        _f(2.897153057105493, -6.359448489975075, 4.3622954328695815),
        _f(5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        _f(5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
        _f(0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774),
    ),
    b=_f(0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774, 0.0),
    # b − b̂ (5th minus embedded 4th order)
    b_error=_f(
        -0.00178001105222577714,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        "1/66",
    ),
    order=5,
    error_order=5,
    stiffness_stages=(5, 6),  # both at c = 1 (Shampine's estimate)
)

# Dormand & Prince (1980), 5(4), FSAL, propagating the 5th-order solution.
_DP_B = _f("35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0)
# Embedded 4th-order solution of Shampine (1986), "Some practical Runge-Kutta formulas"; the same
# estimator torchdiffeq's dopri5 uses, so step sequences can be compared one to one.
_DP_BHAT = _f("1951/21600", 0, "22642/50085", "451/720", "-12231/42400", "649/6300", "1/60")
DOPRI5 = ButcherTableau(
    name="dopri5",
    c=_f(0, "1/5", "3/10", "4/5", "8/9", 1, 1),
    a=(
        (),
        _f("1/5"),
        _f("3/40", "9/40"),
        _f("44/45", "-56/15", "32/9"),
        _f("19372/6561", "-25360/2187", "64448/6561", "-212/729"),
        _f("9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"),
        _DP_B[:-1],
    ),
    b=_DP_B,
    b_error=tuple(x - y for x, y in zip(_DP_B, _DP_BHAT)),
    order=5,
    error_order=5,
    stiffness_stages=(5, 6),  # both at c = 1 (Shampine's estimate)
)

# Bogacki & Shampine (1989), 3(2), FSAL.
BOSH3 = ButcherTableau(
    name="bosh3",
    c=_f(0, "1/2", "3/4", 1),
    a=((), _f("1/2"), _f(0, "3/4"), _f("2/9", "1/3", "4/9")),
    b=_f("2/9", "1/3", "4/9", 0),
    b_error=tuple(float(Fraction(x) - Fraction(y)) for x, y in zip(
        ("2/9", "1/3", "4/9", 0), ("7/24", "1/4", "1/3", "1/8")
    )),
    order=3,
    error_order=3,
    # No two stages share a c: use the secant between the step's ends (c = 0 and c = 1). It bounds the
    # same Lipschitz constant but, unlike an equal-c pair, also picks up ∂f/∂t·h/‖y1 − y0‖.
    stiffness_stages=(0, 3),
)

EULER = ButcherTableau(name="euler", c=(0.0,), a=((),), b=(1.0,), order=1)

RK4 = ButcherTableau(
    name="rk4",
    c=_f(0, "1/2", "1/2", 1),
    a=((), _f("1/2"), _f(0, "1/2"), _f(0, 0, 1)),
    b=_f("1/6", "1/3", "1/3", "1/6"),
    order=4,
    stiffness_stages=(1, 2),  # both at c = 1/2
)
