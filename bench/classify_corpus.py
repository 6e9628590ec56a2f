"""Accuracy of `auditor classify` on the labelled real corpus.

    python bench/classify_corpus.py MIRROR [--labels ../shared/corpus/labels-dev.tsv] [--verbose]
    python bench/classify_corpus.py MIRROR --merged      # every record merged into main
    python bench/classify_corpus.py MIRROR --transform rename   # on behaviour-preserving twins

MIRROR is the bare git mirror of openai/parameter-golf that the library's `fetch` gives.
Each labelled PR's record folder is extracted at its pinned commit into a temp dir and
classified with its run configuration. Prints verdict accuracy, precision and recall of
`flag`, per-family recall (the two ngram-* labels are one family), flagged merged rows,
and every disagreement. `--transform NAME` (rename, extract, while, wrap; see
bench/_transforms.py) scores the transformed twin of each record folder instead; a twin
that cannot be made is counted and listed, and scored as the label's opposite (a miss).
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
from bench._transforms import TRANSFORMS, TransformError, transform_folder  # noqa: E402

from auditor.classify import classify_path  # noqa: E402


def family(rule: str) -> str:
    return "ngram" if rule.startswith("ngram-") else rule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--labels", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/labels-dev.tsv")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--only", help="comma-separated PR numbers")
    parser.add_argument("--transform", choices=sorted(TRANSFORMS),
                        help="score the behaviour-preserving twin made by this transform")
    parser.add_argument("--merged", action="store_true",
                        help="instead: classify every record folder merged into main (all should be clean)")
    args = parser.parse_args()
    if args.merged:
        return merged_records(args.mirror)
    rows = list(csv.DictReader(args.labels.open(), delimiter="\t"))
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r["pr"] in wanted]
    started = time.perf_counter()
    results = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            folder = row["script_path"].rsplit("/", 1)[0]
            dest = extract_folder(args.mirror, row["head_sha"], folder, Path(tmp) / row["pr"])
            if args.transform:
                try:
                    dest = transform_folder(dest, args.transform, Path(tmp) / f"{row['pr']}-{args.transform}")
                except TransformError as exc:
                    failed[row["pr"]] = str(exc)
                    continue
            results[row["pr"]] = classify_path(dest / row["script_path"].rsplit("/", 1)[1])
    print(f"rows: {len(rows)}  ({time.perf_counter() - started:.1f}s)"
          + (f"  transform: {args.transform}, failed to transform: {len(failed)}" if args.transform else ""))
    for pr, reason in failed.items():
        print(f"  not transformed {pr}: {reason[:200]}")
    print_score(rows, results, verbose=args.verbose)
    return 0


def print_score(rows: list[dict], results: dict, verbose: bool = False, indent: str = "") -> None:
    """Accuracy of results (pr -> FileResult; a missing pr counts as the wrong verdict)."""
    tp = fp = tn = fn = exact = 0
    fam_total: dict[str, int] = {}
    fam_hit: dict[str, int] = {}
    merged_flagged = []
    disagreements = []
    for row in rows:
        result = results.get(row["pr"])
        truth = set() if row["label"] == "clean" else set(row["label"].split("+"))
        if result is None:
            got = {"(not classified)"} if not truth else set()
        else:
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
        if result is None or truth_f != got_f or result.verdict == "error":
            verdict = result.verdict if result is not None else "not classified"
            disagreements.append((row["pr"], row["label"], sorted(got) or [verdict], result))
    n = max(len(rows), 1)
    print(f"{indent}accuracy (flag vs clean): {(tp + tn) / n:.1%}  ({tp + tn}/{len(rows)})")
    print(f"{indent}precision: {tp / max(tp + fp, 1):.1%}  recall: {tp / max(tp + fn, 1):.1%}  "
          f"(tp={tp} fp={fp} fn={fn} tn={tn})")
    print(f"{indent}exact family match: {exact / n:.1%}  ({exact}/{len(rows)})")
    print(f"{indent}per-family recall:")
    for fam in sorted(fam_total):
        print(f"{indent}  {fam:24s} {fam_hit[fam]}/{fam_total[fam]}  {fam_hit[fam] / fam_total[fam]:.0%}")
    print(f"{indent}merged rows flagged: {len(merged_flagged)} {merged_flagged}")
    print(f"{indent}disagreements (pr, label, got):")
    for pr, label, got, result in disagreements:
        print(f"{indent}  {pr:>5} {label:50s} -> {','.join(got)}")
        if verbose and result is not None:
            for f in result.findings:
                print(f"{indent}        {f.severity:9s} L{f.line} {f.rule}: {f.message[:200]}")
            if result.error:
                print(f"{indent}        error: {result.error}")


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
