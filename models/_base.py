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
