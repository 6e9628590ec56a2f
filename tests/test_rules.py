"""Every rule's own examples: INVALID snippets are reported, VALID ones are not."""

from __future__ import annotations

import importlib
import re

import pytest

from auditor.analysis import analyze_text
from auditor.classify import run_rules
from auditor.rules import all_rules

CASES = [(rule.id, kind, i, snippet) for rule in all_rules()
         for kind, snippets in (("invalid", rule.INVALID), ("valid", rule.VALID))
         for i, snippet in enumerate(snippets)]


def test_every_rule_has_examples():
    for rule in all_rules():
        assert rule.INVALID, f"{rule.id} has no INVALID example"
        assert rule.VALID, f"{rule.id} has no VALID example"



@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.id)
def test_every_rule_states_its_ruling(rule):
    """Ruff's manner: the module docstring opens with the id and what it flags, cites the
    ruling by Issue/PR number, and says what is legal instead."""
    doc = importlib.import_module(rule.__class__.__module__).__doc__ or ""
    assert doc.startswith(f"{rule.id}: "), doc[:80]
    assert re.search(r"(?i)\bruling|\bruled", doc), f"{rule.id}: no ruling"
    assert re.search(r"\b\d{3,4}\b", doc), f"{rule.id}: no Issue/PR number"
    assert re.search(r"(?i)\blegal\b", doc), f"{rule.id}: nothing said to be legal instead"


@pytest.mark.parametrize("rule_id,kind,number,snippet", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_rule_examples(rule_id, kind, number, snippet):
    findings = [f for f in run_rules(analyze_text(snippet)) if f.rule == rule_id]
    reported = [f for f in findings if f.severity in ("violation", "info")]
    if kind == "invalid":
        assert reported, f"{rule_id} did not report its INVALID example {number}"
    else:
        assert not reported, f"{rule_id} reported its VALID example {number}: {reported}"
