"""evalkit: measure which coding agent resolves *your* team's issues.

Importing this package is cheap and has no side effects: heavy dependencies
(docker, pandas, datasets) load inside the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
