"""One row of a check report (`repo-gen doctor`, the plan checks `serve` runs before starting)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One checked component.

    Attributes:
        detail: the version when ok, the reason when not.
        fix: what to do, "" when ok.
        required: `repo-gen build` cannot run without it (doctor exits non-zero when one is missing).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False
