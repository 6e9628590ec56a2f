"""SARIF 2.1.0 for `auditor classify --format sarif`, so findings show in GitHub code scanning.

One run, one tool (auditor) with a rule entry per rule id (its docs as the descriptions and
help), one result per finding with a stable ruleId, a location relative to the repository
root (%SRCROOT%) and a fingerprint that survives line shifts (rule + path + the finding's
code line, whitespace-normalised).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from auditor.findings import ClassifyResult, Finding
from auditor.report.shared import (
    cited_rulings,
    finding_file,
    lines_of,
    repo_relative,
    rule_doc_or_none,
    rule_full_text,
    rule_summary,
)

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
# auditor has no home page of its own; the challenge whose rules it checks is the reference.
INFORMATION_URI = "https://github.com/openai/parameter-golf"
LEVELS = {"violation": "error", "dormant": "note", "info": "note"}
FINGERPRINT_KEY = "auditorFinding/v1"


def _rule_entry(rule_id: str) -> dict:
    doc = rule_doc_or_none(rule_id)
    summary, text = rule_summary(rule_id), rule_full_text(rule_id)
    issues, prs = cited_rulings(rule_id)
    ruling = []
    if issues:
        ruling.append("Issue " + ", ".join(f"#{n}" for n in issues))
    if prs:
        ruling.append("PRs " + ", ".join(prs))
    legal_pattern = rule_id == "ttt-score-first"
    return {
        "id": rule_id,
        "name": "".join(part.capitalize() for part in rule_id.split("-")),
        "shortDescription": {"text": summary},
        "fullDescription": {"text": " ".join(f"{summary} {doc.ruling if doc else ''}".split()) or rule_id},
        "help": {"text": text or rule_id, "markdown": text or rule_id},
        "helpUri": INFORMATION_URI,
        "defaultConfiguration": {"level": "note" if legal_pattern else "error"},
        "properties": {"tags": ["parameter-golf", "compliance"],
                       "rulings": "; ".join(ruling) or "see help"},
    }


def _fingerprint(finding: Finding, uri: str) -> str:
    evidence = " ".join(finding.evidence.split())
    return hashlib.sha256(f"{finding.rule}\0{uri}\0{evidence}".encode()).hexdigest()[:32]


def _result(finding: Finding, uri: str, rule_index: dict[str, int], seen: dict[str, int]) -> dict:
    base = _fingerprint(finding, uri)
    # Two findings of one rule on identical lines of a file stay distinct, in file order.
    seen[base] = seen.get(base, 0) + 1
    location: dict[str, Any] = {"artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"}}
    message = finding.message
    line, end_line = lines_of(finding)
    if finding.packing:
        message += " (the line number counts lines of the decoded source)"
    elif line > 0:
        location["region"] = {"startLine": line, "endLine": end_line}
        if finding.evidence:
            location["region"]["snippet"] = {"text": finding.evidence}
    result = {
        "ruleId": finding.rule,
        "level": LEVELS.get(finding.severity, "note"),
        "message": {"text": message},
        "locations": [{"physicalLocation": location}],
        "partialFingerprints": {FINGERPRINT_KEY: f"{base}:{seen[base]}"},
        "properties": {"severity": finding.severity},
    }
    if finding.rule in rule_index:
        result["ruleIndex"] = rule_index[finding.rule]
    return result


def _uri(path: str, repo_root: str | Path | None) -> str:
    uri = repo_relative(path, repo_root if repo_root is not None else Path.cwd())
    return uri.replace(" ", "%20")


def classify_sarif(results: Any, repo_root: str | Path | None = None) -> str:
    """SARIF 2.1.0 JSON for classify results (ClassifyResults, their JSON, or the envelope)."""
    from auditor import __version__
    from auditor.rules import rule_ids as known_rule_ids

    if isinstance(results, dict) and "results" in results:
        results = results["results"]
    results = [r if isinstance(r, ClassifyResult) else ClassifyResult.from_json(r) for r in results]
    rule_ids = known_rule_ids()
    for result in results:  # a rule id we do not know still gets an entry
        rule_ids += [f.rule for f in result.findings if f.rule not in rule_ids]
    rule_index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    sarif_results, notifications, seen = [], [], {}
    for result in results:
        if result.verdict == "error":
            notifications.append({
                "level": "error",
                "message": {"text": f"{result.path}: {result.error or 'could not be analysed'}"},
                "locations": [{"physicalLocation": {"artifactLocation": {
                    "uri": _uri(result.path, repo_root), "uriBaseId": "%SRCROOT%"}}}],
            })
        for finding in result.findings:
            uri = _uri(finding_file(result.path, finding), repo_root)
            sarif_results.append(_result(finding, uri, rule_index, seen))
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "auditor",
            "version": __version__,
            "semanticVersion": __version__,
            "informationUri": INFORMATION_URI,
            "rules": [_rule_entry(rule_id) for rule_id in rule_ids],
        }},
        # The run completed even when some inputs could not be analysed; those are notifications.
        "invocations": [{"executionSuccessful": True,
                         "toolExecutionNotifications": notifications}],
        "results": sarif_results,
        "columnKind": "utf16CodeUnits",
    }
    if repo_root is not None:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": Path(repo_root).resolve().as_uri() + "/"}}
    return json.dumps({"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}, indent=2)
