"""Run `auditor claims` over the record folders of every PR head of a parameter-golf mirror.

    python bench/claims_corpus.py /work/.mirror/openai+parameter-golf/repo [--limit N] [--main] [--json OUT]

A PR's record folders are those it adds or changes relative to main (three-dot diff under
records/). Folders are copied file by file from git into a temporary directory (the mirror
lacks large blobs: those are skipped), checked, and deleted; nothing is written into the
repository. Prints how many folders parse and how many have each finding; --json writes each
folder's result (for a per-record comparison of two versions).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from auditor.claims.checks import check_claims

SKIP_SUFFIXES = (".pt", ".ptz", ".bin", ".npz", ".npy", ".safetensors", ".zst", ".xz", ".br", ".gz", ".zip",
                 ".png", ".jpg", ".jpeg", ".pdf", ".model", ".vocab", ".pkl", ".lzma", ".tar")
MAX_BLOB_BYTES = 20_000_000
RECORD_ROOTS = ("records/track_10min_16mb/", "records/track_non_record_16mb/")


class Git:
    def __init__(self, repo: Path):
        self.repo = repo
        # One long-lived cat-file process: a subprocess per blob would dominate the run time.
        self.batch = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE)

    def run(self, *args: str) -> str:
        out = subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True)
        return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else ""

    def blob(self, sha: str) -> bytes | None:
        self.batch.stdin.write(sha.encode() + b"\n")
        self.batch.stdin.flush()
        header = self.batch.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            return None
        size = int(header[2])
        data = self.batch.stdout.read(size)
        self.batch.stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        self.batch.stdin.close()
        self.batch.wait()


def record_folder(path: str) -> str | None:
    for root in RECORD_ROOTS:
        if path.startswith(root):
            rest = path[len(root):]
            if "/" in rest:
                return root + rest.split("/", 1)[0]
    return None


def pr_refs(git: Git) -> list[tuple[int, str]]:
    refs = []
    for line in git.run("for-each-ref", "--format=%(refname)", "refs/pull/").splitlines():
        parts = line.split("/")
        if len(parts) == 4 and parts[3] == "head" and parts[2].isdigit():
            refs.append((int(parts[2]), line))
    return sorted(refs)


def changed_folders(git: Git, ref: str) -> list[str]:
    names = git.run("diff", "--name-only", "--no-renames", f"main...{ref}", "--", "records/").splitlines()
    return sorted({f for f in (record_folder(n) for n in names) if f})


def extract(git: Git, ref: str, folder: str, dest: Path) -> int:
    """Copy a folder of `ref` into dest; returns the number of files written."""
    written = 0
    listing = git.run("ls-tree", "-r", "-l", "-z", ref, "--", folder + "/")
    for entry in listing.split("\0"):
        if not entry or "\t" not in entry:
            continue
        meta, path = entry.split("\t", 1)
        mode, kind, sha, size = meta.split()
        if kind != "blob" or mode == "120000" or path.lower().endswith(SKIP_SUFFIXES):
            continue
        if not size.isdigit() or int(size) > MAX_BLOB_BYTES:
            continue  # "-" or "BAD": the mirror lacks this blob
        relative = Path(path).relative_to(folder)
        if ".." in relative.parts or len(relative.parts) > 4:
            continue
        data = git.blob(sha)
        if data is None:
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    return written


_WORKER_GIT: Git | None = None


def _init_worker(repo: Path) -> None:
    global _WORKER_GIT
    _WORKER_GIT = Git(repo)


def check_ref(job: tuple[str, str, list[str] | None]) -> list[dict]:
    """Check the record folders of one ref; a summary per folder (picklable, small)."""
    label, ref, folders = job
    git = _WORKER_GIT
    folders = folders if folders is not None else changed_folders(git, ref)
    summaries = []
    with tempfile.TemporaryDirectory(prefix="claims_corpus_") as tmp:
        for index, folder in enumerate(folders):
            dest = Path(tmp) / str(index) / Path(folder).name
            summary = {"label": label, "folder": folder}
            try:
                if extract(git, ref, folder, dest) == 0:
                    summary["empty"] = True  # deleted in the PR, or only large blobs the mirror lacks
                    summaries.append(summary)
                    continue
                result = check_claims(dest, track="record" if "track_10min" in folder else "non-record")
            except Exception:  # a crash is the bug this bench exists to find
                summary["crash"] = traceback.format_exc(limit=3)
                summaries.append(summary)
                continue
            summary["error"] = result.error
            summary["scored"] = any(s.score is not None for s in result.seeds)
            summary["findings"] = sorted({(f.check, f.severity) for f in result.findings})
            summary["violations"] = [f"{f.check}: {f.message}" for f in result.violations]
            # Paths name the folder in the repository, not the temporary copy: two runs compare equal.
            data = {k: v for k, v in result.to_json().items() if k != "path"}
            for finding in data["findings"]:
                finding["path"] = finding["path"] and finding["path"].replace(str(dest), folder)
            summary["result"] = data
            summaries.append(summary)
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", type=Path, help="bare git mirror of openai/parameter-golf")
    parser.add_argument("--limit", type=int, default=None, help="check at most N PRs")
    parser.add_argument("--main", action="store_true", help="check the records merged into main instead")
    parser.add_argument("--time-budget", type=float, default=300.0, help="stop after this many seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--list-violations", action="store_true", help="print every violation")
    parser.add_argument("--json", type=Path, help="write each folder's result here")
    args = parser.parse_args(argv)
    if not (args.mirror / "HEAD").exists() and not (args.mirror / ".git").exists():
        print(f"{args.mirror} is not a git repository", file=sys.stderr)
        return 2

    started = time.monotonic()
    lister = Git(args.mirror)
    if args.main:
        names = lister.run("ls-tree", "-d", "--name-only", "main", "--", *RECORD_ROOTS).splitlines()
        jobs = [("main", "main", [n for n in names if record_folder(n + "/x")])]
    else:
        refs = pr_refs(lister)[: args.limit] if args.limit else pr_refs(lister)
        jobs = [(f"#{number}", ref, None) for number, ref in refs]
    lister.close()

    counts: collections.Counter = collections.Counter()
    by_check: collections.Counter = collections.Counter()
    crashes: list[str] = []
    violations: list[str] = []
    per_folder: dict[str, dict] = {}
    refs_done = refs_with_records = 0
    stopped_early = False
    with concurrent.futures.ProcessPoolExecutor(args.workers, initializer=_init_worker,
                                                initargs=(args.mirror,)) as pool:
        pending = {pool.submit(check_ref, job) for job in jobs[: args.workers * 4]}
        queue = iter(jobs[args.workers * 4:])
        while pending:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                summaries = future.result()
                refs_done += 1
                refs_with_records += bool(summaries)
                for summary in summaries:
                    _tally(summary, counts, by_check, crashes, violations)
                    per_folder[f"{summary['label']} {summary['folder']}"] = summary
            if time.monotonic() - started > args.time_budget:
                stopped_early = True
                continue  # let the running ones finish, submit no more
            for job in queue:
                pending.add(pool.submit(check_ref, job))
                if len(pending) >= args.workers * 4:
                    break

    elapsed = time.monotonic() - started
    scope = "main" if args.main else "PR heads"
    print(f"claims corpus over {scope}: {refs_done} of {len(jobs)} refs, {refs_with_records} with record folders, "
          f"{elapsed:.0f} s" + (" (stopped at the time budget)" if stopped_early else ""))
    for key in ("folders", "no files in the mirror", "parsed", "could not be read at all", "crashed", "with a logged score",
                "with a violation", "with a warning"):
        print(f"  {key:28} {counts[key]}")
    print("  folders with each finding (check, severity):")
    for (check, severity), number in sorted(by_check.items(), key=lambda item: (-item[1], item[0])):
        print(f"    {check:26} {severity:9} {number}")
    if args.list_violations:
        print("violations:")
        for line in violations:
            print("  " + line)
    for crash in crashes[:10]:
        print("CRASH " + crash, file=sys.stderr)
    if args.json:
        from auditor.report.json import json_safe

        args.json.write_text(json.dumps(json_safe(dict(sorted(per_folder.items()))), indent=1))
    return 1 if crashes else 0


def _tally(summary: dict, counts, by_check, crashes: list[str], violations: list[str]) -> None:
    where = f"{summary['label']} {summary['folder']}"
    counts["folders"] += 1
    if "crash" in summary:
        counts["crashed"] += 1
        crashes.append(f"{where}: {summary['crash']}")
        return
    if summary.get("empty"):
        counts["no files in the mirror"] += 1
        return
    if summary["error"]:
        counts["could not be read at all"] += 1
        return
    counts["parsed"] += 1
    counts["with a logged score"] += summary["scored"]
    severities = {severity for _, severity in summary["findings"]}
    for severity in ("violation", "warning"):
        counts[f"with a {severity}"] += severity in severities
    for key in summary["findings"]:
        by_check[key] += 1
    violations.extend(f"{where}: {v}" for v in summary["violations"])


if __name__ == "__main__":
    sys.exit(main())
