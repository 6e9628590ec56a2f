"""Judging a rerun: its logs and files against the submission's claims and the challenge's limits.

Each seed's log is read with the claims parser (auditor/claims/logs.py), the artifact is
recomputed from the files the run wrote (the script's bytes + the compressed model file),
and the figures are compared with submission.json (or, where it gives no per-seed
figures, with the submission's own train logs): val_bpb within max(0.002, 3 x the claimed
seeds' standard deviation), per seed and for the mean; artifact <= 16,000,000 bytes;
training and evaluation each <= 600 s. A Welch t-test of rerun vs claimed is reported too.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from auditor.claims.logs import LogRun, Metric, parse_log_text, read_log, strip_prefix
from auditor.submission.numbers import agree
from auditor.reproduce.hardware import estimate
from auditor.reproduce.result import (
    DIVERGED, FAILED, NOT_JUDGED, OVER_LIMIT, REPRODUCED, SEVERITY, Hardware, MeanComparison, SeedOutcome,
)

ARTIFACT_CAP_BYTES = 16_000_000
TRAIN_LIMIT_S = 600.0
EVAL_LIMIT_S = 600.0
MIN_TOLERANCE_BPB = 0.002
LOG_TAIL_LINES = 40
# Compressed model files records write (final_model.int8.ptz, *.int6.ptz, .xz, .br, ...).
_MODEL_SUFFIXES = (".ptz", ".xz", ".lzma", ".zst", ".zstd", ".br", ".gz", ".bz2", ".zlib", ".bin", ".pt")
_NOT_MODEL_SUFFIXES = (".log", ".txt", ".json", ".py", ".md", ".csv", ".png")


@dataclass
class Limits:
    train_s: float = TRAIN_LIMIT_S
    eval_s: float = EVAL_LIMIT_S
    artifact_bytes: int = ARTIFACT_CAP_BYTES

    def to_json(self) -> dict:
        return {"train_s": self.train_s, "eval_s": self.eval_s, "artifact_bytes": self.artifact_bytes}


@dataclass
class SeedClaimed:
    val_bpb: float | None = None
    val_loss: float | None = None
    metric: str | None = None  # the log line the claim matches in the submission's own log
    source: str = ""  # "submission.json", "train log", "submission.json (top level)"


@dataclass
class Claimed:
    """What the submission claims, per seed and overall."""

    per_seed: dict[int, SeedClaimed] = field(default_factory=dict)
    mean_bpb: float | None = None
    top_level_bpb: float | None = None
    seeds: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def for_seed(self, seed: int) -> SeedClaimed | None:
        if seed in self.per_seed and self.per_seed[seed].val_bpb is not None:
            return self.per_seed[seed]
        if self.top_level_bpb is not None and len(self.seeds) <= 1:
            return SeedClaimed(self.top_level_bpb, None, None, "submission.json (top level)")
        return None

    @property
    def tolerance(self) -> float:
        values = [c.val_bpb for c in self.per_seed.values() if c.val_bpb is not None]
        spread = 3 * statistics.stdev(values) if len(values) >= 2 else 0.0
        return max(MIN_TOLERANCE_BPB, spread)

    def to_json(self) -> dict:
        return {
            "per_seed": {str(s): {"val_bpb": c.val_bpb, "val_loss": c.val_loss, "metric": c.metric, "source": c.source}
                         for s, c in self.per_seed.items()},
            "mean_bpb": self.mean_bpb, "top_level_bpb": self.top_level_bpb, "seeds": list(self.seeds),
            "tolerance_bpb": self.tolerance, "notes": list(self.notes),
        }


def read_claimed(submission) -> Claimed:
    """Claims from submission.json (the Submission's `claimed`) and the submission's own train logs."""
    claimed = Claimed()
    json_claims = submission.claimed  # JsonClaims, None when absent or unreadable
    if submission.submission_json is not None and json_claims is None:
        claimed.notes.append(f"{submission.submission_json.name} could not be read (invalid JSON or an unknown shape)")
    log_runs: list[LogRun] = []
    for path in submission.logs:
        log_runs.extend(read_log(path).runs)
    if json_claims is not None:
        claimed.seeds = list(json_claims.seeds)
        for seed, claim in json_claims.per_seed.items():
            if claim.val_bpb is None:
                continue
            entry = SeedClaimed(claim.val_bpb.value, claim.val_loss.value if claim.val_loss else None, None,
                                "submission.json")
            for run in log_runs:
                if run.seed == seed:
                    agreeing = [m for m in run.metrics if agree(m.val_bpb, claim.val_bpb)]
                    # The `_exact` line (more digits) of the score the claim quotes.
                    metric = max(agreeing, key=lambda m: m.val_bpb.decimals) if agreeing else None
                    if metric is not None:
                        entry.metric = metric.name
                        break
            claimed.per_seed[seed] = entry
        mean = json_claims.mean_val_bpb or (json_claims.val_bpb if len(json_claims.seeds) > 1 else None)
        claimed.mean_bpb = mean.value if mean is not None else None
        claimed.top_level_bpb = json_claims.val_bpb.value if json_claims.val_bpb is not None else None
    if not claimed.per_seed:
        # No per-seed figures in submission.json: the submission's own logs are its claims.
        for run in log_runs:
            score = run.default_score()
            if run.seed is None or score is None or run.seed in claimed.per_seed:
                continue
            claimed.per_seed[run.seed] = SeedClaimed(
                score.val_bpb.value, score.val_loss.value if score.val_loss else None, score.name,
                f"train log {run.label}")
        for seed in claimed.per_seed:
            if seed not in claimed.seeds:
                claimed.seeds.append(seed)
    if claimed.mean_bpb is None and len(claimed.per_seed) >= 2:
        claimed.mean_bpb = statistics.fmean(c.val_bpb for c in claimed.per_seed.values())
    return claimed


# --- one seed -----------------------------------------------------------------------


def find_model_file(files: list[Path], logged_model_bytes: int | None) -> Path | None:
    """The compressed model the run wrote: the file whose size the log prints, else a .ptz-like one."""
    candidates = [f for f in files if f.is_file() and f.suffix.lower() not in _NOT_MODEL_SUFFIXES]
    if logged_model_bytes is not None:
        exact = [f for f in candidates if f.stat().st_size == logged_model_bytes]
        if exact:
            return exact[0]
    for suffixes in ((".ptz",), _MODEL_SUFFIXES[1:-2], (".bin",)):
        found = [f for f in candidates if f.suffix.lower() in suffixes]
        if found:
            return min(found, key=lambda f: f.stat().st_size)
    return None


def _score(run: LogRun, metric_name: str | None) -> Metric | None:
    if metric_name:
        named = [m for m in run.metrics if m.name == metric_name]
        if named:
            return named[-1]
    return run.default_score()


def _final_run(runs: list[LogRun], seed: int) -> LogRun | None:
    scored = [r for r in runs if r.has_final_metrics]
    same_seed = [r for r in scored if r.seed == seed]
    if same_seed:
        return same_seed[-1]
    if scored:
        return scored[-1]
    return runs[-1] if runs else None


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):\s*(.*)$")
_LAUNCHER_ERRORS = ("ChildFailedError", "SignalException", "RendezvousClosedError")


def worker_exception(text: str) -> str | None:
    """The last exception a worker printed (`RuntimeError: ...`), not torchrun's summary of it."""
    found = None
    for raw in text.splitlines()[-5000:]:
        _indent, line = strip_prefix(raw)
        match = _EXCEPTION.match(line)
        if match and not match.group(1).endswith(_LAUNCHER_ERRORS):
            found = line[:300]
    return found


def judge_seed(
    outcome: SeedOutcome,
    log_text: str,
    log_path: Path,
    script_bytes: int | None,
    written_files: list[Path],
    claim: SeedClaimed | None,
    tolerance: float,
    limits: Limits,
    hardware: Hardware | None,
    factor: float | None,
    launch_error: str | None = None,
) -> SeedOutcome:
    """Fill `outcome` (launch facts already set) with figures, reasons and a verdict."""
    runs = parse_log_text(log_text, log_path)
    run = _final_run(runs, outcome.seed)
    metric = _score(run, claim.metric if claim else None) if run else None
    outcome.log_tail = log_tail(log_text)
    verdicts: list[str] = []
    reasons = outcome.reasons

    if launch_error:
        outcome.failure_kind = "launch-error"
        reasons.append(launch_error)
        outcome.verdict = FAILED
        return outcome
    if outcome.stopped_by == "wall-limit":
        outcome.failure_kind = "timeout"
        reasons.append(f"stopped at the wall limit after {outcome.wall_s:.0f} s (every process of the run ended)"
                       + ("" if hardware is None or hardware.is_reference else
                          f"; on {hardware.description}, not 8xH100: raise --wall-limit for slower hardware"))
        verdicts.append(OVER_LIMIT)
    elif outcome.stopped_by == "interrupt":
        outcome.failure_kind = "interrupted"
        reasons.append("interrupted")
        verdicts.append(FAILED)

    if run is not None:
        outcome.train = estimate(run.train_time_s, factor)
        outcome.eval = estimate(run.eval_time_for(metric), factor)
        outcome.logged_artifact_bytes = run.artifact_bytes
    model_file = find_model_file(written_files, run.model_size if run else None)
    outcome.code_bytes = script_bytes
    if model_file is not None:
        outcome.model_file = model_file.name
        outcome.model_bytes = model_file.stat().st_size
        if script_bytes is not None:
            outcome.artifact_bytes = script_bytes + outcome.model_bytes

    if metric is None:
        if not verdicts:
            if outcome.returncode not in (0, None):
                outcome.failure_kind = "crash"
                reasons.append(f"exited with code {outcome.returncode} before printing a score")
                error = worker_exception(log_text)
                if error:
                    reasons.append(f"worker error: {error}")
            else:
                outcome.failure_kind = "no-score"
                reasons.append("finished without printing a val_bpb score")
            verdicts.append(FAILED)
        outcome.verdict = max(verdicts, key=SEVERITY.__getitem__)
        return outcome

    outcome.metric = metric.name
    outcome.val_bpb = metric.val_bpb.value
    outcome.val_loss = metric.val_loss.value if metric.val_loss is not None else None
    if outcome.returncode not in (0, None) and outcome.stopped_by is None:
        reasons.append(f"exited with code {outcome.returncode} after printing its score")

    if claim is not None and claim.val_bpb is not None:
        outcome.claimed_val_bpb = claim.val_bpb
        outcome.claimed_val_loss = claim.val_loss
        outcome.tolerance = tolerance
        delta = outcome.val_bpb - claim.val_bpb
        if abs(delta) > tolerance:
            verdicts.append(DIVERGED)
            reasons.append(f"val_bpb {outcome.val_bpb:.5f} vs claimed {claim.val_bpb:.5f} ({claim.source}): "
                           f"{delta:+.5f}, beyond the tolerance {tolerance:.4f}")
        else:
            verdicts.append(REPRODUCED)
    else:
        reasons.append("no claimed val_bpb for this seed to compare with")
        verdicts.append(REPRODUCED)

    artifact = outcome.artifact_bytes if outcome.artifact_bytes is not None else outcome.logged_artifact_bytes
    if artifact is not None and artifact > limits.artifact_bytes:
        verdicts.append(OVER_LIMIT)
        reasons.append(f"artifact {artifact:,} bytes > {limits.artifact_bytes:,}")
    if outcome.artifact_bytes is None:
        reasons.append("no compressed model file found among the run's files: artifact taken from the log"
                       if outcome.logged_artifact_bytes is not None else "artifact size unknown")
    elif outcome.logged_artifact_bytes is not None and outcome.logged_artifact_bytes != outcome.artifact_bytes:
        reasons.append(f"the log says {outcome.logged_artifact_bytes:,} artifact bytes, the files make "
                       f"{outcome.artifact_bytes:,}")
    verdicts.extend(_time_verdicts(outcome, limits, hardware, factor))
    outcome.verdict = max(verdicts, key=SEVERITY.__getitem__)
    return outcome


def _time_verdicts(outcome: SeedOutcome, limits: Limits, hardware: Hardware | None, factor: float | None) -> list[str]:
    """Training and evaluation limits, on 8xH100 seconds (measured there, or estimated)."""
    verdicts = []
    on_reference = hardware is not None and hardware.is_reference
    for label, figure, limit in (("training", outcome.train, limits.train_s), ("evaluation", outcome.eval, limits.eval_s)):
        if figure is None or figure.measured_s is None:
            continue
        if on_reference:
            seconds, how = figure.measured_s, "measured on 8xH100"
        elif figure.estimated_8xh100_s is not None:
            seconds, how = figure.estimated_8xh100_s, f"estimated for 8xH100 (factor {figure.factor:.4g})"
        else:
            seconds, how = figure.measured_s, "measured on this hardware (not 8xH100; no calibration factor)"
        if seconds > limit:
            if on_reference or figure.estimated_8xh100_s is not None:
                verdicts.append(OVER_LIMIT)
                outcome.reasons.append(f"{label} {seconds:.1f} s > {limit:g} s ({how})")
            else:
                outcome.reasons.append(f"{label} took {seconds:.1f} s > {limit:g} s {how}: not judged")
    return verdicts


# --- all seeds ----------------------------------------------------------------------


def compare_mean(outcomes: list[SeedOutcome], claimed: Claimed) -> MeanComparison | None:
    scored = [o for o in outcomes if o.val_bpb is not None]
    if not scored:
        return None
    seeds = [o.seed for o in scored]
    rerun = [o.val_bpb for o in scored]
    per_seed = [claimed.per_seed[s].val_bpb for s in seeds if s in claimed.per_seed]
    if len(per_seed) == len(seeds):
        claimed_mean, source = statistics.fmean(per_seed), "per-seed claims of the same seeds"
    elif claimed.mean_bpb is not None:
        claimed_mean, source = claimed.mean_bpb, "submission.json mean"
    elif claimed.top_level_bpb is not None:
        claimed_mean, source = claimed.top_level_bpb, "submission.json val_bpb"
    else:
        claimed_mean, source = None, "none"
    tolerance = claimed.tolerance
    rerun_mean = statistics.fmean(rerun)
    within = abs(rerun_mean - claimed_mean) <= tolerance if claimed_mean is not None else None
    comparison = MeanComparison(seeds, rerun_mean, claimed_mean, source, tolerance, within)
    claimed_values = [c.val_bpb for c in claimed.per_seed.values() if c.val_bpb is not None]
    _welch(comparison, rerun, claimed_values)
    return comparison


def _welch(comparison: MeanComparison, rerun: list[float], claimed: list[float]) -> None:
    """Two-sided Welch t-test, rerun vs claimed per-seed values (informative, not a verdict)."""
    if len(rerun) < 2 or len(claimed) < 2:
        comparison.welch_note = f"needs 2+ values on each side (rerun {len(rerun)}, claimed {len(claimed)})"
        return
    if statistics.pvariance(rerun) == 0 and statistics.pvariance(claimed) == 0:
        comparison.welch_note = "both sides have zero variance"
        return
    from scipy import stats  # slow to import: only here

    result = stats.ttest_ind(rerun, claimed, equal_var=False)
    comparison.welch_t = float(result.statistic)
    comparison.welch_p = float(result.pvalue)
    if math.isnan(comparison.welch_p):
        comparison.welch_t = comparison.welch_p = None
        comparison.welch_note = "undefined (degenerate samples)"
        return
    comparison.welch_note = (f"two-sided, {len(rerun)} rerun vs {len(claimed)} claimed; "
                             + ("rerun and claims differ (p < 0.05)" if comparison.welch_p < 0.05
                                else "no significant difference"))


def overall_verdict(outcomes: list[SeedOutcome], mean: MeanComparison | None) -> str:
    if not outcomes:
        return FAILED
    verdict = max((o.verdict for o in outcomes), key=SEVERITY.__getitem__)
    if mean is not None and mean.within is False and SEVERITY[verdict] < SEVERITY[DIVERGED]:
        verdict = DIVERGED
    if all(o.verdict == NOT_JUDGED for o in outcomes):
        return NOT_JUDGED
    return verdict

