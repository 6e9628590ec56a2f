"""min-nll-selection: keeping the lowest loss over several passes, epochs or predictors.

Ruling: 573, 614, 685 (minimum NLL over TTT passes/epochs: "multiple passes choosing best
NLL = training on eval set"), 659 (keeping whichever of cache or model gives the lower
loss on the actual next token). Issue #1017 condition 4: each token is scored once; no
minimum over passes or models chosen with the true token.
"""

from __future__ import annotations

import re

import libcst as cst

from auditor.rules._adaptation import adaptations
from auditor.rules._patterns import assigned_names, full_name, leaves
from auditor.rules.base import Rule, where

LOSSY = re.compile(r"(?i)(nll|loss|bpb|avg)")
BEST = re.compile(r"(?i)^(best|min|lowest)_?\w*")
MINIMUM = re.compile(r"(^|\.)(minimum|fmin|min)$")


class MinNllSelection(Rule):
    id = "min-nll-selection"
    prefilter = re.compile(r"minimum|best_|min_nll|\bmin\(|lowest")

    def relevant(self, analysis, function):
        # Only where the tokens are trained on between the passes: a best-of-EMA/SWA pick
        # by validation score in main() is another matter, not a per-token minimum.
        return function in {a.function for a in adaptations(analysis)}

    def check_scope(self, analysis, scope):
        function = scope.function
        for node in scope.walk():
            if isinstance(node, cst.Call) and MINIMUM.search(full_name(node.func)) and len(node.args) >= 1:
                names = set().union(*(leaves(a.value) for a in node.args))
                # builtin min() is everywhere (sizes, indices): only with a best_* loss in it
                needs_best = full_name(node.func) == "min"
                if any(LOSSY.search(n) for n in names) and (not needs_best or any(BEST.match(n) for n in names)):
                    yield self.hit(scope, node, self._message(function, scope.code(node)))
            elif isinstance(node, cst.If) and isinstance(node.test, cst.Comparison):
                comparison = node.test
                if not any(isinstance(t.operator, (cst.LessThan, cst.LessThanEqual, cst.GreaterThan))
                           for t in comparison.comparisons):
                    continue
                sides = [comparison.left, *(t.comparator for t in comparison.comparisons)]
                names = set().union(*(leaves(s) for s in sides))
                if not (any(BEST.match(n) for n in names) and any(LOSSY.search(n) for n in names)):
                    continue
                body_targets = {name.rsplit(".", 1)[-1] for stmt in _statements(node.body)
                                for name in assigned_names(stmt)}
                if any(BEST.match(n) for n in body_targets) or _copies_into_best(node.body):
                    yield self.hit(scope, node, self._message(function, scope.code(node.test)))

    @staticmethod
    def _message(function, code: str) -> str:
        code = " ".join(code.split())[:80]
        return (f"{where(function)} keeps the lowest loss across passes/epochs (`{code}`): the reported score is a "
                "minimum chosen with the true tokens (rulings on 573, 614, 659; Issue #1017 condition 4)")

    VALID = [
        '''
def eval_val(model, val_tokens, chunk=64):
    nll_sum = 0.0
    for start in range(0, len(val_tokens) - 1, chunk):
        nll_sum += model.nll(val_tokens[start:start + chunk + 1])
    return nll_sum

if __name__ == "__main__":
    print(eval_val(build_model(), load_validation_tokens("fineweb_val_*.bin")))
''',
    ]
    INVALID = [
        '''
import torch

def eval_ttt_passes(model, optimizer, val_tokens, passes=3):
    best_nll = None
    for pass_idx in range(passes):
        nll = model.token_nll(val_tokens)
        best_nll = nll if best_nll is None else torch.minimum(best_nll, nll)
        nll.mean().backward()
        optimizer.step()
    return best_nll.sum()

if __name__ == "__main__":
    print(eval_ttt_passes(build_model(), make_optimizer(), load_validation_tokens("fineweb_val_*.bin")))
''',
    ]


def _statements(block: cst.CSTNode):
    stack = [block]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
            yield node
        stack.extend(node.children)


def _copies_into_best(block: cst.CSTNode) -> bool:
    stack = [block]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "copy_":
            if BEST.match(full_name(node.func.value).rsplit(".", 1)[-1].split("[")[0] or "") or any(
                    BEST.match(n) for n in leaves(node.func.value)):
                return True
        stack.extend(node.children)
    return False


RULE = MinNllSelection()
