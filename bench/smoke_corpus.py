"""Run `auditor smoke` over the records of a parameter-golf mirror and print how it did.

    python bench/smoke_corpus.py MIRROR_PATH [--workers 2] [--records 30] [--prs 200] [--json OUT]

MIRROR_PATH is a bare git repository of openai/parameter-golf. The records of its HEAD
(`records/track_10min_16mb/`, `records/track_non_record_16mb/`) are copied file by file
into a temporary directory (blobs missing from the mirror are skipped) and smoked.
Printed: the build rate, the rate at which the parameter count equals the train log's
`model_params:N`, the median and 90th percentile wall seconds per submission, the mean CPU
seconds per submission (the auditor's and its children's: contention disturbs it less) and
the load average during the run. --records N smokes an evenly spaced sample of N records
instead of all of them. With --prs N, a deterministic sample of N pull-request heads (their
new or changed train_gpt.py, with its folder) is smoked too, and failures are counted by kind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.smoke import Limits, SmokeOptions, UnreadablePath, smoke_path  # noqa: E402

RECORD_ROOTS = ("records/track_10min_16mb/", "records/track_non_record_16mb/")
MODEL_PARAMS = re.compile(r"model_params[:=]\s*(\d+)")


def git(mirror: Path, *args: str, binary: bool = False):
    out = subprocess.run(["git", "--git-dir", str(mirror), *args], capture_output=True, check=False)
    return out.stdout if binary else out.stdout.decode("utf-8", "replace")


def copy_tree(mirror: Path, rev: str, folder: str, dest: Path) -> None:
    """Copy `folder` at `rev` into dest, file by file, skipping blobs the mirror lacks."""
    for line in git(mirror, "ls-tree", "-r", rev, "--", folder).splitlines():
        meta, _, path = line.partition("\t")
        mode, kind, blob = meta.split()
        if kind != "blob" or mode == "120000":
            continue
        data = subprocess.run(["git", "--git-dir", str(mirror), "cat-file", "blob", blob], capture_output=True)
        if data.returncode != 0:
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.stdout)


def record_folders(mirror: Path) -> list[str]:
    folders = []
    for root in RECORD_ROOTS:
        for line in git(mirror, "ls-tree", "HEAD", root).splitlines():
            meta, _, path = line.partition("\t")
            if meta.split()[1] == "tree":
                folders.append(path)
    return folders


def logged_params(folder: Path) -> int | None:
    for log in sorted(folder.rglob("*")):
        if log.suffix.lower() not in (".log", ".txt") or not log.is_file():
            continue
        match = MODEL_PARAMS.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
    return None


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the sandboxed runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def smoke_all(paths: list[Path], workers: int, options: SmokeOptions) -> list[dict]:
    def one(path: Path) -> dict:
        try:
            return smoke_path(path, options).to_json()
        except UnreadablePath as exc:
            return {"path": str(path), "status": "fail", "seconds": 0.0,
                    "error": {"kind": "unreadable", "message": str(exc)}, "model": None}

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))


def bench_records(mirror: Path, work: Path, workers: int, options: SmokeOptions, sample: int = 0) -> dict:
    folders = record_folders(mirror)
    if 0 < sample < len(folders):
        folders = [folders[i * len(folders) // sample] for i in range(sample)]
    for folder in folders:
        copy_tree(mirror, "HEAD", folder, work)
    paths = [work / f for f in folders]
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds()
    results = smoke_all(paths, workers, options)
    cpu = cpu_seconds() - cpu_before
    load_after = os.getloadavg()
    built = [r for r in results if r["status"] == "ok"]
    compared = matched = 0
    rows = []
    for path, result in zip(paths, results):
        expected = logged_params(path)
        got = (result.get("model") or {}).get("params")
        if expected is not None:
            compared += 1
            matched += int(got == expected)
        error = result.get("error") or {}
        rows.append(f"  {path.name[:60]:60} {result['status']:4} {got!s:>11} log={expected!s:>11} "
                    f"{error.get('kind', '')} {str(error.get('message', ''))[:80]}")
    return {
        "records": len(results),
        "built": len(built),
        "build_rate": len(built) / len(results) if results else 0.0,
        "param_compared": compared,
        "param_matched": matched,
        "param_match_rate": matched / compared if compared else 0.0,
        "median_seconds": statistics.median(r["seconds"] for r in results) if results else 0.0,
        "p90_seconds": percentile([r["seconds"] for r in results], 0.9),
        "mean_cpu_seconds": cpu / len(results) if results else 0.0,
        # 1-minute load at the start and the end, 5- and 15-minute at the end
        "load_average": [load_before, *load_after],
        "wall_seconds": time.monotonic() - started,
        "rows": rows,
        "results": results,
    }


def pr_sample(mirror: Path, count: int, work: Path) -> list[Path]:
    """New or changed train_gpt.py of `count` PR heads (deterministic sample), with their folders."""
    main_blobs = {line.split()[2] for line in git(mirror, "ls-tree", "-r", "HEAD").splitlines() if line}
    refs = [r for r in git(mirror, "for-each-ref", "--format=%(refname)", "refs/pull/").split() if r.endswith("/head")]
    random.Random(1234).shuffle(refs)
    picked: list[Path] = []
    for ref in refs:
        if len(picked) >= count:
            break
        changed = []
        for line in git(mirror, "ls-tree", "-r", ref).splitlines():
            meta, _, path = line.partition("\t")
            if path.endswith("train_gpt.py") and meta.split()[2] not in main_blobs:
                changed.append(path)
        if not changed:
            continue
        path = sorted(changed, key=lambda p: (not p.startswith("records/"), p))[0]
        number = ref.split("/")[2]
        dest = work / f"pr{number}"
        folder = str(Path(path).parent) if "/" in path else None
        if folder:
            copy_tree(mirror, ref, folder, dest)
            picked.append(dest / path)
        else:
            copy_tree(mirror, ref, path, dest)
            picked.append(dest / path)
        if not picked[-1].exists():
            picked.pop()
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--records", type=int, default=0, help="smoke an evenly spaced sample of N records")
    parser.add_argument("--prs", type=int, default=0, help="also smoke a sample of N PR heads")
    parser.add_argument("--timeout", type=float, default=120.0, help="wall seconds per submission")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--quiet", action="store_true", help="no per-record rows")
    args = parser.parse_args()
    options = SmokeOptions(limits=Limits(wall_seconds=args.timeout, cpu_seconds=int(args.timeout)))
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="smoke-corpus-") as tmp:
        work = Path(tmp)
        records = bench_records(args.mirror, work / "main", args.workers, options, args.records)
        if not args.quiet:
            print("\n".join(records["rows"]))
        print(f"records: {records['records']}, built: {records['built']} ({records['build_rate']:.1%})")
        print(f"model_params match: {records['param_matched']}/{records['param_compared']} "
              f"({records['param_match_rate']:.1%})")
        print(f"seconds per submission: median {records['median_seconds']:.2f}, p90 {records['p90_seconds']:.2f} "
              f"(wall {records['wall_seconds']:.0f}s, {args.workers} workers); "
              f"CPU {records['mean_cpu_seconds']:.2f}s per submission (mean)")
        print("load average: {:.2f} at the start; {:.2f} {:.2f} {:.2f} (1, 5, 15 min) at the end".format(
            *records["load_average"]))
        report["records"] = {k: v for k, v in records.items() if k != "rows"}
        if args.prs:
            paths = pr_sample(args.mirror, args.prs, work / "prs")
            started = time.monotonic()
            results = smoke_all(paths, args.workers, options)
            kinds = Counter(r["error"]["kind"] if r["status"] != "ok" else "ok" for r in results)
            no_kind = sum(1 for r in results if r["status"] != "ok" and not (r.get("error") or {}).get("kind"))
            slowest = max((r["seconds"] for r in results), default=0.0)
            print(f"PR sample: {len(results)} scripts in {time.monotonic() - started:.0f}s, "
                  f"slowest {slowest:.1f}s, failures without a kind: {no_kind}")
            for kind, n in kinds.most_common():
                print(f"  {kind}: {n}")
            report["prs"] = {"results": results, "kinds": dict(kinds)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
