"""A Submission: a record folder (or a lone script), its files and its run configuration.

The run configuration is what the submission actually ran with: environment
assignments in the README's run command, and hyperparameter lines in its train logs.
Every command (classify, claims, smoke, reproduce, review) starts from here.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from auditor.source import SourceError, decode_text, read_bytes_checked

MAIN_SCRIPT_NAMES = ("train_gpt.py",)
LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = re.compile(r"^(requirements|constraints|license|notice|third_party)", re.I)
MAX_LOG_BYTES = 50_000_000
# Log lines that are source code, not settings (some logs start with the whole script).
_CODE_LINE = re.compile(r"^\s*(def |class |import |from |return |if |for |elif |else:|@|#)")


@dataclass
class RunConfig:
    """What the submission ran with, beyond the script's own defaults."""

    env: dict[str, str] = field(default_factory=dict)  # UPPER_CASE env assignments
    values: dict[str, str] = field(default_factory=dict)  # lower_case hyperparameters from logs
    sources: list[str] = field(default_factory=list)  # "readme", "log"

    @property
    def source(self) -> str:
        """A short name of where the configuration came from, for the output."""
        return "+".join(self.sources) if self.sources else "defaults"

    def to_json(self) -> dict:
        return {"source": self.source, "env": dict(self.env), "values": dict(self.values)}


@dataclass
class Submission:
    root: Path  # the record folder, or the folder of a lone script
    script: Path | None  # the main script (the one the README runs, else train_gpt.py)
    readme: Path | None = None
    submission_json: Path | None = None
    logs: list[Path] = field(default_factory=list)
    run_config: RunConfig = field(default_factory=RunConfig)
    is_record_folder: bool = False

    def read_readme(self) -> str:
        return _read_optional(self.readme)

    def read_submission_json(self) -> dict | list | None:
        """The parsed submission.json, None when absent; raises SourceError when unreadable."""
        if self.submission_json is None:
            return None
        text = decode_text(read_bytes_checked(self.submission_json), what="submission.json")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"submission.json is not valid JSON: {exc.msg} at line {exc.lineno}") from None

    def helper_modules(self, tree: ast.Module) -> list[Path]:
        """Python files of the submission's folder that the (parsed) script imports."""
        if self.script is None:
            return []
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level and node.module:
                names.add(node.module.split(".")[0])
        found = []
        for name in sorted(names):
            candidate = self.script.parent / f"{name}.py"
            if candidate.is_file() and candidate != self.script:
                found.append(candidate)
        return found


def _read_optional(path: Path | None, limit: int = 5_000_000) -> str:
    if path is None:
        return ""
    try:
        return decode_text(read_bytes_checked(path, limit), what=path.name)
    except SourceError:
        return ""


def load_submission(path: Path | str) -> Submission:
    """A Submission for a record folder or a script; raises SourceError with a reason."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        root, script = path, None
    else:
        root, script = path.parent, path
    readme = _first_file(root, ("README.md", "readme.md", "README.MD", "README.txt", "README"))
    submission_json = _first_file(root, ("submission.json",))
    # A lone script in a folder of other things (fixtures, a scratch dir) is not a record:
    # only a folder with a README or submission.json lends its README and logs.
    is_record = bool(readme or submission_json)
    sub = Submission(root=root, script=script, is_record_folder=is_record)
    if is_record:
        sub.readme = readme
        sub.submission_json = submission_json
        sub.logs = find_logs(root)
    if script is None:
        sub.script = find_main_script(root, sub.read_readme())
        if sub.script is None:
            raise SourceError(f"no main script found in {root} (no train_gpt.py, and the README runs none)")
    sub.run_config = read_run_config(sub.read_readme(), sub.logs, sub.script)
    return sub


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def find_logs(folder: Path) -> list[Path]:
    logs = []
    for candidate in sorted(folder.rglob("*")):
        if candidate.suffix.lower() not in LOG_SUFFIXES or not candidate.is_file():
            continue
        if NOT_LOGS.match(candidate.name):
            continue
        if len(candidate.relative_to(folder).parts) > 3:
            continue
        logs.append(candidate)
    return logs


_RUN_SCRIPT = re.compile(r"(?:torchrun|python3?|accelerate launch)\b[^\n`]*?([\w./-]+\.py)\b")


def find_main_script(folder: Path, readme_text: str) -> Path | None:
    """train_gpt.py, else the script the README runs, else the only (or main-guarded) script."""
    for match in _RUN_SCRIPT.finditer(readme_text):
        candidate = folder / Path(match.group(1)).name
        if candidate.is_file():
            if (folder / "train_gpt.py").is_file() and candidate.name != "train_gpt.py":
                # A record always counts train_gpt.py; the README may also run data prep.
                continue
            return candidate
    for name in MAIN_SCRIPT_NAMES:
        if (folder / name).is_file():
            return folder / name
    scripts = sorted(p for p in folder.glob("*.py") if p.is_file())
    if len(scripts) == 1:
        return scripts[0]
    guarded = []
    for script in scripts:
        text = _read_optional(script)
        if "__main__" in text and ("val" in text or "train" in text.lower()):
            guarded.append((len(text), script))
    if guarded:
        return max(guarded)[1]
    return None


# --- run configuration -----------------------------------------------------------

_ENV_ASSIGN = re.compile(r"(?:^|[\s;(`])(?:export\s+)?([A-Z][A-Z0-9_]{1,63})=(\"[^\"]*\"|'[^']*'|[^\s;`)\\]*)")
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_LOG_KEY_VALUE = re.compile(r"(?<![\w.])([a-z][a-z0-9_]{1,63})\s*[:=]\s*([^\s,;|]+)")
_SKIP_ENV = {"CUDA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "HOME", "OMP_NUM_THREADS", "NCCL_DEBUG", "PWD"}


def _clean_value(value: str) -> str:
    value = value.strip().strip(",")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def readme_env(readme_text: str, script_name: str = "train_gpt.py") -> dict[str, str]:
    """Environment assignments in the README's shell blocks (the run command)."""
    env: dict[str, str] = {}
    blocks = _FENCE.findall(readme_text)
    for block in blocks:
        # Only blocks that run something, or that are plain lists of VAR=value lines.
        runs = bool(re.search(r"torchrun|python|\.sh\b|export ", block))
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        plain = lines and all(re.fullmatch(r"(export\s+)?[A-Z][A-Z0-9_]*=\S*\s*\\?", ln) for ln in lines)
        if not (runs or plain):
            continue
        for match in _ENV_ASSIGN.finditer(block):
            name, value = match.group(1), _clean_value(match.group(2))
            if name in _SKIP_ENV or value.startswith("$"):
                continue
            env[name] = value
    return env


def log_values(log_text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Hyperparameter lines of a train log: (lower_case values, UPPER_CASE env values)."""
    values: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in log_text.splitlines()[:4000]:
        if len(line) > 2000 or _CODE_LINE.match(line) or "(" in line and ")" in line and "=" in line:
            continue
        for match in _ENV_ASSIGN.finditer(line):
            env.setdefault(match.group(1), _clean_value(match.group(2)))
        for match in _LOG_KEY_VALUE.finditer(line):
            values.setdefault(match.group(1), _clean_value(match.group(2)))
    return values, env


def read_run_config(readme_text: str, logs: list[Path], script: Path | None) -> RunConfig:
    config = RunConfig()
    env = readme_env(readme_text, script.name if script else "train_gpt.py")
    if env:
        config.env.update(env)
        config.sources.append("readme")
    # One log is enough for settings: all seeds of a record share them.
    for log in logs[:1]:
        text = _read_optional(log, MAX_LOG_BYTES)
        values, log_env = log_values(text)
        if values or log_env:
            config.sources.append("log")
        config.values.update(values)
        for name, value in log_env.items():
            config.env.setdefault(name, value)
    return config
