"""`auditor review`: the review comment for a folder or a PR, every PR into a store, posting.

Thin over auditor.review (run, batch, store, github); imports only typer and the standard
library at module level, so loading the CLI never imports torch.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

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
    path: Optional[Path] = typer.Argument(None, help="A record folder or script to review."),
    repo_dir: Optional[Path] = typer.Option(None, "--repo-dir", help="A local clone (bare is fine) with refs/pull/N/head."),
    pr: Optional[int] = typer.Option(None, "--pr", min=1, help="The PR to review (with --repo-dir) or to post to."),
    all_prs: bool = typer.Option(False, "--all-prs", help="Review every PR head of --repo-dir into the database."),
    smoke: bool = typer.Option(False, "--smoke", help="Also import the code in the sandbox (runs submission code)."),
    reproduce_report: Optional[Path] = typer.Option(None, "--reproduce-report", help="A reproduce report (JSON) to include."),
    github_repo: Optional[str] = typer.Option(None, "--github-repo", help="OWNER/REPO, for permalinks and posting."),
    sha: Optional[str] = typer.Option(None, "--sha", help="Commit of PATH's files, for permalinks."),
    repo_path: Optional[str] = typer.Option(None, "--repo-path", help="PATH's own path inside the repository."),
    post: bool = typer.Option(False, "--post", help="Post the comment (token from GITHUB_TOKEN); without it, a dry run."),
    api_url: str = typer.Option("https://api.github.com", "--api-url", help="GitHub API base URL (Enterprise)."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Worker processes for --all-prs."),
    db: Optional[Path] = typer.Option(None, "--db", help="SQLite database for --all-prs (default: user data dir)."),
    export_csv: Optional[Path] = typer.Option(None, "--export-csv", help="Write the summary table as CSV."),
    export_json: Optional[Path] = typer.Option(None, "--export-json", help="Write the summary table as JSON."),
    refresh: bool = typer.Option(False, "--refresh", help="With --all-prs, review heads already in the database again."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the classify cache."),
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
        _all_prs(repo_dir, jobs, smoke, github_repo, db, export_csv, export_json, refresh, post, api_url, no_cache)
        return
    if (path is None) == (repo_dir is None):
        _fail("give a PATH, or --repo-dir CLONE --pr N, or --repo-dir CLONE --all-prs")
    if repo_dir is not None and pr is None:
        _fail("--repo-dir needs --pr N (or --all-prs)")
    if post and pr is None:
        _fail("--post needs --pr N")
    if post:
        _require_token()  # before the review, not after it

    from auditor.review.run import ReviewInputError, review_command, review_folder, review_pr
    from auditor.review.source import SourceUnavailable, check_repo

    try:
        if repo_dir is not None:
            check_repo(repo_dir)
            outcome = review_pr(repo_dir, pr, github_repo=github_repo, smoke=smoke,
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
            outcome = review_folder(path, smoke=smoke, reproduce_report=reproduce_report, context=context,
                                    use_cache=not no_cache, pr=pr)
    except (ReviewInputError, SourceUnavailable) as exc:
        _fail(str(exc))

    if pr is not None and github_repo:
        _post_one(outcome.markdown, github_repo, pr, post, api_url)
    else:
        typer.echo(outcome.markdown)
    verdict = outcome.summary["verdict"]
    if verdict == "error":  # 2 for input that cannot be analysed, 3 for a bug of ours
        raise typer.Exit(3 if (outcome.classify or {}).get("error_kind") == "internal" else 2)
    raise typer.Exit({"clean": 0, "flag": 1, "no-record": 0}.get(verdict, 2))


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
        typer.echo(markdown)
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
             no_cache: bool) -> None:
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
