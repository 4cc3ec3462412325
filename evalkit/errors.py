"""The three kinds of failure, kept apart.

- :class:`UsageError`: the user's mistake (bad flag, malformed file). The CLI
  prints it as one line and exits with code 2.
- :class:`InfraError`: the machine's trouble (Docker down, image build failed).
  Recorded on the result, retried, never scored against the agent.
- The agent's failure is not an exception at all: it is just a verdict.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """Base class for errors evalkit raises on purpose."""


class UsageError(EvalkitError):
    """A problem the user can fix: the message names the file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class InfraError(EvalkitError):
    """Infrastructure trouble: not the agent's fault, worth one retry."""
