"""What a rerun found: one ReproduceResult, rendered as JSON and as a text summary.

`review` (and any other consumer) reads `to_json()`; `to_text()` is the summary the
command prints. Both come from the same objects, so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.findings import Outcome

REPRODUCED = "REPRODUCED"
DIVERGED = "DIVERGED"
OVER_LIMIT = "OVER-LIMIT"
FAILED = "FAILED"
NOT_JUDGED = "NOT-JUDGED"  # a worker node of a multi-node run: node 0 holds the score
DRY_RUN = "DRY-RUN"
# Worse verdicts win when seeds disagree.
SEVERITY = {REPRODUCED: 0, NOT_JUDGED: 0, DRY_RUN: 0, DIVERGED: 1, OVER_LIMIT: 2, FAILED: 3}


@dataclass
class Estimate:
    """Wallclock on this hardware, and as estimated 8xH100 seconds when a factor is known."""

    measured_s: float | None
    factor: float | None = None  # 8xH100 seconds per second here
    estimated_8xh100_s: float | None = None

    def to_json(self) -> dict:
        return {"measured_s": _round(self.measured_s), "factor": _round(self.factor, 4),
                "estimated_8xh100_s": _round(self.estimated_8xh100_s), "is_estimate": self.factor is not None}


@dataclass
class SeedOutcome:
    seed: int
    verdict: str
    failure_kind: str | None = None  # crash, timeout, no-score, launch-error
    reasons: list[str] = field(default_factory=list)
    command: str = ""
    log: str | None = None
    returncode: int | None = None
    wall_s: float | None = None
    stopped_by: str | None = None
    survivors_killed: int = 0
    metric: str | None = None  # the log line the score came from
    val_bpb: float | None = None
    val_loss: float | None = None
    claimed_val_bpb: float | None = None
    claimed_val_loss: float | None = None
    tolerance: float | None = None
    train: Estimate | None = None
    eval: Estimate | None = None
    code_bytes: int | None = None
    model_file: str | None = None
    model_bytes: int | None = None
    artifact_bytes: int | None = None  # recomputed: code + compressed model file
    logged_artifact_bytes: int | None = None
    log_tail: str | None = None

    @property
    def delta(self) -> float | None:
        if self.val_bpb is None or self.claimed_val_bpb is None:
            return None
        return self.val_bpb - self.claimed_val_bpb

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "verdict": self.verdict,
            "failure_kind": self.failure_kind,
            "reasons": list(self.reasons),
            "command": self.command,
            "log": self.log,
            "returncode": self.returncode,
            "wall_s": _round(self.wall_s),
            "stopped_by": self.stopped_by,
            "survivors_killed": self.survivors_killed,
            "metric": self.metric,
            "val_bpb": self.val_bpb,
            "val_loss": self.val_loss,
            "claimed_val_bpb": self.claimed_val_bpb,
            "claimed_val_loss": self.claimed_val_loss,
            "delta_bpb": _round(self.delta, 8),
            "tolerance_bpb": _round(self.tolerance, 6),
            "train_time": self.train.to_json() if self.train else None,
            "eval_time": self.eval.to_json() if self.eval else None,
            "code_bytes": self.code_bytes,
            "model_file": self.model_file,
            "model_bytes": self.model_bytes,
            "artifact_bytes": self.artifact_bytes,
            "logged_artifact_bytes": self.logged_artifact_bytes,
            "log_tail": self.log_tail,
        }


@dataclass
class MeanComparison:
    seeds: list[int]
    rerun_mean: float
    claimed_mean: float | None
    claimed_source: str  # "per-seed claims", "submission.json mean", "none"
    tolerance: float
    within: bool | None
    welch_t: float | None = None
    welch_p: float | None = None
    welch_note: str = ""

    def to_json(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "rerun_mean_bpb": _round(self.rerun_mean, 8),
            "claimed_mean_bpb": _round(self.claimed_mean, 8),
            "claimed_source": self.claimed_source,
            "delta_bpb": _round(self.rerun_mean - self.claimed_mean, 8) if self.claimed_mean is not None else None,
            "tolerance_bpb": _round(self.tolerance, 6),
            "within_tolerance": self.within,
            "welch": {"t": _round(self.welch_t, 4), "p_value": _round(self.welch_p, 6), "note": self.welch_note},
        }


@dataclass
class Hardware:
    description: str  # "8 x NVIDIA H100 80GB HBM3", "CPU"
    device_count: int
    is_reference: bool  # 8xH100 on one node, all of them used

    def to_json(self) -> dict:
        return {"description": self.description, "device_count": self.device_count,
                "is_8xh100": self.is_reference}


@dataclass
class Calibration:
    ran: bool
    factor: float | None
    how: str  # how the factor was obtained, or why it is unknown
    local_step_ms: float | None = None
    reference_step_ms_8xh100: float | None = None
    log: str | None = None

    def to_json(self) -> dict:
        return {"ran": self.ran, "factor": _round(self.factor, 4), "how": self.how,
                "local_step_ms": _round(self.local_step_ms, 3),
                "reference_step_ms_8xh100": self.reference_step_ms_8xh100, "log": self.log}


@dataclass
class ReproduceResult:
    path: str
    verdict: str
    run_dir: str | None = None
    reference: bool = False
    script: str | None = None
    topology: dict = field(default_factory=dict)
    hardware: Hardware | None = None
    config_source: str = "defaults"
    run_env: dict = field(default_factory=dict)  # what the submission's configuration sets
    dataset: object | None = None  # DatasetReport
    claims: dict = field(default_factory=dict)  # what the submission claims (verdict.Claimed.to_json())
    calibration: Calibration | None = None
    seeds: list[SeedOutcome] = field(default_factory=list)
    mean: MeanComparison | None = None
    limits: dict = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # one shell line per seed
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why nothing ran (bad input, dataset)

    @property
    def outcome(self) -> Outcome:
        """CLEAN reproduced (or a dry run), FLAG diverged or over a limit, BAD_INPUT failed."""
        if self.verdict in (REPRODUCED, DRY_RUN, NOT_JUDGED):
            return Outcome.CLEAN
        if self.verdict in (DIVERGED, OVER_LIMIT):
            return Outcome.FLAG
        return Outcome.BAD_INPUT

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "verdict": self.verdict,
            "error": self.error,
            "reference": self.reference,
            "script": self.script,
            "run_dir": self.run_dir,
            "topology": dict(self.topology),
            "hardware": self.hardware.to_json() if self.hardware else None,
            "run_configuration": {"source": self.config_source, "env": dict(self.run_env)},
            "dataset": self.dataset.to_json() if self.dataset is not None else None,
            "claims": dict(self.claims),
            "calibration": self.calibration.to_json() if self.calibration else None,
            "limits": dict(self.limits),
            "seeds": [seed.to_json() for seed in self.seeds],
            "mean": self.mean.to_json() if self.mean else None,
            "commands": list(self.commands),
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        lines = [f"{self.path}: {self.verdict}" + (" (reference model)" if self.reference else "")]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.hardware:
            estimated = self.calibration is not None and self.calibration.factor is not None
            lines.append(f"  hardware: {self.hardware.description}" + (
                "" if self.hardware.is_reference else
                " (not 8xH100: times are also given as 8xH100 estimates)" if estimated else
                " (not 8xH100, no calibration factor: the 600 s limits are not judged on these times)"))
        if self.topology:
            t = self.topology
            lines.append(f"  torchrun: {t.get('nodes')} node(s) x {t.get('gpus_per_node')} processes"
                         + (f", rendezvous {t.get('rdzv')}, node rank {t.get('node_rank')}" if t.get("nodes", 1) > 1 else ""))
        lines.append(f"  run configuration: {self.config_source}"
                     + (" " + " ".join(f"{k}={v}" for k, v in sorted(self.run_env.items())) if self.run_env else ""))
        if self.dataset is not None:
            lines.append(f"  dataset: {self.dataset.data_dir}")
            for check in self.dataset.checks:
                lines.append(f"    [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.message}")
        if self.calibration:
            c = self.calibration
            factor = f"factor {c.factor:.4g}" if c.factor is not None else "factor unknown"
            lines.append(f"  calibration: {factor} ({c.how})")
        if self.verdict == DRY_RUN:
            lines.append("  commands (dry run, nothing was started):")
            lines.extend(f"    {command}" for command in self.commands)
        for seed in self.seeds:
            lines.extend(_seed_lines(seed))
        if self.mean:
            m = self.mean
            if m.claimed_mean is not None:
                lines.append(f"  mean over seeds {','.join(map(str, m.seeds))}: rerun {m.rerun_mean:.5f} vs claimed "
                             f"{m.claimed_mean:.5f} ({m.claimed_source}), delta {m.rerun_mean - m.claimed_mean:+.5f}, "
                             f"tolerance {m.tolerance:.4f}: {'within' if m.within else 'OUTSIDE'}")
            else:
                lines.append(f"  mean over seeds {','.join(map(str, m.seeds))}: rerun {m.rerun_mean:.5f} (nothing claimed)")
            if m.welch_p is not None:
                lines.append(f"  Welch t-test rerun vs claimed: t={m.welch_t:.3f} p={m.welch_p:.4f} {m.welch_note}")
            elif m.welch_note:
                lines.append(f"  Welch t-test: {m.welch_note}")
        if self.run_dir:
            lines.append(f"  run directory: {self.run_dir}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _seed_lines(seed: SeedOutcome) -> list[str]:
    lines = [f"  seed {seed.seed}: {seed.verdict}" + (f" ({seed.failure_kind})" if seed.failure_kind else "")]
    if seed.val_bpb is not None:
        claimed = f"{seed.claimed_val_bpb:.5f}" if seed.claimed_val_bpb is not None else "-"
        delta = f"{seed.delta:+.5f}" if seed.delta is not None else "-"
        tolerance = f"{seed.tolerance:.4f}" if seed.tolerance is not None else "-"
        lines.append(f"    val_bpb   rerun {seed.val_bpb:.5f}   claimed {claimed}   delta {delta}   tolerance {tolerance}")
    if seed.val_loss is not None and seed.claimed_val_loss is not None:
        lines.append(f"    val_loss  rerun {seed.val_loss:.5f}   claimed {seed.claimed_val_loss:.5f}")
    for label, estimate in (("train", seed.train), ("eval", seed.eval)):
        if estimate and estimate.measured_s is not None:
            text = f"    {label:<9} {estimate.measured_s:.1f} s measured"
            if estimate.estimated_8xh100_s is not None:
                text += f", ~{estimate.estimated_8xh100_s:.1f} s on 8xH100 (estimate, factor {estimate.factor:.4g})"
            lines.append(text)
    if seed.artifact_bytes is not None or seed.logged_artifact_bytes is not None:
        lines.append(f"    artifact  {_bytes(seed.artifact_bytes)} recomputed (code {_bytes(seed.code_bytes)} + "
                     f"{seed.model_file or 'model'} {_bytes(seed.model_bytes)}), log says {_bytes(seed.logged_artifact_bytes)}")
    lines.extend(f"    - {reason}" for reason in seed.reasons)
    if seed.log:
        lines.append(f"    log: {seed.log}")
    if seed.log_tail and seed.verdict in (FAILED, OVER_LIMIT):
        lines.append("    log tail:")
        lines.extend(f"      | {line}" for line in seed.log_tail.splitlines()[-15:])
    return lines


def _bytes(value: int | None) -> str:
    return f"{value:,}" if value is not None else "?"


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None
