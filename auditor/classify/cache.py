"""The classify result cache: keyed on everything that decides a verdict, checked on read.

The key hashes the auditor's own code, the path as given and every file the Submission
reads (scripts beside the main one, README, submission.json, logs), read through the
Submission's reader so that computing the key reads nothing twice. An entry holds its
own key and the result; an entry that is not exactly that shape (`{}`, `null`, a verdict
that does not follow from its findings, another key) is ignored and recomputed. Entries
are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from auditor import __version__
from auditor.findings import ClassifyResult
from auditor.source import SourceError, read_bytes_checked
from auditor.submission import MAX_LOG_BYTES, Submission

SCHEMA = 2
MAX_ENTRY_BYTES = 20_000_000  # a result is a few KB; anything near this is not ours


def cache_dir() -> Path:
    override = os.environ.get("AUDITOR_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("auditor")) / "classify"


_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """Changes whenever the auditor's code changes, so a stale cache is never read."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        digest = hashlib.sha256(f"{__version__}/{SCHEMA}".encode())
        package = Path(__file__).resolve().parents[1]
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
        _CODE_DIGEST = digest.hexdigest()
    return _CODE_DIGEST


def cache_key(path: str | Path, submission: Submission) -> str:
    """Hash of everything the verdict depends on."""
    digest = hashlib.sha256(code_digest().encode())
    digest.update(f"\0path\0{path}\0script\0{submission.script}\0".encode())
    with submission.reading():
        for file in submission.input_files():
            digest.update(f"\0file\0{file.name}\0".encode())
            try:
                digest.update(hashlib.sha256(read_bytes_checked(file, MAX_LOG_BYTES)).digest())
            except SourceError as exc:  # an unreadable file decides the verdict too
                digest.update(f"unreadable: {exc}".encode())
    return digest.hexdigest()


def read_entry(key: str) -> ClassifyResult | None:
    """The cached result for `key`, or None when there is none or it is not a valid entry."""
    entry = cache_dir() / f"{key}.json"
    try:
        data = json.loads(read_bytes_checked(entry, MAX_ENTRY_BYTES))
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("key") != key:
            return None
        return ClassifyResult.from_json(data["result"])
    except (SourceError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def write_entry(key: str, result: ClassifyResult) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"schema": SCHEMA, "key": key, "result": result.to_json()}, out)
            os.replace(temporary, folder / f"{key}.json")
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, ValueError):
        pass  # a read-only or full cache never fails a run
