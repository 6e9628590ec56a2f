"""two-pass-rescore: scoring validation tokens again after adapting to them.

Ruling: 846, 853, 870 (a second n-gram pass rescoring tokens with a cache completed on the
whole validation set), 991 (a score-first TTT pass over all tokens, then a re-score of
the whole set with the adapted weights, reporting the second score). Issue #1017
condition 4: each token is scored once; no rescoring after adaptation.
"""

from __future__ import annotations

import ast
import re

import libcst as cst

from auditor.analysis.config import Evaluator
from auditor.analysis.flow import VAL
from auditor.analysis.index import own_nodes
from auditor.rules._adaptation import adaptations
from auditor.rules._patterns import full_name, leaves
from auditor.rules.base import Hit, Rule, where

RESCORE = re.compile(r"(?i)(rescore|two_pass|twopass|second_pass|pass_?2|full_rescore)")
SCORER = re.compile(r"(?i)(eval|score)")


_TTT_EVAL_PAIR = '''
def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    model = build_model()
    print({first}(model, val_tokens))
    print({second}(model, val_tokens))

def eval_val(model, val_tokens):
    return model.nll(val_tokens)

def eval_val_ttt(model, val_tokens):
    loss_sum = 0.0
    for chunk in val_tokens.split(64):
        loss_sum += model.nll(chunk).item()
        model.nll(chunk).backward()
    return loss_sum

if __name__ == "__main__":
    main()
'''


class TwoPassRescore(Rule):
    id = "two-pass-rescore"

    def check(self, analysis):
        yield from self._named_second_passes(analysis)
        yield from self._rescore_after_training(analysis)

    def _named_second_passes(self, analysis):
        """A rescoring function, or a branch under a two-pass flag that holds, on val data."""
        for function in analysis.index.functions:
            if RESCORE.search(function.name) and analysis.taint.of(function, VAL):
                yield Hit(function, function.lineno, function.lineno,
                          f"{where(function)} rescores validation tokens in a second pass, after the cache or "
                          "model was built from the whole set (rulings on 846, 870; Issue #1017 condition 4)")
        for function in analysis.index.functions:
            if not analysis.taint.of(function, VAL):
                continue
            for node in own_nodes(function):
                if not isinstance(node, ast.If) or isinstance(node.test, ast.UnaryOp):
                    continue  # `if not two_pass:` is the single-pass branch
                if RESCORE.search(ast.unparse(node.test)) and Evaluator(analysis.config).truth(node.test) is not False:
                    yield Hit(function, node.lineno, node.lineno,
                              f"second-pass rescoring in {where(function)} under `{ast.unparse(node.test)[:60]}` "
                              "(rulings on 846, 870; Issue #1017 condition 4)")
                    break  # one finding per function is enough to point at the second pass

    def _rescore_after_training(self, analysis):
        """Caller order: a call that trains on val data, then a call that scores val data with the same model."""
        # Only after a pass that scored the tokens: a pre-eval TTT followed by the eval is
        # ttt-train-before-score, not a second pass.
        trainers = {a.function.name: a for a in adaptations(analysis)
                    if a.order == "score-first" and a.adapts_given_model}
        if not trainers:
            return
        scorers = {f.name for f in analysis.index.functions
                   if SCORER.search(f.name) and analysis.taint.of(f, VAL) and f.name not in trainers}
        for function in analysis.index.functions:
            text = analysis.text_of(function)
            if not any(f"{name}(" in text for name in trainers):
                continue
            scope = analysis.scope(function)
            trained_models: dict[str, int] = {}
            for node in scope.walk():
                if not isinstance(node, cst.Call):
                    continue
                name = full_name(node.func).rsplit(".", 1)[-1]
                if name == "load_state_dict" and isinstance(node.func, cst.Attribute):
                    # weights restored (e.g. the dequantized state) after TTT: a fresh model
                    trained_models.pop(full_name(node.func.value), None)
                    continue
                args = [a.value for a in node.args]
                if not any(VAL in analysis.kinds(function, a, scope) for a in args):
                    continue
                models = {full_name(a) for a in args if re.search(r"(?i)model", full_name(a))}
                line = scope.lines(node)[0]
                if name in trainers and not _copies_model(analysis, trainers[name].function):
                    for model in models:
                        trained_models[model] = line
                elif name in scorers:
                    for model in models:
                        if model in trained_models and trained_models[model] < line:
                            yield self.hit(scope, node,
                                           f"`{name}` scores the validation set again with `{model}` after it was "
                                           f"trained on those tokens at line {trained_models[model]} "
                                           "(ruling on 991; Issue #1017 condition 4)")

    # Legal and illegal twins: the same two evaluations, in the two orders.
    VALID = [_TTT_EVAL_PAIR.format(first="eval_val", second="eval_val_ttt")]
    INVALID = [
        _TTT_EVAL_PAIR.format(first="eval_val_ttt", second="eval_val"),
        '''
def ngram_rescore(val_tokens, cache, model_probs):
    return sum(cache.mix(model_probs[i], val_tokens[:i]) for i in range(len(val_tokens)))

if __name__ == "__main__":
    print(ngram_rescore(load_validation_tokens("fineweb_val_*.bin"), build_cache(), None))
''',
    ]


def _copies_model(analysis, function) -> bool:
    """A trainer that adapts a deep copy leaves the caller's model untouched."""
    return "deepcopy(" in analysis.text_of(function)


RULE = TwoPassRescore()
