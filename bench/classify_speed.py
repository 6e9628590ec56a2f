"""Speed (and crash census) of `auditor classify` over every train_gpt.py of every PR head.

    python bench/classify_speed.py MIRROR [--jobs 2] [--limit N] [--keep DIR] [--timeout S]
                                          [--budget S] [--results FILE.jsonl] [--warm twice|prefill]

MIRROR is the bare git mirror of openai/parameter-golf that the library's `fetch` gives.
Every `train_gpt.py` in the tree of every `refs/pull/N/head` is listed; files are deduped
by blob sha (each PR head also carries all older records) and each unique blob is written
alone as `<tmp>/<blobsha>/train_gpt.py`. Then:

1. cold: `classify_path` per file, no cache, in a pool of --jobs workers; seconds per
   file are measured inside the worker;
2. plain `ast.parse` of the same files in this process, for the ratio;
3. warm: `classify_paths(paths, jobs=2, use_cache=True)` twice with AUDITOR_CACHE_DIR set
   to a fresh temp dir (the first run fills the cache, the second is timed as warm).
   `--warm prefill` skips the filling run (a second whole cold pass): the cold workers
   write each result into the cache under `cache_key`, after their timed call.

The auditor package is copied to a temp dir at start and imported from there, so edits
made to auditor/ while the bench runs do not mix versions (or change the cache key).
`--budget S` stops the cold pass after S seconds and reports on the files done, with an
extrapolated whole-corpus wall; `--results FILE` appends each cold row as JSON and skips
files already there on a re-run (use with --keep so paths stay the same).

Prints file count, verdict counts, error messages, internal-error crashes, per-file time
percentiles, throughput, wall times and the classify / ast.parse ratio.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._mirror import git  # noqa: E402

SCRIPT = "train_gpt.py"


# --- listing and extracting --------------------------------------------------------


def pull_heads(mirror: Path) -> list[str]:
    refs = git(mirror, "for-each-ref", "--format=%(refname)", "refs/pull/") or ""
    return [r for r in refs.split() if r.endswith("/head")]


def scripts_of(mirror: Path, ref: str) -> list[tuple[str, str]]:
    """(blob sha, path) of every train_gpt.py in the tree of one ref."""
    listing = git(mirror, "ls-tree", "-r", ref) or ""
    found = []
    for row in listing.splitlines():
        meta, _, path = row.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob" and path.rsplit("/", 1)[-1] == SCRIPT:
            found.append((parts[2], path))
    return found


def unique_blobs(mirror: Path) -> tuple[int, dict[str, tuple[str, str]]]:
    """Number of PR heads, and blob sha -> (first ref, path) seen for it."""
    refs = pull_heads(mirror)
    blobs: dict[str, tuple[str, str]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for ref, found in zip(refs, pool.map(lambda r: scripts_of(mirror, r), refs)):
            for blob, path in found:
                blobs.setdefault(blob, (ref, path))
    return len(refs), blobs


def extract(mirror: Path, blobs: list[str], root: Path) -> tuple[list[Path], list[str]]:
    """Write each blob as root/<blob>/train_gpt.py with one `cat-file --batch`; returns (paths, missing)."""
    paths: list[Path] = []
    missing: list[str] = []
    todo = []
    for blob in blobs:
        target = root / blob / SCRIPT
        if target.is_file():
            paths.append(target)
        else:
            todo.append(blob)
    if todo:
        proc = subprocess.Popen(["git", "-C", str(mirror), "cat-file", "--batch"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = proc.communicate(("\n".join(todo) + "\n").encode())
        pos = 0
        for blob in todo:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode().split()
            pos = end + 1
            if len(header) < 3 or header[1] == "missing":
                missing.append(blob)  # a large blob the snapshot does not hold
                continue
            size = int(header[2])
            data = out[pos:pos + size]
            pos += size + 1
            target = root / blob / SCRIPT
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            paths.append(target)
    return paths, missing


# --- timing ------------------------------------------------------------------------


class Timeout(BaseException):
    """A BaseException so that classify_path's own `except Exception` does not swallow it."""


def _alarm(signum, frame):
    raise Timeout()


def snapshot_auditor(dest: Path) -> str:
    """Copy auditor/ to dest and import it from there; returns the git HEAD it was taken at."""
    shutil.copytree(REPO / "auditor", dest / "auditor", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(dest))
    for name in [m for m in sys.modules if m == "auditor" or m.startswith("auditor.")]:
        del sys.modules[name]
    import auditor.classify  # noqa: F401  (loaded once here; forked workers share it)

    head = (git(REPO, "rev-parse", "--short", "HEAD") or "?").strip()
    dirty = git(REPO, "status", "--porcelain", "--", "auditor") or ""
    return head + ("+uncommitted auditor/ edits" if dirty.strip() else "")


def _init_worker(timeout: int, cache: str | None) -> None:
    if cache:
        os.environ["AUDITOR_CACHE_DIR"] = cache
    else:
        os.environ.pop("AUDITOR_CACHE_DIR", None)
    signal.signal(signal.SIGALRM, _alarm)
    _init_worker.timeout = timeout  # type: ignore[attr-defined]
    _init_worker.cache = cache  # type: ignore[attr-defined]


def _prefill(path: str, result) -> None:
    """Store a result as classify_paths(use_cache=True) would (outside the timed call)."""
    from auditor.classify.analyze import load_or_error
    from auditor.classify.cache import cache_key, write_entry

    loaded = load_or_error(path)
    if result.error_kind == "internal" or not hasattr(loaded, "script"):
        return  # classify_one caches neither an internal error nor a load failure
    write_entry(cache_key(path, loaded), result)


def _cold(path: str) -> tuple[str, float, str, str | None, int]:
    """(path, seconds, verdict, error, findings) for one file, timed in the worker."""
    from auditor.classify import classify_path

    timeout = getattr(_init_worker, "timeout", 0)
    result = None
    started = time.perf_counter()
    try:
        if timeout:
            signal.alarm(timeout)
        result = classify_path(path)
        verdict, error, n = result.verdict, result.error, len(result.findings)
    except Timeout:
        verdict, error, n = "error", f"bench timeout after {timeout}s", 0
    except BaseException as exc:  # classify_path should never raise; record it if it does
        verdict, error, n = "error", f"internal error (raised out of classify_path): {type(exc).__name__}: {exc}", 0
    finally:
        if timeout:
            signal.alarm(0)
    seconds = time.perf_counter() - started
    if result is not None and getattr(_init_worker, "cache", None):
        _prefill(path, result)
    return path, seconds, verdict, error, n


def parse_times(paths: list[Path]) -> dict[str, float]:
    times = {}
    for path in paths:
        data = path.read_bytes()
        started = time.perf_counter()
        try:
            ast.parse(data, filename=str(path))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
        times[str(path)] = time.perf_counter() - started
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, help="classify a random sample of N unique files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="extract into (and reuse) this folder")
    parser.add_argument("--timeout", type=int, default=300, help="per-file limit in seconds (0: none)")
    parser.add_argument("--slowest", type=int, default=5)
    parser.add_argument("--budget", type=float, help="stop the cold pass after this many seconds")
    parser.add_argument("--results", type=Path, help="append cold rows here as JSON lines; resume from it")
    parser.add_argument("--warm", choices=("twice", "prefill"), default="twice")
    args = parser.parse_args()

    started = time.perf_counter()
    snap = Path(tempfile.mkdtemp(prefix="classify-speed-"))
    version = snapshot_auditor(snap / "code")
    print(f"auditor snapshot of {version}")
    heads, blobs = unique_blobs(args.mirror)
    chosen = sorted(blobs)
    if args.limit:
        chosen = sorted(random.Random(args.seed).sample(chosen, min(args.limit, len(chosen))))
    print(f"PR heads: {heads}  unique {SCRIPT} blobs: {len(blobs)}  (listed in {time.perf_counter() - started:.1f}s)")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "files"
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths, missing = extract(args.mirror, chosen, root)
        paths.sort()
        total = len(paths)
        print(f"extracted: {len(paths)} files, {len(missing)} blobs missing from the mirror  "
              f"({time.perf_counter() - t0:.1f}s) -> {root}")
        sizes = {str(p): p.stat().st_size for p in paths}

        # 1. cold, no cache read, in a pool
        cache = str(args.keep / "_cache") if args.keep else str(snap / "cache")
        done: list[tuple[str, float, str, str | None, int]] = []
        earlier_wall = 0.0
        if args.results and args.results.is_file():
            for line in args.results.read_text().splitlines():
                row = json.loads(line)
                if "session_wall" in row:
                    earlier_wall += row["session_wall"]
                elif row["path"] in sizes:
                    done.append((row["path"], row["seconds"], row["verdict"], row["error"], row["findings"]))
            print(f"resumed: {len(done)} files from {args.results} ({earlier_wall:.0f}s of earlier cold wall)")
        seen = {r[0] for r in done}
        todo = [str(p) for p in paths if str(p) not in seen]
        sink = args.results.open("a") if args.results else None
        fresh = 0
        stopped = False
        t0 = time.perf_counter()
        pool = Pool(args.jobs, initializer=_init_worker,
                    initargs=(args.timeout, cache if args.warm == "prefill" else None))
        try:
            for i, row in enumerate(pool.imap_unordered(_cold, todo, chunksize=1), 1):
                done.append(row)
                fresh += 1
                if sink:
                    sink.write(json.dumps(dict(zip(("path", "seconds", "verdict", "error", "findings"), row))) + "\n")
                    sink.flush()
                if i % 50 == 0:
                    print(f"  cold {i}/{len(todo)}  {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
                if args.budget and time.perf_counter() - t0 > args.budget and i < len(todo):
                    stopped = True
                    break
        finally:
            pool.terminate()
            pool.join()
        session_wall = time.perf_counter() - t0
        if sink:
            sink.write(json.dumps({"session_wall": session_wall, "files": fresh}) + "\n")
            sink.close()
        cold_wall = earlier_wall + session_wall
        if stopped:
            print(f"budget reached: cold pass stopped after {len(done)}/{len(paths)} files")
        paths = sorted(Path(r[0]) for r in done)

        # 2. plain ast.parse, single process
        t0 = time.perf_counter()
        parsed = parse_times(paths)
        parse_wall = time.perf_counter() - t0

        # 3. warm: fill a fresh cache, then time a second run
        from auditor.classify import classify_paths

        old = os.environ.get("AUDITOR_CACHE_DIR")
        if args.warm == "twice":
            cache = str(snap / "cache-twice")
        os.environ["AUDITOR_CACHE_DIR"] = cache
        try:
            fill_wall = None
            if args.warm == "twice":
                t0 = time.perf_counter()
                classify_paths(paths, jobs=2, use_cache=True)
                fill_wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = classify_paths(paths, jobs=2, use_cache=True)
            warm_wall = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("AUDITOR_CACHE_DIR", None)
            else:
                os.environ["AUDITOR_CACHE_DIR"] = old
    shutil.rmtree(snap, ignore_errors=True)

    # 4. report
    n = len(done)
    verdicts = Counter(v for _, _, v, _, _ in done)
    errors = Counter(e for _, _, v, e, _ in done if v == "error")
    crashes = [(p, e) for p, _, _, e, _ in done if e and e.startswith("internal error")]
    seconds = [s for _, s, _, _, _ in done]
    ratios = [s / parsed[p] for p, s, _, _, _ in done if parsed.get(p, 0) > 0]
    cold_verdict = {p: v for p, _, v, _, _ in done}
    warm_mismatch = sum(1 for r in warm if cold_verdict.get(r.path) != r.verdict)

    print()
    print(f"files: {n} of {total}  ({sum(sizes[p] for p, *_ in done) / 1e6:.1f} MB)")
    print("verdicts: " + "  ".join(f"{k}={verdicts.get(k, 0)}" for k in ("clean", "flag", "error")))
    print(f"errors: {sum(errors.values())}  distinct messages: {len(errors)}")
    for message, count in errors.most_common(15):
        print(f"  {count:5d}  {message[:300]}")
    print(f"internal errors (crashes): {len(crashes)}")
    for path, message in crashes:
        print(f"  {path}\n      {message[:500]}")
    if seconds:
        print(f"seconds per file: median {statistics.median(seconds):.3f}  p90 {pct(seconds, 0.9):.3f}  "
              f"max {max(seconds):.3f}  mean {statistics.mean(seconds):.3f}  sum {sum(seconds):.1f}")
    print(f"cold: {n / cold_wall:.2f} files/s with --jobs {args.jobs}; cold wall {cold_wall:.1f}s for {n} files"
          + (f" (whole corpus of {total} extrapolated: {cold_wall * total / max(n, 1):.0f}s)" if n < total else
             " (whole corpus)"))
    fill = f"cache fill run {fill_wall:.1f}s" if fill_wall is not None else "cache filled by the cold pass"
    print(f"warm: {fill}, warm run {warm_wall:.1f}s "
          f"({n / max(warm_wall, 1e-9):.1f} files/s; verdicts differing from cold: {warm_mismatch})")
    if ratios:
        print(f"ast.parse: {parse_wall:.2f}s single process; classify/ast.parse ratio median "
              f"{statistics.median(ratios):.1f}x  total {sum(seconds) / max(sum(parsed.values()), 1e-9):.1f}x "
              f"(per-file worker seconds summed / parse seconds summed)")
    print(f"slowest {args.slowest}:")
    for path, secs, verdict, error, _ in sorted(done, key=lambda r: -r[1])[: args.slowest]:
        extra = f"  ({error[:120]})" if error else ""
        print(f"  {secs:8.2f}s  {sizes[path] / 1e3:7.1f} kB  {verdict:5s}  {path}{extra}")
    print(f"total bench time: {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
