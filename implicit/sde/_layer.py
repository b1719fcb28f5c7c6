"""NeuralSDE: a diagonal-noise SDE layer whose adaptive solver records its own heuristics."""

from __future__ import annotations

from typing import Callable

import torch
import torchsde
from torch import nn

from implicit._outcome import SolverError
from implicit.ode._checks import HALF, check_bool, check_max_steps
from implicit.sde._schemes import SDEScheme, SRK
from implicit.sde._solve import solve
from implicit.sde._stats import SDEStats
from implicit.sde._sri import SRIScheme
from implicit.sde._stepping import Embedded, SDEStepping, StepDoubling


class NeuralSDE(nn.Module):
    """dy = drift(t, y) dt + diffusion(t, y) ∘/· dW with diagonal noise, solved from ts[0] over ts.

    ``drift`` and ``diffusion`` are modules (or callables) ``(t, y) -> tensor shaped like y``; the
    Itô or Stratonovich reading of the noise is the scheme's (``scheme.sde_type``). Gradients
    flow by backpropagation through the solver's operations (discretise-then-optimise).

    ``forward(y0, ts, bm=None)`` returns ``(ys, stats)``: ``ys`` has shape (len(ts), batch, d)
    and ``stats`` is an :class:`SDEStats`. Without ``bm`` a fresh ``torchsde.BrownianInterval``
    is drawn, seeded from torch's global generator (so ``torch.manual_seed`` reproduces it). A
    given ``bm`` must match y0's shape, dtype and device and be defined on an interval covering
    [ts[0], ts[-1]]. ``ts`` is strictly increasing; y0 is float32 or float64 (half precision is
    refused); drift and diffusion must return exactly y's shape, dtype and device.

    SRI schemes (``SRIW1``, ``SOSRI``, ``SOSRI2``) run on implicit's own loop with
    ``stepping=Embedded(...)`` (their natural embedded error estimate, StochasticDiffEq's controller) or
    ``FixedSteps``; for them the stiffness estimate is ‖f_4 − f_3‖/‖H0_4 − H0_3‖ over the last two
    drift stages of each accepted step (SOSRI2's eigenvalue estimate; None for SRIW1's two stages),
    and output times are hit by clipping the step onto them.

    Stiffness estimate (torchsde schemes): the drift is evaluated at (t_j, y_j) and, by the second half step, at
    (t_j + h_j/2, y_mid); S_j = |f(y_mid) - f(y_j)| / |y_mid - y_j| (norms over the whole batch)
    is a secant estimate of the drift's Lipschitz constant along the step, which bounds the
    dominant eigenvalue magnitude of its Jacobian from below. It costs no extra evaluations.

    ``throw=True`` raises :class:`implicit.SolverError` when the solve fails (step budget
    ``max_steps`` attempts, NaN/Inf, step size underflow); with ``throw=False`` the outcome is in
    ``stats.outcome`` and output times never reached are NaN.
    """

    def __init__(
        self,
        drift: Callable,
        diffusion: Callable,
        *,
        scheme: SDEScheme = SRK(),
        stepping: SDEStepping = StepDoubling(),
        max_steps: int = 10_000,
        throw: bool = True,
    ):
        super().__init__()
        if not callable(drift):
            raise TypeError(f"drift must be a callable (t, y) -> tensor, got {type(drift).__name__}")
        if not callable(diffusion):
            raise TypeError(f"diffusion must be a callable (t, y) -> tensor, got {type(diffusion).__name__}")
        if not isinstance(scheme, SDEScheme):
            raise TypeError(
                f"scheme must be an SDEScheme such as SRK() or EulerMaruyama(), got {type(scheme).__name__}"
            )
        if not isinstance(stepping, SDEStepping):
            raise TypeError(
                f"stepping must be StepDoubling(...), Embedded(...) or FixedSteps(dt=...), got {type(stepping).__name__}"
            )
        sri = isinstance(scheme, SRIScheme)
        if sri and isinstance(stepping, StepDoubling):
            raise ValueError(f"stepping=StepDoubling(...) with scheme={type(scheme).__name__}(): SRI schemes estimate "
                             "their error by their natural embedding; use stepping=Embedded(rtol=..., atol=...)")
        if not sri and isinstance(stepping, Embedded):
            raise ValueError(f"stepping=Embedded(...) needs an SRI scheme with an embedded error estimate (SRIW1(), "
                             f"SOSRI(), SOSRI2()), got scheme={type(scheme).__name__}(); use StepDoubling(...) for it")
        check_max_steps(max_steps)
        check_bool("throw", throw)
        self.drift = drift
        self.diffusion = diffusion
        self.scheme = scheme
        self.stepping = stepping
        self.max_steps = max_steps
        self.throw = throw

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, stepping={self.stepping}, max_steps={self.max_steps}, throw={self.throw}"

    def forward(self, y0: torch.Tensor, ts, bm=None) -> tuple[torch.Tensor, SDEStats]:
        y0, ts = _check_state_and_times(y0, ts)
        if bm is None:
            entropy = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
            bm = torchsde.BrownianInterval(
                t0=ts[0],
                t1=ts[-1],
                size=tuple(y0.shape),
                dtype=y0.dtype,
                device=y0.device,
                entropy=entropy,
                levy_area_approximation=self.scheme.levy_area_approximation,
            )
        else:
            _check_brownian(bm, y0, ts, self.scheme)
        ys, stats = solve(
            drift=self.drift,
            diffusion=self.diffusion,
            y0=y0,
            ts=ts,
            bm=bm,
            scheme=self.scheme,
            stepping=self.stepping,
            max_steps=self.max_steps,
        )
        if self.throw and not stats.outcome.ok:
            raise SolverError(
                f"NeuralSDE: {stats.message} ({stats.n_accepted} accepted, {stats.n_rejected} rejected steps)",
                stats.outcome,
                stats,
            )
        return ys, stats


def _check_state_and_times(y0, ts) -> tuple[torch.Tensor, torch.Tensor]:
    if not torch.is_tensor(y0):
        raise TypeError(f"y0 must be a torch.Tensor of shape (batch, state), got {type(y0).__name__}")
    if y0.dim() != 2:
        raise ValueError(f"y0 must have shape (batch, state), got {tuple(y0.shape)}; flatten features first")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}")
    if y0.dtype in HALF:
        # torchsde's Brownian sampling and the step-doubling estimate break down in half precision
        # (NaN error estimates, steps that cannot advance t): refuse rather than fail inside
        raise TypeError(f"y0 must be float32 or float64, got {y0.dtype}; NeuralSDE does not support half precision")
    if y0.numel() == 0:
        raise ValueError(f"y0 must be non-empty, got shape {tuple(y0.shape)}")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 contains NaN or Inf; the initial state must be finite")
    if torch.is_tensor(ts):
        if ts.requires_grad:
            raise ValueError("ts must not require grad: gradients with respect to the output times are not supported")
        ts = ts.to(dtype=y0.dtype, device=y0.device)
    elif isinstance(ts, (list, tuple)) and all(
        isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts
    ):
        ts = torch.tensor(ts, dtype=y0.dtype, device=y0.device)
    else:
        raise TypeError(f"ts must be a 1-D tensor or a list/tuple of floats, got {type(ts).__name__}")
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be 1-D with at least 2 times (start and end), got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"ts must be finite, got {ts.tolist()}")
    if not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError(f"ts must be strictly increasing, got {ts.tolist()}")
    return y0, ts


def _brownian_span(bm) -> tuple[float, float] | None:
    """The interval a torchsde Brownian motion is defined on (None for a kind that does not say)."""
    interval = getattr(bm, "_interval", bm)  # BrownianPath/BrownianTree wrap a BrownianInterval
    start, end = getattr(interval, "_start", None), getattr(interval, "_end", None)
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return float(start), float(end)
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where "cuda" without an index (torchsde keeps the string it was given)
    means the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return a.index is None or b.index is None or a.index == b.index


def _check_brownian(bm, y0: torch.Tensor, ts: torch.Tensor, scheme: SDEScheme) -> None:
    if not isinstance(bm, torchsde.BaseBrownian):
        raise TypeError(f"bm must be a torchsde Brownian motion (e.g. BrownianInterval), got {type(bm).__name__}")
    if tuple(bm.shape) != tuple(y0.shape):
        raise ValueError(
            f"bm must have shape {tuple(y0.shape)} (diagonal noise: one Brownian motion per state entry), "
            f"got {tuple(bm.shape)}"
        )
    if bm.dtype != y0.dtype:
        raise TypeError(f"bm must have y0's dtype {y0.dtype}, got {bm.dtype}; build it with dtype={y0.dtype}")
    if not _same_device(torch.device(bm.device), y0.device):
        raise ValueError(f"bm must be on y0's device {y0.device}, got {bm.device}; build it with device={y0.device}")
    span = _brownian_span(bm)
    t0, t1 = float(ts[0]), float(ts[-1])
    # outside its interval torchsde only warns and returns increments that are not Brownian
    # (zero past t1): the solve would report success on a noise-free path
    # slack for ts rounded to y0's dtype (float32 0.1 lies above the Python float 0.1)
    slack = 4 * torch.finfo(ts.dtype).eps * max(abs(t0), abs(t1), 1.0)
    if span is not None and not (span[0] - slack <= t0 and t1 <= span[1] + slack):
        raise ValueError(
            f"bm must cover the solve's time span [{t0:.10g}, {t1:.10g}], got a Brownian motion on "
            f"[{span[0]:.10g}, {span[1]:.10g}]; build it with t0={t0:.10g}, t1={t1:.10g}"
        )
    if scheme.levy_area_approximation != "none" and bm.levy_area_approximation == "none":
        raise ValueError(
            f"{type(scheme).__name__} needs Lévy area from the Brownian motion: build it with "
            f"levy_area_approximation='{scheme.levy_area_approximation}', got 'none'"
        )
