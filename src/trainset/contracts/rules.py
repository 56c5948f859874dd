"""Value rules: each checks a loaded array and says what it found when the check fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    """A value rule. ``check`` returns None when the array passes, else what was found."""

    name: str
    expected: str
    check: Callable[[np.ndarray], str | None]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _finite_values(arr: np.ndarray) -> np.ndarray:
    values = np.abs(arr) if np.iscomplexobj(arr) else arr
    return values[np.isfinite(values)]


def MinValue(bound: float, *, inclusive: bool = True) -> Rule:
    """Every finite value >= bound (or > bound when not inclusive)."""
    op = ">=" if inclusive else ">"

    def check(arr: np.ndarray) -> str | None:
        finite = _finite_values(arr)
        if finite.size == 0:
            return None
        low = float(finite.min())
        bad = low < bound if inclusive else low <= bound
        return f"min {_fmt(low)}" if bad else None

    return Rule("min", f"values {op} {_fmt(bound)}", check)


def MaxValue(bound: float, *, inclusive: bool = False) -> Rule:
    """Every finite value < bound (or <= bound when inclusive)."""
    op = "<=" if inclusive else "<"

    def check(arr: np.ndarray) -> str | None:
        finite = _finite_values(arr)
        if finite.size == 0:
            return None
        high = float(finite.max())
        bad = high > bound if inclusive else high >= bound
        return f"max {_fmt(high)}" if bad else None

    return Rule("max", f"values {op} {_fmt(bound)}", check)


def Finite() -> Rule:
    """No NaN and no infinity."""

    def check(arr: np.ndarray) -> str | None:
        if not np.issubdtype(arr.dtype, np.number):
            return None
        nan = int(np.isnan(arr).sum())
        inf = int(np.isinf(arr).sum())
        return f"{nan} NaN and {inf} infinite value(s)" if nan or inf else None

    return Rule("finite", "no NaN or Inf", check)


def Predicate(name: str, expected: str, found: Callable[[np.ndarray], str | None]) -> Rule:
    """A custom rule: ``found(arr)`` returns None when the array passes, else what it found."""
    return Rule(name, expected, found)
