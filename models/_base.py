"""What every zoo model returns, so one training loop serves ODE, SDE and DEQ models.

Models report *unweighted* regularizer values; the training script owns the weights and
their schedules (e.g. ERNODE's annealed lambda), because those belong to an experiment,
not to a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


@dataclass(frozen=True, kw_only=True)
class ZooOutput:
    logits: torch.Tensor
    # name -> scalar tensor in the autograd graph, e.g. "error" (R_E), "stiffness" (R_S),
    # "taylor", "kinetic", "jacobian", "skip". Empty when the variant has none.
    regularizers: Mapping[str, torch.Tensor] = field(default_factory=dict)
    nfe_forward: int = 0
    # the layer's own statistics record (ODEStats, DEQStats, SDEStats); its nfe_backward is
    # filled in when backward runs.
    stats: object = None
    # plain numbers for the per-epoch log row (final residual, accepted steps, ...)
    metrics: Mapping[str, float] = field(default_factory=dict)


# What the RegNeuralDE.jl authors' code trains on: its saving callback stores one value per accepted step
# and one at the start, where the solver's EEst and eigen_est are both 1. Shared by the ODE and SDE models.


def authors_error(stats, initial_step: torch.Tensor | None) -> torch.Tensor | None:
    """mean([1·h_0, E_1 h_1, ..., E_n h_n]) of a solve record, h_0 its initial step."""
    if stats.error_estimates is None or initial_step is None:
        return None
    return (initial_step.reshape(()) + stats.regularizer("error", "sum")) / (stats.n_accepted + 1)


def authors_stiffness(stats, stability_size: float) -> torch.Tensor | None:
    """max([1, |S_1|, ..., |S_n|]) / the scheme's stability size, of a solve record."""
    s = stats.stiffness_estimates
    if s is None:
        return None
    return torch.cat([s.new_ones(1), s.abs()]).amax() / stability_size
