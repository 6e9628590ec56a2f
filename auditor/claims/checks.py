"""Check what a record folder claims against its own logs and files.

`check_claims(path)` is the library entry that `claims`, `review` and `reproduce` share.
Each check is a finding with the claimed and observed figures side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from auditor.claims.logs import LogFile, LogRun, Metric, read_log, seed_from_filename
from auditor.submission.numbers import Printed, agree, agree_mean
from auditor.claims.readme_table import ReadmeTable, parse_readme_tables
from auditor.claims.significance import MARGIN_NATS, welch_improvement
from auditor.findings import Finding, Outcome
from auditor.source import SourceError, decode_text, read_bytes_checked
from auditor.submission import Submission, load_submission
from auditor.submission.claimed import JsonClaims, parse_claims

ARTIFACT_CAP_BYTES = 16_000_000
TRAIN_LIMIT_S = 600.0
EVAL_LIMIT_S = 600.0
# The reference loop checks the clock after each step, so a run stops a step past 600 s.
STOP_OVERSHOOT_S = 0.5
RECORD_WORLD_SIZE = 8
MIN_SEEDS = 3

VIOLATION, WARNING, INFO = "violation", "warning", "info"


@dataclass
class SeedResult:
    """One seed as measured from its log, with what was claimed for it."""

    seed: int | None
    run: LogRun | None
    score: Metric | None = None
    claimed_bpb: Printed | None = None
    claimed_source: str = ""

    @property
    def eval_time_s(self) -> float | None:
        return self.run.eval_time_for(self.score) if self.run else None

    def to_json(self) -> dict:
        run = self.run
        return {
            "seed": self.seed,
            "log": run.label if run else None,
            "metric": self.score.name if self.score else None,
            "val_bpb": self.score.val_bpb.text if self.score else None,
            "val_loss": self.score.val_loss.text if self.score and self.score.val_loss else None,
            "claimed_val_bpb": self.claimed_bpb.text if self.claimed_bpb else None,
            "claimed_in": self.claimed_source or None,
            "artifact_bytes": run.artifact_bytes if run else None,
            "code_bytes": _main_code_size(run) if run else None,
            "train_time_s": run.train_time_s if run else None,
            "eval_time_s": self.eval_time_s,
            "world_size": run.world_size if run else None,
            "model_params": run.model_params if run else None,
        }


@dataclass
class ClaimsResult:
    path: str
    track: str = "unknown"
    error: str | None = None  # set when the folder could not be read at all
    error_kind: str | None = None  # "input" or "internal", with error
    seeds: list[SeedResult] = field(default_factory=list)
    claimed: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, severity: str, message: str, claimed=None, observed=None) -> None:
        self.findings.append(Finding(check, severity, message, path=self.path, claimed=claimed, observed=observed))

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == VIOLATION]

    @property
    def outcome(self) -> Outcome:
        if self.error:
            return Outcome.INTERNAL_ERROR if self.error_kind == "internal" else Outcome.BAD_INPUT
        return Outcome.FLAG if self.violations else Outcome.CLEAN

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "track": self.track,
            "error": self.error,
            "error_kind": self.error_kind,
            "seeds": [s.to_json() for s in self.seeds],
            "claimed": self.claimed,
            "measured": self.measured,
            "findings": [f.to_json("claims") for f in self.findings],
        }


# --- loading -----------------------------------------------------------------------


def _track(path: Path, claims: JsonClaims | None, forced: str) -> str:
    if forced in ("record", "non-record"):
        return forced
    parts = [p.lower() for p in path.resolve().parts]
    if any("track_non_record" in p for p in parts):
        return "non-record"
    if any(p.startswith("track_10min") for p in parts):
        return "record"
    declared = (claims.track or "").lower() if claims else ""
    if "non" in declared or "unlimited" in declared:
        return "non-record"
    if "10min" in declared or "record" in declared:
        return "record"
    return "unknown"


def _main_code_size(run: LogRun) -> int | None:
    for key in ("", "(uncompressed)"):
        if key in run.code_sizes:
            return run.code_sizes[key]
    return next(iter(run.code_sizes.values()), None)


# --- the checks ------------------------------------------------------------------


def check_claims(
    path: Path | str | Submission,
    sota_bpb: float | None = None,
    sota_dir: Path | str | None = None,
    track: str = "auto",
) -> ClaimsResult:
    """Check one record folder (a path, or a Submission already loaded in folder mode, so a
    caller that also classifies reads each file once). Never raises for bad input: errors
    become findings or `.error`."""
    loaded = path if isinstance(path, Submission) else None
    path = loaded.root if loaded is not None else Path(path)
    result = ClaimsResult(path=str(path))
    if not path.exists():
        result.error, result.error_kind = f"{path} does not exist", "input"
        return result
    if not path.is_dir():
        result.error, result.error_kind = f"{path} is not a folder (claims checks a record folder)", "input"
        return result
    try:
        submission = loaded or load_submission(path, mode="folder")
        with submission.reading():
            _check(result, submission, path, sota_bpb, sota_dir, track)
    except SourceError as exc:
        result.error, result.error_kind = str(exc), "input"
    except Exception as exc:  # a bug of ours must not stop a batch, nor read as a violation
        from auditor import __version__

        result.findings.clear()
        result.error = f"internal error in auditor {__version__}: {type(exc).__name__}: {exc}"
        result.error_kind = "internal"
    return result


def _check(result: ClaimsResult, submission: Submission, path: Path, sota_bpb: float | None,
           sota_dir: Path | str | None, track: str) -> None:
    claims = _read_json_claims(submission, result)
    tables = _read_readme_tables(submission, result)
    result.track = _track(path, claims, track)
    log_files = [read_log(p) for p in submission.logs]
    runs = _usable_runs(log_files, result)

    result.claimed = _claimed_json(claims, tables)
    runs_by_seed = _match_seeds(result, runs, claims, tables)
    _check_scores(result, claims, tables, runs_by_seed)
    _check_artifact(result, claims)
    _check_code_size(result, submission)
    _check_times(result, claims)
    _check_world_size(result)
    _check_calibration(result)
    _summarize(result, submission)
    if sota_bpb is not None or sota_dir is not None:
        _check_significance(result, sota_bpb, Path(sota_dir) if sota_dir else None)


def _read_json_claims(submission: Submission, result: ClaimsResult) -> JsonClaims | None:
    if submission.submission_json is None:
        result.add("could_not_read", WARNING, "no submission.json: nothing claimed to check against the logs")
        return None
    try:
        data = submission.read_submission_json()
    except SourceError as exc:
        result.add("could_not_read", WARNING, f"could not read {submission.submission_json.name}: {exc}")
        return None
    claims = parse_claims(data, submission.submission_json.name)
    for part in claims.unread:
        result.add("could_not_read", WARNING, f"could not read part of {claims.file}: {part}")
    if claims.val_bpb is None and claims.mean_val_bpb is None and not claims.per_seed:
        result.add("could_not_read", WARNING, f"{claims.file} states no val_bpb in a shape we know")
    return claims


def _read_readme_tables(submission: Submission, result: ClaimsResult) -> list[ReadmeTable]:
    if submission.readme is None:
        return []
    try:
        decode_text(read_bytes_checked(submission.readme), what=submission.readme.name)
    except SourceError as exc:
        result.add("could_not_read", WARNING, f"could not read the README: {exc}")
        return []
    return parse_readme_tables(submission.readme_text)


def _usable_runs(log_files: list[LogFile], result: ClaimsResult) -> list[LogRun]:
    runs: list[LogRun] = []
    for log in log_files:
        if log.error:
            result.add("could_not_read", WARNING, f"could not read log {log.path.name}: {log.error}")
            continue
        usable = [r for r in log.runs if not r.is_empty]
        if not usable:
            result.add(
                "could_not_read",
                WARNING if log.path.suffix == ".log" else INFO,
                f"{log.path.name}: no train run found (no final val_bpb, train_time or size lines)",
            )
        runs.extend(usable)
    if not log_files:
        result.add("could_not_read", WARNING, "no train logs (*.log, *.txt) in the folder")
    return runs


def _claimed_json(claims: JsonClaims | None, tables: list[ReadmeTable]) -> dict:
    claimed = claims.to_json() if claims else {}
    claimed["readme_tables"] = [
        {
            "line": t.line,
            "column": t.bpb_header,
            "rows": {str(r.seed): r.val_bpb.text if r.val_bpb else None for r in t.rows},
            "mean": t.mean_bpb.text if t.mean_bpb else None,
        }
        for t in tables
    ]
    return claimed


def _metric_agreeing(run: LogRun, claimed: Printed) -> Metric | None:
    matches = [m for m in run.metrics if agree(claimed, m.val_bpb)]
    if not matches:
        return None
    return max(matches, key=lambda m: (m.is_score_candidate, m.val_bpb.decimals, m.line))


def _match_seeds(result: ClaimsResult, runs: list[LogRun], claims: JsonClaims | None,
                 tables: list[ReadmeTable]) -> dict[int | None, list[LogRun]]:
    """Pair each claimed seed with the run of its log, and note seeds claimed without a log."""
    by_seed: dict[int | None, list[LogRun]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, []).append(run)

    claimed_bpb: dict[int, tuple[Printed | None, str]] = {}
    if claims:
        for seed in claims.seeds:
            claim = claims.per_seed.get(seed)
            claimed_bpb[seed] = (claim.val_bpb if claim else None, claims.file or "submission.json")
    # Without seeds in submission.json, the README's first results table says what was run.
    if not claimed_bpb and tables:
        for row in tables[0].rows:
            claimed_bpb.setdefault(row.seed, (row.val_bpb, f"README line {row.line}"))

    # A log named for a claimed seed that logs another, unclaimed seed: the file was relabeled.
    for seed in list(claimed_bpb):
        if seed in by_seed:
            continue
        for run in runs:
            named = seed_from_filename(run.file.name)
            if named == seed and run.seed != seed and run.seed not in claimed_bpb:
                result.add(
                    "seed_logs", WARNING,
                    f"{run.file.name} is named for seed {seed} but logs seed {run.seed}; counted as seed {seed}",
                    claimed=seed, observed=run.seed,
                )
                by_seed.setdefault(seed, []).append(run)
                by_seed[run.seed].remove(run)
                if not by_seed[run.seed]:
                    del by_seed[run.seed]
                break

    top_level = (claims.mean_val_bpb or claims.val_bpb) if claims else None
    for seed, (bpb, source) in claimed_bpb.items():
        candidates = by_seed.get(seed, [])
        if not candidates:
            result.add(
                "seed_logs", WARNING if result.track == "non-record" else VIOLATION, f"seed {seed} is claimed ({source}) but no log shows a run of it",
                claimed=seed, observed=sorted(s for s in by_seed if s is not None),
            )
            result.seeds.append(SeedResult(seed=seed, run=None, claimed_bpb=bpb, claimed_source=source))
            continue
        result.seeds.append(_pick_run(seed, candidates, bpb, source, top_level, len(claimed_bpb)))

    # Runs of seeds nobody claimed: with no per-seed claims they are the evidence.
    unclaimed = {s: rs for s, rs in by_seed.items() if s not in claimed_bpb}
    if unclaimed:
        if claimed_bpb:
            labels = ", ".join(r.label for rs in unclaimed.values() for r in rs)
            result.add("seed_logs", INFO, f"logs of runs not among the claimed seeds: {labels}")
        else:
            for seed, candidates in unclaimed.items():
                result.seeds.append(_pick_run(seed, candidates, None, "", top_level, len(unclaimed)))

    for seed, candidates in by_seed.items():
        if seed is None or len(candidates) < 2:
            continue
        scores = {(r.default_score().val_bpb.text if r.default_score() else None) for r in candidates}
        labels = ", ".join(r.label for r in candidates)
        if len(scores) == 1:
            result.add("duplicate_seed", INFO, f"seed {seed} appears in {len(candidates)} logs with the same result "
                       f"(copies of one run): {labels}", observed=seed)
        else:
            result.add("duplicate_seed", WARNING, f"seed {seed} has {len(candidates)} runs with different results "
                       f"({labels}); only one can count as that seed", observed=seed)

    _check_seed_count(result, claims)
    return by_seed


def _pick_run(seed, candidates: list[LogRun], bpb: Printed | None, source: str, top_level: Printed | None,
              n_seeds: int) -> SeedResult:
    """The run that the claim refers to: the one whose metrics agree with it, else the last one."""
    for claim in (bpb, top_level if n_seeds == 1 else None):
        if claim is None:
            continue
        for run in reversed(candidates):
            metric = _metric_agreeing(run, claim)
            if metric is not None:
                return SeedResult(seed=seed, run=run, score=metric, claimed_bpb=bpb, claimed_source=source)
    scored = [r for r in candidates if r.default_score() is not None] or candidates
    run = scored[-1]
    return SeedResult(seed=seed, run=run, score=run.default_score(), claimed_bpb=bpb, claimed_source=source)


def _check_seed_count(result: ClaimsResult, claims: JsonClaims | None) -> None:
    logged = {s.seed for s in result.seeds if s.run is not None and s.score is not None and s.seed is not None}
    unseeded = [s for s in result.seeds if s.run is not None and s.seed is None]
    if unseeded:
        result.add("seed_logs", WARNING, "a log does not say its seed: "
                   + ", ".join(s.run.label for s in unseeded))
    if result.track == "non-record":
        return
    if len(logged) < MIN_SEEDS:
        claimed_count = len(claims.seeds) if claims else 0
        severity = VIOLATION if claimed_count >= MIN_SEEDS else WARNING
        result.add(
            "seed_count", severity,
            f"{len(logged)} distinct seed(s) with a log; a record needs runs enough for p < 0.01, "
            f"in practice at least {MIN_SEEDS} seeds with a log each",
            claimed=claimed_count or None, observed=sorted(logged),
        )


def _check_scores(result: ClaimsResult, claims: JsonClaims | None, tables: list[ReadmeTable],
                  runs_by_seed: dict) -> None:
    scored = [s for s in result.seeds if s.score is not None]
    for seed in result.seeds:
        if seed.run is None:
            continue
        if seed.score is None:
            result.add("could_not_read", WARNING, f"{seed.run.label}: no final val_bpb line found")
            continue
        if seed.claimed_bpb is None:
            continue
        if not agree(seed.claimed_bpb, seed.score.val_bpb):
            shown = ", ".join(f"{m.name} {m.val_bpb.text}" for m in seed.run.metrics if m.is_score_candidate)
            result.add(
                "val_bpb", VIOLATION,
                f"seed {seed.seed}: {seed.claimed_source} claims val_bpb {seed.claimed_bpb.text}, "
                f"which no metric of {seed.run.label} shows ({shown or 'none'})",
                claimed=seed.claimed_bpb.text, observed=seed.score.val_bpb.text,
            )
        elif not seed.score.is_score_candidate:
            result.add("val_bpb", WARNING, f"seed {seed.seed}: the claimed {seed.claimed_bpb.text} is the log's "
                       f"{seed.score.name}, not a final post-quantization score", claimed=seed.claimed_bpb.text,
                       observed=seed.score.val_bpb.text)
    _check_readme_tables(result, tables, runs_by_seed)
    if not scored or claims is None:
        return
    if any(s.run is None for s in result.seeds):
        result.add("val_bpb", INFO, "mean not checked: some claimed seeds have no log")
        return
    series = _metric_series(scored)
    if claims.mean_val_bpb is not None:
        _check_mean(result, "val_bpb", claims.mean_val_bpb, series, f"{claims.file} mean_val_bpb")
    if claims.val_bpb is not None and not (claims.mean_val_bpb and claims.val_bpb.text == claims.mean_val_bpb.text):
        _check_mean(result, "val_bpb", claims.val_bpb, series, f"{claims.file} val_bpb")
    claimed_loss = claims.mean_val_loss or claims.val_loss
    loss_series = _metric_series(scored, loss=True)
    if claimed_loss is not None and loss_series:
        _check_mean(result, "val_loss", claimed_loss, loss_series, f"{claims.file} val_loss")


def _metric_series(scored: list[SeedResult], loss: bool = False) -> dict[str, list[Printed]]:
    """Per-seed figures by metric: the chosen scores first, then every metric all runs print."""
    def figure(metric: Metric) -> Printed | None:
        return metric.val_loss if loss else metric.val_bpb

    series: dict[str, list[Printed]] = {}
    chosen = [figure(s.score) for s in scored]
    if all(v is not None for v in chosen):
        series["the scored metric"] = chosen
    names = set.intersection(*({m.name for m in s.run.metrics} for s in scored))
    for name in sorted(names):
        values = []
        for seed in scored:
            metric = next(m for m in reversed(seed.run.metrics) if m.name == name)
            values.append(figure(metric))
        if all(v is not None for v in values):
            series.setdefault(name, values)
    return series


def _check_mean(result: ClaimsResult, check: str, claimed: Printed, series: dict[str, list[Printed]],
                where: str) -> None:
    if not series:
        return
    for values in series.values():
        if agree_mean(claimed, values):
            return
    first_name, first = next(iter(series.items()))
    mean = sum(v.value for v in first) / len(first)
    observed = f"{mean:.8f} (mean of {len(first)}: " + ", ".join(v.text for v in first) + ")"
    for name, values in series.items():
        if len(values) > 1 and any(agree(claimed, v) for v in values):
            result.add(check, WARNING, f"{where} {claimed.text} is one seed's value ({name}), not the mean of the "
                       f"{len(values)} logged seeds", claimed=claimed.text, observed=observed)
            return
        if len(values) == 1 and agree(claimed, values[0]):
            return
    result.add(check, VIOLATION, f"{where} {claimed.text} does not match the logs", claimed=claimed.text,
               observed=observed)


def _check_readme_tables(result: ClaimsResult, tables: list[ReadmeTable], runs_by_seed: dict) -> None:
    """Each README row must agree with some run of its seed; a table's mean with its rows' runs."""
    for table in tables:
        matched: list[Printed] = []
        for row in table.rows:
            runs = runs_by_seed.get(row.seed, [])
            if row.val_bpb is None or not runs:
                continue
            metrics = [m for run in runs if (m := _metric_agreeing(run, row.val_bpb)) is not None]
            if metrics:
                matched.append(metrics[0].val_bpb)
                continue
            shown = ", ".join(f"{m.name} {m.val_bpb.text}" for run in runs for m in run.metrics if m.is_score_candidate)
            result.add("val_bpb", VIOLATION,
                       f"README line {row.line}: seed {row.seed} {table.bpb_header} {row.val_bpb.text} matches no "
                       f"metric in the logs of seed {row.seed} ({shown or 'none'})",
                       claimed=row.val_bpb.text, observed=shown or None)
        if table.mean_bpb is not None and matched and len(matched) == len(table.rows):
            _check_mean(result, "val_bpb", table.mean_bpb, {"the table's rows": matched},
                        f"README table mean (line {table.line}, {table.bpb_header})")


def _evidence(result: ClaimsResult) -> list[SeedResult]:
    return [s for s in result.seeds if s.run is not None]


def _check_artifact(result: ClaimsResult, claims: JsonClaims | None) -> None:
    for seed in _evidence(result):
        size = seed.run.artifact_bytes
        if size is None:
            result.add("artifact_size", INFO, f"{seed.run.label}: the log prints no submission size")
        elif size > ARTIFACT_CAP_BYTES:
            result.add("artifact_size", VIOLATION,
                       f"seed {seed.seed}: artifact is {size:,} bytes, over the {ARTIFACT_CAP_BYTES:,}-byte cap "
                       f"({seed.run.label})", claimed=ARTIFACT_CAP_BYTES, observed=size)
    if claims is None:
        return
    for claim in claims.per_seed.values():
        if claim.artifact_bytes is not None and claim.artifact_bytes > ARTIFACT_CAP_BYTES:
            result.add("artifact_size", VIOLATION,
                       f"seed {claim.seed}: {claims.file} claims {claim.artifact_bytes:,} bytes, over the cap",
                       claimed=claim.artifact_bytes, observed=ARTIFACT_CAP_BYTES)
        seed = next((s for s in result.seeds if s.seed == claim.seed and s.run), None)
        logged = seed.run.artifact_bytes if seed else None
        if claim.artifact_bytes is not None and logged is not None and claim.artifact_bytes != logged:
            result.add("artifact_size", WARNING,
                       f"seed {claim.seed}: {claims.file} claims {claim.artifact_bytes:,} bytes, the log shows "
                       f"{logged:,}", claimed=claim.artifact_bytes, observed=logged)
    if claims.bytes_total is not None and claims.bytes_total > ARTIFACT_CAP_BYTES:
        result.add("artifact_size", VIOLATION,
                   f"{claims.file} claims {claims.bytes_total:,} bytes in total, over the {ARTIFACT_CAP_BYTES:,}-byte cap",
                   claimed=claims.bytes_total, observed=ARTIFACT_CAP_BYTES)


def _code_sizes_of_files(submission: Submission) -> dict[str, int]:
    """Byte counts the logged code size may legitimately equal."""
    sizes: dict[str, int] = {}
    script = submission.script
    if script is None or not script.is_file():
        return sizes
    try:
        raw = read_bytes_checked(script)
    except SourceError:
        return sizes
    sizes[script.name] = len(raw)
    # A script may exec a sibling file, or a log may come from a variant in the folder.
    for other in sorted(submission.root.glob("*.py")):
        if other != script and other.is_file():
            sizes[other.name] = other.stat().st_size
    try:
        source = submission.source()
        if source.packed:
            sizes[f"{script.name} unpacked"] = len(source.text.encode("utf-8"))
    except SourceError:
        pass
    return sizes


TRAILING_NEWLINE_BYTES = 2  # "\r\n" at most


def _check_code_size(result: ClaimsResult, submission: Submission) -> None:
    files = _code_sizes_of_files(submission)
    if not files:
        if _evidence(result):
            result.add("code_size", WARNING, "no train_gpt.py to compare the logged code size with")
        return
    script_name = submission.script.name
    reported: set[int] = set()
    for seed in _evidence(result):
        logged = seed.run.code_sizes
        if not logged:
            continue
        if any(value in files.values() for value in logged.values()):
            continue
        main = _main_code_size(seed.run)
        if main in reported:
            continue
        reported.add(main)
        diff = files[script_name] - main
        # a byte or two is a trailing newline an editor or a copy added or dropped, not new code
        trivial = abs(diff) <= TRAILING_NEWLINE_BYTES
        result.add(
            "code_size", WARNING if trivial else VIOLATION,
            f"{seed.run.label} logged code size {main:,} bytes, the submitted {script_name} is "
            f"{files[script_name]:,} bytes ({diff:+,}): "
            + ("likely only a trailing newline; check that nothing else changed" if trivial
               else "the code changed after the run"),
            claimed=files[script_name], observed=main,
        )


def _check_times(result: ClaimsResult, claims: JsonClaims | None) -> None:
    record = result.track != "non-record"
    for seed in _evidence(result):
        run = seed.run
        if run.train_time_s is None:
            result.add("train_time", INFO, f"{run.label}: no train_time in the log")
        elif run.train_time_s > TRAIN_LIMIT_S + STOP_OVERSHOOT_S:
            result.add("train_time", VIOLATION if record else INFO,
                       f"seed {seed.seed}: trained {run.train_time_s:.3f} s, over the {TRAIN_LIMIT_S:.0f} s limit"
                       + ("" if record else " (non-record track: no limit)") + f" ({run.label})",
                       claimed=TRAIN_LIMIT_S, observed=run.train_time_s)
        elif run.train_time_s > TRAIN_LIMIT_S:
            result.add("train_time", INFO,
                       f"seed {seed.seed}: stopped at {run.train_time_s:.3f} s, the step that crossed 600 s",
                       claimed=TRAIN_LIMIT_S, observed=run.train_time_s)
        eval_time = seed.eval_time_s
        if eval_time is not None and eval_time > EVAL_LIMIT_S:
            result.add("eval_time", VIOLATION if record else INFO,
                       f"seed {seed.seed}: evaluation ({seed.score.name if seed.score else '?'}) took "
                       f"{eval_time:.1f} s, over the {EVAL_LIMIT_S:.0f} s limit ({run.label})",
                       claimed=EVAL_LIMIT_S, observed=eval_time)
        elif eval_time is None and seed.score is not None:
            result.add("eval_time", INFO, f"{run.label}: no eval time logged for {seed.score.name}")
    if claims is None or not record:
        return
    claimed_times = [(c.seed, c.train_time_s, c.eval_time_s) for c in claims.per_seed.values()]
    claimed_times.append(("all", claims.train_time_s, claims.eval_time_s))
    for seed, train, evaluation in claimed_times:
        if train is not None and train > TRAIN_LIMIT_S + STOP_OVERSHOOT_S:
            result.add("train_time", VIOLATION, f"seed {seed}: {claims.file} claims {train} s of training",
                       claimed=train, observed=TRAIN_LIMIT_S)
        if evaluation is not None and evaluation > EVAL_LIMIT_S:
            result.add("eval_time", VIOLATION, f"seed {seed}: {claims.file} claims {evaluation} s of evaluation",
                       claimed=evaluation, observed=EVAL_LIMIT_S)


def _check_world_size(result: ClaimsResult) -> None:
    if result.track == "non-record":
        return
    for seed in _evidence(result):
        size = seed.run.world_size
        if size is None:
            result.add("world_size", INFO, f"{seed.run.label}: world_size not logged")
        elif size != RECORD_WORLD_SIZE:
            result.add("world_size", VIOLATION,
                       f"seed {seed.seed}: ran on {size} GPU(s); the record track is 8xH100 ({seed.run.label})",
                       claimed=RECORD_WORLD_SIZE, observed=size)


def _check_calibration(result: ClaimsResult) -> None:
    for seed in _evidence(result):
        run = seed.run
        if not run.calibration_after_stop:
            continue
        first = run.calibration_after_stop[0]
        seconds = sum(c.seconds or 0.0 for c in run.calibration_after_stop)
        clock = run.train_time_s or 0.0
        self_generated = any(c.self_generated for c in run.calibration_after_stop)
        training_data = any(c.training_data for c in run.calibration_after_stop)
        where = f"{run.label} line {first.line}: `{first.text}` after `stopping_early` (line {run.stop_line})"
        if result.track == "non-record":
            result.add("calibration_after_clock", INFO, f"{where}; non-record track, no training clock")
        elif run.reserved_for_calibration:
            total = clock + seconds
            if seconds and total > TRAIN_LIMIT_S + STOP_OVERSHOOT_S:
                result.add("calibration_after_clock", VIOLATION,
                           f"{where}: training {clock:.1f} s plus calibration {seconds:.1f} s is {total:.1f} s, "
                           f"past the 600 s clock even with the reserve", claimed=TRAIN_LIMIT_S, observed=total)
            else:
                result.add("calibration_after_clock", INFO,
                           f"{where}; time was reserved from the training budget"
                           + (f" (training {clock:.1f} s + calibration {seconds:.1f} s)" if seconds else ""))
        elif self_generated and not training_data:
            result.add("calibration_after_clock", WARNING,
                       f"{where}: calibration on self-generated text after the training clock, no time reserved"
                       + (f" ({seconds:.1f} s)" if seconds else ""), observed=seconds or None)
        else:
            result.add("calibration_after_clock", VIOLATION,
                       f"{where}: calibration (training data) ran after the 600 s training clock with no time "
                       f"reserved", claimed=TRAIN_LIMIT_S, observed=clock + seconds if seconds else clock)


def _summarize(result: ClaimsResult, submission: Submission) -> None:
    evidence = [s for s in result.seeds if s.score is not None]
    files = _code_sizes_of_files(submission)
    measured: dict = {"script_bytes": files or None}
    if evidence:
        bpbs = [s.score.val_bpb.value for s in evidence]
        losses = [s.score.val_loss.value for s in evidence if s.score.val_loss is not None]
        measured["mean_val_bpb"] = round(sum(bpbs) / len(bpbs), 8)
        measured["mean_val_loss"] = round(sum(losses) / len(losses), 8) if len(losses) == len(bpbs) else None
    runs = [s.run for s in result.seeds if s.run is not None]
    sizes = [r.artifact_bytes for r in runs if r.artifact_bytes is not None]
    trains = [r.train_time_s for r in runs if r.train_time_s is not None]
    evals = [s.eval_time_s for s in result.seeds if s.eval_time_s is not None]
    measured["max_artifact_bytes"] = max(sizes) if sizes else None
    measured["max_train_time_s"] = max(trains) if trains else None
    measured["max_eval_time_s"] = max(evals) if evals else None
    measured["world_sizes"] = sorted({r.world_size for r in runs if r.world_size is not None})
    measured["seeds_with_logs"] = sorted({s.seed for s in result.seeds if s.run is not None and s.seed is not None})
    result.measured = measured


# --- significance ----------------------------------------------------------------


def _losses(result: ClaimsResult) -> tuple[list[float], list[float]]:
    """Per-seed val_loss (nats) and val_bpb of the scored runs."""
    scored = [s for s in result.seeds if s.score is not None and s.score.val_loss is not None]
    return [s.score.val_loss.value for s in scored], [s.score.val_bpb.value for s in scored]


def _check_significance(result: ClaimsResult, sota_bpb: float | None, sota_dir: Path | None) -> None:
    losses, bpbs = _losses(result)
    if len(losses) < 2:
        result.add("significance", VIOLATION if result.track == "record" else WARNING,
                   f"{len(losses)} run(s) with a logged val_loss: a t-test needs at least 2", observed=len(losses))
        return
    # nats per token per bit per byte: converts a bpb difference to nats on this tokenizer.
    ratio = sum(l / b for l, b in zip(losses, bpbs)) / len(losses)
    if sota_dir is not None:
        sota = check_claims(sota_dir)
        if sota.error:
            result.add("significance", WARNING, f"could not read the SOTA folder {sota_dir}: {sota.error}")
            return
        sota_losses, sota_bpbs = _losses(sota)
        if not sota_losses:
            result.add("significance", WARNING, f"the SOTA folder {sota_dir} has no logged val_loss")
            return
        sota_ratio = sum(l / b for l, b in zip(sota_losses, sota_bpbs)) / len(sota_losses)
        if abs(sota_ratio - ratio) / ratio > 0.01:
            # Another tokenizer: nats per token are not comparable; compare bpb in this tokenizer's nats.
            sota_values = [b * ratio for b in sota_bpbs]
            quantity = (f"val_loss in nats; SOTA val_bpb converted with this submission's loss/bpb ratio {ratio:.5f} "
                        f"(the SOTA uses another tokenizer)")
        else:
            sota_values = sota_losses
            quantity = "logged val_loss in nats for both"
        sota_label = str(sota_dir)
    else:
        sota_values = [sota_bpb * ratio]
        quantity = f"logged val_loss in nats; SOTA {sota_bpb} bpb converted with this submission's loss/bpb ratio {ratio:.5f}"
        sota_label = f"{sota_bpb} bpb"
    test = welch_improvement(losses, sota_values)
    if test is None:
        result.add("significance", WARNING, "not enough runs for a t-test")
        return
    p_text = f"{test.p_value:.2g}" if test.p_value > 0 else "0"
    message = (f"improvement over {sota_label}: {test.improvement:.5f} nats (mean {test.mean_new:.5f} vs "
               f"{test.mean_sota:.5f}); needs >= {MARGIN_NATS} at p < 0.01: t = {test.t_statistic:.3f}, "
               f"df = {test.df:.2f}, p = {p_text} ({test.method}; quantity: {quantity})")
    observed = {"improvement_nats": round(test.improvement, 6), "p_value": test.p_value,
                "t": None if math.isinf(test.t_statistic) else round(test.t_statistic, 4), "df": round(test.df, 3)}
    if test.passed:
        result.add("significance", INFO, message, claimed=MARGIN_NATS, observed=observed)
    else:
        result.add("significance", VIOLATION, message, claimed=MARGIN_NATS, observed=observed)
