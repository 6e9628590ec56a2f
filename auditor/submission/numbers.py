"""Numbers as printed: the value and how many decimals it was printed with.

Claims are checked "to the printed precision": 1.1151 in a README agrees with
1.11508120 in a log, 1.1152 does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Printed:
    value: float
    text: str

    @property
    def decimals(self) -> int:
        mantissa = self.text.lower().split("e")[0]
        return len(mantissa.split(".")[1]) if "." in mantissa else 0

    @property
    def half_unit(self) -> float:
        """Half of the last printed digit: how far a rounded value may be from the truth."""
        return 0.5 * 10.0 ** (-self.decimals)


def printed(text) -> Printed | None:
    """A Printed from a string, int or float; None when it is not a finite number."""
    if isinstance(text, Printed):
        return text
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        text = repr(text)
    text = str(text).strip().replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return Printed(value, text)


def agree(a: Printed, b: Printed | float) -> bool:
    """Two figures agree when they differ by no more than their printing allows."""
    b_value = b.value if isinstance(b, Printed) else b
    b_half = b.half_unit if isinstance(b, Printed) else 0.0
    return abs(a.value - b_value) <= a.half_unit + b_half + 1e-12


def agree_mean(claimed: Printed, values: list[Printed]) -> bool:
    """A claimed mean agrees with per-seed figures when it matches their mean to printed precision.

    The claimant may have averaged exact values or values rounded to the digits it prints,
    so the mean may be off by one unit in its last printed place.
    """
    mean = sum(v.value for v in values) / len(values)
    slack = max(v.half_unit for v in values)
    return abs(claimed.value - mean) <= 2 * claimed.half_unit + slack + 1e-12
