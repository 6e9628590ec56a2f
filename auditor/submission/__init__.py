"""A Submission: a record folder (or a lone script), its files and its run configuration.

Every command (classify, claims, smoke, reproduce, review) starts from here, and reads
the folder through it: each file is read once per run (`Submission.files`, a FileReader
that every bounded read goes through while `with submission.reading():` is active), and
nothing is parsed back out of text another layer wrote.

The run configuration is what the submission actually ran with: environment
assignments in the README's run command, and hyperparameter lines in its train logs
(see `auditor.submission.run_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from auditor.source import FileReader, Source, SourceError, is_regular_file, read_bytes_checked, read_source
from auditor.submission.files import (
    LOG_SUFFIXES, MAIN_SCRIPT_NAMES, MAX_LOG_BYTES, MAX_README_BYTES, NOT_LOGS, README_NAMES, SEPARATOR_LINE,
    cut_long_lines, find_logs, first_file, read_text_or_empty, scripts_run_in,
)
from auditor.submission.run_config import RunConfig, log_values, read_run_config, readme_env

__all__ = [
    "LOG_SUFFIXES", "MAIN_SCRIPT_NAMES", "MAX_LOG_BYTES", "NOT_LOGS", "README_NAMES", "SEPARATOR_LINE", "RunConfig",
    "Submission", "find_logs", "find_main_script", "load_submission", "log_values", "read_run_config", "readme_env",
]


@dataclass
class Submission:
    root: Path  # the record folder, or the folder of a lone script
    script: Path | None  # the main script (the one the README runs, else train_gpt.py)
    readme: Path | None = None
    submission_json: Path | None = None
    logs: list[Path] = field(default_factory=list)
    run_config: RunConfig = field(default_factory=RunConfig)
    is_record_folder: bool = False
    files: FileReader = field(default_factory=FileReader, repr=False, compare=False)
    _source: Source | SourceError | None = field(default=None, repr=False, compare=False)

    def reading(self):
        """Make this submission's reader the one every bounded read goes through."""
        return self.files.active()

    @cached_property
    def readme_text(self) -> str:
        """The README ("" when absent or unreadable), overlong lines cut."""
        with self.reading():
            return cut_long_lines(read_text_or_empty(self.readme, MAX_README_BYTES))

    def read_readme(self) -> str:
        return self.readme_text

    def read_submission_json(self) -> dict | list | None:
        """The parsed submission.json (floats keep their printed digits), None when absent;
        raises SourceError when unreadable."""
        if self.submission_json is None:
            return None
        from auditor.submission.claimed import parse_json_bytes

        with self.reading():
            return parse_json_bytes(read_bytes_checked(self.submission_json), self.submission_json.name)

    @cached_property
    def claimed(self):
        """What submission.json claims (`JsonClaims`), None when it is absent or unreadable."""
        from auditor.submission.claimed import parse_claims

        try:
            data = self.read_submission_json()
            return None if data is None else parse_claims(data, self.submission_json.name)
        except (SourceError, TypeError, ValueError, AttributeError):  # a shape parse_claims does not know
            return None

    def read_log(self, path: Path) -> bytes:
        with self.reading():
            return read_bytes_checked(path, MAX_LOG_BYTES)

    def source(self) -> Source:
        """The main script, unpacked (raises SourceError with the reason); read once."""
        if self.script is None:
            raise SourceError(f"no main script found in {self.root}")
        if self._source is None:
            with self.reading():
                try:
                    self._source = read_source(self.script)
                except SourceError as exc:
                    self._source = exc
        if isinstance(self._source, SourceError):
            raise SourceError(str(self._source))
        return self._source

    def sibling_scripts(self) -> list[Path]:
        """The .py files beside the main script (helpers, exec'd files, data prep)."""
        folder = self.script.parent if self.script is not None else self.root
        return sorted(folder.glob("*.py"))

    def input_files(self) -> list[Path]:
        """Every file a verdict can depend on: scripts, README, submission.json, logs."""
        named = [*self.sibling_scripts(), self.readme, self.submission_json, *self.logs]
        return sorted({p for p in named if p is not None})


def load_submission(path: Path | str, mode: str = "script") -> Submission:
    """A Submission for a record folder or a script; raises SourceError with a reason.

    mode "script" (classify, smoke): the main script is required, and only a record folder
    (one with a README or submission.json) lends its README and logs. mode "folder"
    (claims): the folder is what is checked; it needs no script, and its logs and a
    differently named `submission*.json` are read whatever else it holds.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        root, script = path, None
    else:
        root, script = path.parent, path
    files = FileReader(root)
    readme = first_file(root, README_NAMES)
    submission_json = first_file(root, ("submission.json",))
    if submission_json is None and mode == "folder":
        named = sorted(p for p in root.glob("submission*.json") if is_regular_file(p))
        submission_json = named[0] if named else None
    # A lone script in a folder of other things (fixtures, a scratch dir) is not a record:
    # only a folder with a README or submission.json lends its README and logs.
    is_record = bool(readme or submission_json)
    sub = Submission(root=root, script=script, is_record_folder=is_record, files=files)
    if is_record or mode == "folder":
        sub.readme = readme
        sub.submission_json = submission_json
        sub.logs = find_logs(root)
    with sub.reading():
        if script is None:
            sub.script = find_main_script(root, sub.readme_text)
            if sub.script is None and mode == "script":
                raise SourceError(f"no main script found in {root} (no train_gpt.py, and the README runs none)")
        sub.run_config = read_run_config(sub.readme_text, sub.logs, sub.script)
    return sub


def find_main_script(folder: Path, readme_text: str) -> Path | None:
    """train_gpt.py, else the script the README runs, else the only (or main-guarded) script."""
    for name in scripts_run_in(readme_text):
        candidate = folder / Path(name).name
        if is_regular_file(candidate):
            if is_regular_file(folder / "train_gpt.py") and candidate.name != "train_gpt.py":
                # A record always counts train_gpt.py; the README may also run data prep.
                continue
            return candidate
    for name in MAIN_SCRIPT_NAMES:
        if is_regular_file(folder / name):
            return folder / name
    scripts = sorted(p for p in folder.glob("*.py") if is_regular_file(p))
    if len(scripts) == 1:
        return scripts[0]
    guarded = []
    for script in scripts:
        text = read_text_or_empty(script)
        if "__main__" in text and ("val" in text or "train" in text.lower()):
            guarded.append((len(text), script))
    if guarded:
        return max(guarded)[1]
    return None
