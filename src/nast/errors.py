"""Errors that stop a stage with a readable message (non-zero exit, no traceback)."""

from __future__ import annotations


class StageError(RuntimeError):
    """A structural problem: missing file, missing column, unreadable root, failed gate.

    The message must name the file (and the column or key) so the user can fix it.
    """


class MissingFileError(StageError):
    def __init__(self, path, what: str = "file"):
        super().__init__(f"{what} not found: {path}")
        self.path = path


class ValidationGateError(StageError):
    """A Great Expectations gate failed; the report path is in the message."""
