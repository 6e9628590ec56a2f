"""`auditor classify` end to end on the fixtures of fixtures/classify/: verdicts, rule ids,
cited lines, packed sources, bad inputs, the CLI's JSON and exit codes, --jobs, the cache,
and that classify never imports torch. Real analysis, no mocks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.classify import cache_dir, classify_path, classify_paths
from auditor.cli import app
from auditor.rules.min_nll_selection import _PICK

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures" / "classify"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never read or write the user's real cache."""
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))


def _rules(result, severity: str) -> set[str]:
    return {f.rule for f in result.findings if f.severity == severity}


def _line_of(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1]


# --- verdicts of each fixture -----------------------------------------------------------

# fixture -> (verdict, violation rules, dormant rules, info rules); sets are exact.
EXPECTED = {
    "clean_baseline.py": ("clean", set(), set(), set()),
    "ttt_score_first.py": ("clean", set(), set(), {"ttt-score-first"}),
    "ttt_pre_eval.py": ("flag", {"ttt-train-before-score"}, set(), set()),
    "ttt_swapped_order.py": ("flag", {"ttt-train-before-score"}, set(), set()),
    "ngram_context_only.py": ("clean", set(), set(), set()),
    "ngram_target_xor.py": ("flag", {"ngram-target-in-key", "ngram-unnormalized"}, set(), set()),
    "ngram_target_only_mix.py": ("flag", {"ngram-unnormalized"}, set(), set()),
    "slot_scored.py": ("flag", {"slot-scored-region"}, set(), set()),
    "min_nll_passes.py": ("flag", {"min-nll-selection", "ttt-train-before-score"}, set(), set()),
    "two_pass_rescore.py": ("flag", {"two-pass-rescore"}, set(), {"ttt-score-first"}),
    "gptq_train_after_clock.py": ("flag", {"train-data-at-eval"}, set(), set()),
    "gptq_with_reserve.py": ("clean", set(), set(), set()),
    "gptq_on_val.py": ("flag", {"val-data-in-training"}, set(), set()),
    "ngram_dormant_flag.py": ("clean", set(), {"ngram-target-in-key", "ngram-unnormalized"}, set()),
    "record_ngram_enabled": ("flag", {"ngram-target-in-key", "ngram-unnormalized"}, set(), set()),
    "packed_ttt_pre_eval.py": ("flag", {"ttt-train-before-score"}, set(), set()),
    "packed_exec_sibling": ("flag", {"ttt-train-before-score"}, set(), set()),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_verdict_and_rules(name):
    verdict, violations, dormant, info = EXPECTED[name]
    result = classify_path(FIX / name)
    assert result.error is None, result.error
    assert result.verdict == verdict, result.findings
    assert _rules(result, "violation") == violations
    assert _rules(result, "dormant") == dormant
    assert _rules(result, "info") == info
    assert len(result.sha256) == 64


# fixture -> {rule: a substring the cited line must contain}
CITED = {
    "ttt_pre_eval.py": {"ttt-train-before-score": "backward()"},
    "ttt_swapped_order.py": {"ttt-train-before-score": "loss.backward()"},
    "ttt_score_first.py": {"ttt-score-first": "loss.backward()"},
    "ngram_target_xor.py": {"ngram-target-in-key": "^ (tgt * prime)", "ngram-unnormalized": "(1 - alpha) *"},
    "ngram_target_only_mix.py": {"ngram-unnormalized": "(1.0 - alpha) * model_p"},
    "slot_scored.py": {"slot-scored-region": "loss.backward()"},
    "min_nll_passes.py": {"min-nll-selection": "torch.minimum(best_nll, nll)",
                          "ttt-train-before-score": ".backward()"},
    "two_pass_rescore.py": {"two-pass-rescore": "second = eval_val(model, val_tokens)"},
    "gptq_train_after_clock.py": {"train-data-at-eval": "collect_hessians("},
    "gptq_on_val.py": {"val-data-in-training": "collect_hessians(model, TokenBatches(val_tokens"},
    "ngram_dormant_flag.py": {"ngram-target-in-key": "^ (tgt * prime)"},
}


@pytest.mark.parametrize("name", sorted(CITED))
def test_findings_cite_the_construct(name):
    path = FIX / name
    result = classify_path(path)
    for rule, needle in CITED[name].items():
        hits = [f for f in result.findings if f.rule == rule]
        assert hits, f"no {rule} finding in {name}"
        lines = [_line_of(path, f.line) for f in hits]
        assert any(needle in line for line in lines), (rule, lines)
        for finding in hits:
            assert finding.end_line >= finding.line
            assert finding.evidence.strip() == _line_of(path, finding.line).strip()[:300]


def test_clean_baseline_has_no_findings_at_all():
    result = classify_path(FIX / "clean_baseline.py")
    assert result.verdict == "clean" and result.findings == []


def test_dormant_findings_say_why():
    result = classify_path(FIX / "ngram_dormant_flag.py")
    assert result.findings and all(f.severity == "dormant" for f in result.findings)
    assert all("[dormant:" in f.message for f in result.findings)


def test_record_readme_turns_the_flag_on():
    """Same code as ngram_dormant_flag.py; the README's run command sets NGRAM_ENABLED=1."""
    assert (FIX / "record_ngram_enabled" / "train_gpt.py").read_text() == (FIX / "ngram_dormant_flag.py").read_text()
    result = classify_path(FIX / "record_ngram_enabled")
    assert result.path.endswith("train_gpt.py")
    key = [f for f in result.findings if f.rule == "ngram-target-in-key"]
    assert key and key[0].severity == "violation" and "[dormant" not in key[0].message
    assert "^ (tgt * prime)" in _line_of(FIX / "record_ngram_enabled" / "train_gpt.py", key[0].line)
    # The script given on its own inside the record folder is judged with the README too.
    assert classify_path(FIX / "record_ngram_enabled" / "train_gpt.py").verdict == "flag"


# --- packed scripts -------------------------------------------------------------------


def test_make_packed_is_reproducible(tmp_path):
    shutil.copy(FIX / "make_packed.py", tmp_path)
    shutil.copy(FIX / "ttt_pre_eval.py", tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "make_packed.py")], check=True)
    assert (tmp_path / "packed_ttt_pre_eval.py").read_text() == (FIX / "packed_ttt_pre_eval.py").read_text()


def test_packed_findings_point_into_the_decoded_source():
    packed = classify_path(FIX / "packed_ttt_pre_eval.py")
    plain = classify_path(FIX / "ttt_pre_eval.py")
    assert (FIX / "packed_ttt_pre_eval.py").read_text().count("\n") == 2  # a two-line stub on disk
    assert [(f.rule, f.severity, f.line, f.evidence) for f in packed.findings] == \
           [(f.rule, f.severity, f.line, f.evidence) for f in plain.findings]
    for finding in packed.findings:
        assert "decoded source" in finding.message and "lzma" in finding.message and "b85" in finding.message
    assert any("backward()" in f.evidence for f in packed.findings)


def test_exec_sibling_is_analyzed():
    result = classify_path(FIX / "packed_exec_sibling")
    assert result.path.endswith("train_gpt.py")
    (finding,) = result.violations
    assert "train_gpt_impl.py" in finding.message and "decoded source" in finding.message
    assert "loss.backward()" in _line_of(FIX / "packed_exec_sibling" / "train_gpt_impl.py", finding.line)


# --- bad inputs -------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"import torch\n\x00\x00\x01\x02 garbage\n")
    big = tmp_path / "big.py"
    big.write_bytes(b"x = 1\n" * 900_000)  # 5.4 MB
    return {
        "empty": (FIX / "bad" / "empty.py", "empty"),
        "latin1": (FIX / "bad" / "latin1.py", "not UTF-8"),
        "syntax": (FIX / "bad" / "syntax_error.py", "not valid Python"),
        "binary": (binary, "binary"),
        "big": (big, "limit"),
        "missing": (tmp_path / "does_not_exist.py", "does not exist"),
        "no_script": (tmp_path, "no main script"),
    }


def test_bad_inputs_are_errors_with_a_reason(tmp_path):
    for name, (path, needle) in _bad_files(tmp_path).items():
        result = classify_path(path)
        assert result.verdict == "error", name
        assert result.error and needle in result.error, (name, result.error)
        assert result.findings == []


def test_syntax_error_names_the_line():
    result = classify_path(FIX / "bad" / "syntax_error.py")
    assert "line 6" in result.error


def test_batch_continues_past_bad_inputs(tmp_path):
    bad = [p for p, _ in _bad_files(tmp_path).values()]
    good = [FIX / "clean_baseline.py", FIX / "ttt_pre_eval.py"]
    paths = [good[0], *bad, good[1]]
    results = classify_paths(paths, jobs=1, use_cache=False)
    assert len(results) == len(paths)
    assert [r.path for r in results] == [str(p) for p in paths]  # the folder has no script to name
    assert [r.verdict for r in results] == ["clean", *["error"] * len(bad), "flag"]


# --- CLI --------------------------------------------------------------------------------

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, ["classify", *args])


def test_cli_json_shape():
    out = _cli("--no-cache", "--format", "json", str(FIX / "ttt_pre_eval.py"), str(FIX / "bad" / "empty.py"))
    data = json.loads(out.stdout)
    assert set(data) == {"results"}
    assert len(data["results"]) == 2
    for result in data["results"]:
        assert set(result) == {"path", "sha256", "verdict", "error", "error_kind", "findings"}
        for finding in result["findings"]:
            assert set(finding) == {"rule", "severity", "path", "line", "end_line", "message", "evidence", "dormancy",
                                    "counted_as_run"}
            assert finding["path"] == result["path"]
            assert isinstance(finding["line"], int) and isinstance(finding["end_line"], int)
    flagged, errored = data["results"]
    assert flagged["verdict"] == "flag" and flagged["error"] is None and flagged["findings"]
    assert errored["verdict"] == "error" and errored["error"] == "file is empty" and errored["findings"] == []
    assert errored["error_kind"] == "input" and flagged["error_kind"] is None


@pytest.mark.parametrize("paths,code", [
    (["clean_baseline.py"], 0),
    (["clean_baseline.py", "ttt_score_first.py", "ngram_dormant_flag.py"], 0),  # info and dormant do not flag
    (["clean_baseline.py", "ttt_pre_eval.py"], 1),
    (["bad/empty.py"], 2),
    (["ttt_pre_eval.py", "bad/syntax_error.py", "clean_baseline.py"], 2),  # error wins over flag
])
def test_cli_exit_codes(paths, code):
    for fmt in ("text", "json"):
        out = _cli("--no-cache", "-f", fmt, *(str(FIX / p) for p in paths))
        assert out.exit_code == code, (fmt, out.stdout)


def test_cli_text_output():
    out = _cli("--no-cache", str(FIX / "ttt_swapped_order.py"), str(FIX / "ngram_dormant_flag.py"),
               str(FIX / "bad" / "latin1.py"))
    text = out.stdout
    assert "ttt_swapped_order.py: FLAG" in text and "ttt_swapped_order.py:11 ttt-train-before-score" in text
    assert "ngram_dormant_flag.py: CLEAN (0 violation(s), 2 dormant)" in text
    assert "latin1.py: ERROR file is not UTF-8 text" in text
    assert "3 submission(s): 1 flagged, 1 error(s), 1 clean" in text


def test_cli_jobs_gives_the_same_results():
    paths = [str(FIX / name) for name in sorted(EXPECTED)] + [str(FIX / "bad" / "empty.py")]
    one = _cli("--no-cache", "-f", "json", "--jobs", "1", *paths)
    two = _cli("--no-cache", "-f", "json", "--jobs", "2", *paths)
    assert one.exit_code == two.exit_code == 2
    assert json.loads(one.stdout) == json.loads(two.stdout)
    assert [r["path"] for r in json.loads(two.stdout)["results"]][-1].endswith("empty.py")


def test_cli_rejects_jobs_zero():
    assert _cli("--jobs", "0", str(FIX / "clean_baseline.py")).exit_code == 2


# --- cache ------------------------------------------------------------------------------


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_cache_is_written_then_read(tmp_path):
    cache = tmp_path / "cache"
    paths = [FIX / "ttt_pre_eval.py", FIX / "record_ngram_enabled", FIX / "bad" / "syntax_error.py"]
    first = classify_paths(paths)
    entries = sorted(cache.glob("*.json"))
    assert len(entries) == len(paths)
    mtimes = [e.stat().st_mtime_ns for e in entries]
    second = classify_paths(paths)
    assert [r.to_json() for r in second] == [r.to_json() for r in first]
    assert [e.stat().st_mtime_ns for e in sorted(cache.glob("*.json"))] == mtimes  # read, not rewritten
    # Proof that the second run came from the cache: a planted entry is what is returned.
    for entry in entries:
        data = json.loads(entry.read_text())
        if data["result"]["path"] == str(paths[0]):
            data["result"] |= {"findings": [], "verdict": "clean"}
            entry.write_text(json.dumps(data))
    assert classify_paths([paths[0]])[0].verdict == "clean"
    assert classify_paths([paths[0]], use_cache=False)[0].verdict == "flag"


def test_cache_hits_of_a_batch_start_no_worker(monkeypatch):
    """A warm batch is answered from the cache in the calling process (a worker per hit
    cost ~50 ms a file); only misses go to workers."""
    import auditor.classify.runner as runner_module

    paths = [str(FIX / "ttt_pre_eval.py"), str(FIX / "clean_baseline.py")]
    first = classify_paths(paths, jobs=2)

    def no_workers(*args, **kwargs):
        raise AssertionError("a cache hit was sent to a worker")

    monkeypatch.setattr(runner_module.multiprocessing, "get_context", no_workers)
    assert [r.to_json() for r in classify_paths(paths, jobs=2)] == [r.to_json() for r in first]
    with pytest.raises(AssertionError):
        classify_paths(paths, jobs=2, use_cache=False)


def test_cli_cache_and_no_cache(tmp_path):
    cache = tmp_path / "cache"
    path = str(FIX / "slot_scored.py")
    out = _cli("--no-cache", "-f", "json", path)
    assert out.exit_code == 1 and not cache.exists()
    first = _cli("-f", "json", path)
    assert len(list(cache.glob("*.json"))) == 1
    second = _cli("-f", "json", path)
    assert json.loads(first.stdout) == json.loads(second.stdout) == json.loads(out.stdout)


def test_cache_follows_the_readme(tmp_path):
    """The run configuration is part of the key: editing the README's command changes the verdict."""
    record = tmp_path / "record"
    shutil.copytree(FIX / "record_ngram_enabled", record)
    assert classify_paths([record])[0].verdict == "flag"
    readme = record / "README.md"
    readme.write_text(readme.read_text().replace("NGRAM_ENABLED=1 ", ""))
    assert classify_paths([record])[0].verdict == "clean"


def test_cache_follows_an_exec_sibling_in_a_record(tmp_path):
    record = tmp_path / "record"
    shutil.copytree(FIX / "packed_exec_sibling", record)
    assert classify_paths([record])[0].verdict == "flag"
    shutil.copy(FIX / "clean_baseline.py", record / "train_gpt_impl.py")
    assert classify_paths([record])[0].verdict == "clean"


def test_cache_follows_an_exec_sibling_of_a_lone_script(tmp_path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    (folder / "run.py").write_text('exec(open("impl.py").read())\n')
    shutil.copy(FIX / "clean_baseline.py", folder / "impl.py")
    assert classify_paths([folder / "run.py"])[0].verdict == "clean"
    shutil.copy(FIX / "ttt_swapped_order.py", folder / "impl.py")
    assert classify_paths([folder / "run.py"], use_cache=False)[0].verdict == "flag"
    assert classify_paths([folder / "run.py"])[0].verdict == "flag"


# --- no torch ---------------------------------------------------------------------------


def test_classify_never_imports_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from auditor.cli import app
        assert "torch" not in sys.modules, "importing auditor.cli imported torch"
        paths = [{str(FIX / "ttt_pre_eval.py")!r}, {str(FIX / "packed_exec_sibling")!r},
                 {str(FIX / "record_ngram_enabled")!r}]
        result = CliRunner().invoke(app, ["classify", "--no-cache", "-f", "json", *paths])
        assert result.exit_code == 1, result.output
        assert "torch" not in sys.modules, "auditor classify imported torch"
        print("ok")
    """)
    env = {"AUDITOR_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_stub_whose_payload_cannot_be_read_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("# record\n")
    (tmp_path / "train_gpt.py").write_text('exec(open("impl.py").read())\n')
    result = classify_paths([tmp_path], use_cache=False)[0]
    assert result.verdict == "error"
    assert "cannot be unpacked" in result.error


def test_sibling_script_copying_val_into_train_is_flagged():
    result = classify_paths([FIX / "record_val_copied"], use_cache=False)[0]
    hits = [f for f in result.violations if f.rule == "val-data-in-training"]
    assert result.verdict == "flag" and hits
    assert "prepare_data.py" in hits[0].message and "copy2" in hits[0].evidence


def test_generic_copy_helper_in_a_sibling_script_is_not_a_leak(tmp_path):
    """A download helper called once for a val shard and once for a train shard copies
    each to its own place (a merged record ships one like it)."""
    shutil.copytree(FIX / "record_val_copied", tmp_path / "record")
    (tmp_path / "record" / "prepare_data.py").write_text(
        "import shutil\n\n\n"
        "def get(name):\n"
        "    shutil.copy2('/cache/' + name, './data/' + name)\n\n\n"
        "get('fineweb_val_000000.bin')\n"
        "get('fineweb_train_000000.bin')\n"
    )
    assert classify_paths([tmp_path / "record"], use_cache=False)[0].verdict == "clean"


DORMANT_TTT = '''import os
import torch

TTT_ENABLED = bool(int(os.environ.get("TTT_ENABLED", "0")))


def ttt_adapt(model, optimizer, val_tokens, epochs=3):
    for epoch in range(epochs):
        loss = model(val_tokens[:-1], val_tokens[1:])
        loss.backward()
        optimizer.step()


def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    model = build_model()
    if TTT_ENABLED:
        ttt_adapt(model, make_optimizer(model), val_tokens)
    print(eval_val(model, val_tokens))


if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("readme,verdict", [
    ("# 10L + TTT\n", "flag"),  # nothing says how it ran; the submission says TTT: it ran
    ("# 10L + TTT\n```bash\nTTT_ENABLED=0 torchrun --nproc_per_node=8 train_gpt.py\n```\n", "clean"),
])
def test_a_described_feature_counts_only_without_a_run_configuration(tmp_path, readme, verdict):
    (tmp_path / "train_gpt.py").write_text(DORMANT_TTT)
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "submission.json").write_text(json.dumps({"name": "10L + AdamW TTT", "val_bpb": 1.11}))
    result = classify_paths([tmp_path], use_cache=False)[0]
    assert result.verdict == verdict
    assert {f.rule for f in result.findings} == {"ttt-train-before-score"}


def test_a_launcher_command_passes_its_env_list_into_the_run_configuration():
    """`modal run run_modal.py --extra-env "A=1;B=2"` (PR 64) sets the run's environment:
    the launcher is a .py file other than the script, and the list sits in one quoted string."""
    from auditor.submission.run_config import readme_env

    readme = ("## Repro\n\n```bash\nmodal run records/x/run_modal.py --mode standard \\\n"
              '  --extra-env "FP16_PATTERNS=;TTT_ENABLED=1;TTT_EPOCHS=25;TTT_FREEZE_BLOCKS=0"\n```\n')
    assert readme_env(readme) == {"TTT_ENABLED": "1", "TTT_EPOCHS": "25", "TTT_FREEZE_BLOCKS": "0"}


# min-nll-selection's illegal example with one minified line (`...)for`, which libcst, the
# rules' first parser, rejected)
_PICK_BY_TRUE_TOKEN = _PICK.replace("{choice}", "other < previous:").replace(
    "    for i in range(len(seq) - 1):\n",
    "    sizes = [(0 if c == 0 else c)for c in counts]\n    for i in range(len(seq) - 1):\n", 1)


def test_a_minified_function_is_judged(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(_PICK_BY_TRUE_TOKEN)
    result = classify_path(script)
    assert [f.rule for f in result.violations] == ["min-nll-selection"]
    assert result.not_analysed == []


def test_native_code_is_said_to_be_not_analysed(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text(textwrap.dedent('''
        import ctypes
        import numpy as np

        def score(tokens):
            lib = ctypes.CDLL("./scorer.so")
            return lib.score(tokens.ctypes.data, len(tokens))

        if __name__ == "__main__":
            print(f"val_bpb:{score(np.fromfile('fineweb_val_000000.bin', dtype=np.uint16)):.4f}")
    '''))
    result = classify_path(script)
    assert result.verdict == "clean"
    assert result.not_analysed == ["train_gpt.py:6: native code loaded at run time (`ctypes.CDLL` in `score`) "
                                   "is not analysed"]
    assert type(result).from_json(json.loads(json.dumps(result.to_json()))) == result
    shown = CliRunner().invoke(app, ["classify", str(script)]).output
    assert "not analysed (the verdict does not cover it):\n  train_gpt.py:6: native code" in shown
