"""`auditor reproduce`: rerun a submission (or the reference model) under torchrun and judge its claims.

    from auditor.reproduce import reproduce
    result = reproduce("records/track_10min_16mb/X", gpus=8, data="data/datasets/fineweb10B_sp1024")
    print(result.verdict, result.to_json())

Modules: dataset (shard, vocabulary and val-in-train checks), launch (torchrun commands,
environment allowlist, process-group and sandboxed launch, live progress), verdict (claims
vs rerun), hardware (8xH100 detection, calibration), result (the result types), runner
(`reproduce()`), command (the typer command). Importing this package loads none of them
(nor torch or numpy): names resolve on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.reproduce.result import ReproduceResult, SeedOutcome
    from auditor.reproduce.runner import judge_run_dir, reproduce

_LAZY = {
    "reproduce": ("auditor.reproduce.runner", "reproduce"),
    "judge_run_dir": ("auditor.reproduce.runner", "judge_run_dir"),
    "ReproduceResult": ("auditor.reproduce.result", "ReproduceResult"),
    "SeedOutcome": ("auditor.reproduce.result", "SeedOutcome"),
    "Limits": ("auditor.reproduce.verdict", "Limits"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'auditor.reproduce' has no attribute {name!r}")
