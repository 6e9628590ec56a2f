"""The rules: one module per rule id. Adding a rule = adding one file here.

Each module defines RULE, an instance of a `Rule` subclass (see base.py). Modules whose
name starts with an underscore hold shared helpers, not rules.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from auditor.rules.base import Rule


@lru_cache(maxsize=1)
def all_rules() -> tuple[Rule, ...]:
    rules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        rules.append(module.RULE)
    return tuple(rules)


def rule_ids() -> list[str]:
    return [rule.id for rule in all_rules()]
