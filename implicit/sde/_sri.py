"""Rößler SRI tableaus with the natural embedded error estimate (SRIW1, SOSRI, SOSRI2), and one step.

Coefficients are published numbers: SRIW1 from Rößler (2010), SOSRI/SOSRI2 from Rackauckas & Nie
(2020), as StochasticDiffEq.jl v6.30.1 (tag commit a1e6d374, the version RegNeuralDE.jl's Manifest
pins) lists them in ``src/caches/rossler_caches.jl`` and uses them in ``src/perform_step/sri.jl``.
Every tableau is checked on construction against the 25 strong-order-1.5 conditions for Itô SDEs
with diagonal noise (Rößler 2010), written here for lower-triangular stage matrices.

Step (diagonal noise, per component), with I = ΔW, chi1 = (I² − h)/(2√h), chi2 = I/2 + H
(H the space-time Lévy area, so chi2 = I_(1,0)/h) and chi3 = (I³ − 3hI)/(6h):

    H0_i = y + h Σ_j A0[i,j] f_j + chi2 Σ_j B0[i,j] g_j,   H1_i = y + h Σ_j A1[i,j] f_j + √h Σ_j B1[i,j] g_j
    y1   = y + h Σ α_i f_i + Σ_i (β1_i I + β2_i chi1) g_i + E2,   E2 = Σ_i (β3_i chi2 + β4_i chi3) g_i

with f_i = f(H0_i), g_i = g(H1_i). The natural embedding drops the order-1.5 terms: E1 = h Σ_{i<=m} f_i
(m = ``error_terms``) and the error is (δ E1 + E2) / (atol + max(|y|, |y1|) rtol) element-wise,
reduced by the RMS norm (DiffEqBase 6.53.4 ``calculate_residuals``), δ = ``delta``.
"""

from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass

import torch

from implicit._counting import BackwardCounter
from implicit._outcome import Outcome
from implicit.sde._schemes import SDEScheme
from implicit.sde._solve import _Evaluations, _finish_outputs, _secant_stiffness
from implicit.sde._stats import SDEStats

_TOL = 1e-9


@dataclass(frozen=True)
class SRITableau:
    name: str
    A0: tuple
    A1: tuple
    B0: tuple
    B1: tuple
    alpha: tuple
    beta1: tuple
    beta2: tuple
    beta3: tuple
    beta4: tuple
    c0: tuple
    c1: tuple
    error_terms: int
    delta: float
    # drift stages actually used (SRIW1 needs 2 of the 4)
    drift_stages: int
    stability_size: float | None = None

    def __post_init__(self):
        upper = [M[i][j] for M in (self.A0, self.A1, self.B0, self.B1) for i in range(4) for j in range(i, 4)]
        if any(v != 0.0 for v in upper):
            raise ValueError(f"SRI tableau {self.name}: A0, A1, B0, B1 must be strictly lower triangular (explicit)")
        d = self.drift_stages
        unused = [A[i][j] for A in (self.A0, self.A1) for i in range(4) for j in range(d, 4)] + list(self.alpha[d:])
        if any(v != 0.0 for v in unused) or not 1 <= self.error_terms <= d:
            raise ValueError(f"SRI tableau {self.name}: only its first drift_stages={d} drift stages may carry "
                             f"weight (A0, A1 columns, alpha, error_terms={self.error_terms})")
        failed = [k for k, ok in order_conditions(self).items() if not ok]
        if failed:
            raise ValueError(f"SRI tableau {self.name} violates strong order 1.5 conditions {failed}")


def _residuals(t: SRITableau) -> dict[int, float]:
    A0, A1, B0, B1 = (torch.tensor(m, dtype=torch.float64) for m in (t.A0, t.A1, t.B0, t.B1))
    a, b1, b2, b3, b4 = (torch.tensor(v, dtype=torch.float64) for v in (t.alpha, t.beta1, t.beta2, t.beta3, t.beta4))
    e = torch.ones(len(t.alpha), dtype=torch.float64)
    B1e, B0e, A1e = B1 @ e, B0 @ e, A1 @ e
    r = {
        1: a @ e - 1, 2: b1 @ e - 1, 3: b2 @ e, 4: b3 @ e, 5: b4 @ e,
        6: b1 @ B1e, 7: b2 @ B1e - 1, 8: b3 @ B1e, 9: b4 @ B1e,
        10: a @ (A0 @ e) - 0.5, 11: a @ B0e - 1, 12: a @ B0e**2 - 1.5,
        13: b1 @ A1e - 1, 14: b2 @ A1e, 15: b3 @ A1e + 1, 16: b4 @ A1e,
        17: b1 @ B1e**2 - 1, 18: b2 @ B1e**2, 19: b3 @ B1e**2 + 1, 20: b4 @ B1e**2 - 2,
        21: b1 @ (B1 @ B1e), 22: b2 @ (B1 @ B1e), 23: b3 @ (B1 @ B1e), 24: b4 @ (B1 @ B1e) - 1,
        25: 0.5 * b1 @ (A1 @ B0e) + b3 @ (A1 @ B0e) / 3,
        # consistent stage times for time-dependent f and g
        26: (A0 @ e - torch.tensor(t.c0, dtype=torch.float64)).abs().max(),
        27: (A1 @ e - torch.tensor(t.c1, dtype=torch.float64)).abs().max(),
    }
    return {k: float(v) for k, v in r.items()}


def order_conditions(t: SRITableau, tol: float = _TOL) -> dict[int, bool]:
    return {k: abs(v) < tol for k, v in _residuals(t).items()}


def _lower(rows: dict) -> tuple:
    m = [[0.0] * 4 for _ in range(4)]
    for (i, j), v in rows.items():
        m[i - 1][j - 1] = v
    return tuple(tuple(r) for r in m)


SRIW1_TABLEAU = SRITableau(
    name="SRIW1",
    A0=_lower({(2, 1): 0.75}),
    A1=_lower({(2, 1): 0.25, (3, 1): 1.0, (4, 1): 0.25}),
    B0=_lower({(2, 1): 1.5}),
    B1=_lower({(2, 1): 0.5, (3, 1): -1.0, (4, 1): -5.0, (4, 2): 3.0, (4, 3): 0.5}),
    alpha=(1 / 3, 2 / 3, 0.0, 0.0),
    beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
    beta2=(-1.0, 4 / 3, -1 / 3, 0.0),
    beta3=(2.0, -4 / 3, -2 / 3, 0.0),
    beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
    c0=(0.0, 0.75, 0.0, 0.0),
    c1=(0.0, 0.25, 1.0, 0.25),
    error_terms=2,
    delta=1 / 6,  # alg_utils.jl: delta_default(::SRIW1) = 1//6
    drift_stages=2,
)


def _four_stage(name, a0, a1, b0, b1, alpha, betas, c0, c1, stability_size=None) -> SRITableau:
    return SRITableau(
        name=name, A0=_lower(a0), A1=_lower(a1), B0=_lower(b0), B1=_lower(b1), alpha=alpha,
        beta1=betas[0], beta2=betas[1], beta3=betas[2], beta4=betas[3], c0=c0, c1=c1,
        error_terms=4, delta=1.0, drift_stages=4, stability_size=stability_size,
    )


SOSRI_TABLEAU = _four_stage(
    "SOSRI",
    {(2, 1): -0.04199224421316468, (3, 1): 2.842612915017106, (3, 2): -2.0527723684000727,
     (4, 1): 4.338237071435815, (4, 2): -2.8895936137439793, (4, 3): 2.3017575594644466},
    {(2, 1): 0.26204282091330466, (3, 1): 0.20903646383505375, (3, 2): -0.1502377115150361,
     (4, 1): 0.05836595312746999, (4, 2): 0.6149440396332373, (4, 3): 0.08535117634046772},
    {(2, 1): -0.21641093549612528, (3, 1): 1.5336352863679572, (3, 2): 0.26066223492647056,
     (4, 1): -1.0536037558179159, (4, 2): 1.7015284721089472, (4, 3): -0.20725685784180017},
    {(2, 1): -0.5119011827621657, (3, 1): 2.67767339866713, (3, 2): -4.9395031322250995,
     (4, 1): 0.15580956238299215, (4, 2): 3.2361551006624674, (4, 3): -1.4223118283355949},
    (1.140099274172029, -0.6401334255743456, 0.4736296532772559, 0.026404498125060714),
    ((-1.8453464565104432, 2.688764531100726, -0.2523866501071323, 0.40896857551684956),
     (0.4969658141589478, -0.5771202869753592, -0.12919702470322217, 0.2093514975196336),
     (2.8453464565104425, -2.688764531100725, 0.2523866501071322, -0.40896857551684945),
     (0.11522663875443433, -0.57877086147738, 0.2857851028163886, 0.17775911990655704)),
    (0.0, -0.04199224421316468, 0.7898405466170333, 3.7504010171562823),
    (0.0, 0.26204282091330466, 0.05879875232001766, 0.758661169101175),
)

SOSRI2_TABLEAU = _four_stage(
    "SOSRI2",
    {(2, 1): 0.13804532298278663, (3, 1): 0.5818361298250374, (3, 2): 0.4181638701749618,
     (4, 1): 0.4670018408674211, (4, 2): 0.8046204792187386, (4, 3): -0.27162232008616016},
    {(2, 1): 0.45605532163856893, (3, 1): 0.7555807846451692, (3, 2): 0.24441921535482677,
     (4, 1): 0.6981181143266059, (4, 2): 0.3453277086024727, (4, 3): -0.04344582292908241},
    {(2, 1): 0.08852381537667678, (3, 1): 1.0317752458971061, (3, 2): 0.4563552922077882,
     (4, 1): 1.73078280444124, (4, 2): -0.46089678470929774, (4, 3): -0.9637509618944188},
    {(2, 1): 0.6753186815412179, (3, 1): -0.07452812525785148, (3, 2): -0.49783736486149366,
     (4, 1): -0.5591906709928903, (4, 2): 0.022696571806569924, (4, 3): -0.8984927888368557},
    (-0.15036858140642623, 0.7545275856696072, 0.686995463807979, -0.2911544680711602),
    ((-0.45315689727309133, 0.8330937231303951, 0.3792843195533544, 0.24077885458934192),
     (-0.4994383733810986, 0.9181786186154077, -0.25613778661003145, -0.16260245862427797),
     (1.4531568972730915, -0.8330937231303933, -0.3792843195533583, -0.24077885458934023),
     (-0.4976090683622265, 0.9148155835648892, -1.4102107084476505, 0.9930041932449877)),
    (0.0, 0.13804532298278663, 0.9999999999999992, 0.9999999999999994),
    (0.0, 0.45605532163856893, 0.999999999999996, 0.9999999999999962),
    stability_size=10.6,  # alg_utils.jl: alg_stability_size(::SOSRI2) = 10.6
)


def _combine(y, coefs, vecs, scale):
    """y + scale · Σ_j coefs[j] vecs[j] over the stages computed so far, skipping the tableau's zeros."""
    acc = None
    for c, v in zip(coefs, vecs):
        if c != 0.0:
            acc = c * v if acc is None else acc + c * v
    return y if acc is None else y + scale * acc


def sri_step(tab: SRITableau, f, g, t: float, h, y: torch.Tensor, dW: torch.Tensor, H: torch.Tensor):
    """One SRI step from (t, y) over h with Brownian increment dW and space-time Lévy area H.

    ``h`` is a float or a 0-d tensor (in the graph when the solve follows its initial step); the
    stage times use float(h). Returns (y1, E1, E2, stiffness) where stiffness is
    ‖f_4 − f_3‖ / ‖H0_4 − H0_3‖ (RMS norms; the drift stage pair StochasticDiffEq uses for SOSRI2's
    eigenvalue estimate), None with < 4 drift stages.
    """
    sqh = h**0.5
    h_val = float(h.detach()) if torch.is_tensor(h) else float(h)
    chi1 = (dW**2 - h) / (2 * sqh)
    chi2 = dW / 2 + H
    chi3 = (dW**3 - 3 * h * dW) / (6 * h)
    fs, gs, h0s = [], [], []
    for i in range(4):
        H0 = _combine(_combine(y, tab.A0[i], fs, h), tab.B0[i], gs, chi2)
        H1 = _combine(_combine(y, tab.A1[i], fs, h), tab.B1[i], gs, sqh)
        if i < tab.drift_stages:
            h0s.append(H0)
            fs.append(f(t + tab.c0[i] * h_val, H0))
        gs.append(g(t + tab.c1[i] * h_val, H1))
    drift = sum(tab.alpha[i] * fs[i] for i in range(tab.drift_stages))
    noise = sum((tab.beta1[i] * dW + tab.beta2[i] * chi1) * gs[i] for i in range(4))
    E2 = sum((tab.beta3[i] * chi2 + tab.beta4[i] * chi3) * gs[i] for i in range(4))
    y1 = y + h * drift + noise + E2
    E1 = h * sum(fs[i] for i in range(tab.error_terms))
    # the RMS norms of the docstring have the same ratio as the 2-norms the secant estimate takes
    stiff = _secant_stiffness(fs[2], fs[3], h0s[2], h0s[3]) if tab.drift_stages == 4 else None
    return y1, E1, E2, stiff


def error_norm(tab: SRITableau, E1, E2, y0, y1, rtol: float, atol: float) -> torch.Tensor:
    """StochasticDiffEq's EEst: RMS of (δ E1 + E2) / (atol + max(|y0|, |y1|) rtol)."""
    r = (tab.delta * E1 + E2) / (atol + torch.maximum(y0.abs(), y1.abs()) * rtol)
    return torch.sqrt((r**2).mean())




class SRIScheme(SDEScheme):
    """A Rößler SRI method for Itô SDEs with diagonal noise, run by implicit's own loop.

    Stages: 4 diffusion and ``tableau.drift_stages`` drift evaluations per step, no autograd inside
    the step. Steps with :class:`~implicit.sde.Embedded` (adaptive, the natural embedded error
    estimate) or :class:`~implicit.sde.FixedSteps` (which then records that estimate per step).
    """

    @property
    @abc.abstractmethod
    def tableau(self) -> SRITableau:
        """The scheme's coefficients."""

    @property
    def sde_type(self) -> str:
        return "ito"

    @property
    def strong_order(self) -> float:
        return 1.5

    @property
    def levy_area_approximation(self) -> str:
        return "space-time"

    @property
    def stability_size(self) -> float | None:
        """Where the scheme's stability region ends on the negative real axis (StochasticDiffEq's
        ``alg_stability_size``), for scaling the stiffness estimate; None where it is not given."""
        return self.tableau.stability_size

    def _torchsde_solver_class(self) -> type:
        raise TypeError(f"{type(self).__name__} is not a torchsde method; implicit's SRI loop runs it")

    def _torchsde_options(self) -> dict:
        return {}


@dataclass(frozen=True)
class SRIW1(SRIScheme):
    """Rößler's SRIW1: 2 drift + 4 diffusion evaluations per step, embedded estimate with δ = 1/6."""

    @property
    def tableau(self) -> SRITableau:
        return SRIW1_TABLEAU


@dataclass(frozen=True)
class SOSRI(SRIScheme):
    """Rackauckas & Nie's stability-optimized SRI: 4 drift + 4 diffusion evaluations per step."""

    @property
    def tableau(self) -> SRITableau:
        return SOSRI_TABLEAU


@dataclass(frozen=True)
class SOSRI2(SRIScheme):
    """SOSRI2 (stability-optimized, stages on [0, 1]; stability size 10.6); records a stiffness estimate."""

    @property
    def tableau(self) -> SRITableau:
        return SOSRI2_TABLEAU


# StochasticDiffEq v6.30.1 defaults for an order-3/2 adaptive method (alg_utils.jl, solve.jl)
BETA1, BETA2 = 7 / 15, 4 / 15
GAMMA, QMIN, QMAX, QOLDINIT = 0.9, 0.2, 9 / 8, 1e-4


def _rms(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v**2).mean())


def initial_step(f, g, t0: float, y0: torch.Tensor, rtol: float, atol: float, dtmax: float, order: float = 1.5,
                 graph: bool = False) -> torch.Tensor:
    """``sde_determine_initdt`` (StochasticDiffEq v6.30.1 src/initdt.jl, out-of-place branch) as a 0-d
    tensor of y0's dtype, in the graph of y0 and of f's and g's parameters when ``graph``.

    Its branches (tiny norms) are decided on values; 2 drift and 2 diffusion evaluations.
    """
    with contextlib.nullcontext() if graph else torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0 = _rms(y0 / scale)
        f0, g0 = f(t0, y0), 3 * g(t0, y0)
        d1 = _rms(torch.maximum((f0 + g0).abs(), (f0 - g0).abs()) / scale)
        if float(d0.detach()) < 1e-5 or float(d1.detach()) < 1e-5:
            dt0 = d0.new_tensor(1e-6)
        else:
            dt0 = (d0 / d1) / 100
        dt0 = dt0.clamp_max(dtmax)
        u1 = y0 + dt0 * f0
        t1 = t0 + float(dt0.detach())
        f1, g1 = f(t1, u1), 3 * g(t1, u1)
        dg = torch.maximum((g0 - g1).abs(), (g0 + g1).abs())
        d2 = _rms(torch.maximum((f1 - f0 + dg).abs(), (f1 - f0 - dg).abs()) / scale) / dt0
        m = torch.maximum(d1, d2)
        if float(m.detach()) <= 1e-15:
            dt1 = (dt0 * 1e-3).clamp_min(1e-6)
        else:
            dt1 = 10 ** (-(2 + torch.log10(m)) / (order + 0.5))
        h = torch.minimum(100 * dt0, dt1).clamp_max(dtmax)
        return h.clamp_min(torch.finfo(y0.dtype).eps)


def solve_sri(
    *,
    drift,
    diffusion,
    y0: torch.Tensor,
    ts: torch.Tensor,
    bm,
    scheme: SRIScheme,
    stepping,
    max_steps: int,
) -> tuple[torch.Tensor, SDEStats]:
    """Integrate with an SRI scheme from ts[0] over ts; inputs are already checked by the layer.

    Adaptive (``Embedded``) or fixed steps; steps are clipped to land on every output time. A
    rejected attempt re-queries a sub-interval of the same ``bm``, so the path is one path.
    """
    from implicit.sde._stepping import Embedded, FixedSteps

    tab = scheme.tableau
    # armed after the forward solve: VJPs a scheme takes inside a step are forward work
    backward = BackwardCounter(armed=False)
    evals = _Evaluations(drift, diffusion, "ito", y0.shape, backward)
    adaptive = isinstance(stepping, Embedded)
    record = adaptive or (isinstance(stepping, FixedSteps) and stepping.estimate_error)
    rtol, atol = stepping.rtol, stepping.atol
    t_start, t_end = float(ts[0]), float(ts[-1])
    dtmax = t_end - t_start
    track = adaptive and stepping.step_path == "initial"

    outcome, message = Outcome.SUCCESSFUL, ""
    if adaptive and stepping.dt0 is None:
        h = initial_step(evals.f, evals.g, t_start, y0, rtol, atol, dtmax, graph=track)
        if not math.isfinite(float(h.detach())):
            outcome = Outcome.NONFINITE
            message = f"the initial-step heuristic gave {float(h.detach())} at t={t_start:.6g} (drift or diffusion is NaN/Inf at y0)"
    else:
        h = y0.new_tensor(min(stepping.dt0 if adaptive else stepping.dt, dtmax))
    h_first = h
    if not track:
        h = float(h.detach())
    # time as a float for control and Brownian queries; with a tracked path the in-graph offset
    # t_graph - t (the accepted steps' dependence on the initial step) follows along
    t, t_graph = t_start, (y0.new_zeros(()) + t_start if track else None)
    y, qold = y0, QOLDINIT
    ys = [y0]
    errors, steps, steps_g, stiffness = [], [], [], []
    attempts = n_rejected = 0

    for out_t in (float(v) for v in ts[1:]):
        while t < out_t and outcome is Outcome.SUCCESSFUL:
            if attempts >= max_steps:
                outcome = Outcome.MAX_STEPS_REACHED
                message = f"used max_steps={max_steps} step attempts and stopped at t={t:.6g} < {t_end:.6g}"
                break
            h_val = float(h.detach()) if torch.is_tensor(h) else h
            if h_val >= out_t - t:
                # the clip to the output time: in the graph, out_t - t_graph
                h = (out_t - t_graph) if track else out_t - t
                h_val = out_t - t
            if not t + h_val > t:
                outcome = Outcome.DT_UNDERFLOW
                message = f"step size {h_val:.3g} does not advance t={t:.17g} in {y0.dtype}"
                break
            attempts += 1
            dW, U = bm(t, t + h_val, return_U=True)
            y1, E1, E2, stiff = sri_step(tab, evals.f, evals.g, t, h, y, dW, U / h_val - dW / 2)
            eest = error_norm(tab, E1, E2, y, y1, rtol, atol) if record else None
            e = float(eest.detach()) if record else 0.0
            if not math.isfinite(e) or (not record and not bool(torch.isfinite(y1).all())):
                outcome = Outcome.NONFINITE
                message = f"the SRI step from t={t:.6g} gave NaN or Inf (drift or diffusion broke)"
                break
            if adaptive and e > 1:
                n_rejected += 1
                h = h / min(1 / QMIN, e**BETA1 / GAMMA)  # a detached factor: h keeps its graph
                continue
            if record:
                errors.append(eest)
            if stiff is not None:
                stiffness.append(stiff)
            steps.append(h_val)
            if track:
                steps_g.append(h if torch.is_tensor(h) else y0.new_tensor(h))
                t_graph = t_graph + h
            t = out_t if abs(t + h_val - out_t) < 10 * math.ulp(out_t) else t + h_val
            y = y1
            if adaptive:
                q = max(1 / QMAX, min(1 / QMIN, e**BETA1 / qold**BETA2 / GAMMA))
                qold = max(e, QOLDINIT)
                h = min(h_val / q, dtmax)  # the proposal after an accepted step is detached
        if outcome is not Outcome.SUCCESSFUL:
            break
        ys.append(y)

    outcome, message = _finish_outputs(ys, ts, y0, outcome, message)

    step_t = torch.tensor(steps, dtype=torch.float64)
    h_graph = torch.stack(steps_g) if track and steps_g else None
    h_scale = h_graph if h_graph is not None else step_t.to(device=y0.device, dtype=y0.dtype)
    error_t = reg_error = stiff_t = reg_stiffness = None
    if record:
        error_t = torch.stack(errors) if errors else y0.new_zeros(0)
        reg_error = (error_t * h_scale).sum()
    if tab.drift_stages == 4:
        stiff_t = torch.stack(stiffness) if stiffness else y0.new_zeros(0)
        reg_stiffness = (stiff_t * h_scale).sum()
    backward.arm()
    stats = SDEStats(
        nfe_forward=evals.nfe_drift + evals.nfe_diffusion,
        nfe_drift=evals.nfe_drift,
        nfe_diffusion=evals.nfe_diffusion,
        n_accepted=len(steps),
        n_rejected=n_rejected,
        n_forced=0,
        error_estimates=error_t,
        step_sizes=step_t,
        stiffness_estimates=stiff_t,
        reg_error=reg_error,
        reg_stiffness=reg_stiffness,
        t_final=t,
        outcome=outcome,
        message=message,
        initial_step=h_first,
        step_sizes_in_graph=h_graph,
        backward_counter=backward,
    )
    return torch.stack(ys, dim=0), stats
