"""`auditor review`: the comment for flagged and clean submissions, PR sources from a bare
clone, and the SQLite store that skips heads it already has."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from auditor.report.markdown import MARKER, ReviewContext, code_span, fenced, inline
from auditor.review.batch import review_all_prs
from auditor.review.command import review
from auditor.report.shared import rule_summary
from auditor.review.run import review_folder, review_pr
from auditor.review.store import ReviewStore, export_csv, export_json, review_version

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "classify"
FLAGGED = FIXTURES / "record_ngram_enabled"
SHA = "0123456789abcdef0123456789abcdef01234567"
NOT_A_RULING = re.compile(r"Automated review by auditor \d+\.\d+\.\d+, a community tool; not a maintainer ruling")


def fenced_blocks(markdown: str, language: str = "python") -> list[tuple[str, list[str]]]:
    """(fence, lines) of every fenced code block in `language`, closed by the same fence."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})(\w*)", lines[i])
        if opening and opening.group(2) != language:
            fence = opening.group(1)
            i += 1
            while i < len(lines) and lines[i].rstrip() != fence:
                i += 1
        elif opening:
            fence = opening.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != fence:
                j += 1
            blocks.append((fence, lines[i + 1:j]))
            i = j
        i += 1
    return blocks


@pytest.fixture(scope="module")
def flagged_markdown() -> str:
    root = FLAGGED.parent.parent.parent  # the auditor repository
    context = ReviewContext(github_repo="openai/parameter-golf", sha=SHA, pr=1234, root=str(root))
    return review_folder(FLAGGED, context=context, use_cache=False).markdown


def test_flagged_review_cites_the_line_with_a_permalink_excerpt_rule_and_ruling(flagged_markdown):
    md = flagged_markdown
    assert md.startswith(MARKER + "\n")
    assert "fixtures/classify/record_ngram_enabled/train_gpt.py:16" in md
    assert ("https://github.com/openai/parameter-golf/blob/" + SHA
            + "/fixtures/classify/record_ngram_enabled/train_gpt.py#L16)") in md
    assert "**Verdict:** **flagged**" in md
    assert "claimed val_bpb **1.0**" in md
    assert NOT_A_RULING.search(md)
    # The rule's explanation is the rule's own doc text, and the ruling's numbers are listed.
    from auditor.cli import app

    printed = CliRunner().invoke(app, ["rules", "ngram-target-in-key"]).output.rstrip("\n")
    assert printed.startswith("# ngram-target-in-key")
    assert "```text\n" + printed + "\n```" in md
    assert rule_summary("ngram-target-in-key") in md
    assert "Rulings cited: Issue #1017; PRs #779, #688" in md
    blocks = fenced_blocks(md)
    assert len(blocks) == 2  # one excerpt per violation
    for fence, lines in blocks:
        assert 1 <= len(lines) <= 5
    assert any("full_key = (ctx_hash ^ (tgt * prime)) & mask" in line for line in blocks[0][1])
    assert re.search(r"^> +16 \|", "\n".join(blocks[0][1]), re.M)
    assert "merge" not in md.lower().replace("merged", "")  # never a recommendation to merge
    assert "reproduce with: `auditor review" in md


def test_review_says_plainly_what_was_not_checked(flagged_markdown):
    section = flagged_markdown.split("### Not checked", 1)[1]
    assert "not imported or run" in section
    assert "Training was not repeated" in section
    assert "Static analysis covers only these rules" in section
    assert "### Smoke\n\nNot run." in flagged_markdown


def test_clean_record_folder(tmp_path):
    folder = tmp_path / "clean_record"
    folder.mkdir()
    shutil.copy(FIXTURES / "clean_baseline.py", folder / "train_gpt.py")
    (folder / "submission.json").write_text(json.dumps({"name": "clean", "val_bpb": 1.2345}))
    outcome = review_folder(folder, use_cache=False)
    md = outcome.markdown
    assert outcome.summary["verdict"] == "clean"
    assert "**no violation found** by the checks listed below" in md
    assert "claimed val_bpb **1.2345**" in md
    assert "### Rule violations\n\nNone found" in md
    assert fenced_blocks(md) == []
    assert "https://github.com" not in md  # no repository or commit given: no permalinks
    assert NOT_A_RULING.search(md)


def test_native_code_is_listed_under_not_checked(tmp_path):
    folder = tmp_path / "native_record"
    folder.mkdir()
    (folder / "train_gpt.py").write_text(
        "import ctypes\n\n"
        "def score():\n"
        "    return ctypes.CDLL('./scorer.so').score()\n\n"
        "if __name__ == '__main__':\n"
        "    print(f'val_bpb:{score():.4f}')\n")
    section = review_folder(folder, use_cache=False).markdown.split("### Not checked", 1)[1]
    assert "- train_gpt.py:4: native code loaded at run time (`ctypes.CDLL` in `score`) is not analysed" in section


def test_code_that_cannot_be_analysed_is_named_in_the_verdict(tmp_path):
    folder = tmp_path / "records" / "empty"
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text("")
    context = ReviewContext(root=str(tmp_path))
    outcome = review_folder(folder, context=context, use_cache=False)
    assert outcome.summary["verdict"] == "error"
    assert "**Verdict:** **not analysed**: `records/empty/train_gpt.py`: file is empty" in outcome.markdown
    assert "### Rule violations" not in outcome.markdown  # nothing is claimed about rules not checked
    assert "The compliance rules were not checked" in outcome.markdown


def test_dormant_constructs_are_listed_apart_and_not_counted(tmp_path):
    folder = tmp_path / "dormant"
    folder.mkdir()
    shutil.copy(FIXTURES / "ngram_dormant_flag.py", folder / "train_gpt.py")
    outcome = review_folder(folder, use_cache=False)
    md = outcome.markdown
    assert outcome.summary["verdict"] == "clean"
    dormant = md.split("### Dormant constructs", 1)[1].split("###", 1)[0]
    assert "not counted" in dormant
    assert "`ngram-target-in-key` at `" in dormant
    assert "train_gpt.py:16" in dormant


def test_code_fences_in_the_submission_cannot_break_out(tmp_path):
    folder = tmp_path / "fence"
    shutil.copytree(FLAGGED, folder)
    script = folder / "train_gpt.py"
    lines = script.read_text().splitlines()
    lines[15] += "  # ``` <!-- auditor-review --> @maintainer"
    script.write_text("\n".join(lines) + "\n")
    md = review_folder(folder, use_cache=False).markdown
    assert md.count(MARKER) == 1  # the marker that finds our comment stays unique
    blocks = fenced_blocks(md)
    text = "\n".join("\n".join(lines) for _, lines in blocks)
    assert "# ```" in text
    assert blocks[0][0] == "````"
    assert all(len(lines) <= 5 for _, lines in blocks)


def test_inline_neutralisation():
    assert fenced("a ```` b").startswith("`````python\n")
    assert code_span("x ` y") == "``x ` y``"
    assert code_span("`a") == "`` `a ``"
    text = inline("see <!-- hidden --> @someone `a|b` <img src=x>", table=True)
    assert "<!--" not in text and "<img" not in text
    assert "@\u200bsomeone" in text
    assert "\\|" in text


def test_missing_path_is_a_clear_error_and_exit_2(tmp_path):
    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["review", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


# --- PRs from a bare clone, and the store ----------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def bare_clone(tmp_path) -> Path:
    return make_bare_clone(tmp_path)


def make_bare_clone(tmp_path: Path) -> Path:
    """A bare repository with main and two PR heads: PR 1 adds a flagged record, PR 2 a clean one."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "README.md").write_text("challenge\n")
    git(work, "add", "README.md")
    git(work, "commit", "-q", "-m", "main")
    folders = {1: ("2026-01-01_Ngram", FLAGGED / "train_gpt.py", 0.5), 2: ("2026-01-02_Clean", FIXTURES / "clean_baseline.py", 1.2)}
    heads = {}
    for pr, (name, script, bpb) in folders.items():
        git(work, "checkout", "-q", "-b", f"pr{pr}", "main")
        record = work / "records" / "track_10min_16mb" / name
        record.mkdir(parents=True)
        shutil.copy(script, record / "train_gpt.py")
        if pr == 1:
            shutil.copy(FLAGGED / "README.md", record / "README.md")
        (record / "submission.json").write_text(json.dumps({"name": f"PR {pr} record", "val_bpb": bpb}))
        git(work, "add", "records")
        git(work, "commit", "-q", "-m", f"pr {pr}")
        heads[pr] = git(work, "rev-parse", "HEAD")
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    for pr, sha in heads.items():
        git(bare, "update-ref", f"refs/pull/{pr}/head", sha)
    return bare


def test_pr_review_reads_the_added_record_folder(bare_clone):
    outcome = review_pr(bare_clone, 1, github_repo="openai/parameter-golf", use_cache=False)
    head = git(bare_clone, "rev-parse", "refs/pull/1/head")
    md = outcome.markdown
    assert outcome.summary["verdict"] == "flag"
    assert outcome.summary["title"] == "PR 1 record"
    assert (f"https://github.com/openai/parameter-golf/blob/{head}/records/track_10min_16mb/"
            "2026-01-01_Ngram/train_gpt.py#L16)") in md
    assert "`records/track_10min_16mb/2026-01-01_Ngram/train_gpt.py:16`" in md
    # The command names what shaped the comment (the repository gives the permalinks).
    assert f"reproduce with: `auditor review --repo-dir CLONE --pr 1 --github-repo openai/parameter-golf` at commit `{head}`" in md
    assert "/tmp/" not in md  # temporary paths never reach the comment


def test_store_skips_heads_already_reviewed_and_keeps_history(bare_clone, tmp_path):
    db = tmp_path / "reviews.sqlite3"
    with ReviewStore(db) as store:
        first = review_all_prs(bare_clone, store, jobs=1, use_cache=False)
        assert (first.heads, first.reviewed, first.reused) == (2, 2, 0)
        assert first.verdicts == {"flag": 1, "clean": 1}
    with ReviewStore(db) as store:
        second = review_all_prs(bare_clone, store, jobs=1, use_cache=False)
        assert (second.reviewed, second.reused) == (0, 2)
        assert store.count() == 2
    # A new head for PR 2 is reviewed; its old row stays (history), the summary shows the new one.
    work = tmp_path / "work"
    git(work, "checkout", "-q", "pr2")
    (work / "records" / "track_10min_16mb" / "2026-01-02_Clean" / "notes.txt").write_text("more\n")
    git(work, "add", "records")
    git(work, "commit", "-q", "-m", "pr 2 update")
    new_head = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", str(bare_clone), f"{new_head}:refs/pull/2/head")
    with ReviewStore(db) as store:
        third = review_all_prs(bare_clone, store, jobs=2, use_cache=False)
        assert (third.reviewed, third.reused) == (1, 1)
        assert store.count() == 3
        rows = store.summary(review_version(), {1: git(bare_clone, "rev-parse", "refs/pull/1/head"), 2: new_head})
        # other code (a changed rule) is another version: every head is reviewed again
        fourth = review_all_prs(bare_clone, store, jobs=1, use_cache=False, version=review_version() + "-changed")
        assert (fourth.reviewed, fourth.reused) == (2, 0)
    assert [(r["pr"], r["verdict"], r["head_sha"]) for r in rows][1] == (2, "clean", new_head)
    assert rows[0]["rules"] == ["ngram-target-in-key", "ngram-unnormalized"]
    export_csv(rows, tmp_path / "summary.csv")
    export_json(rows, tmp_path / "summary.json")
    table = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [t["pr"] for t in table] == ["1", "2"]
    assert table[0]["claimed_bpb"] == "0.5" and table[0]["verdict"] == "flag"
    assert table[0]["title"] == "PR 1 record"
    assert json.loads((tmp_path / "summary.json").read_text())["reviews"][1]["smoke"] == "not run"


def test_one_failing_pr_does_not_stop_the_batch(bare_clone, tmp_path):
    # PR 3 shares no history with main: no merge base, an error row; the others are reviewed.
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    git(orphan, "init", "-q", "-b", "x")
    (orphan / "a.txt").write_text("a\n")
    git(orphan, "add", "a.txt")
    git(orphan, "commit", "-q", "-m", "orphan")
    git(orphan, "push", "-q", str(bare_clone), "HEAD:refs/pull/3/head")
    with ReviewStore(tmp_path / "db.sqlite3") as store:
        report = review_all_prs(bare_clone, store, jobs=1, use_cache=False)
        rows = {r["pr"]: r for r in store.summary()}
    assert report.reviewed == 3 and report.errors == 1
    assert rows[3]["verdict"] == "error" and rows[3]["error"] == "PR 3: no merge base with main"
    assert rows[1]["verdict"] == "flag"


def test_reproduce_report_and_smoke_are_rendered_from_their_results(tmp_path):
    report = {"path": "x", "verdict": "DIVERGED", "error": None,
              "hardware": {"description": "1 x NVIDIA H200", "device_count": 1, "is_8xh100": False},
              "seeds": [{"seed": 1337, "verdict": "DIVERGED", "val_bpb": 1.31, "claimed_val_bpb": 1.2,
                         "reasons": ["val_bpb 1.31000 vs claimed 1.20000"],
                         "train_time": {"measured_s": 640.0, "estimated_8xh100_s": 590.5}}],
              "mean": {"rerun_mean_bpb": 1.31, "claimed_mean_bpb": 1.2, "delta_bpb": 0.11, "within_tolerance": False},
              "notes": []}
    (tmp_path / "reproduce.json").write_text(json.dumps(report))
    outcome = review_folder(FIXTURES.parent.parent / "fixtures" / "smoke" / "legit", smoke=True,
                            reproduce_report=tmp_path / "reproduce.json", use_cache=False)
    md = outcome.markdown
    assert outcome.summary["verdict"] == "flag"  # the rerun diverged from the claim
    assert outcome.summary["smoke"] == "ok"
    assert "rerun: **DIVERGED**" in md
    assert "mean val_bpb of the rerun 1.31000, claimed 1.20000, delta 0.11000 (**outside tolerance**)" in md
    assert "(~590.5 s on 8xH100, estimated)" in md
    assert re.search(r"Smoke passed: import OK in [\d.]+s, class=\w+", md)
    assert "Training was not repeated" not in md
    assert "not imported or run" not in md


def test_unreadable_reproduce_report_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["review", str(FLAGGED), "--reproduce-report", str(tmp_path / "bad.json")])
    assert result.exit_code == 2
    assert "is not JSON" in result.output


def test_packed_script_cites_decoded_lines_without_a_line_anchor(tmp_path):
    folder = tmp_path / "records" / "packed"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "packed_ttt_pre_eval.py", folder / "train_gpt.py")
    context = ReviewContext(github_repo="o/r", sha=SHA, root=str(tmp_path))
    md = review_folder(folder, context=context, use_cache=False).markdown
    assert f"(https://github.com/o/r/blob/{SHA}/records/packed/train_gpt.py) (line of the decoded source" in md
    assert "train_gpt.py#L" not in md
    assert any(lines == ["loss.backward()"] for _, lines in fenced_blocks(md))


@pytest.mark.parametrize("packing,message,anchored", [
    ("lzma+b85", "trains first", False),
    (None, "trains first [line 3 of the decoded source; the file is packed (lzma+b85)]", True),
])
def test_the_typed_packing_decides_the_line_anchor_not_the_message(packing, message, anchored):
    from auditor.report.markdown import review_markdown

    finding = {"rule": "ttt-train-before-score", "severity": "violation", "path": "/src/x/train_gpt.py",
               "line": 3, "end_line": 3, "message": message, "evidence": "loss.backward()"}
    if packing:
        finding["packing"] = packing
    result = {"path": "/src/x/train_gpt.py", "sha256": "", "verdict": "flag", "error": None, "findings": [finding]}
    context = ReviewContext(github_repo="o/r", sha=SHA, root="/src", read_lines=lambda path: ["a", "b", "c", "d"])
    md = review_markdown(result, None, None, None, context)
    assert ("x/train_gpt.py#L3)" in md) is anchored
    assert ("(line of the decoded source; the file is packed)" in md.replace(message, "")) is not anchored


def test_json_format_gives_the_reviews_result_and_the_exit_code():
    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["review", "-f", "json", "--no-cache", str(FLAGGED)])
    assert result.exit_code == 1  # flagged, through the shared exit_code
    [review_json] = json.loads(result.stdout)["results"]
    assert review_json["summary"]["verdict"] == "flag"
    assert review_json["summary"]["rules"] == ["ngram-target-in-key", "ngram-unnormalized"]
    assert {f["rule"] for f in review_json["classify"]["findings"] if f["severity"] == "violation"} == \
        {"ngram-target-in-key", "ngram-unnormalized"}
    assert review_json["claims"]["path"] == str(FLAGGED) and review_json["smoke"] is None
    assert review_json["markdown"].startswith(MARKER)
    bad = CliRunner().invoke(app, ["review", "-f", "text", str(FLAGGED)])
    assert bad.exit_code == 2 and "'text' is not one of 'markdown', 'json'" in " ".join(
        re.sub("[│╭╮╰╯─]", " ", bad.output).split())


def test_long_finding_links_its_whole_span_and_shows_five_lines():
    from auditor.report.markdown import review_markdown

    source = [f"line_{n} = {n}" for n in range(1, 21)]
    result = {"path": "/src/records/x/train_gpt.py", "sha256": "", "verdict": "flag", "error": None,
              "findings": [{"rule": "two-pass-rescore", "severity": "violation", "path": "/src/records/x/train_gpt.py",
                            "line": 3, "end_line": 12, "message": "rescored", "evidence": "line_3 = 3"}]}
    context = ReviewContext(github_repo="o/r", sha=SHA, root="/src", read_lines=lambda path: source)
    md = review_markdown(result, None, None, None, context)
    assert f"https://github.com/o/r/blob/{SHA}/records/x/train_gpt.py#L3-L12)" in md
    assert "`records/x/train_gpt.py:3-12`" in md
    (fence, lines), = fenced_blocks(md)
    assert len(lines) == 5
    assert lines[0].startswith("> 3 | line_3") and lines[-1].startswith("> 7 | line_7")
    assert "(lines 3-7 of 3-12 shown)" in md
    assert "Claims (submission.json, README table, logs) were not checked." in md


def test_a_finding_in_a_sibling_script_cites_that_file(tmp_path):
    context = ReviewContext(github_repo="o/r", sha=SHA, root=str(FIXTURES.parent.parent))
    md = review_folder(FIXTURES / "record_val_copied", context=context, use_cache=False).markdown
    assert re.search(r"\[`fixtures/classify/record_val_copied/prepare_data\.py:\d+`\]\(https://github\.com/o/r/blob/"
                     + SHA + r"/fixtures/classify/record_val_copied/prepare_data\.py#L\d+\)", md)


def test_all_prs_on_the_command_line_exports_and_reuses_the_database(bare_clone, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    app = typer.Typer()
    app.command()(review)
    app.command("other")(lambda: None)
    args = ["review", "--repo-dir", str(bare_clone), "--all-prs", "--jobs", "1", "--db", str(tmp_path / "db.sqlite3"),
            "--export-csv", str(tmp_path / "prs.csv"), "--export-json", str(tmp_path / "prs.json")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 PR heads: 2 reviewed, 0 already in" in first.output
    assert "verdicts: clean 1, flag 1" in first.output
    assert "[##############################] 2/2 PRs" in first.output  # the progress bar (stderr)
    second = CliRunner().invoke(app, args)
    assert "2 PR heads: 0 reviewed, 2 already in" in second.output
    as_json = CliRunner().invoke(app, args + ["-f", "json"])
    batch = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and (batch["heads"], batch["reviewed"], batch["reused"]) == (2, 0, 2)
    assert batch["verdicts"] == {"clean": 1, "flag": 1}
    assert [(r["pr"], r["verdict"]) for r in batch["reviews"]] == [(1, "flag"), (2, "clean")]
    reviews = json.loads((tmp_path / "prs.json").read_text())["reviews"]
    assert [(r["pr"], r["verdict"], r["claimed_bpb"]) for r in reviews] == [(1, "flag", "0.5"), (2, "clean", "1.2")]
    unwritable = CliRunner().invoke(app, args[:-2] + ["--export-json", str(tmp_path / "no" / "such" / "dir.json")])
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output


def test_many_violations_explain_each_rule_once_and_stay_under_githubs_limit():
    from auditor.report.markdown import review_markdown

    findings = [{"rule": "two-pass-rescore", "severity": "violation", "path": "/src/t.py", "line": n, "end_line": n,
                 "message": "x" * 2000, "evidence": "rescore()"} for n in range(1, 101)]
    result = {"path": "/src/t.py", "sha256": "", "verdict": "flag", "error": None, "findings": findings}
    md = review_markdown(result, None, None, None, ReviewContext(root="/src", read_lines=lambda path: None))
    assert len(md) < 65_536
    assert md.count("<details><summary>Rule <code>two-pass-rescore</code>") == 1
    assert "more violation(s), not shown here" in md
    assert "### Rule violations (100)" in md


def test_a_pr_merged_into_main_still_finds_its_record_folder(tmp_path):
    from auditor.review.source import locate_pr

    bare = make_bare_clone(tmp_path)
    work = tmp_path / "work"
    git(work, "checkout", "-q", "-b", "pr5", "main")
    record = work / "records" / "track_10min_16mb" / "2026-01-05_Merged"
    record.mkdir(parents=True)
    shutil.copy(FIXTURES / "clean_baseline.py", record / "train_gpt.py")
    git(work, "add", "records")
    git(work, "commit", "-q", "-m", "pr 5")
    head = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "main")
    (work / "NOTES.md").write_text("main moved on\n")
    git(work, "add", "NOTES.md")
    git(work, "commit", "-q", "-m", "main")
    git(work, "merge", "-q", "--no-ff", "-m", "merge pr 5", "pr5")
    git(work, "push", "-q", str(bare), "main:main", f"{head}:refs/pull/5/head")
    source = locate_pr(bare, 5)
    assert source.head_sha == head
    assert source.folder == "records/track_10min_16mb/2026-01-05_Merged"
    assert source.base_sha != head
