"""The one error type the training CLIs print as a single line (exit code 2) instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix from the command line or the file system: bad data, an unwritable
    output folder, a finished run in the way, a missing checkpoint. Its message names the argument
    or file, what came and what was expected, and the fix."""
