"""MNIST neural-ODE classifiers of the ERNODE/SRNODE paper (Pal et al. 2021, first table).

image -> z₀ ∈ ℝ⁷⁸⁴ (flattened) -> z(1) from dz/dt = f(t, z), f(t, z) = tanh(W₂[tanh(W₁[z; t]); t])
(784 -> 100 -> 784, time appended to each layer's input), Tsit5 on t ∈ [0, 1] -> linear 784 -> 10.

Variants differ in what the model reports for the training script to weight, and in STEER:

* ``node``      vanilla
* ``ernode``    ``regularizers["error"]``     = R_E = Σ_j E_j |h_j| (ERNODE)
* ``srnode``    ``regularizers["stiffness"]`` = R_S = Σ_j S_j |h_j| (SRNODE)
* ``steer``     end time drawn from U(1 − b, 1 + b) in training (STEER, b = 0.5)
* ``taynode``   ``regularizers["taylor"]``    = ∫ ‖d³z/dt³‖² dt (TayNODE, K = 3)
* ``steer+er``, ``steer+sr``, ``sr+er``: the combinations

R_E and R_S of every solve are also in ``metrics`` (as plain numbers) so vanilla runs log them.

How the solve and the regularizers are set up (every option a config field):

* ``rtol``/``atol`` (default 1e-5). The authors' much tighter tolerance in Float32 works here
  too: the embedded error estimate is a combination of stages times h, not a difference of two
  rounded solutions, so it does not drown in rounding noise (`train/exp_mnist_node.py` holds
  the measurements and the authors' settings with their sources).
* ``controller``: ``"i"`` (torchdiffeq's integral controller, default) or ``"pi"``
  (OrdinaryDiffEq's PI controller with its Tsit5 defaults, as the authors' solver).
* ``step_path``: how much of the step-size path the gradient follows (``implicit.odeint``).
* ``aggregation``: ``"paper"`` R_E = Σ E_j|h_j|, R_S = Σ S_j|h_j| (the paper's formulas), or
  ``"authors"``, what the authors' code trains on: R_E = mean over the saved values
  [1·h_0, E_1 h_1, ..., E_n h_n] (their saving callback also saves at the start, where
  OrdinaryDiffEq's EEst is 1 and dt the initial step) and R_S = max over [1, S_1, ..., S_n] of
  |S|/3.5068 (eigen_est starts at 1; 3.5068 is Tsit5's stability size), no step weighting.
* ``init``: ``"torch"`` (PyTorch's default Linear init) or ``"glorot"`` (Glorot-uniform weights and
  zero biases, Flux's Dense default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models._base import ZooOutput, authors_error, authors_stiffness

__all__ = ["MNISTNODEConfig", "MNISTNODE", "ODEFunc", "VARIANTS", "REGULARIZERS", "build", "BUILDERS",
           "TSIT5_STABILITY_SIZE"]

# OrdinaryDiffEq.jl v5.50.0, src/alg_utils.jl: alg_stability_size(alg::Tsit5) = 3.5068 (the authors
# scale the stiffness estimate by its inverse).
TSIT5_STABILITY_SIZE = 3.5068
CONTROLLERS = ("i", "pi")
AGGREGATIONS = ("paper", "authors")
INITS = ("torch", "glorot")

VARIANTS = ("node", "ernode", "srnode", "steer", "taynode", "steer+er", "steer+sr", "sr+er")
# which regularizers each variant reports (and so trains on, with the script's weights)
REGULARIZERS = {
    "node": (), "ernode": ("error",), "srnode": ("stiffness",), "steer": (), "taynode": ("taylor",),
    "steer+er": ("error",), "steer+sr": ("stiffness",), "sr+er": ("stiffness", "error"),
}
STEER_VARIANTS = ("steer", "steer+er", "steer+sr")


class ODEFunc(nn.Module):
    """f(t, z) = tanh(W₂[tanh(W₁[z; t]); t]) for z of shape (batch, dim)."""

    def __init__(self, dim: int = 784, hidden: int = 100):
        super().__init__()
        self.l1 = nn.Linear(dim + 1, hidden)
        self.l2 = nn.Linear(hidden + 1, dim)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # t stays a tensor (no float(t)): TayNODE differentiates f in t by forward mode
        tt = t.to(z.dtype).expand(z.shape[0], 1)
        h = torch.tanh(self.l1(torch.cat([z, tt], 1)))
        return torch.tanh(self.l2(torch.cat([h, tt], 1)))


@dataclass(frozen=True, kw_only=True)
class MNISTNODEConfig:
    """Which MNIST NODE to build (see the module docstring for the variants and tolerance)."""

    variant: str = "node"
    hidden: int = 100
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 2000
    steer_b: float = 0.5
    taylor_order: int = 3
    controller: str = "i"
    step_path: str = "detached"
    aggregation: str = "paper"
    init: str = "torch"

    def __post_init__(self):
        from implicit.ode import STEP_PATHS

        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name, allowed in (("controller", CONTROLLERS), ("step_path", STEP_PATHS), ("aggregation", AGGREGATIONS),
                              ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("hidden", "max_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")


class MNISTNODE(nn.Module):
    """Flatten -> NeuralODE(f) on [0, 1] -> linear readout; forward returns a :class:`ZooOutput`."""

    def __init__(self, config: MNISTNODEConfig = MNISTNODEConfig()):
        super().__init__()
        from implicit import Backprop, NeuralODE, PIController, Steer, TaylorRegularizer, Tsit5

        self.config = config
        f = ODEFunc(784, config.hidden)
        self.readout = nn.Linear(784, 10)
        if config.init == "glorot":
            for layer in (f.l1, f.l2, self.readout):
                nn.init.xavier_uniform_(layer.weight)  # Flux's glorot_uniform: U(±sqrt(6 / (fan_in + fan_out)))
                nn.init.zeros_(layer.bias)
        solve = dict(t=(0.0, 1.0), solver=Tsit5(), rtol=config.rtol, atol=config.atol, max_steps=config.max_steps,
                     controller=PIController() if config.controller == "pi" else None,
                     gradient=Backprop(step_path=config.step_path))
        self.ode = NeuralODE(
            f, **solve,
            regularizer=TaylorRegularizer(order=config.taylor_order) if config.variant == "taynode" else None,
            steer=Steer(b=config.steer_b) if config.variant in STEER_VARIANTS else None,
        )
        # TayNODE integrates its regularizer as extra state, which changes the error control; the
        # test NFE of the paper is that of the plain ODE, so eval mode solves without it (same f).
        self.ode_plain = NeuralODE(f, **solve) if config.variant == "taynode" else None

    def forward(self, images: torch.Tensor) -> ZooOutput:
        if images.dim() < 2 or images[0].numel() != 28 * 28:
            raise ValueError(f"images must have shape (batch, 1, 28, 28) or (batch, 784), got {tuple(images.shape)}")
        ode = self.ode_plain if (self.ode_plain is not None and not self.training) else self.ode
        zs, stats = ode(images.reshape(images.shape[0], 784))
        if self.config.aggregation == "paper":
            available = {"error": stats.reg_error, "stiffness": stats.reg_stiffness, "taylor": stats.reg_taylor}
        else:
            available = {"error": authors_error(stats, stats.initial_step),
                         "stiffness": authors_stiffness(stats, TSIT5_STABILITY_SIZE),
                         "taylor": stats.reg_taylor}
        regularizers = {name: available[name] for name in REGULARIZERS[self.config.variant] if available[name] is not None}
        metrics = {"accepted": float(stats.n_accepted), "rejected": float(stats.n_rejected)}
        if stats.reg_error is not None:
            metrics["R_E"] = float(stats.reg_error.detach())
        if stats.reg_stiffness is not None:
            metrics["R_S"] = float(stats.reg_stiffness.detach())
        if self.config.aggregation == "authors":
            for key, name in (("R_E_authors", "error"), ("R_S_authors", "stiffness")):
                if available[name] is not None:
                    metrics[key] = float(available[name].detach())
        return ZooOutput(
            logits=self.readout(zs[-1]),
            regularizers=regularizers,
            nfe_forward=int(stats.nfe_forward),
            stats=stats,
            metrics=metrics,
        )


def build(config: MNISTNODEConfig) -> MNISTNODE:
    return MNISTNODE(config)


def _builder(variant: str):
    def builder(**options) -> MNISTNODE:
        return MNISTNODE(MNISTNODEConfig(variant=variant, **options))

    builder.__name__ = f"build_{variant.replace('+', '_')}"
    builder.__doc__ = f"MNIST {variant} (see models.mnist_node); options are MNISTNODEConfig fields."
    return builder


# name -> builder(**MNISTNODEConfig fields except variant)
BUILDERS = {name: _builder(name) for name in VARIANTS}
