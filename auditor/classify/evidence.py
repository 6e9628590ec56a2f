"""Evidence beyond the code: when a dormant finding counts as run.

Two pieces of evidence, both the submission's own words, typed rather than read out of
messages: a claimed val_bpb that no 16 MB model reaches without an eval-time cache, and a
description of the result (submission.json) that names a feature whose only code is
behind a setting that is off.
"""

from __future__ import annotations

import dataclasses
import re

from auditor.findings import Finding
from auditor.submission import Submission

# No 16 MB model scores below this on FineWeb without an eval-time cache (records are ~1.06;
# the closed n-gram PRs claimed 0.09-0.5). A claim below it says the cache path ran.
IMPLAUSIBLE_BPB = 0.9
CACHE_RULES = ("ngram-target-in-key", "ngram-unnormalized", "two-pass-rescore")

# What a submission says its result used, in its own words (submission.json name/blurb).
DECLARED = {
    "ttt-train-before-score": (re.compile(r"\bTTT\b|test[- ]time train", re.I), ("ttt-score-first",)),
    "slot-scored-region": (re.compile(r"\bSLOT\b"), ()),
    "ngram-target-in-key": (re.compile(r"n-?gram", re.I), ()),
    "ngram-unnormalized": (re.compile(r"n-?gram", re.I), ()),
}


def count_as_run(finding: Finding, why: str) -> Finding:
    return dataclasses.replace(finding, severity="violation", counted_as_run=why,
                               message=f"{finding.message} [counted as run: {why}]")


def promote_declared_features(submission: Submission | None, findings: dict) -> None:
    """With no run command and no log, the submission's own description is the evidence:
    a result described as using TTT, when the only TTT is behind a flag that is off by
    default and nothing legal of that kind runs, came from that path (e.g. PR 595)."""
    if submission is None or submission.run_config.sources:
        return
    try:
        data = submission.read_submission_json()
    except Exception:  # noqa: BLE001 - an unreadable submission.json is no evidence
        return
    if not isinstance(data, dict):
        return
    described = " ".join(str(data.get(key, "")) for key in ("name", "blurb", "techniques", "description"))
    for key, finding in list(findings.items()):
        off_by_flag = finding.dormancy is not None and finding.dormancy.kind == "flag-off"
        if finding.severity != "dormant" or finding.rule not in DECLARED or not off_by_flag:
            continue
        pattern, legal_twins = DECLARED[finding.rule]
        live_same_kind = any(f.severity in ("violation", "info") and f.rule in (finding.rule, *legal_twins)
                             for f in findings.values())
        if live_same_kind or not pattern.search(described):
            continue
        findings[key] = count_as_run(finding, "no run command or train log shows the configuration, and "
                                              "submission.json describes the result as using it")


def claimed_bpb(submission: Submission | None) -> float | None:
    claims = submission.claimed if submission is not None else None
    if claims is None:
        return None
    value = claims.mean_val_bpb or claims.val_bpb
    return value.value if value is not None else None


def promote_implausible_scores(submission: Submission | None, findings: dict) -> None:
    """A dormant cache path is what ran when the claimed score is out of reach without it."""
    dormant = [key for key, f in findings.items() if f.severity == "dormant" and f.rule in CACHE_RULES]
    if not dormant:
        return
    bpb = claimed_bpb(submission)
    if bpb is None or bpb >= IMPLAUSIBLE_BPB:
        return
    for key in dormant:
        findings[key] = count_as_run(findings[key], f"submission.json claims val_bpb {bpb:g}, below the "
                                                    f"{IMPLAUSIBLE_BPB} that no 16 MB model reaches without an "
                                                    "eval-time cache")
