"""The analysis judges what code does: data by the files it comes from, targets by position,
the score by what reaches the report. Renaming, moving a loop body into a helper or
rewriting a `for` as a `while` must not change a verdict (issue 7)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from auditor.analysis import analyze_text
from auditor.analysis.flow import TARGET, TRAIN, VAL, _shifted_subscripts
from auditor.classify import classify_path
from auditor.classify.analyze import run_rules
from auditor.rules import all_rules
from bench._transforms import extract_loop_bodies, for_to_while, rename

TRANSFORMS = {"rename": rename, "extract": extract_loop_bodies, "while": for_to_while}
EXAMPLES = [(rule.id, kind, i, snippet) for rule in all_rules()
            for kind, snippets in (("invalid", rule.INVALID), ("valid", rule.VALID))
            for i, snippet in enumerate(snippets)]


def violations(text: str) -> set[str]:
    return {f.check for f in run_rules(analyze_text(text)) if f.severity == "violation"}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_rule_examples_keep_their_verdict_under_transforms(transform):
    changed, rewritten = [], 0
    for rule_id, kind, number, snippet in EXAMPLES:
        twin = TRANSFORMS[transform]({"train_gpt.py": snippet})["train_gpt.py"]
        rewritten += twin != snippet  # examples without a loop have nothing to extract or rewrite
        if violations(twin) != violations(snippet):
            changed.append((rule_id, kind, number, violations(snippet), violations(twin)))
    assert rewritten >= len(EXAMPLES) // 2
    assert changed == []


def _targets(code: str) -> set[str]:
    return _shifted_subscripts(list(ast.walk(ast.parse(textwrap.dedent(code)))))


def test_the_target_is_one_position_ahead_of_the_input():
    assert _targets("a = buf[s:e]\nb = buf[s + 1:e + 1]\n") == {"buf[s + 1:e + 1]"}
    assert _targets("a = w[:-1]\nb = w[1:]\n") == {"w[1:]"}
    assert _targets("c = t[i - 2] ^ t[i - 1]\nn = t[i]\n") == {"t[i]"}
    assert _targets("c = t[max(0, p - 2):p + 1]\nn = t[p + 1]\n") == {"t[p + 1]"}


def test_reads_that_are_not_shifted_are_not_targets():
    assert _targets("a = buf[s:e]\nb = other[s + 1:e + 1]\n") == set()
    assert _targets("a = buf[s:e]\nb = buf[s:e]\n") == set()
    assert _targets("a = buf[s:e:2]\nb = buf[s + 1:e + 1:2]\n") == set()


def test_data_comes_from_the_files_read_not_from_names():
    analysis = analyze_text(textwrap.dedent('''
        import numpy as np

        class C1:
            p1 = "./data/fineweb_val_*.bin"
            p2 = "./data/fineweb_train_*.bin"

        def f1(o):
            return np.fromfile(o.p1, dtype=np.uint16)

        def f2(o):
            return np.fromfile(o.p2, dtype=np.uint16)

        def main():
            o = C1()
            v1 = f1(o)
            v2 = f2(o)
            print(v1, v2)
    '''))
    main = next(f for f in analysis.index.functions if f.name == "main")
    assert analysis.taint.of(main, VAL) == {"v1"}
    assert analysis.taint.of(main, TRAIN) == {"v2"}


def test_a_result_carries_only_what_the_callee_returns():
    analysis = analyze_text(textwrap.dedent('''
        import numpy as np

        def fit(m, data):
            for x in data:
                m.step(x)
            return m

        def main():
            m = fit(make(), np.fromfile("fineweb_train_000.bin"))
            d = np.fromfile("fineweb_val_000.bin")
            print(m, d)
    '''))
    main = next(f for f in analysis.index.functions if f.name == "main")
    assert "m" not in analysis.taint.of(main, TRAIN)
    assert analysis.taint.of(main, VAL) == {"d"}


def test_a_loss_target_argument_is_a_target_in_the_caller():
    analysis = analyze_text(textwrap.dedent('''
        import torch.nn.functional as F

        def f1(net, a, b):
            return F.cross_entropy(net(a), b)

        def main(net, toks):
            q, r = toks.next_batch()
            return f1(net, q, r)
    '''))
    main = next(f for f in analysis.index.functions if f.name == "main")
    assert analysis.taint.of(main, TARGET) >= {"r"}
    assert "q" not in analysis.taint.of(main, TARGET)


def test_the_score_is_what_reaches_the_report_even_through_a_helper():
    analysis = analyze_text(textwrap.dedent('''
        def tally(net, seq):
            t = 0.0
            for s in range(0, len(seq), 64):
                t += net.nll(seq[s:s + 65])
            return t

        def show(a, n):
            print(f"val_loss:{a / n:.4f} val_bpb:{a:.4f}")

        def main(net, seq):
            a = tally(net, seq)
            junk = 3
            show(a, len(seq))
    '''))
    by_name = {f.name: f for f in analysis.index.functions}
    assert "t" in analysis.score.of(by_name["tally"])
    assert "a" in analysis.score.of(by_name["main"])
    assert "junk" not in analysis.score.of(by_name["main"])


def test_a_lambda_calls_from_its_function():
    analysis = analyze_text(textwrap.dedent('''
        import numpy as np

        def evaluate(seq):
            return seq.sum()

        def main():
            d = np.fromfile("fineweb_val_000.bin")
            run(lambda: evaluate(d))
    '''))
    evaluate = next(f for f in analysis.index.functions if f.name == "evaluate")
    assert "seq" in analysis.taint.of(evaluate, VAL)


def _record(tmp_path, readme: str):
    (tmp_path / "train_gpt.py").write_text(textwrap.dedent('''
        import glob
        import os
        import numpy as np

        STREAM = os.environ.get("TRAIN_FILES", "./data/fineweb_train_*.bin")

        def main():
            for path in sorted(glob.glob(STREAM)):
                np.fromfile(path, dtype=np.uint16)

        if __name__ == "__main__":
            main()
    '''))
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_a_readme_step_that_links_val_shards_to_train_names_is_val_data_in_training(tmp_path):
    folder = _record(tmp_path, "```bash\nln -s data/fineweb_val_000000.bin data/fineweb_train_000099.bin\n"
                               "torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    result = classify_path(folder)
    assert [f.check for f in result.findings if f.severity == "violation"] == ["val-data-in-training"]


def test_a_run_command_pointing_the_training_variable_at_val_shards_is_val_data_in_training(tmp_path):
    folder = _record(tmp_path, "```bash\nTRAIN_FILES=./data/fineweb_val_*.bin torchrun --nproc_per_node=8 "
                               "train_gpt.py\n```\n")
    result = classify_path(folder)
    assert [f.check for f in result.findings if f.severity == "violation"] == ["val-data-in-training"]


def test_the_same_record_without_those_steps_is_clean(tmp_path):
    folder = _record(tmp_path, "```bash\ntorchrun --nproc_per_node=8 train_gpt.py\n```\n")
    assert classify_path(folder).verdict == "clean"


def test_a_scope_holds_the_functions_own_code_with_lines_and_text():
    analysis = analyze_text(textwrap.dedent('''
        def score(tokens, table):
            label = "péage →"; total = table[tokens[1:]].sum()
            helper = lambda t: t + 1
            def inner(x):
                return x
            for i in range(3):
                total += (tokens[i]
                          * 2)
            return total
    '''))
    function = next(f for f in analysis.index.functions if f.name == "score")
    scope = analysis.scope(function)
    nodes = scope.walk()
    # a lambda's body and a nested def are code of their own
    assert not any(isinstance(n, ast.BinOp) and isinstance(n.right, ast.Constant) and n.right.value == 1 for n in nodes)
    assert not any(isinstance(n, ast.Return) and isinstance(n.value, ast.Name) and n.value.id == "x" for n in nodes)
    lookup = next(n for n in nodes if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Subscript))
    # text as written, after non-ASCII characters on the same line (ast counts UTF-8 bytes)
    assert scope.code(lookup) == "table[tokens[1:]]"
    assert scope.code(lookup.slice) == "tokens[1:]"
    assert scope.lines(lookup) == (3, 3)
    product = next(n for n in nodes if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult))
    assert scope.code(product) == "tokens[i]\n                  * 2"
    assert scope.lines(product) == (8, 9)  # the statement that holds it
    assert isinstance(scope.parent(product), ast.AugAssign)
