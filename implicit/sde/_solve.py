"""The stepping loop: drives a torchsde step function and BrownianInterval, records statistics.

Mirrors torchsde 0.2.6's ``BaseSDESolver.integrate`` (same step proposals, same Brownian
queries in the same order, same linear interpolation at output times), so with the same
Brownian motion object the output equals ``torchsde.sdeint``. What differs: the step-doubling
error estimate stays a tensor in the autograd graph and, with a drift secant stiffness
estimate, is recorded per accepted step; failures become an Outcome instead of an assert.
"""

from __future__ import annotations

import math

import torch
from torchsde._core.base_sde import ForwardSDE as _ForwardSDE  # private: pinned by tests

from implicit._counting import BackwardCounter
from implicit._outcome import Outcome
from implicit.ode._checks import check_output
from implicit.sde._schemes import SDEScheme
from implicit.sde._stats import SDEStats
from implicit.sde._stepping import SDEStepping, StepDoubling, error_ratio, propose_step


class _Evaluations:
    """Per-solve view of the user's drift and diffusion in torchsde's SDE protocol.

    It lives for one solve only; its counters end up in the SDEStats record.
    """

    noise_type = "diagonal"

    def __init__(self, drift, diffusion, sde_type: str, shape: torch.Size, backward: BackwardCounter):
        self.sde_type = sde_type
        self._drift = drift
        self._diffusion = diffusion
        self._shape = shape
        self._backward = backward
        self.nfe_drift = 0
        self.nfe_diffusion = 0
        # the first drift value of the current step call: drift(t0, y0) for every supported scheme
        self.first_drift: torch.Tensor | None = None

    def _watch(self, out: torch.Tensor) -> None:
        if out.requires_grad:
            out.register_hook(self._backward.tick)

    def f(self, t, y):
        out = check_output("drift(t, y)", self._drift(t, y), y)
        self.nfe_drift += 1
        if self.first_drift is None:
            self.first_drift = out
        self._watch(out)
        return out

    def g(self, t, y):
        out = check_output("diffusion(t, y)", self._diffusion(t, y), y,
                           "y's shape, dtype and device (diagonal noise: one coefficient per state entry)")
        self.nfe_diffusion += 1
        self._watch(out)
        return out


def _secant_stiffness(f0: torch.Tensor, f1: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(y0.dtype).tiny
    return torch.linalg.vector_norm(f1 - f0) / torch.linalg.vector_norm(y1 - y0).clamp_min(tiny)


def _finish_outputs(ys: list, ts: torch.Tensor, y0: torch.Tensor, outcome: Outcome, message: str):
    """A successful solve with a non-finite output becomes NONFINITE; output times never reached are
    filled with NaN (in place) so that nobody mistakes them for a solution."""
    if outcome is Outcome.SUCCESSFUL and not all(bool(torch.isfinite(y).all()) for y in ys):
        bad = next(i for i, y in enumerate(ys) if not bool(torch.isfinite(y).all()))
        outcome = Outcome.NONFINITE
        message = f"the solution contains NaN or Inf at output time t={float(ts[bad]):.6g} (index {bad})"
    while len(ys) < len(ts):
        ys.append(torch.full_like(y0, float("nan")))
    return outcome, message


def solve(
    *,
    drift,
    diffusion,
    y0: torch.Tensor,
    ts: torch.Tensor,
    bm,
    scheme: SDEScheme,
    stepping: SDEStepping,
    max_steps: int,
) -> tuple[torch.Tensor, SDEStats]:
    """Integrate from ts[0] over ts; inputs are already checked by the layer."""
    from implicit.sde._sri import SRIScheme, solve_sri

    if isinstance(scheme, SRIScheme):
        return solve_sri(drift=drift, diffusion=diffusion, y0=y0, ts=ts, bm=bm, scheme=scheme, stepping=stepping,
                         max_steps=max_steps)
    # armed after the forward solve: VJPs a scheme takes inside a step are forward work
    backward = BackwardCounter(armed=False)
    evals = _Evaluations(drift, diffusion, scheme.sde_type, y0.shape, backward)
    adaptive = isinstance(stepping, StepDoubling)
    doubling = stepping.estimates_error
    step_size = stepping.dt0 if adaptive else stepping.dt
    dt_min = stepping.dt_min if adaptive else 0.0
    solver = scheme._torchsde_solver_class()(
        sde=_ForwardSDE(evals),
        bm=bm,
        dt=step_size,
        adaptive=False,  # we never call its integrate(); the flag only matters there
        rtol=stepping.rtol,
        atol=stepping.atol,
        dt_min=dt_min,
        options=scheme._torchsde_options(),
    )

    t_end = ts[-1]
    prev_t = curr_t = ts[0]
    prev_y = curr_y = y0
    extra = solver.init_extra_solver_state(ts[0], y0)
    ys = [y0]
    prev_error_ratio = None
    errors, steps, stiffness = [], [], []
    n_accepted = n_rejected = n_forced = attempts = 0
    outcome = Outcome.SUCCESSFUL
    message = ""

    for out_t in ts[1:]:
        while curr_t < out_t and outcome is Outcome.SUCCESSFUL:
            if attempts >= max_steps:
                outcome = Outcome.MAX_STEPS_REACHED
                message = (
                    f"used max_steps={max_steps} step attempts and stopped at t={float(curr_t):.6g} "
                    f"< {float(t_end):.6g}"
                )
                break
            next_t = min(curr_t + step_size, t_end)
            if not next_t > curr_t:
                outcome = Outcome.DT_UNDERFLOW
                message = f"step size {step_size:.3g} does not advance t={float(curr_t):.17g} in {y0.dtype}"
                break
            attempts += 1
            if not doubling:
                prev_t, prev_y = curr_t, curr_y
                curr_y, extra = solver.step(curr_t, next_t, curr_y, extra)
                steps.append(next_t - curr_t)
                curr_t = next_t
                n_accepted += 1
                continue

            y_full, _ = solver.step(curr_t, next_t, curr_y, extra)
            mid_t = 0.5 * (curr_t + next_t)
            evals.first_drift = None
            y_mid, extra_mid = solver.step(curr_t, mid_t, curr_y, extra)
            f_start = evals.first_drift
            evals.first_drift = None
            y_next, extra_next = solver.step(mid_t, next_t, y_mid, extra_mid)
            f_mid = evals.first_drift

            err = error_ratio(y_full, y_next, stepping.rtol, stepping.atol)
            err_value = err.item()
            if not math.isfinite(err_value):
                outcome = Outcome.NONFINITE
                message = f"the step-doubling error estimate is NaN or Inf at t={float(curr_t):.6g}"
                break
            accept = True
            if adaptive:
                step_size, prev_error_ratio = propose_step(err_value, step_size, prev_error_ratio)
                if step_size < dt_min:
                    step_size = dt_min
                    prev_error_ratio = None
                accept = err_value <= 1 or step_size <= dt_min
            if accept:
                n_accepted += 1
                n_forced += err_value > 1
                errors.append(err)
                steps.append(next_t - curr_t)
                stiffness.append(_secant_stiffness(f_start, f_mid, curr_y, y_mid))
                prev_t, prev_y = curr_t, curr_y
                curr_t, curr_y, extra = next_t, y_next, extra_next
            else:
                n_rejected += 1
        if outcome is not Outcome.SUCCESSFUL:
            break
        # torchsde's linear interpolation, kept verbatim in effect so outputs agree bit for bit
        ys.append((curr_t - out_t) / (curr_t - prev_t) * prev_y + (out_t - prev_t) / (curr_t - prev_t) * curr_y)

    outcome, message = _finish_outputs(ys, ts, y0, outcome, message)

    step_t = torch.tensor([float(h) for h in steps], dtype=torch.float64)
    error_t = stiff_t = reg_error = reg_stiffness = None
    if doubling:
        h = step_t.to(device=y0.device, dtype=y0.dtype)
        error_t = torch.stack(errors) if errors else y0.new_zeros(0)
        stiff_t = torch.stack(stiffness) if stiffness else y0.new_zeros(0)
        reg_error = (error_t * h).sum()
        reg_stiffness = (stiff_t * h).sum()
    backward.arm()
    stats = SDEStats(
        nfe_forward=evals.nfe_drift + evals.nfe_diffusion,
        nfe_drift=evals.nfe_drift,
        nfe_diffusion=evals.nfe_diffusion,
        n_accepted=n_accepted,
        n_rejected=n_rejected,
        n_forced=int(n_forced),
        error_estimates=error_t,
        step_sizes=step_t,
        stiffness_estimates=stiff_t,
        reg_error=reg_error,
        reg_stiffness=reg_stiffness,
        t_final=float(curr_t),
        outcome=outcome,
        message=message,
        backward_counter=backward,
    )
    return torch.stack(ys, dim=0), stats
