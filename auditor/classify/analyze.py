"""One submission in, one ClassifyResult out: Submission -> Analysis -> rules -> Findings.

`classify_path` runs in the calling process and never raises for bad input; batches go
through `auditor.classify.runner`, which runs each submission in a worker process.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import re
from contextlib import contextmanager
from pathlib import Path

from auditor import __version__
from auditor.analysis import Analysis, analyze_source
from auditor.analysis.index import call_name, own_nodes
from auditor.classify.evidence import promote_declared_features, promote_implausible_scores
from auditor.findings import ClassifyResult, Finding, verdict_for
from auditor.rules import all_rules
from auditor.rules.base import where
from auditor.source import SourceError
from auditor.submission import Submission, load_submission

_ORDER = {"violation": 0, "dormant": 1, "info": 2}


def run_rules(analysis: Analysis) -> list[Finding]:
    findings: dict[tuple, Finding] = {}
    for rule in all_rules():
        for hit in rule.check(analysis):
            unit = hit.function.unit
            live, dormancy = (True, None) if hit.always_live else analysis.live(hit.function, hit.line)
            if hit.severity == "info":
                if not live:
                    continue
                severity = "info"
            else:
                severity = "violation" if live else "dormant"
            message = hit.message
            if not live:
                message += f" [dormant: {dormancy}]"
            if unit is not analysis.main:
                message = f"in {Path(unit.display).name}: {message}"
            elif unit.packing:
                message += f" [line {hit.line} of the decoded source; the file is packed ({unit.packing})]"
            key = (rule.id, unit.display, hit.line)
            if key not in findings:
                findings[key] = Finding(rule.id, severity, message, path=unit.display, line=hit.line,
                                        end_line=max(hit.end_line, hit.line),
                                        evidence=unit.line_text(hit.line)[:300], dormancy=dormancy,
                                        packing=unit.packing or None)
    promote_implausible_scores(analysis.submission, findings)
    promote_declared_features(analysis.submission, findings)
    return sorted(findings.values(), key=lambda f: (_ORDER[f.severity], f.line, f.rule))


def sha256_of(submission: Submission | None, path: Path | None) -> str:
    """The hash of a file as this run read it ("" when it cannot be read)."""
    if path is None:
        return ""
    from auditor.source import read_bytes_checked

    try:
        if submission is not None:
            with submission.reading():
                return hashlib.sha256(read_bytes_checked(path)).hexdigest()
        return hashlib.sha256(read_bytes_checked(path)).hexdigest()
    except SourceError:
        return ""


@contextmanager
def _fewer_collections():
    """Python's cyclic collector, kept off the objects that outlive this submission and run
    less often while it is analyzed. The analysis allocates many small containers while
    the trees (hundreds of thousands of nodes) stay alive, and every full collection walked
    them and every module loaded (a sixth of the run time with the default threshold of
    700). The objects alive on entry are frozen (never scanned) until the exit puts them
    back; garbage the analysis leaves in reference cycles is collected after it."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], 50_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _findings(submission: Submission, display: str) -> tuple[list[Finding], list[str]]:
    # (the analysis, its scopes and flow, dies with this frame, before the collector's
    # threshold is put back; the parsed tree stays with the submission)
    source = submission.source()
    with submission.reading():
        analysis = analyze_source(source, submission, display=display)
        return run_rules(analysis), not_analysed(analysis)


def classify_submission(submission: Submission, display: str) -> ClassifyResult:
    sha = sha256_of(submission, submission.script)
    try:
        with _fewer_collections():
            findings, unread = _findings(submission, display)
    except SourceError as exc:
        return ClassifyResult(display, sha, "error", str(exc), error_kind="input")
    except RecursionError:
        return ClassifyResult(display, sha, "error", "code is nested too deeply to analyze", error_kind="input")
    return ClassifyResult(display, sha, verdict_for(findings), None, findings, not_analysed=unread)


# Calls that load native code: a shared library (often compiled from C source held in a
# string) or C++ built inline. What it computes is invisible to the rules.
_NATIVE_LOADERS = frozenset({"CDLL", "PyDLL", "LoadLibrary", "load_inline", "FFI"})
_NATIVE_HINT = re.compile("|".join(sorted(_NATIVE_LOADERS)))


def not_analysed(analysis: Analysis) -> list[str]:
    """What the rules could not look into, one plain sentence each."""
    notes = []
    # (a file whose text names no loader holds no such call: its nodes are not walked)
    units = {id(unit) for unit in analysis.index.units if _NATIVE_HINT.search(unit.text)}
    for function in (f for f in analysis.index.functions if id(f.unit) in units):
        for node in own_nodes(function):
            if node.__class__ is ast.Call and call_name(node).rsplit(".", 1)[-1] in _NATIVE_LOADERS:
                live, why = analysis.live(function, node.lineno)
                notes.append(f"{Path(function.unit.display).name}:{node.lineno}: native code loaded at run time "
                             f"(`{ast.unparse(node.func)[:60]}` in {where(function)}) is not analysed"
                             + ("" if live else f" (dormant: {why})"))
    return notes


def display_name(path: str | Path, submission: Submission) -> str:
    """How the result names the submission: the script given, or folder/script for a folder."""
    if Path(path).is_dir() and submission.script is not None:
        return str(Path(path) / submission.script.name)
    return str(path)


def classify_loaded(path: str | Path, submission: Submission) -> ClassifyResult:
    display = display_name(path, submission)
    try:
        return classify_submission(submission, display)
    except Exception as exc:  # a bug of ours must not stop a batch; say so plainly
        return internal_error(display, sha256_of(submission, submission.script), exc)


def internal_error(display: str, sha: str, exc: BaseException | str) -> ClassifyResult:
    what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return ClassifyResult(display, sha, "error", f"internal error in auditor {__version__}: {what}",
                          error_kind="internal")


def load_or_error(path: str | Path) -> Submission | ClassifyResult:
    try:
        return load_submission(path)
    except SourceError as exc:
        return ClassifyResult(str(path), sha256_of(None, Path(path)) if Path(path).is_file() else "", "error",
                              str(exc), error_kind="input")


def classify_path(path: str | Path) -> ClassifyResult:
    """Classify one script or record folder in this process; never raises for bad input."""
    loaded = load_or_error(path)
    if isinstance(loaded, ClassifyResult):
        return loaded
    return classify_loaded(path, loaded)
