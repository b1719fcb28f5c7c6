"""Where the forward solve starts: zeros (vanilla DEQ) or an explicit prediction (Skip DEQ).

An initializer returns the start z₀ *with its graph*; the layer detaches it for the solve (no
backprop through the solve) and, for the Skip variants, keeps the graph for the auxiliary loss
mean|z_out − z₀| (an L1 norm averaged over all elements), which trains the prediction toward z*.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True, kw_only=True)
class Start:
    z0: Tensor
    anchor: Tensor | None  # the prediction the auxiliary loss pulls toward z*; None: no loss
    nfe: int  # f calls spent


class Initializer(abc.ABC):
    @abc.abstractmethod
    def start(self, f: Callable[[Tensor, Tensor], Tensor], x: Tensor, shape: tuple[int, ...]) -> Start:
        ...

    @abc.abstractmethod
    def module(self) -> nn.Module | None:
        """Trainable part the layer must register (so its parameters reach the optimizer)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZeroInit(Initializer):
    """z₀ = 0: the vanilla DEQ."""

    def start(self, f, x, shape):
        return Start(z0=torch.zeros(shape, dtype=x.dtype, device=x.device), anchor=None, nfe=0)

    def module(self):
        return None


@dataclasses.dataclass(frozen=True)
class SkipInit(Initializer):
    """Skip DEQ (Pal, Edelman, Rackauckas 2022): z₀ = g(x) for an explicit network g.

    Auxiliary loss mean|f(z*, x) − g(x)| (``stats.skip_loss``); add λ·skip_loss to the training
    loss so g learns to predict z* and the solve starts nearer to it.
    """

    g: nn.Module

    def __post_init__(self):
        if not isinstance(self.g, nn.Module):
            raise TypeError(f"SkipInit: g must be an nn.Module mapping x to z, got {type(self.g).__name__}")

    def start(self, f, x, shape):
        z0 = self.g(x)
        if not isinstance(z0, Tensor) or tuple(z0.shape) != tuple(shape):
            got = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
            raise ValueError(f"SkipInit: g(x) must return z's shape {tuple(shape)}, got {got}")
        return Start(z0=z0, anchor=z0, nfe=0)

    def module(self):
        return self.g


@dataclasses.dataclass(frozen=True, kw_only=True)
class SkipRegInit(Initializer):
    """Skip DEQ V2 (SkipReg): parameter-free z₀ = f(0, x), auxiliary loss mean|f(z*, x) − f(0, x)|."""

    def start(self, f, x, shape):
        z0 = f(torch.zeros(shape, dtype=x.dtype, device=x.device), x)
        if not isinstance(z0, Tensor) or tuple(z0.shape) != tuple(shape):
            got = tuple(z0.shape) if isinstance(z0, Tensor) else type(z0).__name__
            raise ValueError(f"f(z, x) must return a tensor of z's shape {tuple(shape)}, got shape {got}")
        return Start(z0=z0, anchor=z0, nfe=1)

    def module(self):
        return None
