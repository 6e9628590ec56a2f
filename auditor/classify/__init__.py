"""`classify` as a library: paths in, one ClassifyResult per submission out.

    analyze.py   Submission -> Analysis -> rules -> Findings -> verdict (one submission)
    evidence.py  when a dormant finding counts as run (the submission's own claims)
    cache.py     results cached by everything that decides them, validated on read
    runner.py    batches, one worker process per submission
    command.py   the CLI command (typer), thin

Names are loaded on first use so that importing the CLI stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "classify_paths": "runner", "classify_one": "runner", "classify_path": "analyze",
    "classify_submission": "analyze", "run_rules": "analyze", "cache_dir": "cache", "cache_key": "cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"auditor.classify.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'auditor.classify' has no attribute {name!r}")
