"""What several commands print the same way: who runs them (for the promotion ledger) and a
figure that may be missing."""

from __future__ import annotations

import getpass


def operator() -> str:
    """Who runs the command, for the promotion ledger."""
    return f"cli ({getpass.getuser()})"


def figure(value: float | None) -> str:
    """A metric to four places, or a dash where it is missing."""
    return "  -   " if value is None else f"{value:.4f}"
