"""ttt-score-first: legal score-first test-time training, reported as info.

Ruling: PR 549 (merged) and the records after 1413: for each chunk in order, score it
under torch.no_grad()/inference_mode(), add its loss to the metric, then train on it; the
last chunk needs no training. Shown so a reviewer sees that the TTT found was checked.
"""

from __future__ import annotations

from auditor.analysis.adaptation import adaptations
from auditor.rules.base import Hit, Rule, where
from auditor.rules.ttt_train_before_score import TTTTrainBeforeScore


class TTTScoreFirst(Rule):
    id = "ttt-score-first"

    def check(self, analysis):
        for adaptation in adaptations(analysis):
            if adaptation.is_slot or adaptation.order != "score-first" or adaptation.score is None:
                continue
            update = adaptation.update
            score = adaptation.score
            guard = " under no_grad/inference_mode" if score.no_grad else ""
            start, end = adaptation.scope.lines(update.node)
            function = adaptation.function
            if function.lineno <= score.line <= function.end_lineno:
                how = f"tokens are scored (line {score.line}{guard}) before the gradient step on them (line {update.line})"
            else:  # a training helper whose callers score first
                how = (f"the gradient step (line {update.line}) runs from a loop that scores the tokens first "
                       f"(line {score.line}{guard})")
            yield Hit(function, start, end, f"score-first TTT in {where(function)}: {how}; legal (PR 549)",
                      severity="info")

    # Fixit's convention: INVALID snippets produce a report (here an info), VALID ones do not.
    INVALID = TTTTrainBeforeScore.VALID
    VALID = TTTTrainBeforeScore.INVALID


RULE = TTTScoreFirst()
