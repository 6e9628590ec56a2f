"""What a record folder's files are called and how each is read: the one place for both.

README names, log names, the size bound of a log, the `=====` line that separates a
script's source echoed into a log from the run's output, and the script a shell
command runs. Everything here is linear in its input: a 1 MB line costs 1 MB of work.
"""

from __future__ import annotations

import re
from pathlib import Path

from auditor.source import SourceError, decode_text, is_regular_file, read_bytes_checked

README_NAMES = ("README.md", "readme.md", "README.MD", "README.txt", "README")
MAIN_SCRIPT_NAMES = ("train_gpt.py",)
LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = re.compile(r"^(requirements|constraints|license|notice|third_party)", re.I)
MAX_LOG_BYTES = 50_000_000
MAX_README_BYTES = 5_000_000
# Longer README lines are cut: no command or table row is this long, and every line
# parser stays cheap whatever a README holds.
MAX_README_LINE = 10_000
# A line of 20+ `=`, `-`, `#`, ... : logs print one between a script's source and the run.
SEPARATOR_LINE = re.compile(r"^\s*([=\-#*~_])\1{19,}\s*$")

_LAUNCHER = re.compile(r"(?:torchrun|python3?|accelerate launch)\b")
_TOKEN = re.compile(r"[^\s`'\"()|;&<>]+")
_SCRIPT_TOKEN = re.compile(r"[\w./-]*\.py")


def scripts_run_in(text: str) -> list[str]:
    """The .py files that launch commands in `text` run (`torchrun ... train_gpt.py`), in order."""
    found = []
    for line in text.split("\n"):
        position = 0
        while True:
            launcher = _LAUNCHER.search(line, position)
            if launcher is None:
                break
            tick = line.find("`", launcher.end())
            end = len(line) if tick < 0 else tick
            position = end
            for token in _TOKEN.finditer(line, launcher.end(), end):
                word = token.group().rsplit("=", 1)[-1]
                if len(word) > 3 and word.endswith(".py") and _SCRIPT_TOKEN.fullmatch(word):
                    found.append(word)
                    position = token.end()
                    break
    return found


def script_run_by(command: str) -> str | None:
    """The .py file a shell command runs, or None."""
    scripts = scripts_run_in(command)
    return scripts[0] if scripts else None


def read_text_or_empty(path: Path | None, limit: int = MAX_README_BYTES) -> str:
    """A text file's contents, or "" when it is absent or unreadable."""
    if path is None:
        return ""
    try:
        return decode_text(read_bytes_checked(path, limit), what=path.name)
    except SourceError:
        return ""


def cut_long_lines(text: str, limit: int = MAX_README_LINE) -> str:
    if len(text) <= limit or all(len(line) <= limit for line in text.split("\n")):
        return text
    return "\n".join(line[:limit] for line in text.split("\n"))


def first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = folder / name
        if is_regular_file(candidate):
            return candidate
    return None


def find_logs(folder: Path) -> list[Path]:
    """Train logs of a record folder: *.log and *.txt up to three folders down."""
    logs = []
    for candidate in sorted(folder.rglob("*")):
        if candidate.suffix.lower() not in LOG_SUFFIXES or not is_regular_file(candidate):
            continue
        if NOT_LOGS.match(candidate.name):
            continue
        if len(candidate.relative_to(folder).parts) > 3:
            continue
        logs.append(candidate)
    return logs
