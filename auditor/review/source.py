"""Where a review's files come from: a folder, or the record folder a PR adds in a local clone.

A PR's record folder is read from `refs/pull/N/head` of a clone (bare is fine): the folder
under records/ that the PR adds against its merge base with main. Files are written to a
temporary folder one by one with `git cat-file`; a blob the clone lacks (a mirror may leave
out blobs of 4 MiB and more) is skipped and listed, never fatal.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

GIT_TIMEOUT_S = 120
_PR_REF = re.compile(r"^refs/pull/(\d+)/head$")


class SourceUnavailable(Exception):
    """The PR or clone cannot be read (no such ref, not a git repository, no merge base)."""


@dataclass
class PrSource:
    pr: int
    head_sha: str
    base_sha: str = ""
    folder: str = ""  # the record folder's path in the repository, "" when the PR adds none
    other_folders: list[str] = field(default_factory=list)  # also added, not reviewed
    skipped: list[str] = field(default_factory=list)  # files whose blobs the clone lacks
    # Python files the PR adds or changes at the repository root: older PRs edited the root
    # train_gpt.py and added a record folder with only a README and logs.
    root_scripts: list[str] = field(default_factory=list)
    borrowed: dict[str, str] = field(default_factory=dict)  # materialized file -> its path in the repo
    title: str = ""  # the submission's name from submission.json, when it has one
    changed_only: bool = False  # the PR adds no record folder; this one it changes


def _git(repo_dir: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo_dir), *args], input=input_bytes, capture_output=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"git {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise SourceUnavailable(f"git {args[0]}: {message[-1] if message else 'exit ' + str(done.returncode)}")
    return done.stdout


def check_repo(repo_dir: Path) -> None:
    if not Path(repo_dir).exists():
        raise SourceUnavailable(f"{repo_dir} does not exist")
    try:
        _git(Path(repo_dir), "rev-parse", "--git-dir")
    except SourceUnavailable:
        raise SourceUnavailable(f"{repo_dir} is not a git repository") from None


def pr_heads(repo_dir: Path) -> dict[int, str]:
    """Every PR head of the clone: PR number -> head commit."""
    out = _git(Path(repo_dir), "for-each-ref", "--format=%(refname) %(objectname)", "refs/pull/")
    heads = {}
    for line in out.decode().splitlines():
        ref, _, sha = line.partition(" ")
        match = _PR_REF.match(ref)
        if match:
            heads[int(match.group(1))] = sha
    return dict(sorted(heads.items()))


def _main_ref(repo_dir: Path) -> str:
    for ref in ("refs/heads/main", "refs/remotes/origin/main", "refs/heads/master"):
        try:
            _git(repo_dir, "rev-parse", "--verify", "--quiet", ref)
            return ref
        except SourceUnavailable:
            continue
    raise SourceUnavailable("the clone has no main branch")


def _record_folder(path: str) -> str | None:
    parts = PurePosixPath(path).parts
    if len(parts) >= 4 and parts[0] == "records":
        return "/".join(parts[:3])
    return None


def _pick_folder(repo_dir: Path, head: str, folders: dict[str, list[str]]) -> tuple[str, list[str]]:
    """The folder the PR is about: one with Python code, most recently committed to."""
    def rank(folder: str) -> tuple:
        files = folders[folder]
        has_code = any(f.endswith(".py") for f in files)
        try:
            when = int(_git(repo_dir, "log", "-1", "--format=%ct", head, "--", folder).strip() or 0)
        except (SourceUnavailable, ValueError):
            when = 0
        return (has_code, when, len(files), folder)

    ordered = sorted(folders, key=rank, reverse=True)
    return ordered[0], ordered[1:]


def locate_pr(repo_dir: Path, pr: int, head_sha: str | None = None) -> PrSource:
    """The PR's head and the record folder it adds (nothing is written)."""
    repo_dir = Path(repo_dir)
    ref = f"refs/pull/{pr}/head"
    if head_sha is None:
        try:
            head_sha = _git(repo_dir, "rev-parse", "--verify", "--quiet", ref + "^{commit}").decode().strip()
        except SourceUnavailable:
            raise SourceUnavailable(f"no {ref} in {repo_dir}") from None
    source = PrSource(pr, head_sha)
    main = _main_ref(repo_dir)
    try:
        source.base_sha = _git(repo_dir, "merge-base", main, head_sha).decode().strip()
    except SourceUnavailable:
        raise SourceUnavailable(f"PR {pr}: no merge base with main") from None
    if source.base_sha == head_sha:  # merged into main with its commits: the base is gone from view
        source.base_sha = _base_before_merge(repo_dir, head_sha, main)
    # The record folder the PR adds; failing that, one it changes (a fix to an existing record).
    for diff_filter in ("A", "M"):
        names = _git(repo_dir, "diff", "--name-only", "--no-renames", f"--diff-filter={diff_filter}", "-z",
                     source.base_sha, head_sha)
        folders: dict[str, list[str]] = {}
        for name in names.decode(errors="replace").split("\0"):
            folder = _record_folder(name) if name else None
            if folder:
                folders.setdefault(folder, []).append(name)
        if folders:
            source.folder, source.other_folders = _pick_folder(repo_dir, head_sha, folders)
            source.changed_only = diff_filter == "M"
            break
    changed = _git(repo_dir, "diff", "--name-only", "--no-renames", "--diff-filter=AM", "-z", source.base_sha, head_sha)
    source.root_scripts = sorted(n for n in changed.decode(errors="replace").split("\0")
                                 if n.endswith(".py") and "/" not in n)
    return source


EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _base_before_merge(repo_dir: Path, head: str, main: str) -> str:
    """For a PR whose head is in main's history: the merge base with main as it was before.

    The oldest commit on main's first-parent line that descends from the head is the merge
    commit; its first parent is main before the merge. A PR fast-forwarded onto main has no
    merge commit: its last commit stands for the PR.
    """
    line = _git(repo_dir, "rev-list", "--first-parent", "--ancestry-path", f"{head}..{main}").decode().split()
    if line:
        before = _git(repo_dir, "rev-parse", f"{line[-1]}^1").decode().strip()
        base = _git(repo_dir, "merge-base", before, head).decode().strip()
        if base != head:
            return base
    try:
        return _git(repo_dir, "rev-parse", "--verify", "--quiet", f"{head}^1").decode().strip()
    except SourceUnavailable:
        return EMPTY_TREE  # a root commit: everything in it is added


def _tree_entries(repo_dir: Path, commit: str, folder: str) -> list[tuple[str, str, str]]:
    """(mode, blob id, path) of every file under the folder at the commit."""
    out = _git(repo_dir, "ls-tree", "-r", "-z", "--full-tree", commit, "--", folder + "/")
    entries = []
    for record in out.decode(errors="replace").split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, blob = meta.split()
        if kind == "blob":
            entries.append((mode, blob, path))
    return entries


def materialize(repo_dir: Path, source: PrSource, dest: Path) -> Path:
    """Write the PR's record folder under dest (as dest/<path in repo>); returns that folder."""
    repo_dir, dest = Path(repo_dir), Path(dest)
    target = dest / source.folder
    target.mkdir(parents=True, exist_ok=True)
    for mode, blob, path in _tree_entries(repo_dir, source.head_sha, source.folder):
        if mode == "120000":  # a symlink could point anywhere; the review never follows one
            source.skipped.append(f"{path} (symbolic link)")
            continue
        relative = PurePosixPath(path).relative_to(source.folder)
        if any(part in ("..", "") for part in relative.parts):
            continue
        try:
            data = _git(repo_dir, "cat-file", "blob", blob)
        except SourceUnavailable:
            source.skipped.append(f"{path} (blob missing from the clone)")
            continue
        out = target / Path(*relative.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    if "train_gpt.py" in source.root_scripts and not any(target.glob("*.py")):
        # The folder has no code: what ran is the root script the PR changed (and its helpers).
        for name in source.root_scripts:
            try:
                data = _git(repo_dir, "cat-file", "blob", f"{source.head_sha}:{name}")
            except SourceUnavailable:
                source.skipped.append(f"{name} (blob missing from the clone)")
                continue
            (target / name).write_bytes(data)
            source.borrowed[str(target / name)] = name
    source.title = _title(target)
    return target


def _title(folder: Path) -> str:
    import json

    try:
        data = json.loads((folder / "submission.json").read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return ""
    name = data.get("name") if isinstance(data, dict) else None
    return " ".join(str(name).split())[:200] if name else ""
