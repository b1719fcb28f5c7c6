"""Continuous DEQ: z* as the steady state of dz/dt = f(z) − z, integrated by implicit.ode."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit._outcome import Outcome
from implicit.deq._renamed import renamed_keyword
from implicit.deq._root import (
    Evaluator, Fn, Monitor, RootSolution, RootSolver, check_stopping_test, check_growth, check_int,
    check_positive, check_start, finish,
)
from implicit.ode import AbstractAdamsSolver, AbstractAdaptiveSolver, Tsit5, odeint


@renamed_keyword("criterion", "stopping_test")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SteadyState(RootSolver):
    """Integrates dz/dt = f(z, x) − z from z₀ with an adaptive ODE solver until it settles.

    ``solver`` is the integrator object: an adaptive Runge–Kutta method (``Tsit5()``, the default;
    6 f calls per step) or an adaptive Adams method (``VCAB3()``: 1 f call per accepted step;
    ``VCABM3()``: 2), the continuous-DEQ papers' integrators.

    Stops after the first accepted step that passes the steady-state test ‖dz‖ ≤ rtol·‖dz + z‖
    or ‖dz‖ ≤ atol (dz + z = f(z), so this is the relative-residual test of the discrete
    solvers). ``stopping_test="per_sample"`` (default) requires it of every sample;
    ``stopping_test="batch"`` applies it once to the whole batch as one vector, the test of
    steady-state solvers that integrate the batch as one ODE state (the continuous-DEQ papers'
    setting): cheaper, but single samples may stay above rtol, which ``stats.converged`` and
    ``stats.residual`` still report per sample.

    ``ode_rtol`` / ``ode_atol`` are the integrator's error tolerances (default: rtol / atol).
    Keep them separate when the test is loose: with ode_atol = rtol = 0.005 an explicit solver's
    step size grows to its stability limit near the steady state and the residual can stall far
    above rtol until ``max_steps``; a small ode_atol (e.g. 1e-6) avoids that.

    Fails (outcome not SUCCESSFUL) at ``t_max`` or after ``max_steps`` attempted steps; the
    returned z is the last accepted state. A flow without a steady state can still pass the
    relative test once z is large enough (dz/dt = 1 + 0.5·sin z does at |z| ≈ 1/rtol), so the
    integration stops as DIVERGED as soon as a sample's max(‖z‖, ‖f(z)‖) exceeds ``max_growth``
    times its start scale (see ``implicit.deq._root.Monitor``; None disables the guard).
    """

    solver: AbstractAdaptiveSolver | AbstractAdamsSolver = Tsit5()
    rtol: float = 1e-4
    atol: float = 1e-6
    ode_rtol: float | None = None
    ode_atol: float | None = None
    stopping_test: str = "per_sample"
    max_steps: int = 1000
    t_max: float = 100.0
    max_growth: float | None = 1e3

    def __post_init__(self):
        if not isinstance(self.solver, (AbstractAdaptiveSolver, AbstractAdamsSolver)):
            raise TypeError(f"SteadyState: solver must be an adaptive ODE solver such as Tsit5() or VCAB3(), "
                            f"got {self.solver!r}")
        for name in ("rtol", "atol", "t_max", "ode_rtol", "ode_atol"):
            value = getattr(self, name)
            if not (value is None and name.startswith("ode_")):
                check_positive("SteadyState", name, value)
        check_stopping_test("SteadyState", self.stopping_test)
        check_int("SteadyState", "max_steps", self.max_steps, minimum=1)
        check_growth("SteadyState", self.max_growth)

    def solve(self, f: Fn, z0: Tensor) -> RootSolution:
        check_start(z0, "SteadyState")
        ev = Evaluator(f, z0, "SteadyState")
        mon = Monitor(tol=self.rtol, abs_tol=self.atol, stopping_test=self.stopping_test, max_growth=self.max_growth)
        last = {}

        def rhs(t: Tensor, z: Tensor) -> Tensor:
            return ev(z) - z

        def stop(t: Tensor, z: Tensor, dz: Tensor) -> bool:
            chk = mon.check(z, fz=dz + z)
            last.update(z=z, check=chk)
            # the ODE state is the whole batch, so one runaway sample ends the integration
            return chk.done or mon.diverged_at is not None

        # the start itself may already be a root: the ODE solver only checks after a step
        fz0 = ev(z0)
        dz0 = fz0 - z0
        ode_outcome, ode_message, n_steps = Outcome.SUCCESSFUL, "", 0
        if not stop(None, z0, dz0):
            t = torch.tensor([0.0, self.t_max], dtype=z0.dtype, device=z0.device)
            sol = odeint(rhs, z0, t, solver=self.solver,
                         rtol=self.rtol if self.ode_rtol is None else self.ode_rtol,
                         atol=self.atol if self.ode_atol is None else self.ode_atol,
                         max_steps=self.max_steps, throw=False, stop=stop, record=False, f0=dz0)
            ode_outcome, ode_message, n_steps = sol.stats.outcome, sol.stats.message, sol.stats.n_accepted
        result = finish(z=last["z"], check=last["check"], n_iter=n_steps, ev=ev, monitor=mon,
                        max_iter=self.max_steps, name="SteadyState")
        st = result.stats
        if st.outcome is Outcome.NOT_CONVERGED:
            n_bad = int((~st.converged).sum())
            detail = (f"{n_bad} of {st.converged.numel()} samples above tolerance "
                      f"(worst relative residual {float(st.residual.max()):.3e}")
            if self.stopping_test == "batch":
                detail += f", batch relative residual {st.history[-1]:.3e})"
            else:
                detail += ")"
            if ode_outcome.ok:
                outcome, why = Outcome.NOT_CONVERGED, f"reached t_max={self.t_max} before the residual test passed"
            else:
                outcome, why = ode_outcome, f"the ODE solve failed: {ode_message}"
            st = dataclasses.replace(st, outcome=outcome, message=f"SteadyState: {why}; {detail}")
            result = RootSolution(z=result.z, stats=st)
        return result
