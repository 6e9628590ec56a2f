"""What a gather reads: the target when it picks one entry per position, positions when it
picks many per row (a chunk index in a model layer, PR H-Net's dechunking EMA)."""

from __future__ import annotations

from auditor.analysis import analyze_text
from auditor.classify import run_rules

LAYER = '''
import torch

class Dechunk(torch.nn.Module):
    def forward(self, hidden, prob, index):
        picked = torch.gather(prob, dim=1, index=index)
        out = torch.zeros_like(hidden)
        prev = hidden[:, 0]
        for t in range(1, hidden.shape[1]):
            pt = picked[:, t].unsqueeze(-1)
            prev = pt * hidden[:, t] + (1.0 - pt) * prev
            out[:, t] = prev
        return out

def evaluate(model, tokens):
    x, y = tokens[:-1], tokens[1:]
    logp = torch.log_softmax(model(x), dim=-1)
    return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean()

if __name__ == "__main__":
    tokens = load_validation_tokens("fineweb_val_*.bin")
    print(f"val_loss:{evaluate(build_model(), tokens):.4f}")
'''


def test_a_gather_of_many_entries_per_row_reads_no_target():
    findings = [f for f in run_rules(analyze_text(LAYER)) if f.severity == "violation"]
    assert findings == []


def test_a_gather_of_one_entry_per_position_reads_the_target():
    analysis = analyze_text(LAYER)
    evaluate = next(f for f in analysis.index.functions if f.name == "evaluate")
    assert "y" in analysis.taint.target_names.get(evaluate, set())
    layer = next(f for f in analysis.index.functions if f.qualname == "Dechunk.forward")
    assert "index" not in analysis.taint.target_names.get(layer, set())


def test_a_builtin_min_or_max_carries_its_arguments_data():
    """`max(count, 1)` of the target's count is still the target's count (a floor, not a size)."""
    analysis = analyze_text('''
import math
import numpy as np

def cache_nll(counts, seq):
    total = 0.0
    for i in range(len(seq) - 1):
        ctx, nxt = int(seq[i]), int(seq[i + 1])
        floored = max(counts.get(ctx, {}).get(nxt, 0), 1)
        total -= math.log(floored / 1024)
    return total

if __name__ == "__main__":
    print(f"val_bpb:{cache_nll({}, np.fromfile('fineweb_val_000000.bin', dtype=np.uint16)):.4f}")
''')
    function = next(f for f in analysis.index.functions if f.name == "cache_nll")
    assert "floored" in analysis.taint.of(function, "target")
