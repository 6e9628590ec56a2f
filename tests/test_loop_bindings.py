"""Loop variables in the flow analysis: `zip` and `enumerate` bind each variable to its own
sequence, and a comprehension's variable does not leak into a later loop's of that name."""

from __future__ import annotations

import ast

from auditor.analysis import analyze_text
from auditor.analysis.flow import TRAIN, VAL

TEXT = '''
import numpy as np

def main():
    train = np.fromfile("fineweb_train_000000.bin", dtype=np.uint16)
    val = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    for a, b in zip(train, val):
        pass
    for i, c in enumerate(val):
        pass
    names = [k for k in val]
    for k in range(3):
        pass
    print(a, b, i, c, k, names)
'''


def _kinds(analysis, name: str) -> set[str]:
    main = next(f for f in analysis.index.functions if f.name == "main")
    return analysis.kinds(main, ast.Name(name, ast.Load()), line=main.node.body[-1].lineno)


def test_zip_and_enumerate_bind_each_variable_to_its_own_sequence():
    analysis = analyze_text(TEXT)
    assert _kinds(analysis, "a") == {TRAIN}
    assert _kinds(analysis, "b") == {VAL}
    assert _kinds(analysis, "c") == {VAL}
    assert _kinds(analysis, "i") == set()


def test_a_comprehension_variable_does_not_reach_a_later_loop_of_that_name():
    analysis = analyze_text(TEXT)
    assert _kinds(analysis, "k") == set()
    assert _kinds(analysis, "names") == {VAL}
