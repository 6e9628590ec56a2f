"""`review --all-prs`: every PR head of a clone, in worker processes, into the SQLite store.

Heads already in the store for this auditor version are skipped, so a rerun only reviews
new heads. One PR that fails becomes a row with verdict `error`; the batch goes on.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from auditor.review.source import pr_heads


@dataclass
class BatchReport:
    heads: int = 0  # PR heads in the clone (or of the PRs asked for)
    reviewed: int = 0  # reviewed in this run
    reused: int = 0  # already in the store
    errors: int = 0
    seconds: float = 0.0
    verdicts: Counter = field(default_factory=Counter)  # over all heads, reviewed or reused
    posted: int = 0


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 5% otherwise."""

    def __init__(self, total: int, stream: IO[str] | None = None, label: str = "PRs"):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_step = -1

    def advance(self, note: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        text = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.label} "
                f"{rate:.2f}/s ETA {left:.0f}s {note}")
        if self.tty:
            self.stream.write("\r" + text[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            step = int(20 * self.done / self.total) if self.total else 20
            if step != self._last_step or self.done == self.total:
                self._last_step = step
                self.stream.write(text.rstrip() + "\n")
        self.stream.flush()


def _review_one(args: tuple) -> dict:
    """Worker: review one PR head; never raises (a failure is an `error` row)."""
    repo_dir, pr, head, github_repo, smoke, use_cache, work_dir = args
    started = time.monotonic()
    try:
        from auditor.review.run import review_pr

        outcome = review_pr(repo_dir, pr, head_sha=head, github_repo=github_repo, smoke=smoke,
                            use_cache=use_cache, work_dir=work_dir, isolate=True)
        return {"row": outcome.summary, "markdown": outcome.markdown, "results": outcome.results_json(),
                "seconds": time.monotonic() - started}
    except Exception as exc:  # a bug of ours or an unreadable head must not stop the batch
        from auditor.review.source import SourceUnavailable

        # An unreadable head is the input's fault and stays done; a bug of ours is retried next run.
        error = str(exc) if isinstance(exc, SourceUnavailable) else f"internal error: {type(exc).__name__}: {exc}"
        return {"row": _error_row(pr, head, error), "markdown": "", "results": {},
                "seconds": time.monotonic() - started}


def _error_row(pr: int, head: str, error: str) -> dict:
    from auditor.review.results import row_without_results

    return row_without_results(pr, head, "error", error)


def review_all_prs(
    repo_dir: str | Path,
    store,
    *,
    jobs: int = 2,
    smoke: bool = False,
    github_repo: str | None = None,
    use_cache: bool = True,
    prs: list[int] | None = None,
    refresh: bool = False,
    progress_stream: IO[str] | None = None,
    on_review: Callable[[dict, str], bool] | None = None,
    work_dir: str | Path | None = None,
    version: str | None = None,
) -> BatchReport:
    """Review every PR head not yet in `store` (a ReviewStore) for this auditor version.

    `on_review(row, markdown)` is called in this process after each new review (posting);
    it returns whether something was posted.
    """
    from auditor.review.store import review_version

    version = version or review_version()
    started = time.monotonic()
    heads = pr_heads(Path(repo_dir))
    if prs is not None:
        heads = {pr: sha for pr, sha in heads.items() if pr in set(prs)}
    done = set() if refresh else store.done_heads(version, need_smoke=smoke)
    todo = [(pr, sha) for pr, sha in heads.items() if (pr, sha) not in done]
    report = BatchReport(heads=len(heads), reused=len(heads) - len(todo))
    progress = Progress(len(todo), progress_stream)

    def record(result: dict) -> None:
        row = result["row"]
        store.put(row, version, result.get("markdown", ""), result.get("results"), result.get("seconds"))
        report.reviewed += 1
        report.errors += row["verdict"] == "error"
        if on_review is not None and result.get("markdown") and row["verdict"] != "no-record":
            try:
                report.posted += bool(on_review(row, result["markdown"]))
            except Exception as exc:  # a failed post is reported, the batch goes on
                (progress_stream or sys.stderr).write(f"PR {row['pr']}: not posted: {exc}\n")
        progress.advance(f"PR {row['pr']}")

    work = [(str(repo_dir), pr, sha, github_repo, smoke, use_cache, str(work_dir) if work_dir else None)
            for pr, sha in todo]
    if jobs <= 1:
        for item in work:
            record(_review_one(item))
    else:
        _run_pool(work, jobs, record)
    report.seconds = time.monotonic() - started
    for row in store.summary(version, heads):
        report.verdicts[row["verdict"]] += 1
    return report


def _run_pool(work: list[tuple], jobs: int, record: Callable[[dict], None]) -> None:
    """Workers with a bounded number of PRs in flight; a crashed worker costs only its PR."""
    pending = list(reversed(work))
    crashes: Counter = Counter()  # PR -> pools that died while it was in flight
    in_flight: dict = {}
    while pending:
        try:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                in_flight = {}
                while pending or in_flight:
                    while pending and len(in_flight) < jobs * 2:
                        item = pending.pop()
                        in_flight[pool.submit(_review_one, item)] = item
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        item = in_flight.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            in_flight[future] = item
                            raise
                        except Exception as exc:
                            result = {"row": _error_row(item[1], item[2], f"worker failed: {exc}")}
                        record(result)
        except BrokenProcessPool:
            # A worker died (killed for memory, a crash in C code). The PRs in flight go round once
            # more; one in flight at two deaths is the culprit and becomes an error row.
            for item in in_flight.values():
                crashes[item[1]] += 1
                if crashes[item[1]] >= 2:
                    record({"row": _error_row(item[1], item[2], "worker process died while reviewing this PR")})
                else:
                    pending.append(item)
            in_flight = {}
