"""implicit: implicit-layer deep learning in PyTorch.

This file is the public API; internals live in private modules named after what they hold
(one solver family per file, one layer per file).
"""

from implicit._outcome import Outcome, SolverError

__all__ = ["Outcome", "SolverError"]

# --- neural ODEs (implicit/ode) ---

# --- deep equilibrium models (implicit/deq) ---

# --- neural SDEs (implicit/sde) ---

__version__ = "0.1.0"
