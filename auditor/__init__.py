"""Compliance auditor and reproducibility checker for Parameter Golf submissions.

The library API (typed; each name is imported on first use, so `import auditor` is cheap
and never imports torch):

    classify_paths(paths, jobs=1, use_cache=True) -> list[ClassifyResult]
    check_claims(path, sota_bpb=None, sota_dir=None, track="auto") -> ClaimsResult
    smoke_paths(paths, options=None) -> list[SmokeResult]
    reproduce(path, ...) -> ReproduceResult   rerun under torchrun, verdict per seed
    review_folder(path, ...) -> ReviewResult; review_markdown(...) -> str   the review comment
    load_submission(path) -> Submission
    rule_doc(rule_id) -> RuleDoc
    exit_code(results) -> int      0 clean, 1 flag, 2 bad input, 3 internal error
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "classify_paths": "auditor.classify.runner",
    "check_claims": "auditor.claims.checks",
    "smoke_paths": "auditor.smoke.batch",
    "SmokeOptions": "auditor.smoke.runner",
    "reproduce": "auditor.reproduce.runner",
    "review_folder": "auditor.review.run",
    "review_markdown": "auditor.report.markdown",
    "ReproduceResult": "auditor.reproduce.result",
    "load_submission": "auditor.submission",
    "Submission": "auditor.submission",
    "rule_doc": "auditor.rules._docs",
    "RuleDoc": "auditor.rules._docs",
    "ClassifyResult": "auditor.findings",
    "ClaimsResult": "auditor.claims.checks",
    "SmokeResult": "auditor.smoke.runner",
    "Finding": "auditor.findings",
    "Dormancy": "auditor.findings",
    "Outcome": "auditor.findings",
    "exit_code": "auditor.findings",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from auditor.claims.checks import ClaimsResult, check_claims
    from auditor.classify.runner import classify_paths
    from auditor.reproduce.result import ReproduceResult
    from auditor.reproduce.runner import reproduce
    from auditor.findings import ClassifyResult, Dormancy, Finding, Outcome, exit_code
    from auditor.rules._docs import RuleDoc, rule_doc
    from auditor.smoke.batch import smoke_paths
    from auditor.smoke.runner import SmokeOptions, SmokeResult
    from auditor.submission import Submission, load_submission


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
