"""Reading record folders out of a bare mirror of openai/parameter-golf (benchmarks only)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(mirror: Path, *args: str, binary: bool = False):
    out = subprocess.run(["git", "-C", str(mirror), *args], capture_output=True, check=False)
    if out.returncode != 0:
        return None
    return out.stdout if binary else out.stdout.decode("utf-8", "replace")


def extract_folder(mirror: Path, sha: str, folder: str, dest: Path) -> Path:
    """Copy a folder of a commit file by file (the mirror lacks blobs of 4 MiB or more)."""
    dest.mkdir(parents=True, exist_ok=True)
    listing = git(mirror, "ls-tree", "-r", sha, "--", folder.rstrip("/") + "/") or ""
    for row in listing.splitlines():
        meta, _, path = row.partition("\t")
        mode, kind, blob = meta.split()
        if kind != "blob":
            continue
        data = git(mirror, "cat-file", "blob", blob, binary=True)
        if data is None:
            continue  # a large blob the snapshot does not hold
        target = dest / path[len(folder.rstrip("/")) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest
