"""The library entry of `auditor smoke`: smoke_path(path) -> SmokeResult.

Static work happens here (reading and unpacking the script, finding the model call,
choosing the configuration); everything that runs submission code happens in the child.
"""

from __future__ import annotations

import ast
import os
import re
import stat
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from auditor.findings import Finding, Outcome
from auditor.smoke.discover import discover_model, strip_entry_calls
from auditor.sandbox import SandboxTool, SandboxUnavailable, allowed_setting_name, find_bwrap
from auditor.smoke.sandbox import Limits, run_child, scrubbed_environment
from auditor.source import (
    LayerError, SourceError, decode_text, parse_python, read_bytes_checked, requote_nested_fstrings, unpack,
)
from auditor.submission import SEPARATOR_LINE, load_submission

FAILURE_KINDS = ("syntax", "missing-module", "cuda-required", "timeout", "memory", "model-not-found", "exception")
_MAX_COPIED_FILE = 50_000_000
_MAX_COPIED_TOTAL = 256_000_000  # the whole copy: many sparse 49 MB files are not 49 MB each of data
_MAX_COPIED_FILES = 2000
_IMPORT_HANDLERS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


class UnreadablePath(Exception):
    """The path is not a readable submission (exit code 2)."""


@dataclass
class SmokeOptions:
    defaults: bool = False  # ignore the run configuration, use the script's defaults
    env: dict[str, str] = field(default_factory=dict)  # --env K=V overrides
    forward: bool = False
    limits: Limits = field(default_factory=Limits)
    keep_temp: bool = False
    sandbox: bool = True  # False (--no-sandbox): run the submission's code with no namespaces at all


@dataclass
class SmokeResult:
    path: str
    status: str  # "ok" | "fail"
    seconds: float
    config_source: str
    env: dict[str, str]
    model: dict | None
    code_bytes: int | None
    error: dict | None
    import_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    shimmed: dict[str, str] = field(default_factory=dict)
    forward: dict | None = None
    isolation: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def findings(self) -> list[Finding]:
        """A failed build as one Finding (check "smoke-build", a violation: exit code 1); none
        when it built or never ran (an unreadable path, an internal error: see `outcome`)."""
        if self.outcome != Outcome.FLAG:
            return []
        error = self.error or {}
        return [Finding("smoke-build", "violation", f"{error.get('kind', 'exception')}: {error.get('message', '')}",
                        path=self.path, evidence=str(error.get("frame") or ""))]

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "import_seconds": self.import_seconds,
            "config_source": self.config_source,
            "env": self.env,
            "model": self.model,
            "code_bytes": self.code_bytes,
            "forward": self.forward,
            "shimmed": self.shimmed,
            "isolation": self.isolation,
            "notes": self.notes,
            "error": self.error,
            "findings": [f.to_json("claims") for f in self.findings],
        }

    @property
    def outcome(self) -> Outcome:
        """CLEAN when it built, BAD_INPUT when the path is not a submission, INTERNAL_ERROR on
        a bug of ours, FLAG when the submission's code failed."""
        if self.ok:
            return Outcome.CLEAN
        kind = (self.error or {}).get("kind")
        return {"unreadable": Outcome.BAD_INPUT, "internal": Outcome.INTERNAL_ERROR}.get(kind, Outcome.FLAG)

    @classmethod
    def failed_before_running(cls, path: str, kind: str, message: str) -> "SmokeResult":
        """A result for a path that never reached the child ("unreadable" or "internal")."""
        return cls(path=path, status="fail", seconds=0.0, config_source=None, env={}, model=None, code_bytes=None,
                   error={"kind": kind, "message": message})

    def line(self) -> str:
        """One human-readable line, e.g. 'import OK in 0.41s, dim=768, ... [config: log]'."""
        from auditor.report.text import smoke_line

        return smoke_line(self)


def _guarded_import_lines(tree: ast.Module) -> list[int]:
    """Lines of imports inside try blocks that catch ImportError: the script has a fallback."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = False
        for handler in node.handlers:
            if handler.type is None:
                catches = True
            else:
                names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in ast.walk(handler.type)}
                catches = catches or bool(names & _IMPORT_HANDLERS)
        if not catches:
            continue
        for stmt in node.body:
            for sub in ast.walk(stmt):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    lines.extend(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _executed_sibling(script: Path, tree: ast.Module) -> Path | None:
    """A sibling .py file that a tiny stub script exec()s (`exec(open(...decode.py).read())`)."""
    replaced = {id(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute) and node.func.attr == "replace" and len(node.args) == 2}
    for node in ast.walk(tree):
        if id(node) in replaced:
            continue  # __file__.replace("train_gpt.py", "x.py") reads x.py, not the script
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py"):
            candidate = script.parent / Path(node.value).name
            if candidate.is_file() and candidate != script:
                return candidate
    return None


def _parse_or_rewrite(text: str, what: str) -> tuple[str, ast.Module, bool]:
    """Parse `text`, rewriting 3.12 f-strings when this Python cannot parse it as is."""
    try:
        return text, ast.parse(text), False
    except SyntaxError:
        rewritten = requote_nested_fstrings(text)
        try:
            return rewritten, ast.parse(rewritten), True
        except SyntaxError:
            pass
        return text, parse_python(text, what), False  # raises SourceError with the original message


def _prepare_text(script: Path) -> tuple[str, list[str]]:
    """The code the child should run: unpacked (exec'd blobs decoded), compilable by this Python.

    auditor.source.unpack's loop, but a decoded layer written for Python 3.12 is rewritten
    instead of refused, and a stub that execs a sibling file runs that file.
    Raises SourceError (with the message for the user) on a syntax error of the script itself.
    """
    notes = []
    text = decode_text(read_bytes_checked(script))
    try:
        text, tree, rewritten = _parse_or_rewrite(text, "file")
    except SourceError as exc:
        return text, [f"syntax: {exc}"]
    rewrites = [rewritten]

    def parse(payload: str, what: str) -> tuple[str, ast.Module]:
        payload, layer_tree, rewritten = _parse_or_rewrite(payload, what)
        rewrites.append(rewritten)
        return payload, layer_tree

    def sibling_layer(text: str, tree: ast.Module) -> tuple[str, str] | None:
        sibling = _executed_sibling(script, tree) if len(text) < 2000 else None
        if sibling is None:
            return None
        return decode_text(read_bytes_checked(sibling), what=sibling.name), f"file:{sibling.name}"

    try:
        text, _tree, layers, _line = unpack(text, tree, script.parent, parse, sibling_layer)
    except LayerError as exc:
        return exc.payload, [f"syntax: {exc}"]
    if layers:
        notes.append(f"unpacked ({' > '.join(layers)})")
    if any(rewrites):
        notes.append("3.12 f-strings rewritten for this Python")
    return text, notes


def _record_files(root: Path, script: Path, is_record: bool) -> tuple[list[tuple[Path, str]], list[str]]:
    """The files of the record folder to copy (or, for a lone script, its .py siblings).

    Regular files only, no links (nor anything under a linked folder), at most
    _MAX_COPIED_FILE each and _MAX_COPIED_TOTAL in all (the script first), so a folder of
    sparse or huge files costs a bounded copy. Returns (host path, relative path), notes.
    """
    candidates: list[Path] = []
    if is_record:
        for folder, dirs, names in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
            candidates.extend(Path(folder) / name for name in sorted(names))
            if len(candidates) > 10 * _MAX_COPIED_FILES:
                break
    else:
        candidates = sorted(root.glob("*.py"))
    candidates.sort(key=lambda p: p != script)
    chosen: list[tuple[Path, str]] = []
    total = 0
    skipped = 0
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if info.st_size > _MAX_COPIED_FILE or total + info.st_size > _MAX_COPIED_TOTAL or len(chosen) >= _MAX_COPIED_FILES:
            skipped += 1
            continue
        total += info.st_size
        chosen.append((path, path.relative_to(root).as_posix()))
    notes = [f"{skipped} files of the folder not copied (copy bounded to {_MAX_COPIED_TOTAL // 1_000_000} MB, "
             f"{_MAX_COPIED_FILES} files)"] if skipped else []
    return chosen, notes


def _contents_read_here(submission, files: list[tuple[Path, str]]) -> list[tuple[Path | bytes, str]]:
    """`files` with the contents of those this run reads anyway (the Submission's inputs, the
    .py files it hashes) in place of their paths, so that no file is opened twice; the
    others (model files, data) are copied from the host path. An unreadable one is left out."""
    read_here = {os.path.abspath(p) for p in [submission.script, *submission.input_files()] if p is not None}
    chosen: list[tuple[Path | bytes, str]] = []
    with submission.reading():
        for path, rel in files:
            if os.path.abspath(path) not in read_here and not rel.endswith(".py"):
                chosen.append((path, rel))
                continue
            try:
                chosen.append((read_bytes_checked(path, _MAX_COPIED_FILE), rel))
            except SourceError:
                continue
    return chosen


def _copy_files(files: list[tuple[Path | bytes, str]], dest: Path) -> None:
    """Host copy for the unsandboxed child: no link followed, no FIFO opened, sizes as listed."""
    from auditor.sandbox import read_child_file

    dest.mkdir(parents=True)
    for source, rel in files:
        data = source if isinstance(source, bytes) else read_child_file(source, _MAX_COPIED_FILE)
        if data is None:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


_DISTRIBUTED_ENV = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def _usable(name: str, value: str) -> bool:
    """Drop settings that are code echoed into a log (WORLD_SIZE={h.world_size}) or torchrun's."""
    if name in _DISTRIBUTED_ENV:
        return False
    if any(c in value for c in "{}()$`<>") or value in ("int", "float", "str", "bool"):
        return False
    return not (value.isidentifier() and value.lower() == name.lower())


def _first_log_text(submission) -> str:
    try:
        return submission.read_log(submission.logs[0]).decode("utf-8", "replace")[:5_000_000] if submission.logs else ""
    except SourceError:
        return ""


def _full_log_value(log_text: str, attr: str, value: str) -> str:
    """`ve_layers: 9,10` is logged whole, but the log reader keeps '9': take the list back."""
    for match in re.finditer(rf"(?<![\w.]){re.escape(attr)}\s*[:=]\s*(\S+)", log_text):
        whole = match.group(1)
        if whole.startswith(value + ",") and re.fullmatch(r"[\w.\-]+(,[\w.\-]+)+", whole):
            return whole
    return value


_NUMERIC_READ = re.compile(r"^(?:bool\()?(int|float)\(")


def _typed_value(config, name: str, value: str) -> str | None:
    """The value as the script will parse it; None when it cannot be (code echoed in a log)."""
    setting = config.env_settings.get(name)
    match = _NUMERIC_READ.match(ast.unparse(setting.expr)) if setting is not None else None
    if match is None:
        return value
    try:
        number = float(value)
    except ValueError:
        if value in ("True", "False"):
            return "1" if value == "True" else "0"
        return None
    if match.group(1) == "int":
        return str(int(number)) if number.is_integer() else None
    return value


def _run_configuration(tree: ast.Module | None, submission, options: SmokeOptions) -> tuple[dict[str, str], str]:
    env: dict[str, str] = {}
    source = "defaults"
    if not options.defaults and tree is not None:
        from auditor.analysis.config import build_config

        config = build_config(tree, submission.run_config)
        env = {}
        log_text = None
        for name, value in config.run_environment().items():
            setting = config.env_settings.get(name)
            if name not in submission.run_config.env and setting is not None and setting.attr:
                log_text = _first_log_text(submission) if log_text is None else log_text
                value = _full_log_value(log_text, setting.attr.lower(), value)
            value = _typed_value(config, name, value)
            if value is not None and _usable(name, value):
                env[name] = value
        for name, value in env.items():
            # Logs print Python values (tie_embeddings:True); scripts parse env flags as ints.
            if name not in submission.run_config.env and value in ("True", "False"):
                env[name] = "1" if value == "True" else "0"
        if env:
            source = submission.run_config.source
    if options.env:
        env.update(options.env)
        source = "env" if source == "defaults" else f"{source}+env"
    return env, source


def smoke_path(path: str | Path, options: SmokeOptions | None = None) -> SmokeResult:
    """Import the submission at `path` in a sandboxed child and build its model.

    Raises UnreadablePath when `path` is not a readable submission.
    """
    options = options or SmokeOptions()
    started = time.monotonic()
    try:
        submission = load_submission(path)
    except SourceError as exc:
        recovered = _script_from_log(Path(path))
        if recovered is None:
            raise UnreadablePath(str(exc)) from None
        try:
            return _smoke(path, recovered, options, started, [f"no script in the folder: ran the source that "
                                                                f"{recovered.logs[0].name} starts with"])
        finally:
            shutil.rmtree(recovered.root.parent, ignore_errors=True)
    except OSError as exc:
        raise UnreadablePath(str(exc)) from None
    return _smoke(path, submission, options, started, [])




def _script_from_log(folder: Path):
    """A Submission for a record folder that has no script but a train log that starts with
    the script's source (many logs echo it before a `=====` line): that source is what ran."""
    if not folder.is_dir():
        return None
    from auditor.submission import Submission, find_logs, read_run_config

    for log in find_logs(folder):
        try:
            lines = log.read_text(errors="replace")[:5_000_000].splitlines(keepends=True)
        except OSError:
            continue
        end = next((i for i, line in enumerate(lines) if SEPARATOR_LINE.match(line)), None)
        if not end or end < 20:
            continue
        source = "".join(lines[:end]).rstrip() + "\n"
        try:
            _parse_or_rewrite(source, log.name)
        except SourceError:
            continue
        work = Path(tempfile.mkdtemp(prefix="auditor-smoke-log-")) / folder.name
        shutil.copytree(folder, work, symlinks=True)
        script = work / "train_gpt.py"
        script.write_text(source, encoding="utf-8")
        logs = [work / p.relative_to(folder) for p in find_logs(folder)]
        logs.sort(key=lambda p: p.name != log.name)
        submission = Submission(root=work, script=script, logs=logs, is_record_folder=True)
        submission.run_config = read_run_config("", logs, script)
        return submission
    return None


def _smoke(path, submission, options: SmokeOptions, started: float, extra_notes: list[str]) -> SmokeResult:
    try:
        script = submission.script
        code_bytes = script.stat().st_size
        with submission.reading():
            text, notes = _prepare_text(script)
    except (SourceError, OSError) as exc:
        raise UnreadablePath(str(exc)) from None
    notes = extra_notes + notes
    syntax_notes = [n for n in notes if n.startswith("syntax: ")]
    tree = None
    if syntax_notes:
        notes = [n for n in notes if not n.startswith("syntax: ")]
        syntax_error = {"kind": "syntax", "message": syntax_notes[0].removeprefix("syntax: ")}
    else:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError) as exc:
            syntax_error = {"kind": "syntax", "message": f"{getattr(exc, 'msg', exc)} at line {getattr(exc, 'lineno', '?')}"}
    env, config_source = _run_configuration(tree, submission, options)

    def result(**kwargs) -> SmokeResult:
        fields = dict(path=str(path), seconds=time.monotonic() - started, config_source=config_source, env=env,
                      model=None, code_bytes=code_bytes, error=None, notes=notes)
        fields.update(kwargs)
        return SmokeResult(**fields)

    if tree is None:
        return result(status="fail", error=syntax_error)

    discovery = discover_model(tree)
    text = strip_entry_calls(text, discovery.entry_calls)
    tool = sandbox_tool() if options.sandbox else None
    if options.sandbox and tool is None:
        from auditor.sandbox import SKIPPED

        raise SandboxUnavailable(NO_SANDBOX_MESSAGE + (f" ({'; '.join(SKIPPED)})" if SKIPPED else ""))
    held_back = sorted(name for name in env if not allowed_setting_name(name))
    if held_back:
        notes = notes + [f"not passed to the child: {', '.join(held_back)} (loader/interpreter settings)"]
    record_files, copy_notes = _record_files(submission.root, script, submission.is_record_folder)
    record_files = _contents_read_here(submission, record_files)
    with submission.reading():
        script_bytes = read_bytes_checked(script)  # read by _prepare_text: from memory
    computed = {"code_bytes": code_bytes, "script_sha256": _sha256(script_bytes),
                "python_files_sha256": {rel: _sha256(data) for data, rel in record_files[:200] if rel.endswith(".py")}}
    notes = notes + copy_notes
    run_dir = Path(tempfile.mkdtemp(prefix="auditor-smoke-"))
    try:
        prepared = run_dir / "prepared.py"
        prepared.write_text(text, encoding="utf-8")
        script_rel = script.relative_to(submission.root).as_posix() if submission.is_record_folder else script.name
        spec = {
            "workdir_rel": "." if submission.is_record_folder else os.path.dirname(script_rel) or ".",
            "script_rel": script_rel,
            "prepared_path": str(prepared),
            "guarded_lines": _guarded_import_lines(tree),
            "candidates": [c.to_json() for c in discovery.candidates],
            "forward": options.forward,
        }
        host_record = None
        if tool is None:
            host_record = run_dir / "record"
            _copy_files(record_files, host_record)
        outcome = run_child(spec, run_dir, scrubbed_environment(_parent_environment(), env), options.limits,
                            record_files, tool, host_record)
    finally:
        if not options.keep_temp:
            shutil.rmtree(run_dir, ignore_errors=True)
    notes = notes + outcome.notes
    if outcome.survivors_killed > 1:
        notes.append(f"killed {outcome.survivors_killed} leftover processes")
    isolation = _isolation(outcome, computed)
    if outcome.result is None:
        return result(status="fail", error=_error_without_result(outcome, options.limits), notes=notes,
                      isolation=isolation)
    child = outcome.result
    status = child.get("status") if child.get("status") in ("ok", "fail") else "fail"
    return result(
        status=status,
        seconds=time.monotonic() - started,
        model=_dict_or_none(child.get("model")),
        error=_dict_or_none(child.get("error")) if status == "fail" else None,
        import_seconds=child.get("import_seconds") if isinstance(child.get("import_seconds"), (int, float)) else None,
        shimmed={str(k): str(v) for k, v in child.get("shimmed", {}).items()} if isinstance(child.get("shimmed"), dict) else {},
        forward=_dict_or_none(child.get("forward")),
        isolation=isolation,
        notes=notes + [str(n) for n in child.get("build_notes", []) if isinstance(n, str) and "built on CPU" in n],
    )


NO_SANDBOX_MESSAGE = ("refusing to run the submission's code without a sandbox: no working bubblewrap (bwrap >= 0.8) here. "
                      "Install it (Debian/Ubuntu: apt-get install bubblewrap; without root: pip install "
                      "'auditor[sandbox]') or pass --no-sandbox to run it unconfined at your own risk")

_TOOL: list = []


def sandbox_tool() -> SandboxTool | None:
    """The bwrap smoke uses (found once per process), or None."""
    if not _TOOL:
        _TOOL.append(find_bwrap())
    return _TOOL[0]


def _sha256(data: Path | bytes) -> str | None:
    """The hash of contents already read (a host path: not read here, None)."""
    import hashlib

    return hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else None


def _dict_or_none(value) -> dict | None:
    return value if isinstance(value, dict) else None


def _isolation(outcome, computed: dict) -> dict:
    """How the code ran, and which fields the auditor computed versus the submission's code reported."""
    if outcome.sandbox is not None:
        how = {"sandbox": outcome.sandbox, "network": "none (new network namespace)", "namespaces":
               "user, pid, net, ipc, uts, cgroup", "seccomp": _seccomp_state()}
    else:
        how = {"sandbox": None, "network": "host network (UNSANDBOXED, --no-sandbox)"}
    how["computed_by_auditor"] = computed
    how["reported_by_submission_code"] = ["status", "model", "forward", "error", "import_seconds", "shimmed"]
    return how


def _seccomp_state() -> str:
    from auditor.sandbox import seccomp_filter

    return "filter applied" if seccomp_filter() is not None else "not available on this architecture"


def _parent_environment() -> dict[str, str]:
    import os

    return dict(os.environ)


def _error_without_result(outcome, limits: Limits) -> dict:
    if outcome.stopped_by == "timeout":
        return {"kind": "timeout", "message": f"wall timeout after {limits.wall_seconds:g}s; process group killed"}
    if outcome.stopped_by == "cpu":
        return {"kind": "timeout", "message": f"CPU limit of {limits.cpu_seconds}s reached"}
    if outcome.stopped_by == "processes":
        return {"kind": "exception", "message": f"process limit ({limits.max_processes}) reached: fork loop stopped"}
    tail = outcome.stderr_tail.strip().splitlines()
    last = tail[-1] if tail else ""
    if "MemoryError" in outcome.stderr_tail or "Cannot allocate memory" in outcome.stderr_tail:
        return {"kind": "memory", "message": f"memory limit ({limits.memory_bytes / 2**30:g} GiB): {last}"[:300]}
    return {"kind": "exception", "message": f"child exited with {outcome.returncode} and no result: {last}"[:300]}
