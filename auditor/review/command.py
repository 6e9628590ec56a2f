"""`auditor review`: the review comment for a folder or a PR, every PR into a store, posting.

Thin over auditor.review (run, batch, store, github); imports only typer and the standard
library at module level, so loading the CLI never imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class ReviewFormat(str, Enum):
    """Markdown is the comment itself; JSON is the review's result (summary row, the results
    of classify, claims and smoke, the comment), or with --all-prs the batch and its rows."""

    markdown = "markdown"
    json = "json"


_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _require_token() -> None:
    from auditor.review.github import TOKEN_ENV

    if not os.environ.get(TOKEN_ENV):
        _fail(f"--post needs a token in the {TOKEN_ENV} environment variable")


def _client(api_url: str):
    from auditor.review.github import GitHubClient

    _require_token()
    return GitHubClient.from_env(api_url)


def review(
    path: Annotated[Optional[Path], typer.Argument(help="A record folder or script to review.")] = None,
    repo_dir: Annotated[Optional[Path], typer.Option("--repo-dir", help="A local clone (bare is fine) with "
                                                                         "refs/pull/N/head.")] = None,
    pr: Annotated[Optional[int], typer.Option("--pr", min=1, help="The PR to review (with --repo-dir) or to "
                                                                  "post to.")] = None,
    all_prs: Annotated[bool, typer.Option("--all-prs", help="Review every PR head of --repo-dir into the "
                                                            "database.")] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="Also import the code in the sandbox (runs submission "
                                                        "code).")] = False,
    reproduce_report: Annotated[Optional[Path], typer.Option("--reproduce-report", help="A reproduce report "
                                                                                        "(JSON) to include.")] = None,
    github_repo: Annotated[Optional[str], typer.Option("--github-repo", help="OWNER/REPO, for permalinks and "
                                                                             "posting.")] = None,
    sha: Annotated[Optional[str], typer.Option("--sha", help="Commit of PATH's files, for permalinks.")] = None,
    repo_path: Annotated[Optional[str], typer.Option("--repo-path", help="PATH's own path inside the "
                                                                         "repository.")] = None,
    post: Annotated[bool, typer.Option("--post", help="Post the comment (token from GITHUB_TOKEN); without it, "
                                                      "a dry run.")] = False,
    api_url: Annotated[str, typer.Option("--api-url", help="GitHub API base URL (Enterprise).")] = (
        "https://api.github.com"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes for --all-prs.")] = 2,
    db: Annotated[Optional[Path], typer.Option("--db", help="SQLite database for --all-prs (default: user data "
                                                            "dir).")] = None,
    export_csv: Annotated[Optional[Path], typer.Option("--export-csv", help="Write the summary table as "
                                                                            "CSV.")] = None,
    export_json: Annotated[Optional[Path], typer.Option("--export-json", help="Write the summary table as "
                                                                              "JSON.")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="With --all-prs, review heads already in the "
                                                            "database again.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the classify cache.")] = False,
    format: Annotated[ReviewFormat, typer.Option("--format", "-f", help="Output format: the comment, or the "
                                                                        "review's result as JSON.")] = (
        ReviewFormat.markdown),
) -> None:
    """Render the review comment (Markdown) for a submission; optionally post it to the PR."""
    if github_repo is not None and not _REPO.match(github_repo):
        _fail(f"--github-repo expects OWNER/REPO, got {github_repo!r}")
    if sha is not None and not _SHA.match(sha):
        _fail(f"--sha expects a commit hash, got {sha!r}")
    if post and not github_repo:
        _fail("--post needs --github-repo OWNER/REPO")
    if all_prs:
        if repo_dir is None or path is not None:
            _fail("--all-prs reviews the PR heads of --repo-dir CLONE (and takes no PATH)")
        _all_prs(repo_dir, jobs, smoke, github_repo, db, export_csv, export_json, refresh, post, api_url, no_cache,
                 format)
        return
    if (path is None) == (repo_dir is None):
        _fail("give a PATH, or --repo-dir CLONE --pr N, or --repo-dir CLONE --all-prs")
    if repo_dir is not None and pr is None:
        _fail("--repo-dir needs --pr N (or --all-prs)")
    if post and pr is None:
        _fail("--post needs --pr N")
    if post:
        _require_token()  # before the review, not after it

    from auditor.findings import exit_code
    from auditor.review.run import ReviewInputError, review_command, review_folder, review_pr
    from auditor.review.source import SourceUnavailable, check_repo

    try:
        if repo_dir is not None:
            check_repo(repo_dir)
            result = review_pr(repo_dir, pr, github_repo=github_repo, smoke=smoke,
                               reproduce_report=reproduce_report, use_cache=not no_cache)
        else:
            from auditor.report.markdown import ReviewContext

            if repo_path is not None:  # PATH is this path inside the repository
                root = str(path if path.is_dir() else path.parent)
                prefix = repo_path if path.is_dir() else str(Path(repo_path).parent)
            else:  # paths relative to the work tree PATH is in (or to the current folder)
                root, prefix = _work_tree(path), ""
            context = ReviewContext(
                subject=repo_path or str(path), github_repo=github_repo, sha=sha, pr=pr, root=root,
                repo_prefix=prefix, command=review_command(str(path), github_repo=github_repo, sha=sha,
                                                           repo_path=repo_path, smoke=smoke,
                                                           reproduce_report=reproduce_report is not None),
            )
            result = review_folder(path, smoke=smoke, reproduce_report=reproduce_report, context=context,
                                   use_cache=not no_cache, pr=pr)
    except (ReviewInputError, SourceUnavailable) as exc:
        _fail(str(exc))

    if pr is not None and github_repo:
        _post_one(result.markdown, github_repo, pr, post, api_url)
    if format == ReviewFormat.json:
        from auditor.report.json import results_json

        typer.echo(results_json([result]))
    elif not post:  # a posted comment is not printed again
        typer.echo(result.markdown)
    raise typer.Exit(exit_code([result]))


def _work_tree(path: Path) -> str:
    import subprocess

    folder = path if path.is_dir() else path.parent
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return os.getcwd()
    top = done.stdout.strip()
    return top if done.returncode == 0 and top else os.getcwd()


def _post_one(markdown: str, github_repo: str, pr: int, post: bool, api_url: str) -> None:
    if not post:
        typer.echo(f"dry run: would post to {github_repo}#{pr} (give --post to post):", err=True)
        return
    from auditor.review.github import GitHubError, post_review

    try:
        outcome = post_review(_client(api_url), github_repo, pr, markdown)
    except GitHubError as exc:
        _fail(f"posting to {github_repo}#{pr} failed: {exc}")
    typer.echo(f"{outcome.action} comment {outcome.comment_id} on {github_repo}#{pr}"
               + (f": {outcome.url}" if outcome.url else ""), err=True)


class _Poster:
    """Posts each new review of an --all-prs run; one client, so pacing spans the whole run.

    A token that is refused (401, or a 403 that is not a rate limit) would be refused for every
    PR: the first refusal stops the posting, and the run ends with that error.
    """

    def __init__(self, github_repo: str, api_url: str):
        self.client, self.github_repo, self.refused = _client(api_url), github_repo, None

    def __call__(self, row: dict, markdown: str) -> bool:
        from auditor.review.github import GitHubError, post_review

        if self.refused is not None:
            return False
        try:
            return post_review(self.client, self.github_repo, row["pr"], markdown).action in ("created", "updated")
        except GitHubError as exc:
            if exc.status not in (401, 403) or exc.retryable:
                raise
            self.refused = exc
            typer.echo(f"error: posting stopped at PR {row['pr']}: {exc}", err=True)
            return False


def _all_prs(repo_dir: Path, jobs: int, smoke: bool, github_repo: Optional[str], db: Optional[Path],
             export_csv: Optional[Path], export_json: Optional[Path], refresh: bool, post: bool, api_url: str,
             no_cache: bool, format: ReviewFormat) -> None:
    from auditor.review.batch import review_all_prs
    from auditor.review.source import SourceUnavailable, check_repo, pr_heads
    from auditor.review.store import (ReviewStore, default_db_path, export_csv as write_csv,
                                      export_json as write_json, review_version)

    try:
        check_repo(repo_dir)
    except SourceUnavailable as exc:
        _fail(f"--repo-dir {repo_dir}: {exc}")
    on_review = _Poster(github_repo, api_url) if post else None
    db_path = db or default_db_path()
    try:
        store = ReviewStore(db_path)
    except Exception as exc:  # sqlite3.Error or OSError: a database we cannot open
        _fail(f"cannot open the database {db_path}: {exc}")
    with store:
        report = review_all_prs(repo_dir, store, jobs=jobs, smoke=smoke, github_repo=github_repo,
                                use_cache=not no_cache, refresh=refresh, on_review=on_review)
        rows = store.summary(review_version(), pr_heads(repo_dir))
        for target, write in ((export_csv, write_csv), (export_json, write_json)):
            if target is None:
                continue
            try:
                write(rows, target)
            except OSError as exc:
                _fail(f"cannot write {target}: {exc.strerror or exc}")
    if format == ReviewFormat.json:
        import json

        typer.echo(json.dumps({"heads": report.heads, "reviewed": report.reviewed, "reused": report.reused,
                               "errors": report.errors, "seconds": round(report.seconds, 1),
                               "verdicts": dict(sorted(report.verdicts.items())), "database": str(db_path),
                               "reviews": rows}, indent=2))
    else:
        verdicts = ", ".join(f"{name} {count}" for name, count in sorted(report.verdicts.items()))
        typer.echo(f"{report.heads} PR heads: {report.reviewed} reviewed, {report.reused} already in {db_path}; "
                   f"{report.errors} error(s) in this run; {report.seconds:.1f}s; verdicts: {verdicts or 'none'}")
    if post:
        typer.echo(f"posted or updated {report.posted} comment(s) on {github_repo}", err=True)
        if on_review.refused is not None:
            _fail(f"posting to {github_repo} was refused, the reviews are in {db_path}: {on_review.refused}")
    elif github_repo:
        typer.echo(f"dry run: nothing posted to {github_repo} (give --post to post)", err=True)
    sys.stdout.flush()
