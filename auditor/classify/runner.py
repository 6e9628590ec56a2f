"""Batches: each submission is classified in a worker process of its own.

A crash (a segfault in a parser, the memory killer) or a hang costs that submission's
verdict (`error`, said so), never the batch: the parent only collects results. One path
with one job runs in the calling process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import time
from pathlib import Path

from auditor.classify.analyze import classify_loaded, internal_error, load_or_error
from auditor.classify.cache import cache_key, read_entry, write_entry
from auditor.findings import ClassifyResult

# A submission is a few hundred KB of code: minutes mean something is wrong.
PER_FILE_TIMEOUT_S = 600.0


def classify_one(path: str | Path, use_cache: bool = True) -> ClassifyResult:
    """Classify one script or record folder, through the cache; never raises for bad input."""
    loaded = load_or_error(path)
    if isinstance(loaded, ClassifyResult):
        return loaded
    key = cache_key(path, loaded) if use_cache else None
    cached = read_entry(key) if key else None
    if cached is not None:
        return cached
    result = classify_loaded(path, loaded)
    if key and result.error_kind != "internal":
        write_entry(key, result)
    return result


def cached_result(path: str | Path) -> ClassifyResult | None:
    """The cached result for a path, looked up in this process; None on a miss (or if the
    lookup fails in any way: the worker then classifies it as usual)."""
    try:
        loaded = load_or_error(path)
        if isinstance(loaded, ClassifyResult):
            return None
        return read_entry(cache_key(path, loaded))
    except Exception:  # noqa: BLE001 - the worker will say what went wrong
        return None


def _child(send, path: str, use_cache: bool) -> None:
    try:
        data = classify_one(path, use_cache).to_json()
    except BaseException as exc:  # noqa: BLE001 - reported as this path's verdict
        data = internal_error(path, "", exc).to_json()
    send.send(data)
    send.close()


def _death(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"the analysis process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the analysis process was killed by signal {-code}"
    return f"the analysis process exited with status {code} without a result"


def _load_analysis_code() -> None:
    """Import the analysis and every rule once, in the parent: each forked worker inherits
    them instead of importing the analysis and the rules again (most of a small file's time)."""
    import auditor.analysis  # noqa: F401
    from auditor.classify.cache import code_digest
    from auditor.rules import all_rules

    all_rules()
    code_digest()  # hashed once here, not in every worker


def classify_paths(paths: list[str | Path], jobs: int = 1, use_cache: bool = True,
                   timeout: float = PER_FILE_TIMEOUT_S) -> list[ClassifyResult]:
    """One ClassifyResult per path, in order; `jobs` worker processes at a time."""
    paths = [str(p) for p in paths]
    if len(paths) <= 1 and jobs <= 1:
        return [classify_one(p, use_cache) for p in paths]
    results: list[ClassifyResult | None] = [None] * len(paths)
    if use_cache:
        # Hits are answered here: a worker process per file would cost ~50x the lookup.
        results = [cached_result(p) for p in paths]
    waiting = [(i, p) for i, p in enumerate(paths) if results[i] is None][::-1]
    if not waiting:
        return results  # type: ignore[return-value]
    context = multiprocessing.get_context("fork")
    _load_analysis_code()
    running: dict[int, tuple] = {}
    try:
        while waiting or running:
            while waiting and len(running) < max(jobs, 1):
                index, path = waiting.pop()
                receive, send = context.Pipe(duplex=False)
                # Not a daemon: a caller that is itself a pool worker may still run batches.
                process = context.Process(target=_child, args=(send, path, use_cache))
                process.start()
                send.close()
                running[index] = (process, receive, time.monotonic())
            ready = multiprocessing.connection.wait([entry[1] for entry in running.values()], timeout=1.0)
            for index, (process, receive, started) in list(running.items()):
                if receive in ready:
                    try:
                        results[index] = ClassifyResult.from_json(receive.recv())
                    except (EOFError, OSError):
                        process.join(5)
                        results[index] = internal_error(paths[index], "", _death(process))
                elif time.monotonic() - started > timeout:
                    process.kill()
                    results[index] = internal_error(paths[index], "", f"the analysis took over {timeout:.0f} s")
                else:
                    continue
                receive.close()
                process.join(5)
                del running[index]
    finally:  # interrupted: no worker outlives the batch
        for process, receive, _started in running.values():
            process.kill()
            process.join(5)
            receive.close()
    return results  # type: ignore[return-value]
