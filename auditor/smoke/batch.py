"""`smoke_paths`: smoke many submissions; every path gets a SmokeResult, none raises."""

from __future__ import annotations

from pathlib import Path

from auditor.smoke.runner import SmokeOptions, SmokeResult, UnreadablePath, smoke_path


def smoke_paths(paths: list[str | Path], options: SmokeOptions | None = None) -> list[SmokeResult]:
    """One SmokeResult per path, in order: an unreadable path or a bug of ours is that
    path's result (error kind "unreadable" or "internal"), never an exception."""
    results = []
    for path in paths:
        try:
            results.append(smoke_path(path, options))
        except UnreadablePath as exc:
            results.append(SmokeResult.failed_before_running(str(path), "unreadable", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported as this path's result (exit code 3)
            results.append(SmokeResult.failed_before_running(str(path), "internal", f"{type(exc).__name__}: {exc}"))
    return results
