"""The MNIST neural ODE experiment of ERNODE/SRNODE (Pal et al. 2021, arXiv 2105.03918): the paper's numbers.

Architecture and solver options: ``models/mnist_node.py``; training: ``python -m train.mnist --model
{node,ernode,srnode,...}``; the authors' regime: ``train/mnist_node_authors.py``; tables:
``python -m train.reproduce --list`` (the mnist entries).
"""

from __future__ import annotations

from train._trainer import Constant, EpochwiseExponential, ExponentialAnneal, WeightSchedule

# The paper's MNIST NODE table (arXiv 2105.03918, Table 1), where the brief quotes it: test
# accuracy % and test NFE. Other cells are left out rather than guessed.
PAPER = {
    "node": {"test_acc": 97.94, "test_nfe": 253.0},
    "ernode": {"test_acc": 97.32, "test_nfe": 177.0},
}

# the small default run: a few minutes on a CPU
SMALL = {"epochs": 2, "batch_size": 128, "limit_train": 10_000, "limit_test": None,
         "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "lr_decay": 1e-5}
# the paper's schedule (--preset paper)
PAPER_SCHEDULE = {"epochs": 75, "batch_size": 512, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "lr_decay": 1e-5,
                  "limit_train": None, "limit_test": None}
# --preset authors: the training settings and the solver/model/input options of the authors' release
# script (train/mnist_node_authors.py names the source lines)
AUTHORS_SCHEDULE = dict(PAPER_SCHEDULE)
AUTHORS_OPTIONS = {"rtol": 1.4e-8, "atol": 1.4e-8, "controller": "pi", "step_path": "initial",
                   "aggregation": "authors", "init": "glorot", "inputs": "unit", "eval_batch_size": 512,
                   "max_steps": 100}


def weights(variant: str, config) -> dict[str, WeightSchedule]:
    """λ per regularizer. Paper: λ_E annealed exponentially from 100 to 10 over training; λ_S = 0.0285;
    TayNODE λ = 3.02e-3. --preset authors: their per-epoch schedule of λ_E, and λ_S = 0.1 on their
    max-of-|S| term (train/mnist_node_authors.py names the source lines)."""
    if config.preset == "authors":
        er = {"error": EpochwiseExponential(start=100.0, end=10.0, epochs=config.epochs)}
    else:
        er = {"error": ExponentialAnneal(start=100.0, end=10.0)}
    sr = {"stiffness": Constant(value=0.1 if config.aggregation == "authors" else 0.0285)}
    return {
        "node": {}, "steer": {}, "ernode": er, "srnode": sr, "taynode": {"taylor": Constant(value=3.02e-3)},
        "steer+er": er, "steer+sr": sr, "sr+er": {**sr, **er},
    }[variant]
