"""The SQLite store of batch reviews: one row per PR head commit and auditor version.

A rerun skips the heads it already has for this version; older versions' rows stay, so the
history of every PR is kept. The summary table (latest head per PR) exports to CSV and JSON.
The version is the release plus a digest of the auditor's code (`review_version`), so a
rerun after any change to the code reviews every head again.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    pr INTEGER NOT NULL,
    head_sha TEXT NOT NULL,
    auditor_version TEXT NOT NULL,
    reviewed_at TEXT NOT NULL,
    title TEXT,
    folder TEXT,
    claimed_bpb TEXT,
    verdict TEXT NOT NULL,
    rules TEXT NOT NULL,
    smoke TEXT NOT NULL,
    claims_findings TEXT NOT NULL,
    error TEXT,
    markdown TEXT,
    results TEXT,
    seconds REAL,
    PRIMARY KEY (pr, head_sha, auditor_version)
);
"""

SUMMARY_COLUMNS = ("pr", "title", "head_sha", "folder", "claimed_bpb", "verdict", "rules", "smoke",
                   "claims_findings", "error", "auditor_version", "reviewed_at")


def review_version() -> str:
    """`0.1.0+<12 hex>`: the release and the code digest the classify cache keys on."""
    from auditor import __version__
    from auditor.classify.cache import code_digest

    return f"{__version__}+{code_digest()[:12]}"


def default_db_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("auditor")) / "reviews.sqlite3"


class ReviewStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def has(self, pr: int, head_sha: str, version: str, need_smoke: bool = False) -> bool:
        row = self.db.execute("SELECT smoke FROM reviews WHERE pr=? AND head_sha=? AND auditor_version=?",
                              (pr, head_sha, version)).fetchone()
        if row is None:
            return False
        return not (need_smoke and row[0] == "not run")

    def done_heads(self, version: str, need_smoke: bool = False) -> set[tuple[int, str]]:
        """Heads with a review of this version; one that failed on a bug of ours is done again."""
        query = ("SELECT pr, head_sha FROM reviews WHERE auditor_version=? "
                 "AND NOT (verdict='error' AND (error LIKE 'internal error%' OR error LIKE 'worker%'))")
        if need_smoke:
            query += " AND smoke != 'not run'"
        return {(pr, sha) for pr, sha in self.db.execute(query, (version,))}

    def put(self, row: dict, version: str, markdown: str = "", results: dict | None = None,
            seconds: float | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["pr"], row["head_sha"], version, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                row.get("title") or "", row.get("folder") or "", row.get("claimed_bpb"), row["verdict"],
                json.dumps(row.get("rules") or []), row.get("smoke") or "not run",
                json.dumps(row.get("claims_findings") or []), row.get("error"), markdown,
                json.dumps(results or {}), seconds,
            ),
        )
        self.db.commit()

    def markdown(self, pr: int, head_sha: str, version: str) -> str | None:
        row = self.db.execute("SELECT markdown FROM reviews WHERE pr=? AND head_sha=? AND auditor_version=?",
                              (pr, head_sha, version)).fetchone()
        return row[0] if row else None

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]

    def summary(self, version: str | None = None, heads: dict[int, str] | None = None) -> list[dict]:
        """The latest review of each PR (of this version; of the given heads when given)."""
        query = f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM reviews"
        args: tuple = ()
        if version is not None:
            query += " WHERE auditor_version=?"
            args = (version,)
        query += " ORDER BY pr, reviewed_at"
        latest: dict[int, dict] = {}
        for values in self.db.execute(query, args):
            row = dict(zip(SUMMARY_COLUMNS, values))
            if heads is not None and heads.get(row["pr"]) != row["head_sha"]:
                continue
            row["rules"] = json.loads(row["rules"])
            row["claims_findings"] = json.loads(row["claims_findings"])
            latest[row["pr"]] = row
        return [latest[pr] for pr in sorted(latest)]


def export_csv(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            flat["rules"] = " ".join(row.get("rules") or [])
            flat["claims_findings"] = " ".join(row.get("claims_findings") or [])
            writer.writerow({key: flat.get(key) for key in SUMMARY_COLUMNS})


def export_json(rows: list[dict], path: str | Path) -> None:
    Path(path).write_text(json.dumps({"reviews": rows}, indent=2), encoding="utf-8")
