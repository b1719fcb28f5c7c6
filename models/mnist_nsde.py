"""MNIST neural SDE classifiers of the ERNODE/SRNODE paper (Pal et al. 2021, MNIST NSDE table).

image (784) -> linear 32 -> SDE on R³² over t in [0, 1] -> linear 10, with
drift 32 -> 64 (tanh) -> 32 and a linear diffusion 32 -> 32 read as diagonal noise (one
coefficient per state entry), Itô, with step-doubling adaptive steps starting from one step over
the whole interval. Variants:

* ``nsde``    no regularizer
* ``ernsde``  reports ``regularizers["error"]``     = R_E = Σ_j E_j |h_j|  (paper: λ_E = 10)
* ``srnsde``  reports ``regularizers["stiffness"]`` = R_S = Σ_j S_j |h_j|  (paper: λ_S = 0.1)

Each variant reports only its own regularizer, unweighted; the training script owns λ. R_E and
R_S of every solve are also in ``metrics`` for the log. In eval mode the batch is repeated for
``eval_trajectories`` independent Brownian paths, solved as one batch (one step sequence), and
the logits are averaged over the trajectories.

Defaults differ from the paper's solver on purpose. The paper used SOSRI at rtol = atol = 0.14;
with step doubling those tolerances let SRK cross [0, 1] in a single step from initialisation
on, so there is no cost for a regularizer to cut; and torchsde's SRK step costs 10 drift + 10
diffusion evaluations (60 per doubled attempt), about 1.5 s per batch of 512 at rtol 0.01 on a
CPU core. The defaults are therefore Milstein (strong order 1.0, 6 evaluations per attempt plus
a diffusion VJP) at rtol = atol = 0.01; ``scheme="srk", rtol=atol=0.14`` gives the paper's setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models._base import ZooOutput

__all__ = [
    "MNISTNSDEConfig", "MNISTNSDE", "VARIANTS", "SCHEMES", "PAPER", "PAPER_PREDICT_S", "REG_WEIGHTS", "build", "BUILDERS",
]

VARIANTS = ("nsde", "ernsde", "srnsde")
SCHEMES = ("srk", "milstein", "euler")
# which regularizer a variant trains on, with the paper's weight
REG_WEIGHTS = {"nsde": {}, "ernsde": {"error": 10.0}, "srnsde": {"stiffness": 0.1}}
# the paper's MNIST NSDE table (arXiv 2105.03918), keys as in train._results.COLUMNS
PAPER = {
    "nsde": {"test_acc": 96.95, "test_nfe": 411.0},
    "ernsde": {"test_acc": 96.27, "test_nfe": 185.0},
}
# the paper's prediction time in seconds (whole test evaluation, not per batch: no column of ours matches)
PAPER_PREDICT_S = {"nsde": 15.07, "ernsde": 7.23}


@dataclass(frozen=True, kw_only=True)
class MNISTNSDEConfig:
    """Which MNIST NSDE to build. ``dt0`` is the first step size the controller tries."""

    variant: str = "nsde"
    scheme: str = "milstein"
    width: int = 32
    hidden: int = 64
    rtol: float = 0.01
    atol: float = 0.01
    dt0: float = 1.0
    dt_min: float = 1e-4
    max_steps: int = 1000
    eval_trajectories: int = 10

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        for name in ("width", "hidden", "max_steps", "eval_trajectories"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")


def _scheme(name: str):
    from implicit.sde import SRK, EulerMaruyama, Milstein

    return {"srk": SRK, "milstein": Milstein, "euler": EulerMaruyama}[name]()


class _Autonomous(nn.Module):
    """Adapts a network of the state alone to the (t, y) signature of NeuralSDE."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class MNISTNSDE(nn.Module):
    """Embedding -> NeuralSDE -> linear readout; forward returns a :class:`ZooOutput`."""

    def __init__(self, config: MNISTNSDEConfig = MNISTNSDEConfig()):
        super().__init__()
        from implicit.sde import NeuralSDE, StepDoubling

        self.config = config
        w = config.width
        self.embed = nn.Linear(28 * 28, w)
        self.sde = NeuralSDE(
            _Autonomous(nn.Sequential(nn.Linear(w, config.hidden), nn.Tanh(), nn.Linear(config.hidden, w))),
            _Autonomous(nn.Linear(w, w)),
            scheme=_scheme(config.scheme),
            stepping=StepDoubling(dt0=config.dt0, rtol=config.rtol, atol=config.atol, dt_min=config.dt_min),
            max_steps=config.max_steps,
        )
        self.readout = nn.Linear(w, 10)

    def forward(self, images: torch.Tensor) -> ZooOutput:
        if images.dim() < 2 or images[0].numel() != 28 * 28:
            raise ValueError(f"images must have shape (batch, 1, 28, 28) or (batch, 784), got {tuple(images.shape)}")
        batch = images.shape[0]
        z0 = self.embed(images.reshape(batch, -1))
        k = 1 if self.training else self.config.eval_trajectories
        if k > 1:
            z0 = z0.repeat(k, 1)
        ts = torch.tensor([0.0, 1.0], dtype=z0.dtype, device=z0.device)
        zs, stats = self.sde(z0, ts)
        logits = self.readout(zs[-1]).reshape(k, batch, 10).mean(0)
        regularizers = {}
        if self.config.variant == "ernsde":
            regularizers["error"] = stats.reg_error
        elif self.config.variant == "srnsde":
            regularizers["stiffness"] = stats.reg_stiffness
        return ZooOutput(
            logits=logits,
            regularizers=regularizers,
            nfe_forward=int(stats.nfe_forward),
            stats=stats,
            metrics={
                "R_E": float(stats.reg_error.detach()),
                "R_S": float(stats.reg_stiffness.detach()),
                "accepted": float(stats.n_accepted),
                "rejected": float(stats.n_rejected),
                "nfe_drift": float(stats.nfe_drift),
            },
        )


def build(config: MNISTNSDEConfig) -> MNISTNSDE:
    return MNISTNSDE(config)


def _builder(variant: str):
    def builder(**options) -> MNISTNSDE:
        return MNISTNSDE(MNISTNSDEConfig(variant=variant, **options))

    builder.__name__ = f"build_{variant}"
    builder.__doc__ = f"MNIST {variant} (see models.mnist_nsde); options are MNISTNSDEConfig fields."
    return builder


# name -> builder(**MNISTNSDEConfig fields except variant)
BUILDERS = {name: _builder(name) for name in VARIANTS}
