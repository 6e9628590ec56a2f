"""Review every PR head of an openai/parameter-golf mirror with `auditor review --all-prs`.

    python bench/review_all.py MIRROR [--jobs 2] [--db PATH] [--export-json FILE]

Runs the real command (no smoke: nothing of the submissions is executed), then prints the
wall time, PRs per second and the verdict counts. Run it twice with the same --db: the
second run finds every head in the database and finishes in seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirror", type=Path, help="bare mirror of openai/parameter-golf")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "auditor-review-bench.sqlite3")
    parser.add_argument("--export-json", type=Path, default=None, help="keep the summary table here")
    args = parser.parse_args()
    if not args.mirror.exists():
        print(f"error: {args.mirror} does not exist", file=sys.stderr)
        return 2

    export = args.export_json or Path(tempfile.mkdtemp(prefix="review-bench-")) / "summary.json"
    command = [sys.executable, "-m", "auditor.cli", "review", "--repo-dir", str(args.mirror), "--all-prs",
               "--jobs", str(args.jobs), "--db", str(args.db), "--export-json", str(export),
               "--github-repo", "openai/parameter-golf"]
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - started
    print(done.stdout.strip())
    if done.returncode != 0:
        print(f"error: the review command exited with {done.returncode}", file=sys.stderr)
        return done.returncode
    rows = json.loads(export.read_text())["reviews"]
    # The command's own line says how many heads it reviewed in this run (the rest were reused).
    reviewed = int(done.stdout.split(" reviewed,")[0].rsplit(" ", 1)[-1]) if " reviewed," in done.stdout else len(rows)
    verdicts = Counter(row["verdict"] for row in rows)
    rules = Counter(rule for row in rows for rule in row["rules"])
    claims = Counter(item.split(":", 1)[1] for row in rows for item in row["claims_findings"]
                     if item.startswith("violation:"))
    print(f"wall time {wall:.1f}s; {len(rows)} PR heads in the table, {reviewed} reviewed in this run, "
          f"{reviewed / wall:.2f} PRs/s reviewed ({len(rows) / wall:.1f} heads/s overall)")
    print("verdicts: " + ", ".join(f"{name} {count}" for name, count in verdicts.most_common()))
    print("rules flagged: " + (", ".join(f"{name} {count}" for name, count in rules.most_common()) or "none"))
    print("claims violations: " + (", ".join(f"{name} {count}" for name, count in claims.most_common()) or "none"))
    print(f"database {args.db}; summary {export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
