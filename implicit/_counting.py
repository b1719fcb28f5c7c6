"""Counting backward work: an identity on a tensor whose backward adds to a statistics record.

Solvers put it on the outputs of f so that the record they return learns how many
vector-Jacobian products of f the backward pass made, when (and each time) it runs.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor


class BackwardTally(abc.ABC):
    """A mutable cell owned by a statistics record, counting VJPs of f made by backward."""

    @abc.abstractmethod
    def add_backward(self, n: int) -> None:
        """Record that backward made ``n`` more vector-Jacobian products of f."""


class _CountBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tally, n):
        ctx.tally, ctx.n = tally, n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        ctx.tally.add_backward(ctx.n)
        return g, None, None


def count_backward(x: Tensor, tally: BackwardTally, n: int = 1) -> Tensor:
    """``x`` unchanged; each backward pass through it adds ``n`` to ``tally``."""
    return _CountBackward.apply(x, tally, n)
