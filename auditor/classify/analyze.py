"""`classify` as a library: paths in, one FileResult per submission out.

Submission -> Analysis -> rules -> Findings -> Verdict. Results are cached by the content
of the analyzed files, the run configuration and the auditor version; --jobs runs
submissions in worker processes. One bad file never stops a batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from auditor import __version__
from auditor.analysis import Analysis, analyze_source
from auditor.findings import FileResult, Finding, verdict_for
from auditor.rules import all_rules
from auditor.source import SourceError, read_source
from auditor.submission import Submission, load_submission


def run_rules(analysis: Analysis) -> list[Finding]:
    findings: dict[tuple, Finding] = {}
    for rule in all_rules():
        for hit in rule.check(analysis):
            unit = hit.function.unit
            live, reason = (True, "") if hit.always_live else analysis.live(hit.function, hit.line)
            if hit.severity == "info":
                if not live:
                    continue
                severity = "info"
            else:
                severity = "violation" if live else "dormant"
            message = hit.message
            if not live:
                message += f" [dormant: {reason}]"
            if unit is not analysis.main:
                message = f"in {Path(unit.display).name}: {message}"
            elif unit.packing:
                message += f" [line {hit.line} of the decoded source; the file is packed ({unit.packing})]"
            evidence = unit.line_text(hit.line)
            key = (rule.id, unit.display, hit.line)
            if key not in findings:
                findings[key] = Finding(rule.id, severity, hit.line, max(hit.end_line, hit.line), message, evidence[:300])
    promote_implausible_scores(analysis, findings)
    promote_declared_features(analysis, findings)
    order = {"violation": 0, "dormant": 1, "info": 2}
    return sorted(findings.values(), key=lambda f: (order[f.severity], f.line, f.rule))


# No 16 MB model scores below this on FineWeb without an eval-time cache (records are ~1.06;
# the closed n-gram PRs claimed 0.09-0.5). A claim below it says the cache path ran.
IMPLAUSIBLE_BPB = 0.9
CACHE_RULES = ("ngram-target-in-key", "ngram-unnormalized", "two-pass-rescore")


# What a submission says its result used, in its own words (submission.json name/blurb).
DECLARED = {
    "ttt-train-before-score": (re.compile(r"\bTTT\b|test[- ]time train", re.I), ("ttt-score-first",)),
    "slot-scored-region": (re.compile(r"\bSLOT\b"), ()),
    "ngram-target-in-key": (re.compile(r"n-?gram", re.I), ()),
    "ngram-unnormalized": (re.compile(r"n-?gram", re.I), ()),
}


def promote_declared_features(analysis: Analysis, findings: dict) -> None:
    """With no run command and no log, the submission's own description is the evidence:
    a result described as using TTT, when the only TTT is behind a flag that is off by
    default and nothing legal of that kind runs, came from that path (e.g. PR 595)."""
    submission = analysis.submission
    if submission is None or submission.run_config.sources:
        return
    try:
        data = submission.read_submission_json()
    except SourceError:
        return
    if not isinstance(data, dict):
        return
    described = " ".join(str(data.get(key, "")) for key in ("name", "blurb", "techniques", "description"))
    for key, finding in list(findings.items()):
        if finding.severity != "dormant" or finding.rule not in DECLARED or "is false (" not in finding.message:
            continue
        pattern, legal_twins = DECLARED[finding.rule]
        live_same_kind = any(f.severity in ("violation", "info") and f.rule in (finding.rule, *legal_twins)
                             for f in findings.values())
        if live_same_kind or not pattern.search(described):
            continue
        message = (f"{finding.message} [counted as run: no run command or train log shows the configuration, and "
                   "submission.json describes the result as using it]")
        findings[key] = Finding(finding.rule, "violation", finding.line, finding.end_line, message, finding.evidence)


def claimed_bpb(submission: Submission | None) -> float | None:
    if submission is None or submission.submission_json is None:
        return None
    from auditor.claims.submission_json import parse_claims

    try:
        claims = parse_claims(submission.read_submission_json())
    except (SourceError, TypeError, ValueError, AttributeError):
        return None
    value = claims.mean_val_bpb or claims.val_bpb
    return value.value if value is not None else None


def promote_implausible_scores(analysis: Analysis, findings: dict) -> None:
    """A dormant cache path is what ran when the claimed score is out of reach without it."""
    dormant = [key for key, f in findings.items() if f.severity == "dormant" and f.rule in CACHE_RULES]
    if not dormant:
        return
    bpb = claimed_bpb(analysis.submission)
    if bpb is None or bpb >= IMPLAUSIBLE_BPB:
        return
    for key in dormant:
        f = findings[key]
        message = (f"{f.message} [counted as run: submission.json claims val_bpb {bpb:g}, below the {IMPLAUSIBLE_BPB} "
                   "that no 16 MB model reaches without an eval-time cache]")
        findings[key] = Finding(f.rule, "violation", f.line, f.end_line, message, f.evidence)


def _sha256(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def classify_submission(submission: Submission, display: str) -> FileResult:
    script = submission.script
    sha = _sha256(script)
    try:
        source = read_source(script)
        analysis = analyze_source(source, submission, display=display)
        findings = run_rules(analysis)
    except SourceError as exc:
        return FileResult(display, sha, "error", str(exc))
    except RecursionError:
        return FileResult(display, sha, "error", "code is nested too deeply to analyze")
    return FileResult(display, sha, verdict_for(findings), None, findings)


def classify_path(path: str | Path) -> FileResult:
    """Classify one script or record folder; never raises for bad input."""
    display = str(path)
    try:
        submission = load_submission(path)
    except SourceError as exc:
        return FileResult(display, _sha256(Path(path)) if Path(path).is_file() else "", "error", str(exc))
    if Path(path).is_dir() and submission.script is not None:
        display = str(Path(path) / submission.script.name)
    try:
        return classify_submission(submission, display)
    except Exception as exc:  # a bug of ours must not stop a batch; say so plainly
        return FileResult(display, _sha256(submission.script), "error",
                          f"internal error in auditor {__version__}: {type(exc).__name__}: {exc}")


# --- cache ------------------------------------------------------------------------


def cache_dir() -> Path:
    override = os.environ.get("AUDITOR_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("auditor")) / "classify"


_RULES_DIGEST: str | None = None


def _rules_digest() -> str:
    """Changes whenever the analysis code changes, so a stale cache is never read."""
    global _RULES_DIGEST
    if _RULES_DIGEST is None:
        digest = hashlib.sha256(__version__.encode())
        package = Path(__file__).parent
        for path in sorted(package.rglob("*.py")):
            digest.update(path.read_bytes())
        _RULES_DIGEST = digest.hexdigest()[:16]
    return _RULES_DIGEST


def cache_key(path: Path) -> str | None:
    """Hash of everything the verdict depends on, or None when the input is unreadable."""
    try:
        submission = load_submission(path)
        digest = hashlib.sha256(_rules_digest().encode())
        folder = submission.script.parent
        # The script, its sibling modules (helpers, exec'd files) and the run configuration.
        for candidate in sorted(folder.glob("*.py")):
            digest.update(candidate.name.encode())
            digest.update(candidate.read_bytes())
        digest.update(json.dumps(submission.run_config.to_json(), sort_keys=True).encode())
        digest.update(str(path).encode())
        return digest.hexdigest()
    except (SourceError, OSError):
        return None


def _cached_classify(path: str, use_cache: bool) -> dict:
    key = cache_key(Path(path)) if use_cache else None
    entry = cache_dir() / f"{key}.json" if key else None
    if entry is not None and entry.is_file():
        try:
            return json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    result = classify_path(path).to_json()
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(entry)
        except OSError:
            pass  # a read-only cache never fails a run
    return result


def _worker(args: tuple[str, bool]) -> dict:
    path, use_cache = args
    try:
        return _cached_classify(path, use_cache)
    except Exception as exc:
        return FileResult(path, "", "error", f"internal error: {type(exc).__name__}: {exc}").to_json()


def classify_paths(paths: list[str | Path], jobs: int = 1, use_cache: bool = True) -> list[FileResult]:
    work = [(str(p), use_cache) for p in paths]
    if jobs <= 1 or len(work) <= 1:
        return [FileResult.from_json(_worker(item)) for item in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return [FileResult.from_json(r) for r in pool.map(_worker, work, chunksize=4)]
