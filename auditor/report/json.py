"""JSON output: `{"results": [result.to_json(), ...]}`, valid in every case.

Non-finite floats (a log's `nan`) become strings and integers too long to print become
strings, so the output always parses (json.dumps would write NaN, or raise).
"""

from __future__ import annotations

import dataclasses
import json
import math


def json_safe(value):
    """`value` with what JSON cannot hold (nan, inf, huge ints, other objects) as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**100:
        return f"{value:.6e}" if abs(value) < 10**300 else "a number too long to print"
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def results_json(results) -> str:
    return json.dumps({"results": [json_safe(r.to_json()) for r in results]}, indent=2, allow_nan=False)


def rules_json(docs) -> str:
    """`{"rules": [{"id", "flags", "ruling", "notes", "illegal_example", "legal_example"}, ...]}`"""
    return json.dumps({"rules": [dataclasses.asdict(doc) for doc in docs]}, indent=2)
