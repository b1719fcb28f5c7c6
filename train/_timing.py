"""Prediction timing of several trained models, interleaved in one process.

Training runs share a loaded machine, so the prediction seconds their records hold cannot be
compared across runs. Timing every model on each batch in turn, repeat after repeat, lets load
from other processes fall on all of them alike; the experiments report medians of these samples
and ratios between models measured here, never between processes.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import torch

from train._trainer import _sync


def time_interleaved(models: Mapping[str, Callable[[torch.Tensor], Any]], batches: Sequence[torch.Tensor], *,
                     repeats: int, nfe: Callable[[Any], float], warmup: bool = True,
                     before_call: Callable[[int, int], None] | None = None,
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds and NFE of every (model, batch, repeat), without gradients.

    ``nfe(output)`` reads the cost from a model's output; ``before_call(repeat, batch)`` runs
    before each timed call, untimed (to reseed noise, so every model sees the same draws);
    ``warmup`` first runs each model once on the first batch, untimed, so one-off allocations
    do not land in the first model's first sample."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not models or not batches:
        raise ValueError(f"need at least one model and one batch, got {len(models)} and {len(batches)}")
    seconds = {name: [] for name in models}
    nfes = {name: [] for name in models}
    device = batches[0].device
    with torch.no_grad():
        if warmup:
            for model in models.values():
                model(batches[0])
        for r in range(repeats):
            for k, x in enumerate(batches):
                for name, model in models.items():
                    if before_call is not None:
                        before_call(r, k)
                    _sync(device)
                    start = time.perf_counter()
                    out = model(x)
                    _sync(device)
                    seconds[name].append(time.perf_counter() - start)
                    nfes[name].append(nfe(out))
    return seconds, nfes
