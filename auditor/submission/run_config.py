"""The run configuration: what a submission ran with, beyond the script's own defaults.

Environment assignments in the README's run command, and hyperparameter lines in its
train logs; where both name a setting, the log (what ran) wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from auditor.submission.files import MAX_LOG_BYTES, SEPARATOR_LINE, read_text_or_empty, script_run_by

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


_ENV_ASSIGN = re.compile(r"(?:^|[\s;(`])(?:export\s+)?([A-Z][A-Z0-9_]{1,63})=(\"[^\"]*\"|'[^']*'|[^\s;`)\\]*)")
_LOG_KEY_VALUE = re.compile(r"(?<![\w.])([a-z][a-z0-9_]{1,63})\s*[:=]\s*([^\s,;|]+)")
_SKIP_ENV = {"CUDA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "HOME", "OMP_NUM_THREADS", "NCCL_DEBUG", "PWD"}


def _clean_value(value: str) -> str:
    value = value.strip().strip(",")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    elif value[-1:] in ("\"", "'") and value[-1] not in value[:-1]:
        value = value[:-1]  # the last VAR=value inside a quoted list: --extra-env "A=1;B=2"
    return value


def readme_env(readme_text: str, script_name: str = "train_gpt.py") -> dict[str, str]:
    """Environment assignments of the README's run command for `script_name`.

    Shell blocks are read command by command (backslash continuations joined). When some
    command runs `script_name`, only those commands count (with `export` lines before them
    in the same block), the first one winning where they disagree: a README that also
    shows an ablation, a baseline or another script's command does not mix them in.
    Otherwise every command and plain VAR=value list counts, later ones winning.
    """
    own: dict[str, str] = {}
    other: dict[str, str] = {}
    runs_script = False
    for block in _shell_blocks(readme_text):
        # a launcher of a .py file counts too (`modal run run_modal.py --extra-env "A=1;B=2"`)
        runs = bool(re.search(r"torchrun|python|\.sh\b|\.py\b|export ", block))
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        plain = lines and all(re.fullmatch(r"(export\s+)?[A-Z][A-Z0-9_]*=\S*\s*\\?", ln) for ln in lines)
        if not (runs or plain):
            continue
        exported: dict[str, str] = {}
        for command in _shell_commands(block):
            assigned = _env_assignments(command)
            script = script_run_by(command)
            if script is None:
                if re.match(r"\s*export\s", command) or re.fullmatch(r"\s*(?:[A-Z][A-Z0-9_]*=\S*\s*)+", command):
                    exported.update(assigned)
                other.update(assigned)
                continue
            if Path(script).name == script_name:
                runs_script = True
                for name, value in {**exported, **assigned}.items():
                    own.setdefault(name, value)
            other.update({**exported, **assigned})
    return own if runs_script else other


_FENCE_LANGS = {"bash", "sh", "shell", "console", "zsh", "text", "txt", "python", "py", "none", "plain"}


def _shell_blocks(readme_text: str) -> list[str]:
    """Contents of the README's fenced blocks; a one-line ```cmd``` is a block of its own."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in readme_text.splitlines():
        stripped = line.strip()
        if current is None:
            if not stripped.startswith("```"):
                continue
            inner = stripped[3:].strip()
            if inner.endswith("```"):  # ```bash pip install x```
                words = inner[:-3].split(None, 1)
                if words and words[0] in _FENCE_LANGS:
                    words = words[1:]
                blocks.append(" ".join(words))
                continue
            current = []
            if inner and inner.split()[0] not in _FENCE_LANGS:
                current.append(inner)
        elif stripped.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _shell_commands(block: str) -> list[str]:
    """Logical commands of a shell block: continuations joined, comments dropped, split at &&."""
    commands: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = raw.strip().removeprefix("$ ")
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            commands.extend(part for part in re.split(r"&&|;\s", line) if part.strip())
    if pending.strip():
        commands.append(pending)
    return commands


def _env_assignments(command: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for match in _ENV_ASSIGN.finditer(command):
        name, value = match.group(1), _clean_value(match.group(2))
        if name in _SKIP_ENV or value.startswith("$") or not _plain_value(value):
            continue
        env[name] = value
    return env


# A log value: a bracketed list, a comma list without spaces, or one token; followed by
# another setting, the end of the line or punctuation, not by prose (`mixed_quant: 32 int6`).
_LOG_PAIR = re.compile(
    r"(?<![\w.\[{(])([a-z][a-z0-9_]{1,63})\s*[:=]\s*"
    r"(\[[^\]\n]{0,200}\]|\([^)\n]{0,200}\)|[\w.+\-/]+(?:,[\w.+\-/]+)+(?![\w.])|[^\s,;|]+)"
    r"(?=\s+[A-Za-z_][\w.\-]*\s*[:=]|\s*$|\s*[,;|)\]}]|\s+[\-(#/|\[])"
)
_TYPE_NAMES = {"int", "float", "str", "bool", "list", "dict", "tuple", "Tensor", "Optional", "Any", "nn.Module"}
# Lines of source code echoed into a log (scripts often log their own source first).
_CODE_HINT = re.compile(
    r"^\s*(def|class|import|from|return|if|elif|for|while|with|try|except|raise|assert|yield|global|del)\b"
    r"|^\s*(else|try|finally)\s*:|^\s*@\w|^\s*#|\bf[\"']|os\.environ|\bself\.|\bargs\.|==|!=|:\s*$|\blog0?\("
)
_SOURCE_START = ('"""', "'''", "#", "import ", "from ", 'r"""')


def _plain_value(value: str) -> bool:
    """A settings value, not code echoed into a log (`{h.world_size}`, `int`, `args.x`)."""
    if not value or value in _TYPE_NAMES:
        return False
    if any(c in value for c in "{}$`<>\"'") or value.startswith(("self.", "args.", "os.", "torch.")):
        return False
    if "(" in value and not (value.startswith("(") and value.endswith(")")):
        return False
    if value.startswith("[") and not value.endswith("]"):
        return False
    return "=" not in value and not re.search(r"[a-z]:", value)


def _list_value(value: str) -> str:
    """`[9, 10]` / `(9, 10)` as the comma list a script reads from its environment: `9,10`."""
    if value[:1] in "[(" and value[-1:] in "])":
        items = [item.strip().strip("'\"") for item in value[1:-1].split(",") if item.strip()]
        if all(re.fullmatch(r"[\w.+\-]+", item) for item in items):
            return ",".join(items)
    return value


def _source_lines(lines: list[str]) -> set[int]:
    """Indices of log lines that are a script's source echoed into the log.

    Logs often print the whole script (at the top, or again before each run), separated
    from the run's output by a line of `=====`: a stretch between separators (or the
    log's start) where most lines are code is source, not settings.
    """
    skipped: set[int] = set()
    bounds = [-1] + [i for i, line in enumerate(lines) if SEPARATOR_LINE.match(line)] + [len(lines)]
    for first, last in zip(bounds, bounds[1:]):
        segment = [i for i in range(first + 1, last) if lines[i].strip()]
        if len(segment) < 20:
            continue
        code = sum(1 for i in segment if lines[i][:1] in (" ", "\t") or _CODE_LINE.match(lines[i])
                   or _CODE_HINT.search(lines[i]) or lines[i].strip().startswith(_SOURCE_START))
        if code > 0.5 * len(segment):
            skipped.update(range(first + 1, last))
    return skipped


def log_values(log_text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Hyperparameter lines of a train log: (lower_case values, UPPER_CASE env values).

    A script source that the log starts with (up to its `=====` separator) and lines that
    look like code are skipped; list values are kept whole (`ve_layers: 9,10`, `[9, 10]`
    read as `9,10`); values that are code (`{h.world_size}`, `int`) are not settings.
    """
    values: dict[str, str] = {}
    env: dict[str, str] = {}
    lines = log_text.splitlines()[:40000]
    source = _source_lines(lines)
    read = 0
    for index, line in enumerate(lines):
        if index in source:
            continue
        read += 1
        if read > 4000:
            break
        if len(line) > 2000 or _CODE_LINE.match(line) or _CODE_HINT.search(line):
            continue
        if "(" in line and ")" in line and "=" in line and not re.search(r"[:=]\s*\(", line):
            continue
        for match in _ENV_ASSIGN.finditer(line):
            value = _clean_value(match.group(2))
            if _plain_value(value):
                env.setdefault(match.group(1), value)
        for match in _LOG_PAIR.finditer(line):
            value = _clean_value(match.group(2))
            if value[:1] in "[(":
                value = _list_value(value)
            if _plain_value(value):
                values.setdefault(match.group(1), value)
    return values, env


_CODE_SIZE = re.compile(r"Code size:\s*([\d,]+)\s*bytes")


def _logs_for_script(logs: list[Path], script: Path | None) -> list[Path]:
    """The logs in the order to read settings from: logs that report the script's size first."""
    if script is None or len(logs) < 2:
        return logs
    try:
        size = script.stat().st_size
    except OSError:
        return logs
    matching = []
    for log in logs:
        text = read_text_or_empty(log, MAX_LOG_BYTES)
        if size in {int(m.group(1).replace(",", "")) for m in _CODE_SIZE.finditer(text)}:
            matching.append(log)
    return matching + [log for log in logs if log not in matching]


def _same_setting(readme_value: str, log_value: str) -> bool:
    if readme_value == log_value:
        return True
    flags = {"1": "true", "0": "false"}
    if flags.get(readme_value, readme_value).lower() == flags.get(log_value, log_value).lower():
        return True
    try:
        return float(readme_value) == float(log_value)
    except ValueError:
        return False


def _kind(value: str) -> str:
    if value in ("True", "False", "true", "false"):
        return "flag"
    try:
        float(value)
        return "flag" if value in ("0", "1") else "number"
    except ValueError:
        pass
    return "list" if "," in value else "word"


def _comparable(readme_value: str, log_value: str) -> bool:
    """Whether a log value can stand for a README value (a number for a number, not a status word)."""
    kinds = {_kind(readme_value), _kind(log_value)}
    return len(kinds) == 1 or kinds == {"flag", "number"} or kinds == {"list", "number"}


def _as_env_value(readme_value: str, log_value: str) -> str:
    """The log's value written the way the README wrote it (True -> 1 where the README used 1)."""
    if readme_value in ("0", "1") and log_value in ("True", "False"):
        return "1" if log_value == "True" else "0"
    return log_value


def read_run_config(readme_text: str, logs: list[Path], script: Path | None) -> RunConfig:
    """The README's run command plus the train log's settings.

    Where both name a setting (README `MATRIX_LR=0.06`, log `matrix_lr:0.02`), the log,
    what ran, wins over the README, what someone wrote down: env takes the log's value.
    """
    config = RunConfig()
    env = readme_env(readme_text, script.name if script else "train_gpt.py")
    if env:
        config.env.update(env)
        config.sources.append("readme")
    # One log is enough for settings: all seeds of a record share them.
    for log in _logs_for_script(logs, script)[:1]:
        text = read_text_or_empty(log, MAX_LOG_BYTES)
        values, log_env = log_values(text)
        if values or log_env:
            config.sources.append("log")
        config.values.update(values)
        for name, value in log_env.items():
            if name in _SKIP_ENV:
                continue
            if name not in config.env or _comparable(config.env[name], value) and not _same_setting(
                config.env[name], value
            ):
                config.env[name] = _as_env_value(config.env.get(name, ""), value)
        for name in list(config.env):
            logged = values.get(name.lower())
            if logged is not None and _comparable(config.env[name], logged) and not _same_setting(
                config.env[name], logged
            ):
                config.env[name] = _as_env_value(config.env[name], logged)
    return config
