"""MNIST fully connected DEQs of the Skip DEQ paper (Pal, Edelman & Rackauckas 2022).

x = W₀·image (784 -> 128); z* = f(z*, x) with f(z, x) = relu(W₁z) + relu(W₂x) on R¹²⁸;
logits = W₃z* (128 -> 10). Variants differ only in how the solve starts:

* ``deq``        z₀ = 0
* ``skipdeq``    z₀ = g(x), g = Dense(128, 128, relu); auxiliary loss ‖f(z*, x) − g(x)‖₁
* ``skipregdeq`` z₀ = f(0, x) (Skip DEQ V2, no extra network); auxiliary loss ‖f(z*, x) − f(0, x)‖₁

each solved continuously (dz/dt = f(z, x) − z integrated by ``integrator``, by default the papers'
VCAB3, until the relative residual is below ``tol``: by default of the batch as one vector, the
continuous-DEQ papers' test; ``stopping_test="per_sample"`` asks it of every sample) or
discretely (``"newton"``: Newton–Krylov, or ``"broyden"``), optionally with Jacobian regularization.
The model reports the unweighted "skip" and "jacobian" losses; the experiment weights them (the
paper's and the authors' λ are in ``train.exp_mnist_deq``). The weight trades
implicitness for NFE: training can switch the implicit term off (W₁z* + b₁ < 0 in every unit, so
f(z*, x) = f(0, x)) and the solve becomes trivial; how much of z* the implicit term still carries
at each weight is measured in results/mnist_deq/README.md (``python -m train.exp_mnist_deq share``).

Example::

    model = BUILDERS["skipregdeq"](solver="broyden", tol=1e-4)
    out = model(images)            # images (batch, 1, 28, 28)
    out.logits, out.nfe_forward, out.regularizers["skip"]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from implicit.deq._renamed import renamed_keyword
from models._base import ZooOutput

__all__ = ["FCCell", "MNISTFCDEQ", "MNISTDEQConfig", "VARIANTS", "SOLVERS", "SOLVER_ALIASES", "STOPPING_TESTS",
           "solver_name", "build", "BUILDERS", "deq_metrics", "deq_regularizers"]

VARIANTS = ("deq", "skipdeq", "skipregdeq")
# the command-line names of the root solvers: one spelling per solver across the zoo and the CLIs
SOLVERS = ("continuous", "newton", "broyden")
# older spellings, accepted with a DeprecationWarning for one release: the CIFAR experiment
# called limited-memory Broyden "discrete" (the papers' "discrete CIFAR solver") before issue #16,
# and its committed records and checkpoints still do
SOLVER_ALIASES = {"discrete": "broyden"}

# The continuous solve's integrator. "vcab3" is the continuous-DEQ papers': DeepEquilibriumNetworks.jl,
# branch ap/paper (tip d18c6103), experiments/src/config.jl: ode_solver = "vcab3" (also "vcabm3",
# "tsit5"); its src/solve.jl hands only the termination tolerances to the steady-state callback, so
# the integrator runs at OrdinaryDiffEq's default reltol 1e-3, abstol 1e-6 (read there, not run).
# "tsit5" is this library's earlier setting (integrator rtol = tol, atol = tol/10; the records made
# before the Adams integrators existed ran it).
INTEGRATORS = ("vcab3", "vcabm3", "tsit5")
PAPERS_ODE_TOLERANCES = {"ode_rtol": 1e-3, "ode_atol": 1e-6}
# when a solve stops (the library's ``stopping_test``); "batch", the papers' test, first: the default
STOPPING_TESTS = ("batch", "per_sample")


def solver_name(name: object, *, owner: str = "solver", stacklevel: int = 2) -> str:
    """The canonical command-line name of a root solver: ``"discrete"`` -> ``"broyden"`` (deprecated).

    The one lookup every zoo model and CLI can share, so an old spelling in a saved config or a
    script keeps working while it moves to the canonical one. ``stacklevel`` as in ``warnings.warn``,
    counted from the caller of this function.
    """
    if isinstance(name, str) and name in SOLVER_ALIASES:
        new = SOLVER_ALIASES[name]
        warnings.warn(f"{owner}={name!r} is deprecated, use {owner}={new!r} (same solver; {name!r} goes in the "
                      f"next release)", DeprecationWarning, stacklevel=stacklevel + 1)
        return new
    if not (isinstance(name, str) and name in SOLVERS):
        raise ValueError(f"{owner} must be one of {SOLVERS}, got {name!r}")
    return name


class FCCell(nn.Module):
    """f(z, x) = relu(W₁z) + relu(W₂x), z ∈ ℝ^width, x ∈ ℝ^in_features (default: width).

    The zoo model feeds it the embedded image (x already of width 128); a benchmark can feed the raw
    784 pixels with ``in_features=784``. W₁ is built before W₂, so a seed gives the same weights
    whichever way it is built.
    """

    def __init__(self, width: int = 128, in_features: int | None = None):
        super().__init__()
        for name, value in (("width", width), ("in_features", in_features)):
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"FCCell: {name} must be a positive int, got {value!r}")
        self.w1 = nn.Linear(width, width)
        self.w2 = nn.Linear(width if in_features is None else in_features, width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.w1(z)) + F.relu(self.w2(x))


@renamed_keyword("steady_state_test", "stopping_test", owner="MNISTDEQConfig")
@dataclass(frozen=True, kw_only=True)
class MNISTDEQConfig:
    """Which MNIST FC DEQ to build. ``tol`` is the relative residual (continuous: reltol).

    ``solver``: see ``SOLVERS`` ("discrete" is read as "broyden", deprecated); ``stopping_test``:
    see ``STOPPING_TESTS`` (``steady_state_test=`` is its deprecated alias).
    """

    variant: str = "skipdeq"
    solver: str = "continuous"
    jacobian_reg: bool = False
    width: int = 128
    tol: float = 0.005
    max_iter: int = 50
    stopping_test: str = "batch"
    integrator: str = "vcab3"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        # frozen: the canonical spelling is stored, so equal configs compare equal
        # (the warning points past __post_init__, the generated and the renaming __init__, to the caller)
        object.__setattr__(self, "solver", solver_name(self.solver, stacklevel=4))
        if not (isinstance(self.width, int) and self.width > 0):
            raise ValueError(f"width must be a positive int, got {self.width!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, got {self.tol!r}")
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.integrator!r}")
        if self.stopping_test not in STOPPING_TESTS:
            raise ValueError(f"stopping_test must be one of {STOPPING_TESTS}, got {self.stopping_test!r}")


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
                               stopping_test=config.stopping_test, integrator=config.integrator),
            gradient=make_gradient(tol=config.tol),
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


@renamed_keyword("criterion", "stopping_test", owner="continuous_solver")
def continuous_solver(integrator: str, *, tol: float, atol: float, max_iter: int, stopping_test: str,
                      tsit5_ode_atol: float):
    """The steady-state solve dz/dt = f(z) − z, stopped by the relative-residual test at ``tol``
    (``stopping_test`` "batch": the papers' test, one norm over the batch), with ``integrator``.
    With "tsit5" the integrator's tolerances are this library's earlier ones, rtol = tol and
    atol = ``tsit5_ode_atol``. ``criterion=`` is the deprecated alias of ``stopping_test=``."""
    from implicit.deq import SteadyState
    from implicit.ode import VCAB3, VCABM3, Tsit5

    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    if integrator == "tsit5":
        return SteadyState(solver=Tsit5(), rtol=tol, atol=atol, stopping_test=stopping_test, max_steps=max_iter,
                           ode_rtol=tol, ode_atol=tsit5_ode_atol)
    adams = VCAB3() if integrator == "vcab3" else VCABM3()
    return SteadyState(solver=adams, rtol=tol, atol=atol, stopping_test=stopping_test, max_steps=max_iter,
                       **PAPERS_ODE_TOLERANCES)


@renamed_keyword("steady_state_test", "stopping_test", owner="make_solver")
def make_solver(name: str, *, tol: float, max_iter: int, stopping_test: str = "batch",
                integrator: str = "vcab3"):
    """Solver object for a command-line name: continuous (steady state with ``integrator``), newton,
    broyden ("discrete" is its deprecated spelling). ``steady_state_test=`` is the deprecated alias
    of ``stopping_test=``."""
    from implicit.deq import Broyden, NewtonKrylov

    name = solver_name(name, stacklevel=3)  # past the renaming wrapper, to the caller
    if name == "continuous":
        # the absolute test (atol 1e-6) is kept out of the way so the relative one decides. Tsit5's
        # atol is tol/10, not tol, on the batch test: at atol = tol every solve of an untrained
        # model stalls at max_steps (Tsit5 steps at its stability limit), while tol/10 converges,
        # untrained and trained (measured: results/mnist_deq/steady_state_probe.md)
        return continuous_solver(integrator, tol=tol, atol=1e-6, max_iter=max_iter, stopping_test=stopping_test,
                                 tsit5_ode_atol=tol / 10 if stopping_test == "batch" else 1e-6)
    if name == "newton":
        return NewtonKrylov(tol=tol, max_iter=max_iter)
    return Broyden(tol=tol, max_iter=max_iter)


def make_gradient(*, tol: float, max_iter: int = 20):
    """How the zoo model's gradients are computed: the implicit gradient, its adjoint solve by GMRES."""
    from implicit.deq import GMRES, ImplicitBackward

    return ImplicitBackward(solver=GMRES(tol=tol, max_iter=max_iter))


def make_backward(*, tol: float, max_iter: int = 20):
    """Deprecated name of :func:`make_gradient` (one name per idea: the layer keyword is ``gradient``)."""
    warnings.warn("make_backward is deprecated, use make_gradient (same object)", DeprecationWarning, stacklevel=2)
    return make_gradient(tol=tol, max_iter=max_iter)


def build(config: MNISTDEQConfig) -> MNISTFCDEQ:
    return MNISTFCDEQ(config)


def _builder(variant: str):
    def builder(*, solver: str = "continuous", jacobian_reg: bool = False, **options) -> MNISTFCDEQ:
        return MNISTFCDEQ(MNISTDEQConfig(variant=variant, solver=solver, jacobian_reg=jacobian_reg, **options))

    builder.__name__ = f"build_{variant}"
    builder.__doc__ = f"MNIST FC {variant} (see models.mnist_deq)."
    # renamed here too, so the deprecation points at the script that passed the old keyword
    return renamed_keyword("steady_state_test", "stopping_test", owner=builder.__name__)(builder)


# name -> builder(*, solver=..., jacobian_reg=..., width=..., tol=..., max_iter=...)
BUILDERS = {name: _builder(name) for name in VARIANTS}
