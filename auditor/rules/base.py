"""What every rule is: an id, the ruling it enforces, a check, and its own examples.

Rules follow Fixit's shape: one module per rule under auditor/rules/, a docstring with the
ruling (Issue/PR numbers of openai/parameter-golf), a stable id, and VALID / INVALID
example snippets that tests/test_rules.py runs for every rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from auditor.analysis import Analysis, Scope
from auditor.analysis.index import MODULE_SCOPE, Function


@dataclass
class Hit:
    """What a rule saw; the runner turns it into a Finding (live or dormant)."""

    function: Function
    line: int
    end_line: int
    message: str
    severity: str = "violation"  # "violation" or "info" (a legal pattern worth showing)
    # For code outside the run's call graph that matters anyway (a data-prep script of the
    # submission that writes validation tokens into training shards).
    always_live: bool = False


class Rule:
    id: ClassVar[str]
    # A function is only checked by this rule when its text matches.
    prefilter: ClassVar[re.Pattern | None] = None
    VALID: ClassVar[list[str]] = []
    INVALID: ClassVar[list[str]] = []

    def check(self, analysis: Analysis) -> Iterator[Hit]:
        for function in self.candidates(analysis):
            yield from self.check_scope(analysis, analysis.scope(function))

    def candidates(self, analysis: Analysis) -> list[Function]:
        functions = analysis.index.functions if self.prefilter is None else analysis.functions_matching(self.prefilter)
        return [f for f in functions if self.relevant(analysis, f)]

    def relevant(self, analysis: Analysis, function: Function) -> bool:
        """A cheap test before the function's code is walked."""
        return True

    def check_scope(self, analysis: Analysis, scope: Scope) -> Iterator[Hit]:
        return iter(())

    def hit(self, scope: Scope, node, message: str, severity: str = "violation") -> Hit:
        start, end = scope.lines(node)
        return Hit(scope.function, start, end, message, severity)


def where(function: Function) -> str:
    return "module level" if function.qualname == MODULE_SCOPE else f"`{function.qualname}`"
