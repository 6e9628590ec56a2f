"""review's result: the results of the commands it ran, one verdict from them, the comment.

The results are the commands' own types (ClassifyResult and Finding of auditor.findings,
ClaimsResult, SmokeResult) and a reproduce report as its JSON (ReproduceResult.to_json(),
read from a file); the renderer (auditor/report/markdown.py) and the batch store read
their typed fields, never a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auditor.findings import ClassifyResult, Outcome

if TYPE_CHECKING:
    from auditor.claims.checks import ClaimsResult
    from auditor.smoke.runner import SmokeResult

REPRODUCE_FLAGS = ("DIVERGED", "OVER-LIMIT")  # a rerun that contradicts the claim


def first_result(data: dict) -> dict:
    """A result as JSON, or the first of a `{"results": [...]}` envelope."""
    results = data.get("results")
    if isinstance(results, list):
        return results[0] if results and isinstance(results[0], dict) else {}
    return data


def as_classify_result(result: ClassifyResult | dict) -> ClassifyResult:
    """classify's result, from the object or its JSON (a result or a one-result envelope)."""
    return result if isinstance(result, ClassifyResult) else ClassifyResult.from_json(first_result(result))


def reproduce_verdict(report: dict | None) -> str | None:
    if report is None:
        return None
    data = first_result(report)
    return str(data.get("verdict") or data.get("status") or "unknown")


def claimed_bpb(claims: ClaimsResult | None) -> str | None:
    """The val_bpb the submission claims, as it printed it."""
    if claims is None:
        return None
    bpb = claims.claimed.get("mean_val_bpb") or claims.claimed.get("val_bpb")
    return str(bpb) if bpb not in (None, "") else None


def review_verdict(classify: ClassifyResult, claims: ClaimsResult | None, reproduce: dict | None = None) -> str:
    """flag: a rule or claims violation, or a rerun that diverged or ran over the limits;
    error: the code could not be analysed; else clean.

    One verdict from the same results the comment shows, so the header never contradicts them.
    """
    if classify.violations or (claims is not None and claims.violations):
        return "flag"
    if (reproduce_verdict(reproduce) or "").upper() in REPRODUCE_FLAGS:
        return "flag"
    if classify.verdict == "error":
        return "error"
    return "clean"


def summary_row(classify: ClassifyResult, claims: ClaimsResult | None, smoke: SmokeResult | None,
                reproduce: dict | None = None, *, pr: int | None = None, head_sha: str = "", title: str = "",
                folder: str = "") -> dict:
    """One row of the batch table (auditor.review.store's columns)."""
    claims_findings = [] if claims is None else [
        f"{f.severity}:{f.check}" for f in claims.findings if f.severity in ("violation", "warning")]
    return {
        "pr": pr,
        "title": title,
        "head_sha": head_sha,
        "folder": folder,
        "claimed_bpb": claimed_bpb(claims),
        "verdict": review_verdict(classify, claims, reproduce),
        "rules": sorted({f.rule for f in classify.violations}),
        "smoke": smoke.status if smoke is not None else "not run",
        "claims_findings": claims_findings,
        "error": classify.error,
    }


def row_without_results(pr: int, head_sha: str, verdict: str, error: str | None = None) -> dict:
    """The row of a head with nothing reviewed: verdict "no-record" (the PR adds no record
    folder) or "error" (the head could not be read, a worker failed)."""
    return {"pr": pr, "title": "", "head_sha": head_sha, "folder": "", "claimed_bpb": None, "verdict": verdict,
            "rules": [], "smoke": "not run", "claims_findings": [], "error": error}


@dataclass
class ReviewResult:
    """One review: the comment, its summary row, and the results it was rendered from."""

    markdown: str
    summary: dict  # one row of the batch table: verdict, rules, claimed_bpb, ...
    classify: ClassifyResult | None = None  # None when the PR adds no record folder
    claims: ClaimsResult | None = None
    smoke: SmokeResult | None = None
    reproduce: dict | None = None

    @property
    def verdict(self) -> str:  # clean | flag | error | no-record
        return self.summary["verdict"]

    @property
    def outcome(self) -> Outcome:
        """FLAG for a flagged review; for code that could not be analysed, classify's outcome
        (bad input or an internal error); else CLEAN (a PR without a record folder too)."""
        if self.verdict == "flag":
            return Outcome.FLAG
        if self.verdict == "error":
            return self.classify.outcome if self.classify is not None else Outcome.BAD_INPUT
        return Outcome.CLEAN

    def results_json(self) -> dict[str, Any]:
        """The results as JSON, as the batch store keeps them."""
        return {name: (result.to_json() if result is not None else None)
                for name, result in (("classify", self.classify), ("claims", self.claims), ("smoke", self.smoke))}

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, **self.results_json(), "reproduce": self.reproduce,
                "markdown": self.markdown}
