"""ttt-train-before-score: test-time training on validation tokens before they are scored.

Ruling: condition 3 of Issue #1017 (score before update). Pre-eval TTT that runs epochs of
AdamW/SGD over `val_tokens` before the final evaluation was closed in 152, 317, 442, 462,
486, 555, 581, 595, 771 and in the Issue #677 cluster (1376, 1485-1489, 1517); per-document
multi-epoch adaptation that reports the loss after adapting in 417, 442, 462, 486, 518.
Score-first TTT (each chunk scored under no_grad, then trained on) is legal (549).
"""

from __future__ import annotations

from auditor.analysis.adaptation import adaptations, trains_on_mixed_data_only
from auditor.rules.base import Hit, Rule, where


class TTTTrainBeforeScore(Rule):
    id = "ttt-train-before-score"

    def check(self, analysis):
        for adaptation in adaptations(analysis):
            if adaptation.is_slot or adaptation.order == "score-first":
                continue
            if adaptation.order == "no-score" and adaptation.local_only:
                continue  # a throwaway module (compile warm-up, probe) that nothing scores with
            if adaptation.order == "no-score" and trains_on_mixed_data_only(analysis, adaptation.function):
                continue  # training on a stream with validation shards mixed in: val-data-in-training
            update = adaptation.update
            if adaptation.order == "no-score":
                message = (f"{where(adaptation.function)} takes gradient steps on validation tokens and scores "
                           "none of them first: a TTT pass over the validation set before it is evaluated")
            elif adaptation.order == "epoch-rescore":
                scored = f"score at line {adaptation.score.line}" if adaptation.score else \
                    f"each pass scores them in `{adaptation.via_call}` before training"
                message = (f"{where(adaptation.function)} loops over epochs/passes of the same validation tokens, "
                           f"training on them and scoring them again ({scored}): "
                           "the reported loss comes after adapting to the tokens")
            else:
                message = (f"{where(adaptation.function)} trains on validation tokens (line {update.line}) before "
                           f"the score of those tokens is taken (line {adaptation.score.line})")
            if adaptation.via_call and adaptation.order != "epoch-rescore":
                message += f"; the training happens in `{adaptation.via_call}`"
            start, end = adaptation.scope.lines(update.node)
            yield Hit(adaptation.function, start, end, message + " (Issue #1017 condition 3; PRs 442, 1376)")

    VALID = [
        '''
import torch

def eval_val_ttt(model, optimizer, val_tokens, chunk=64):
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
    print(eval_val_ttt(build_model(), make_optimizer(), val_tokens))

if __name__ == "__main__":
    main()
''',
    ]
    INVALID = [
        '''
import torch

def ttt_adapt(model, optimizer, val_tokens, epochs=3):
    for epoch in range(epochs):
        for start in range(0, val_tokens.numel() - 1, 1024):
            x = val_tokens[start:start + 1024]
            y = val_tokens[start + 1:start + 1025]
            loss = model(x, y)
            loss.backward()
            optimizer.step()

def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    model = build_model()
    ttt_adapt(model, make_optimizer(), val_tokens)
    print(eval_val(model, val_tokens))

if __name__ == "__main__":
    main()
''',
        '''
import torch

def eval_val_ttt(model, optimizer, val_tokens, chunk=64):
    loss_sum = 0.0
    for start in range(0, val_tokens.numel() - 1, chunk):
        x = val_tokens[start:start + chunk]
        y = val_tokens[start + 1:start + chunk + 1]
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_sum += model(x, y).item()
    return loss_sum

def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    print(eval_val_ttt(build_model(), make_optimizer(), val_tokens))

if __name__ == "__main__":
    main()
''',
    ]


RULE = TTTTrainBeforeScore()
