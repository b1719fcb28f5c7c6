"""Counting backward work: an identity on a tensor whose backward adds to a statistics record.

Solvers put it on the outputs of f so that the record they return learns how many
vector-Jacobian products of f the backward pass made, when (and each time) it runs.
:class:`BackwardCounter` is the one cell the ODE and SDE records (``nfe_backward``) read; a
record that says more about its backward pass (the DEQ's ``BackwardRecord``) is its own tally.
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


class BackwardCounter(BackwardTally):
    """A count of VJPs of f made by backward, owned by the statistics record that reports it.

    Two ways in: :func:`count_backward` on an output of f calls :meth:`add_backward`, and
    :meth:`tick` is a tensor hook (``out.register_hook(counter.tick)``) that adds one per gradient
    reaching that output. A counter built with ``armed=False`` ignores both until :meth:`arm`: a
    solver that differentiates f inside its forward solve (the SDE's Milstein term g·g′, taken with
    autograd) arms it only after the solve, so those VJPs are part of the forward work and
    ``nfe_backward`` counts only what a backward pass through the result does.
    """

    __slots__ = ("value", "armed")

    def __init__(self, *, armed: bool = True) -> None:
        self.value = 0
        self.armed = armed

    def arm(self) -> None:
        self.armed = True

    def add_backward(self, n: int) -> None:
        if self.armed:
            self.value += n

    def tick(self, grad: Tensor) -> None:
        self.add_backward(1)

    def __repr__(self) -> str:
        return f"BackwardCounter({self.value})"


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
