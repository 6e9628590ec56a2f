"""`auditor smoke`: sandboxed CPU import and instantiation of a submission's model.

The library entry is `smoke_paths(paths, SmokeOptions(...)) -> list[SmokeResult]` (or
`smoke_path` for one path, which raises UnreadablePath). Names are loaded on first use,
so that importing the CLI stays cheap; submission code and torch run in a child process only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.smoke.batch import smoke_paths
    from auditor.smoke.runner import FAILURE_KINDS, SmokeOptions, SmokeResult, UnreadablePath, smoke_path
    from auditor.smoke.sandbox import Limits

_EXPORTS = {
    "FAILURE_KINDS": "runner", "SmokeOptions": "runner", "SmokeResult": "runner", "UnreadablePath": "runner",
    "smoke_path": "runner", "smoke_paths": "batch", "Limits": "sandbox",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"auditor.smoke.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'auditor.smoke' has no attribute {name!r}")
