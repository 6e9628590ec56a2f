"""A rule's documentation, read from the rule's own module (`auditor rules [ID]`, review).

(A helper module: its name starts with an underscore so that the rule loader skips it.)

What it flags is the first line of the module docstring (after the id), the ruling and
why is the paragraph that starts with "Ruling", and the examples are the rule's own
INVALID (flagged) and VALID (not flagged) snippets that tests/test_rules.py runs.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from dataclasses import dataclass

from auditor.rules import all_rules


@dataclass(frozen=True)
class RuleDoc:
    id: str
    flags: str  # what the rule flags, one sentence
    ruling: str  # the rulings (Issue/PR numbers) and why
    notes: str  # anything else the docstring says
    illegal_example: str  # an INVALID snippet: flagged
    legal_example: str  # a VALID snippet: not flagged


def rule_doc(rule_id: str) -> RuleDoc:
    """The documentation of one rule; raises KeyError for an unknown id."""
    for rule in all_rules():
        if rule.id == rule_id:
            return _doc_of(rule)
    raise KeyError(rule_id)


def _doc_of(rule) -> RuleDoc:
    docstring = inspect.getdoc(importlib.import_module(type(rule).__module__)) or ""
    paragraphs = [p.strip() for p in docstring.split("\n\n") if p.strip()]
    first = " ".join(paragraphs[0].split()) if paragraphs else ""
    flags = first.split(":", 1)[1].strip() if first.startswith(rule.id + ":") else first
    rulings = [" ".join(p.split()) for p in paragraphs[1:] if p.startswith("Ruling")]
    notes = [" ".join(p.split()) for p in paragraphs[1:] if not p.startswith("Ruling")]
    return RuleDoc(
        id=rule.id,
        flags=flags,
        ruling="\n\n".join(rulings),
        notes="\n\n".join(notes),
        illegal_example=textwrap.dedent(rule.INVALID[0]).strip() if rule.INVALID else "",
        legal_example=textwrap.dedent(rule.VALID[0]).strip() if rule.VALID else "",
    )
