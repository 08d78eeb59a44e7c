"""Numbers made fit for JSON, which has no NaN or infinity: the model card, the realized
performance report and the API's version rows all write metrics that may be undefined (an AUC
of a group with one class, a metric a version was trained without)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every NaN and infinity, however deep in dicts, lists and tuples, replaced
    by None; other real numbers but integers become floats (numpy's included)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, Integral) or not isinstance(value, Real):
        return value
    number = float(value)
    return number if math.isfinite(number) else None
