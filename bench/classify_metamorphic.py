"""Do `auditor classify` verdicts survive behaviour-preserving rewrites of the code?

    python bench/classify_metamorphic.py MIRROR [--sample 300] [--labels FILE] [--only PRS]
        [--transforms rename,extract,while,wrap] [--write DIR] [--jobs 2] [--seed 0] [--at REV]
        [--no-labels]

MIRROR is the bare git mirror of openai/parameter-golf that the library's `fetch` gives.
Inputs: every labels-dev row (its record folder at head_sha) and a deterministic sample of
--sample unique train_gpt.py blobs of the PR heads (each with its record folder at that
head, so README and logs come along; --sample 0 skips it). Each is rewritten by each
transform of bench/_transforms.py (rename identifiers, extract loop bodies, for -> while,
wrap functions into classes), and the original and every twin are classified with
`classify_paths(..., use_cache=False)`.

Prints, per transform and input set: agreement of the verdict and of the violation
rule-family set (the two ngram-* rules are one family) between original and twin; twins
that could not be made (libcst error) are counted as skipped, not as agreement. Then every
disagreement (input, transform, original verdict+rules, twin verdict+rules), the skipped
twins with their reason, and labels-dev accuracy of the originals and of each twin set
(scored as bench/classify_corpus.py does).

The auditor package is copied at start (from the working tree, or from git revision --at)
and imported from the copy, so edits to auditor/ made while the bench runs do not mix in.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._mirror import extract_folder, git  # noqa: E402
from bench.classify_speed import snapshot_auditor, unique_blobs  # noqa: E402

ALL_TRANSFORMS = ("rename", "extract", "while", "wrap")


def family_set(result) -> frozenset[str]:
    return frozenset("ngram" if f.rule.startswith("ngram-") else f.rule
                     for f in result.findings if f.severity == "violation")


def describe(result) -> str:
    rules = ",".join(sorted(family_set(result)))
    extra = f" ({result.error[:120]})" if result.error else ""
    return f"{result.verdict}[{rules}]{extra}"


def snapshot_at(revision: str, dest: Path) -> str:
    """Like snapshot_auditor, but auditor/ as committed at `revision`."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "auditor"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    sys.path.insert(0, str(dest))
    for name in [m for m in sys.modules if m == "auditor" or m.startswith("auditor.")]:
        del sys.modules[name]
    import auditor.classify  # noqa: F401

    return (git(REPO, "rev-parse", "--short", revision) or revision).strip()


def materialize(mirror: Path, root: Path, labels: list[dict], sample: list[tuple[str, str, str]]) -> list[dict]:
    """Record folders on disk: [{id, set, folder, script, row}]."""
    items = []
    for row in labels:
        folder, script = row["script_path"].rsplit("/", 1) if "/" in row["script_path"] else ("", row["script_path"])
        dest = extract_folder(mirror, row["head_sha"], folder, root / "original" / f"pr{row['pr']}")
        items.append({"id": f"pr{row['pr']}", "set": "labels-dev", "folder": dest, "script": script, "row": row,
                      "where": f"PR {row['pr']} {row['script_path']}"})
    for blob, ref, path in sample:
        folder, script = path.rsplit("/", 1) if "/" in path else ("", path)
        item_id = f"b{blob[:12]}"
        dest = root / "original" / item_id
        if folder:
            extract_folder(mirror, ref, folder, dest)
        else:  # a script at the repository root: that file alone
            dest.mkdir(parents=True, exist_ok=True)
            data = git(mirror, "cat-file", "blob", blob, binary=True)
            if data is not None:
                (dest / script).write_bytes(data)
        if not (dest / script).is_file():
            continue  # the blob is missing from the snapshot
        pr = ref.split("/")[2] if ref.startswith("refs/pull/") else ref
        items.append({"id": item_id, "set": "sample", "folder": dest, "script": script, "row": None,
                      "where": f"PR {pr} {path}"})
    return items


def _process(job: tuple[dict, list[str], str, int]) -> tuple[str, dict, dict, float]:
    """In a worker: make every twin of one input (one parse serves all transforms) and
    classify the original and the twins. Returns (id, {name: result json}, {name: skip reason}, seconds)."""
    from auditor.classify import classify_paths

    from bench._transforms import TransformError, transform_folder

    item, transforms, root, seed = job
    started = time.perf_counter()
    paths = {"original": str(item["folder"] / item["script"])}
    skipped = {}
    for name in transforms:
        dest = Path(root) / name / item["id"]
        try:
            transform_folder(item["folder"], name, dest, seed=seed)
            paths[name] = str(dest / item["script"])
        except TransformError as exc:
            skipped[name] = str(exc)
        except (RecursionError, MemoryError) as exc:
            skipped[name] = type(exc).__name__
        except Exception as exc:  # a bug of a transform: a skipped twin, said plainly
            skipped[name] = f"transform bug: {type(exc).__name__}: {exc}"
    # one path per call: classify_paths then runs it in this (pool worker) process
    results = {n: classify_paths([path], jobs=1, use_cache=False)[0] for n, path in paths.items()}
    return item["id"], {n: r.to_json() for n, r in results.items()}, skipped, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirror", type=Path)
    parser.add_argument("--sample", type=int, default=300, help="unique PR-head train_gpt.py files (0: none)")
    parser.add_argument("--labels", type=Path, default=REPO.parent / "shared/corpus/labels-dev.tsv")
    parser.add_argument("--only", help="comma-separated labels-dev PR numbers")
    parser.add_argument("--no-labels", action="store_true", help="only the PR-head sample")
    parser.add_argument("--transforms", default=",".join(ALL_TRANSFORMS))
    parser.add_argument("--write", type=Path, help="keep originals and twins in this folder")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--at", help="classify with auditor/ as committed at this git revision")
    args = parser.parse_args()
    transforms = [t.strip() for t in args.transforms.split(",") if t.strip()]
    unknown = [t for t in transforms if t not in ALL_TRANSFORMS]
    if unknown:
        print(f"error: unknown transform(s) {unknown}; choose from {','.join(ALL_TRANSFORMS)}", file=sys.stderr)
        return 2
    if not (args.mirror / "HEAD").exists() and not (args.mirror / ".git").exists():
        print(f"error: {args.mirror} is not a git mirror", file=sys.stderr)
        return 2
    if not args.labels.is_file():
        print(f"error: labels file {args.labels} not found", file=sys.stderr)
        return 2

    started = time.perf_counter()
    snap = Path(tempfile.mkdtemp(prefix="classify-metamorphic-"))
    version = snapshot_at(args.at, snap / "code") if args.at else snapshot_auditor(snap / "code")
    from bench._transforms import library_attributes

    library_attributes()  # computed once here; forked workers inherit it
    print(f"auditor snapshot of {version}; transforms: {','.join(transforms)}")

    labels = [] if args.no_labels else list(csv.DictReader(args.labels.open(), delimiter="\t"))
    if args.only:
        wanted = set(args.only.split(","))
        labels = [r for r in labels if r["pr"] in wanted]
    sample: list[tuple[str, str, str]] = []
    if args.sample:
        heads, blobs = unique_blobs(args.mirror)
        chosen = sorted(random.Random(args.seed).sample(sorted(blobs), min(args.sample, len(blobs))))
        sample = [(blob, *blobs[blob]) for blob in chosen]
        print(f"PR heads: {heads}  unique train_gpt.py blobs: {len(blobs)}  sampled: {len(sample)}")

    root = args.write or snap / "work"
    if args.write and args.write.exists():
        shutil.rmtree(args.write)
    root.mkdir(parents=True, exist_ok=True)
    items = materialize(args.mirror, root, labels, sample)
    print(f"inputs: {sum(i['set'] == 'labels-dev' for i in items)} labels-dev rows, "
          f"{sum(i['set'] == 'sample' for i in items)} sampled files  ({time.perf_counter() - started:.0f}s)")

    from auditor.findings import FileResult

    t0 = time.perf_counter()
    results: dict[tuple[str, str], object] = {}
    skipped: dict[tuple[str, str], str] = {}
    jobs = [({k: v for k, v in i.items() if k != "row"}, transforms, str(root), args.seed) for i in items]
    with Pool(max(args.jobs, 1)) as pool:
        for n, (item_id, classified, failed, seconds) in enumerate(pool.imap_unordered(_process, jobs), 1):
            for name, data in classified.items():
                results[(item_id, name)] = FileResult.from_json(data)
            for name, reason in failed.items():
                skipped[(item_id, name)] = reason
            print(f"  {n}/{len(jobs)} {item_id} {seconds:.0f}s  (elapsed {time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr, flush=True)
    print(f"twins: {sum(1 for k in results if k[1] != 'original')} made and classified, {len(skipped)} skipped  "
          f"({time.perf_counter() - t0:.0f}s)")

    report(items, transforms, results, skipped)
    print(f"total bench time: {time.perf_counter() - started:.0f}s")
    if not args.write:
        shutil.rmtree(snap, ignore_errors=True)
    return 0


def report(items: list[dict], transforms: list[str], results: dict, skipped: dict) -> None:
    from bench.classify_corpus import print_score

    print()
    print("agreement with the original (verdict equal / rule-family set equal), skipped twins apart:")
    disagreements = []
    for subset in ("labels-dev", "sample"):
        chosen = [i for i in items if i["set"] == subset]
        if not chosen:
            continue
        for t in transforms:
            made = [i for i in chosen if (i["id"], t) in results]
            same_verdict = same_rules = 0
            for i in made:
                original, twin = results[(i["id"], "original")], results[(i["id"], t)]
                v = original.verdict == twin.verdict
                r = family_set(original) == family_set(twin)
                same_verdict += v
                same_rules += r
                if not (v and r):
                    disagreements.append((subset, i["where"], t, describe(original), describe(twin)))
            n = max(len(made), 1)
            print(f"  {subset:10s} {t:8s} twins {len(made):4d}  skipped {len(chosen) - len(made):3d}  "
                  f"verdict {same_verdict}/{len(made)} {same_verdict / n:.1%}  "
                  f"rules {same_rules}/{len(made)} {same_rules / n:.1%}  "
                  f"flipped {len(made) - same_verdict}")
    print(f"\ndisagreements ({len(disagreements)}): set, input, transform: original -> twin")
    for subset, where, t, before, after in disagreements:
        print(f"  {subset:10s} {where}  {t}: {before} -> {after}")
    print(f"\nskipped twins ({len(skipped)}):")
    by_id = {i["id"]: i for i in items}
    for (item_id, t), reason in sorted(skipped.items()):
        print(f"  {by_id[item_id]['where']}  {t}: {reason[:200]}")

    rows = [i for i in items if i["set"] == "labels-dev"]
    if rows:
        for name in ("original", *transforms):
            print(f"\nlabels-dev accuracy, {name}" + (" twins (a skipped twin counts as a miss)" if name != "original" else ""))
            scored = {i["row"]["pr"]: results[(i["id"], name)] for i in rows if (i["id"], name) in results}
            print_score([i["row"] for i in rows], scored, indent="  ")


if __name__ == "__main__":
    raise SystemExit(main())
