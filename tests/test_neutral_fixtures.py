"""`auditor classify` on submissions written with neutral names (fixtures/classify/neutral/).

Each case folder is a small synthetic submission whose identifiers carry no meaning (no
`val`, `target`, `loss`, `ngram`, `ttt`, `slot`, `bpb`...), with its logic split across
helper functions and, in some cases, a sibling module that train_gpt.py imports. Only the
strings a real script must contain keep their spelling: the shard globs
`fineweb_{train,val}_*.bin`, env var names, and the `val_loss:... val_bpb:...` log line.
Legal and illegal twins of each rule family; the verdict must come from what the code does
(issue 7). The README.md of each case says what it does.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from auditor.classify import classify_path

NEUTRAL = Path(__file__).resolve().parents[1] / "fixtures" / "classify" / "neutral"

TTT = "ttt-train-before-score"

# case folder -> (verdict, violation rule ids); the rule set is exact.
EXPECTED = {
    # adaptation on validation tokens
    "adapt_after": ("clean", set()),
    "adapt_before": ("flag", {TTT}),
    "adapt_swapped": ("flag", {TTT}),
    # minimum over passes
    "lowest_of_passes": ("flag", {"min-nll-selection", TTT}),
    "one_pass": ("clean", set()),
    # a second pass after adapting
    "rescore_twice": ("flag", {"two-pass-rescore"}),
    "score_once": ("clean", set()),
    # count tables
    "keyed_on_context": ("clean", set()),
    "keyed_on_next": ("flag", {"ngram-target-in-key", "ngram-unnormalized"}),
    "only_next_mixed": ("flag", {"ngram-unnormalized"}),
    # per-window deltas
    "delta_on_scored": ("flag", {"slot-scored-region"}),
    "delta_on_prefix": ("clean", set()),
    # validation shards in the training stream
    "shards_mixed": ("flag", {"val-data-in-training"}),
    "shards_apart": ("clean", set()),
    # quantization statistics
    "moments_on_heldout": ("flag", {"val-data-in-training"}),
    "moments_after_clock": ("flag", {"train-data-at-eval"}),
    "moments_in_budget": ("clean", set()),
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_neutral_case(case):
    verdict, violations = EXPECTED[case]
    result = classify_path(NEUTRAL / case)
    assert result.error is None, result.error
    got = {f.rule for f in result.findings if f.severity == "violation"}
    assert (result.verdict, got) == (verdict, violations), [(f.rule, f.severity, f.line, f.message[:160])
                                                             for f in result.findings]


def test_every_case_folder_has_an_expectation():
    folders = {p.name for p in NEUTRAL.iterdir() if p.is_dir()}
    assert folders == set(EXPECTED)


# Words the old rules keyed on; none may appear in an identifier of these fixtures.
MEANINGFUL = re.compile(r"val|target|tgt|label|loss|nll|bpb|ngram|ttt|slot|epoch|score|hess|gptq|calib", re.I)
LIBRARY_NAMES = {"values"}  # dict.values()


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fixture_identifiers_are_neutral(case):
    for path in sorted((NEUTRAL / case).glob("*.py")):
        text = path.read_text()
        names = {t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NAME}
        meaningful = sorted(n for n in names - LIBRARY_NAMES if MEANINGFUL.search(n) or n == "y")
        assert meaningful == [], (path.name, meaningful)
    main = (NEUTRAL / case / "train_gpt.py").read_text()
    assert 40 <= len(main.splitlines()) <= 140
    assert "val_loss:" in main
    assert "val_bpb:" in main
    assert "fineweb_val_" in main + "".join(p.read_text() for p in (NEUTRAL / case).glob("*.py"))


RUN_EVERY_CASE = """
import contextlib, io, json, os, runpy, sys
import numpy as np
data = sys.argv[1]
rng = np.random.default_rng(0)
for name, n in (("fineweb_train_000000.bin", 4000), ("fineweb_val_000000.bin", 1500)):
    head = np.zeros(256, dtype="<i4")
    head[:3] = (20240520, 1, n)
    with open(os.path.join(data, name), "wb") as f:
        f.write(head.tobytes() + rng.integers(0, 1024, n).astype("<u2").tobytes())
np.save(os.path.join(data, "piece_bytes.npy"), rng.integers(1, 5, 1024).astype(np.float64))
out = {}
for folder in sys.argv[2:]:
    for module in ("kit", "sources"):
        sys.modules.pop(module, None)
    sys.path.insert(0, folder)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        runpy.run_path(os.path.join(folder, "train_gpt.py"), run_name="__main__")
    sys.path.remove(folder)
    out[os.path.basename(folder)] = buffer.getvalue()
print(json.dumps(out))
"""


def test_every_case_runs_on_tiny_shards(tmp_path):
    """The fixtures are real programs: each trains and reports on a few thousand synthetic
    tokens (one interpreter for all, so torch is imported once)."""
    env = dict(os.environ, DATA_PATH=str(tmp_path), OMP_NUM_THREADS="1", MAX_WALLCLOCK_SECONDS="0.2", GPTQ_RESERVE_SECONDS="0.1",
               MODEL_DIM="16", NUM_LAYERS="1", TRAIN_SEQ_LEN="32")
    cases = [str(NEUTRAL / case) for case in sorted(EXPECTED)]
    out = subprocess.run([sys.executable, "-c", RUN_EVERY_CASE, str(tmp_path), *cases],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout.splitlines()[-1])
    assert sorted(printed) == sorted(EXPECTED)
    for case, text in printed.items():
        assert re.search(r"val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4}", text), (case, text)
