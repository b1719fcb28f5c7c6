"""MNIST fully connected DEQs of the Skip DEQ paper (Pal, Edelman & Rackauckas 2022).

x = W₀·image (784 -> 128); z* = f(z*, x) with f(z, x) = relu(W₁z) + relu(W₂x) on R¹²⁸;
logits = W₃z* (128 -> 10). Variants differ only in how the solve starts:

* ``deq``        z₀ = 0
* ``skipdeq``    z₀ = g(x), g = Dense(128, 128, relu); auxiliary loss ‖f(z*, x) − g(x)‖₁
* ``skipregdeq`` z₀ = f(0, x) (Skip DEQ V2, no extra network); auxiliary loss ‖f(z*, x) − f(0, x)‖₁

each solved continuously (dz/dt = f(z, x) − z integrated by ``integrator``, by default the papers'
VCAB3, until the relative residual is below ``tol``: by default of the batch as one vector, the
continuous-DEQ papers' test; ``steady_state_test="per_sample"`` asks it of every sample) or
discretely (Newton–Krylov, or Broyden), optionally with Jacobian regularization.
The model reports the unweighted "skip" and "jacobian" losses; the training script weights them
(paper: λ_skip = 0.01, λ_jac = 1.0; the authors' MNIST FC script: λ_skip = 5). The weight trades
implicitness for NFE: training can switch the implicit term off (W₁z* + b₁ < 0 in every unit, so
f(z*, x) = f(0, x)) and the solve becomes trivial. Measured after 25 epochs (results/mnist_deq,
``implicit_share.py``; continuous solve): the implicit term's norm is 26 % of ‖z*‖'s in the vanilla
DEQ (5 % with JR), 1–4 % at λ_skip = 0.1 and ≤ 0.5 % at λ_skip ≥ 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models._base import ZooOutput

__all__ = ["FCCell", "MNISTFCDEQ", "MNISTDEQConfig", "VARIANTS", "SOLVERS", "build", "BUILDERS", "PAPER", "PAPER_JR", "paper_numbers",
           "deq_metrics", "deq_regularizers"]

VARIANTS = ("deq", "skipdeq", "skipregdeq")
SOLVERS = ("continuous", "newton", "broyden")

# The continuous solve's integrator. "vcab3" is the continuous-DEQ papers': DeepEquilibriumNetworks.jl,
# branch ap/paper (tip d18c6103), experiments/src/config.jl: ode_solver = "vcab3" (also "vcabm3",
# "tsit5"); its src/solve.jl hands only the termination tolerances to the steady-state callback, so
# the integrator runs at OrdinaryDiffEq's default reltol 1e-3, abstol 1e-6 (read there, not run).
# "tsit5" is this library's earlier setting (integrator rtol = tol, atol = tol/10; the records made
# before the Adams integrators existed ran it).
INTEGRATORS = ("vcab3", "vcabm3", "tsit5")
PAPERS_ODE_TOLERANCES = {"ode_rtol": 1e-3, "ode_atol": 1e-6}
STEADY_STATE_TESTS = ("batch", "per_sample")


class FCCell(nn.Module):
    """f(z, x) = relu(W₁z) + relu(W₂x)."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.w1 = nn.Linear(width, width)
        self.w2 = nn.Linear(width, width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.w1(z)) + F.relu(self.w2(x))


@dataclass(frozen=True, kw_only=True)
class MNISTDEQConfig:
    """Which MNIST FC DEQ to build. ``tol`` is the relative residual (continuous: reltol)."""

    variant: str = "skipdeq"
    solver: str = "continuous"
    jacobian_reg: bool = False
    width: int = 128
    tol: float = 0.005
    max_iter: int = 50
    steady_state_test: str = "batch"
    integrator: str = "vcab3"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not (isinstance(self.width, int) and self.width > 0):
            raise ValueError(f"width must be a positive int, got {self.width!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}")
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        if self.steady_state_test not in STEADY_STATE_TESTS:
            raise ValueError(f"steady_state_test must be one of {STEADY_STATE_TESTS}, got {self.steady_state_test!r}")


def deq_metrics(stats) -> dict[str, float]:
    """Plain numbers for a log row from a DEQStats record (shared with models.mdeq)."""
    residual = stats.residual
    return {
        "residual": float(residual.max()) if residual.numel() else 0.0,
        "converged": float(stats.converged.float().mean()) if stats.converged.numel() else 1.0,
        "n_iter": float(stats.n_iter),
    }


def deq_regularizers(stats) -> dict[str, torch.Tensor]:
    """The unweighted auxiliary losses a DEQStats record carries, by the names the scripts weight."""
    regs = {}
    if stats.skip_loss is not None:
        regs["skip"] = stats.skip_loss
    if stats.jacobian_loss is not None:
        regs["jacobian"] = stats.jacobian_loss
    return regs


class MNISTFCDEQ(nn.Module):
    """Embedding -> DEQ(f) -> linear readout; forward returns a :class:`ZooOutput`."""

    def __init__(self, config: MNISTDEQConfig = MNISTDEQConfig()):
        super().__init__()
        from implicit.deq import DEQ, JacobianRegularizer, SkipInit, SkipRegInit, ZeroInit

        self.config = config
        w = config.width
        self.embed = nn.Linear(28 * 28, w)
        self.cell = FCCell(w)
        self.readout = nn.Linear(w, 10)
        self.skip = nn.Sequential(nn.Linear(w, w), nn.ReLU()) if config.variant == "skipdeq" else None
        if config.variant == "skipdeq":
            init = SkipInit(self.skip)
        elif config.variant == "skipregdeq":
            init = SkipRegInit()
        else:
            init = ZeroInit()
        self.deq = DEQ(
            self.cell,
            solver=make_solver(config.solver, tol=config.tol, max_iter=config.max_iter,
                               steady_state_test=config.steady_state_test, integrator=config.integrator),
            backward=make_backward(tol=config.tol),
            init=init,
            jacobian_reg=JacobianRegularizer() if config.jacobian_reg else None,
            # trained on a fixed iteration budget: solves that stop above tol still train
            differentiate_failed=True,
        )

    def forward(self, images: torch.Tensor) -> ZooOutput:
        if images.dim() < 2 or images[0].numel() != 28 * 28:
            raise ValueError(f"images must have shape (batch, 1, 28, 28) or (batch, 784), got {tuple(images.shape)}")
        x = self.embed(images.reshape(images.shape[0], -1))
        z, stats = self.deq(x)
        return ZooOutput(
            logits=self.readout(z),
            regularizers=deq_regularizers(stats),
            nfe_forward=int(stats.nfe_forward),
            stats=stats,
            metrics=deq_metrics(stats),
        )


def continuous_solver(integrator: str, *, tol: float, atol: float, max_iter: int, criterion: str,
                      tsit5_ode_atol: float):
    """The steady-state solve dz/dt = f(z) − z, stopped by the relative-residual test at ``tol``
    (``criterion`` "batch": the papers' test, one norm over the batch), with ``integrator``.
    With "tsit5" the integrator's tolerances are this library's earlier ones, rtol = tol and
    atol = ``tsit5_ode_atol``."""
    from implicit.deq import SteadyState
    from implicit.ode import VCAB3, VCABM3, Tsit5

    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if integrator == "tsit5":
        return SteadyState(solver=Tsit5(), rtol=tol, atol=atol, criterion=criterion, max_steps=max_iter,
                           ode_rtol=tol, ode_atol=tsit5_ode_atol)
    adams = VCAB3() if integrator == "vcab3" else VCABM3()
    return SteadyState(solver=adams, rtol=tol, atol=atol, criterion=criterion, max_steps=max_iter,
                       **PAPERS_ODE_TOLERANCES)


def make_solver(name: str, *, tol: float, max_iter: int, steady_state_test: str = "batch",
                integrator: str = "vcab3"):
    """Solver object for a command-line name: continuous (steady state with ``integrator``), newton, broyden."""
    from implicit.deq import Broyden, NewtonKrylov

    if name == "continuous":
        # the absolute test (atol 1e-6) is kept out of the way so the relative one decides. Tsit5's
        # atol is tol/10, not tol, on the batch test: at atol = tol every solve of an untrained
        # model stalls (Tsit5 steps at its stability limit, batch residual ~0.04 until max_steps:
        # 304 NFE), while tol/10 converges in 64 NFE untrained and 70 on a trained model
        return continuous_solver(integrator, tol=tol, atol=1e-6, max_iter=max_iter, criterion=steady_state_test,
                                 tsit5_ode_atol=tol / 10 if steady_state_test == "batch" else 1e-6)
    if name == "newton":
        return NewtonKrylov(tol=tol, max_iter=max_iter)
    if name == "broyden":
        return Broyden(tol=tol, max_iter=max_iter)
    raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")


def make_backward(*, tol: float, max_iter: int = 20):
    from implicit.deq import GMRES, ImplicitBackward

    return ImplicitBackward(solver=GMRES(tol=tol, max_iter=max_iter))


def build(config: MNISTDEQConfig) -> MNISTFCDEQ:
    return MNISTFCDEQ(config)


def _builder(variant: str):
    def builder(*, solver: str = "continuous", jacobian_reg: bool = False, **options) -> MNISTFCDEQ:
        return MNISTFCDEQ(MNISTDEQConfig(variant=variant, solver=solver, jacobian_reg=jacobian_reg, **options))

    builder.__name__ = f"build_{variant}"
    builder.__doc__ = f"MNIST FC {variant} (see models.mnist_deq)."
    return builder


# name -> builder(*, solver=..., jacobian_reg=..., width=..., tol=..., max_iter=...)
BUILDERS = {name: _builder(name) for name in VARIANTS}

# The paper's MNIST FC table (Pal et al. 2022), continuous solve without Jacobian
# regularization, keyed like the run records' summaries. With JR the paper reports: test %
# 98.12 / 97.75 / 98.02, NFE 5.03 / 4.00 / 4.00, training minutes 7.32 / 6.02 / 5.13,
# prediction s/batch 0.011 / 0.012 / 0.012 (deq / skipdeq / skipregdeq).
PAPER = {
    "deq": {"test_acc": 97.93, "test_nfe": 18.3, "train_time_s": 5.20 * 60, "predict_s_per_batch": 0.038},
    "skipdeq": {"test_acc": 97.76, "test_nfe": 4.00, "train_time_s": 1.71 * 60, "predict_s_per_batch": 0.010},
    "skipregdeq": {"test_acc": 97.97, "test_nfe": 4.00, "train_time_s": 1.30 * 60, "predict_s_per_batch": 0.010},
}
PAPER_JR = {
    "deq": {"test_acc": 98.12, "test_nfe": 5.03, "train_time_s": 7.32 * 60, "predict_s_per_batch": 0.011},
    "skipdeq": {"test_acc": 97.75, "test_nfe": 4.00, "train_time_s": 6.02 * 60, "predict_s_per_batch": 0.012},
    "skipregdeq": {"test_acc": 98.02, "test_nfe": 4.00, "train_time_s": 5.13 * 60, "predict_s_per_batch": 0.012},
}


def paper_numbers(name: str, config) -> dict | None:
    """The paper's numbers for a run: its MNIST FC table is for the continuous solve only, with
    and without Jacobian regularization; other solvers have no published row."""
    if getattr(config, "solver", "continuous") != "continuous":
        return None
    return (PAPER_JR if getattr(config, "jacobian_reg", False) else PAPER).get(name)
