"""implicit: implicit-layer deep learning in PyTorch.

Public API. Internals live in private modules named after what they hold.
"""

from implicit._outcome import Outcome, SolverError

__all__ = ["Outcome", "SolverError"]
__version__ = "0.1.0"
