"""slot-scored-region: SLOT that optimizes a delta on the targets it then scores.

Ruling: condition 3 of Issue #1017. SLOT (a per-batch delta on hidden states or logits
optimized at eval time) whose loss covers the very positions it then scores trains on
tokens before scoring them (contested SLOT PRs await a ruling in Issue #1336; 1313 and
1376 optimize on masked scored positions). A single delta shared by a batch of
overlapping stride windows is fit on targets other windows score, so "context-only"
SLOT of that shape leaks as well. Optimizing only on already-scored tokens is legal.
"""

from __future__ import annotations

from auditor.analysis.adaptation import adaptations
from auditor.rules.base import Hit, Rule, where


class SlotScoredRegion(Rule):
    id = "slot-scored-region"

    def check(self, analysis):
        for adaptation in adaptations(analysis):
            if not adaptation.is_slot or adaptation.order == "score-first":
                continue
            deltas = ", ".join(sorted(adaptation.delta_names))
            score = f" and scores them at line {adaptation.score.line}" if adaptation.score else ""
            start, end = adaptation.scope.lines(adaptation.update.node)
            yield Hit(adaptation.function, start, end,
                      f"SLOT in {where(adaptation.function)}: optimizes `{deltas}` on validation targets{score} "
                      "after the optimization, so tokens are trained on before they are scored "
                      "(Issue #1017 condition 3; SLOT rulings pending in Issue #1336)")

    VALID = [
        '''
import torch

def eval_val_slot(model, val_tokens, stride=64):
    loss_sum = 0.0
    delta = torch.zeros(1, 1, 512, requires_grad=True)
    opt = torch.optim.AdamW([delta], lr=0.01)
    for start in range(0, val_tokens.numel() - 1, stride):
        x = val_tokens[start:start + stride]
        y = val_tokens[start + 1:start + stride + 1]
        with torch.no_grad():
            loss_sum += model.score(x, y, delta).item()
        loss = model.score(x, y, delta)
        loss.backward()
        opt.step()
    return loss_sum

if __name__ == "__main__":
    print(eval_val_slot(build_model(), load_validation_tokens("fineweb_val_*.bin")))
''',
    ]
    INVALID = [
        '''
import torch

def eval_val_slot(model, val_tokens, stride=64, steps=8):
    loss_sum = 0.0
    for start in range(0, val_tokens.numel() - 1, stride):
        x = val_tokens[start:start + stride]
        y = val_tokens[start + 1:start + stride + 1]
        delta = torch.zeros(1, 1, 512, requires_grad=True)
        opt = torch.optim.AdamW([delta], lr=0.01)
        for _ in range(steps):
            opt.zero_grad()
            loss = model.score(x, y, delta)
            loss.backward()
            opt.step()
        with torch.no_grad():
            loss_sum += model.score(x, y, delta).item()
    return loss_sum

if __name__ == "__main__":
    print(eval_val_slot(build_model(), load_validation_tokens("fineweb_val_*.bin")))
''',
    ]


RULE = SlotScoredRegion()
