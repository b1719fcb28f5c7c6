"""The MNIST fully connected DEQ experiment of the Skip DEQ paper: the paper's numbers.

Architecture and solver settings: ``models/mnist_deq.py``; training: ``python -m train.mnist --model
{deq,skipdeq,skipregdeq}``; tables: ``python -m train.reproduce --list`` (the mnist_deq entries).
"""

from __future__ import annotations

# The paper's MNIST FC table (Pal et al. 2022, "Mixing Implicit and Explicit Deep Learning with Skip
# DEQs and Infinite Time Neural ODEs (Continuous DEQs)"), continuous solve, keyed like the run records'
# summaries: PAPER without Jacobian regularization, PAPER_JR with it.
PAPER = {
    "deq": {"test_acc": 97.93, "test_nfe": 18.3, "train_time_s": 5.20 * 60, "predict_s_per_batch": 0.038},
    "skipdeq": {"test_acc": 97.76, "test_nfe": 4.00, "train_time_s": 1.71 * 60, "predict_s_per_batch": 0.010},
    "skipregdeq": {"test_acc": 97.97, "test_nfe": 4.00, "train_time_s": 1.30 * 60, "predict_s_per_batch": 0.010},
}
PAPER_JR = {
    "deq": {"test_acc": 98.12, "test_nfe": 5.03, "train_time_s": 7.32 * 60, "predict_s_per_batch": 0.011},
    "skipdeq": {"test_acc": 97.75, "test_nfe": 4.00, "train_time_s": 6.02 * 60, "predict_s_per_batch": 0.012},
    "skipregdeq": {"test_acc": 98.02, "test_nfe": 4.00, "train_time_s": 5.13 * 60, "predict_s_per_batch": 0.012},
}


def paper_numbers(name: str, config) -> dict | None:
    """The paper's numbers for a run: its MNIST FC table is for the continuous solve only, with
    and without Jacobian regularization; other solvers have no published row."""
    if getattr(config, "solver", "continuous") != "continuous":
        return None
    return (PAPER_JR if getattr(config, "jacobian_reg", False) else PAPER).get(name)
