"""Closures in the flow analysis: a loop body moved into a nested helper still does its
work for the call of its function (the extract transform of bench/_transforms.py)."""

from __future__ import annotations

import ast

from auditor.analysis import analyze_text
from auditor.analysis.flow import VAL

TEXT = '''
import numpy as np

def keys(seq, n):
    acc = np.zeros(n, dtype=np.int64)
    def fold(acc):
        acc ^= seq[k:k + n].astype(np.int64) * 31
        return acc
    for k in range(3):
        acc = fold(acc)
    return acc

def through(x, blocks):
    def step(x):
        return blocks[i](x)
    for i in range(len(blocks)):
        x = step(x)
    return x

if __name__ == "__main__":
    tokens = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(keys(tokens, 8), through(tokens, []))
'''


def _function(analysis, name):
    return next(f for f in analysis.index.functions if f.name == name)


def test_a_closure_returns_what_its_function_was_given():
    analysis = analyze_text(TEXT)
    keys = _function(analysis, "keys")
    returned = next(n for n in ast.walk(keys.node) if isinstance(n, ast.Return)).value
    assert VAL in analysis.kinds(keys, returned)


def test_a_closure_does_not_make_its_function_a_source():
    """`through` returns validation data only because a caller passed it some: its own
    summary (what any call of it returns, whatever the arguments) stays empty."""
    analysis = analyze_text(TEXT)
    assert VAL not in analysis.taint.returns.get("through", set())
    assert VAL not in analysis.taint.returns.get("keys", set())


STATS = '''
import numpy as np

def main():
    stats = {}
    train = np.fromfile("fineweb_train_000000.bin", dtype=np.uint16)
    for step in range(3):
        parts = {"a": train[step:step + 4]}
        def keep():
            stats[name] = part
        for name, part in parts.items():
            keep()
    parts = {"a": np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)}
    print(f"val_bpb:{float(parts['a'].mean()):.4f}", len(stats))

if __name__ == "__main__":
    main()
'''


def test_a_closure_reads_its_free_names_where_it_is_called():
    """`keep()` runs inside the training loop: `part` is a training slice there, whatever
    `parts` holds later in main; the dict it fills holds no validation data."""
    analysis = analyze_text(STATS)
    main = _function(analysis, "main")
    last = main.node.body[-1].lineno
    assert VAL not in analysis.kinds(main, ast.Name("stats", ast.Load()), line=last)
    assert VAL in analysis.kinds(main, ast.Name("parts", ast.Load()), line=last)


EPOCHS = '''
import math
import torch

def eval_with_epochs(model, optimizer, val_tokens, epochs=3, chunk=64):
    loss_sum = 0.0
    for epoch in range(epochs):
        lr = 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        def set_lr():
            for group in optimizer.param_groups:
                group["lr"] = lr
        set_lr()
        loss_sum = 0.0
        for start in range(0, val_tokens.numel() - 1, chunk):
            x = val_tokens[start:start + chunk]
            y = val_tokens[start + 1:start + chunk + 1]
            with torch.no_grad():
                loss_sum += model(x, y).item()
            loss = model(x, y)
            loss.backward()
            optimizer.step()
    return loss_sum

def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    print(f"val_loss:{eval_with_epochs(build_model(), make_optimizer(), val_tokens):.4f}")

if __name__ == "__main__":
    main()
'''


def test_a_closure_that_reads_the_epoch_for_its_learning_rate_still_repeats_the_data():
    """The schedule helper reads `lr` (computed from the epoch) only to set a learning rate:
    the epoch selects no data, so the loop scores the same tokens again after training."""
    from auditor.classify import run_rules

    rules = {f.rule for f in run_rules(analyze_text(EPOCHS)) if f.severity == "violation"}
    assert rules == {"ttt-train-before-score"}


DOCS = '''
import numpy as np

def split_docs(tokens):
    starts = np.flatnonzero(tokens == 1)
    docs = []
    def add(i):
        docs.append((int(starts[i]), int(starts[i + 1]) - int(starts[i])))
    for i in range(len(starts) - 1):
        add(i)
    return docs

def main():
    tokens = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    pieces = split_docs(tokens)
    print(f"val_loss:{len(pieces):.4f}")
'''


def test_what_a_closure_appends_to_its_function_list_is_returned_to_the_caller():
    analysis = analyze_text(DOCS)
    main = _function(analysis, "main")
    assert VAL in analysis.kinds(main, ast.Name("pieces", ast.Load()), line=main.node.body[-1].lineno)
