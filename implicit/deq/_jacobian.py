"""Jacobian stabilization (Bai, Koltun, Kolter 2021): a Hutchinson estimate of ‖∂f/∂z‖²_F / d at z*."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from implicit.deq._root import check_int


@dataclasses.dataclass(frozen=True, kw_only=True)
class JacobianRegularizer:
    """E_ε ‖εᵀ ∂f/∂z‖² / d with ε ~ N(0, I), averaged over ``n_samples`` draws and the batch.

    d is the number of elements of one sample's z, so the value is the mean squared entry of
    the Jacobian (unbiased). It keeps its graph: add λ·jacobian_loss to the training loss.
    """

    n_samples: int = 1

    def __post_init__(self):
        check_int("JacobianRegularizer", "n_samples", self.n_samples, minimum=1)

    def loss(self, z_leaf: Tensor, fz: Tensor, *, create_graph: bool) -> Tensor:
        """``fz`` = f(z_leaf, x) with its graph; ``z_leaf`` a tensor that requires grad."""
        total = fz.new_zeros(())
        for _ in range(self.n_samples):
            eps = torch.randn_like(fz)
            (vj,) = torch.autograd.grad(fz, z_leaf, eps, retain_graph=True, create_graph=create_graph)
            total = total + vj.pow(2).mean()
        return total / self.n_samples
