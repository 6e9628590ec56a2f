"""`review` as a library: run classify + claims (+ smoke) on one submission, render the comment.

The checks run here, once; the Markdown renderer only reads their results.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.review.results import ReviewResult, row_without_results, summary_row
from auditor.review.source import PrSource, locate_pr, materialize

if TYPE_CHECKING:
    from auditor.claims.checks import ClaimsResult
    from auditor.findings import ClassifyResult
    from auditor.smoke.runner import SmokeResult


class ReviewInputError(Exception):
    """Bad input for a review (a path that does not exist, an unreadable report)."""


def load_reproduce_report(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReviewInputError(f"cannot read the reproduce report {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReviewInputError(f"the reproduce report {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReviewInputError(f"the reproduce report {path} is not a JSON object")
    return data


def _run_checks(folder: Path, smoke: bool, use_cache: bool,
                isolate: bool = False) -> tuple[ClassifyResult, ClaimsResult | None, SmokeResult | None]:
    from auditor.claims.checks import check_claims
    from auditor.classify import classify_paths

    # isolate: classify in a child process of its own, with classify's timeout, so that one
    # submission that hangs or crashes the parser costs its verdict, not a batch worker.
    classify_result = classify_paths([str(folder)], jobs=2 if isolate else 1, use_cache=use_cache)[0]
    claims_result = check_claims(folder) if folder.is_dir() else None
    smoke_result = None
    if smoke:
        from auditor.smoke.runner import SmokeResult, smoke_path

        try:
            smoke_result = smoke_path(folder)
        except Exception as exc:  # an unreadable path or a sandbox failure: a failed smoke, said so
            smoke_result = SmokeResult.failed_before_running(str(folder), type(exc).__name__, str(exc))
    return classify_result, claims_result, smoke_result


def review_folder(folder: str | Path, *, smoke: bool = False, reproduce_report: str | Path | None = None,
                  context=None, use_cache: bool = True, pr: int | None = None, title: str = "",
                  isolate: bool = False) -> ReviewResult:
    """Review a record folder (or one script) on disk."""
    from auditor.report.markdown import ReviewContext, review_markdown, scrub_paths

    folder = Path(folder)
    if not folder.exists():
        raise ReviewInputError(f"{folder} does not exist")
    report = load_reproduce_report(reproduce_report) if reproduce_report else None
    context = context or ReviewContext()
    if not folder.is_dir():
        context.not_checked.append("Claims were not checked: a single script has no submission.json or logs.")
    classify_result, claims_result, smoke_result = _run_checks(folder, smoke, use_cache, isolate)
    markdown = review_markdown(classify_result, claims_result, smoke_result, report, context,
                               reproduce_source=str(reproduce_report or ""))
    row = summary_row(classify_result, claims_result, smoke_result, report, pr=pr, head_sha=context.sha or "",
                      title=title, folder=context.subject)
    if row["error"]:
        row["error"] = scrub_paths(row["error"], context)
    return ReviewResult(markdown, row, classify_result, claims_result, smoke_result, report)


def review_command(subject: str, *, github_repo: str | None = None, sha: str | None = None,
                   repo_path: str | None = None, smoke: bool = False, reproduce_report: bool = False) -> str:
    """The command line that renders the same comment again (placeholders for local paths)."""
    parts = ["auditor review", subject]
    if github_repo:
        parts.append(f"--github-repo {github_repo}")
    if sha:
        parts.append(f"--sha {sha}")
    if repo_path:
        parts.append(f"--repo-path {repo_path}")
    if smoke:
        parts.append("--smoke")
    if reproduce_report:
        parts.append("--reproduce-report REPORT.json")
    return " ".join(parts)


def pr_command(pr: int, smoke: bool, github_repo: str | None = None, reproduce_report: bool = False) -> str:
    return review_command(f"--repo-dir CLONE --pr {pr}", github_repo=github_repo, smoke=smoke,
                          reproduce_report=reproduce_report)


def review_pr(repo_dir: str | Path, pr: int, *, head_sha: str | None = None, github_repo: str | None = None,
              smoke: bool = False, reproduce_report: str | Path | None = None, use_cache: bool = True,
              work_dir: str | Path | None = None, isolate: bool = False) -> ReviewResult:
    """Review the record folder PR `pr` adds, read from refs/pull/N/head of a local clone."""
    from auditor.report.markdown import ReviewContext

    source: PrSource = locate_pr(Path(repo_dir), pr, head_sha)
    command = pr_command(pr, smoke, github_repo, reproduce_report is not None)
    if not source.folder:
        context = ReviewContext(subject="(no record folder)", github_repo=github_repo, sha=source.head_sha, pr=pr,
                                command=command)
        return ReviewResult(_no_record_markdown(context), row_without_results(pr, source.head_sha, "no-record"))
    base = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    # A path fixed by the head commit, so the classify cache (keyed on the path) hits on reruns.
    root = base / f"auditor-review-{source.head_sha[:16]}"
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    try:
        folder = materialize(Path(repo_dir), source, root)
        notes = [f"Not present in the clone, so not read: `{path}`." for path in source.skipped]
        notes += [f"The PR also adds `{other}`; this review covers `{source.folder}` only." for other in source.other_folders]
        if source.changed_only:
            notes.append(f"The PR adds no record folder; it changes `{source.folder}`, which this review covers "
                         "as it is at the PR's head.")
        if source.borrowed:
            notes.append("The record folder has no Python code; the review read what the PR changed at the "
                         "repository root: " + ", ".join(f"`{name}`" for name in source.borrowed.values()) + ".")
        context = ReviewContext(subject=source.folder, github_repo=github_repo, sha=source.head_sha, pr=pr,
                                root=str(root), command=command, not_checked=notes, repo_paths=dict(source.borrowed))
        return review_folder(folder, smoke=smoke, reproduce_report=reproduce_report, context=context,
                             use_cache=use_cache, pr=pr, title=source.title, isolate=isolate)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _no_record_markdown(context) -> str:
    from auditor import __version__
    from auditor.report.markdown import MARKER, NOT_A_RULING

    return "\n".join([
        MARKER,
        f"## Automated compliance review: PR #{context.pr}, head `{(context.sha or '')[:12]}`",
        "",
        "**Verdict:** not reviewed: the PR adds no record folder under `records/`.",
        "",
        f"> {NOT_A_RULING.format(version=__version__)}",
        "",
        "---",
        f"<sub>auditor {__version__} · reproduce with: `{context.command}`</sub>",
        "",
    ])
