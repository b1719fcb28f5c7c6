"""The MNIST neural ODE experiment of ERNODE/SRNODE (Pal et al. 2021, arXiv 2105.03918): the paper's numbers.

Architecture and solver options: ``models/mnist_node.py``; training: ``python -m train.mnist --model
{node,ernode,srnode,...}``; the authors' regime: ``train/mnist_node_authors.py``; tables:
``python -m train.reproduce --list`` (the mnist entries).
"""

from __future__ import annotations

# The paper's MNIST NODE table (arXiv 2105.03918, Table 1), where the brief quotes it: test
# accuracy % and test NFE. Other cells are left out rather than guessed.
PAPER = {
    "node": {"test_acc": 97.94, "test_nfe": 253.0},
    "ernode": {"test_acc": 97.32, "test_nfe": 177.0},
}
