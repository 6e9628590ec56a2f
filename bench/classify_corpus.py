"""Accuracy of `auditor classify` on the labelled real corpus.

    python bench/classify_corpus.py MIRROR [--labels ../shared/corpus/labels-dev.tsv] [--verbose]
    python bench/classify_corpus.py MIRROR --merged      # every record merged into main

MIRROR is the bare git mirror of openai/parameter-golf that the library's `fetch` gives.
Each labelled PR's record folder is extracted at its pinned commit into a temp dir and
classified with its run configuration. Prints verdict accuracy, precision and recall of
`flag`, per-family recall (the two ngram-* labels are one family), flagged merged rows,
and every disagreement.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._mirror import extract_folder, git  # noqa: E402

from auditor.classify import classify_path  # noqa: E402


def family(rule: str) -> str:
    return "ngram" if rule.startswith("ngram-") else rule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--labels", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/labels-dev.tsv")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--only", help="comma-separated PR numbers")
    parser.add_argument("--merged", action="store_true",
                        help="instead: classify every record folder merged into main (all should be clean)")
    args = parser.parse_args()
    if args.merged:
        return merged_records(args.mirror)
    rows = list(csv.DictReader(args.labels.open(), delimiter="\t"))
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r["pr"] in wanted]
    tp = fp = tn = fn = exact = 0
    fam_total: dict[str, int] = {}
    fam_hit: dict[str, int] = {}
    merged_flagged = []
    disagreements = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            folder = row["script_path"].rsplit("/", 1)[0]
            dest = extract_folder(args.mirror, row["head_sha"], folder, Path(tmp) / row["pr"])
            result = classify_path(dest / row["script_path"].rsplit("/", 1)[1])
            truth = set() if row["label"] == "clean" else set(row["label"].split("+"))
            got = {f.rule for f in result.findings if f.severity == "violation"}
            truth_f, got_f = {family(r) for r in truth}, {family(r) for r in got}
            flagged, should = bool(got), bool(truth)
            tp += flagged and should
            fp += flagged and not should
            tn += not flagged and not should
            fn += not flagged and should
            exact += truth_f == got_f
            for fam in truth_f:
                fam_total[fam] = fam_total.get(fam, 0) + 1
                fam_hit[fam] = fam_hit.get(fam, 0) + (fam in got_f)
            if row["source"] == "merged" and flagged:
                merged_flagged.append(row["pr"])
            if truth_f != got_f or result.verdict == "error":
                disagreements.append((row["pr"], row["label"], sorted(got) or [result.verdict], result))
    n = len(rows)
    print(f"rows: {n}  ({time.perf_counter() - started:.1f}s)")
    print(f"accuracy (flag vs clean): {(tp + tn) / n:.1%}  ({tp + tn}/{n})")
    print(f"precision: {tp / max(tp + fp, 1):.1%}  recall: {tp / max(tp + fn, 1):.1%}  (tp={tp} fp={fp} fn={fn} tn={tn})")
    print(f"exact family match: {exact / n:.1%}")
    print("per-family recall:")
    for fam in sorted(fam_total):
        print(f"  {fam:24s} {fam_hit[fam]}/{fam_total[fam]}  {fam_hit[fam] / fam_total[fam]:.0%}")
    print(f"merged rows flagged: {len(merged_flagged)} {merged_flagged}")
    print("disagreements (pr, label, got):")
    for pr, label, got, result in disagreements:
        print(f"  {pr:>5} {label:50s} -> {','.join(got)}")
        if args.verbose:
            for f in result.findings:
                print(f"        {f.severity:9s} L{f.line} {f.rule}: {f.message[:200]}")
            if result.error:
                print(f"        error: {result.error}")
    return 0


def merged_records(mirror: Path) -> int:
    """Records the maintainers merged: a flag here is a false accusation or a real slip."""
    folders = []
    for track in ("records/track_10min_16mb", "records/track_non_record_16mb"):
        listing = git(mirror, "ls-tree", "-d", "--name-only", "HEAD", track + "/") or ""
        folders += [line for line in listing.splitlines() if line]
    counts = {"clean": 0, "flag": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for number, folder in enumerate(folders):
            result = classify_path(extract_folder(mirror, "HEAD", folder, Path(tmp) / str(number)))
            counts[result.verdict] += 1
            if result.verdict != "clean":
                rules = sorted({f.rule for f in result.violations})
                print(f"  {result.verdict:5s} {folder} {rules or result.error}")
    print(f"merged record folders: {len(folders)}  clean={counts['clean']} flag={counts['flag']} error={counts['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
