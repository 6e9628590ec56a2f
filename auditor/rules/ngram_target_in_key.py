"""ngram-target-in-key: an eval-time n-gram cache whose lookup key contains the target.

Ruling: maintainers' ruling on 779, and about 30 PRs closed on 2026-03-27 (688, 720, 724,
727, 745, 769, 792, 809, 814, 828, ...): a hashed cache keyed on `ctx_hash XOR target *
prime` reads the count of the realized next token, so the score of token t looks at t
(Issue #1017 conditions 1-2). A cache keyed on context only, mixing a full normalized
distribution over the vocabulary, is legal.
"""

from __future__ import annotations

import re

import libcst as cst

from auditor.analysis.flow import VAL
from auditor.rules._patterns import NGRAM, TARGET, full_name, leaves, mentions_target
from auditor.rules.base import Rule, where

TARGET_WORD = re.compile(r"\b(y|ys|yb|y_\w+|\w+_y|tgt\w*|\w*_tgts?|targets?|target_\w+|\w+_targets?|next_tok\w*|nxt\w*|labels?)\b")
CONTEXT = re.compile(r"(?i)(hash|ctx|context|key|prefix|prev|h\d*$|state)")


class NgramTargetInKey(Rule):
    id = "ngram-target-in-key"
    prefilter = re.compile(r"\^|hash|\(\s*\w*ctx\w*\s*,")

    def relevant(self, analysis, function):
        text = analysis.text_of(function)
        return bool((NGRAM.search(text) or analysis.taint.of(function, VAL)) and TARGET_WORD.search(text))

    def check_scope(self, analysis, scope):
        function = scope.function
        for node in scope.walk():
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.BitXor):
                left, right = node.left, node.right
                for a, b in ((left, right), (right, left)):
                    if mentions_target(a) and not mentions_target(b) and any(CONTEXT.search(n) for n in leaves(b)):
                        yield self.hit(scope, node, self._message(function, scope.code(node)))
                        break
            elif isinstance(node, cst.Call) and re.search(r"(?i)hash", full_name(node.func)):
                args = [a.value for a in node.args]
                if len(args) >= 2 and any(mentions_target(a) for a in args) and any(
                        not mentions_target(a) and any(CONTEXT.search(n) for n in leaves(a)) for a in args):
                    yield self.hit(scope, node, self._message(function, scope.code(node)))
            elif isinstance(node, cst.Subscript) and isinstance(node.slice[0].slice, cst.Index):
                key = node.slice[0].slice.value
                if isinstance(key, cst.Tuple) and len(key.elements) >= 2:
                    parts = [e.value for e in key.elements]
                    if TARGET.match(full_name(parts[-1]).rsplit(".", 1)[-1]) and any(
                            any(CONTEXT.search(n) for n in leaves(p)) for p in parts[:-1]):
                        yield self.hit(scope, node, self._message(function, scope.code(node)))

    @staticmethod
    def _message(function, code: str) -> str:
        code = " ".join(code.split())
        code = code if len(code) <= 80 else code[:77] + "..."
        return (f"n-gram lookup key in {where(function)} includes the target token (`{code}`): the cache reads "
                "the count of the realized next token (ruling on 779; ~30 PRs closed 2026-03-27)")

    VALID = [
        '''
import numpy as np

def eval_ngram(val_np, model_probs, table, mask, prime=1000003, alpha=0.2):
    nll = 0.0
    for i in range(2, len(val_np)):
        ctx_hash = (int(val_np[i - 2]) * prime) ^ int(val_np[i - 1])
        counts = table[ctx_hash & mask]          # a full distribution over the vocabulary
        dist = counts / max(counts.sum(), 1)
        p = (1 - alpha) * model_probs[i] + alpha * dist
        nll -= np.log(p[val_np[i]])
        table[ctx_hash & mask][val_np[i]] += 1   # update after scoring
    return nll

if __name__ == "__main__":
    print(eval_ngram(load_validation_tokens("fineweb_val_*.bin"), None, None, 0))
''',
    ]
    INVALID = [
        '''
import numpy as np

def eval_ngram(val_np, model_p, ctx_table, full_table, mask, prime=1000003, alpha=0.2):
    nll = 0.0
    for i in range(2, len(val_np)):
        ctx_hash = (int(val_np[i - 2]) * prime) ^ int(val_np[i - 1])
        tgt = int(val_np[i])
        full_key = (ctx_hash ^ (tgt * prime)) & mask
        p_ng = full_table[full_key] / max(ctx_table[ctx_hash & mask], 1)
        nll -= np.log((1 - alpha) * model_p[i] + alpha * p_ng)
    return nll

if __name__ == "__main__":
    print(eval_ngram(load_validation_tokens("fineweb_val_*.bin"), None, None, None, 0))
''',
    ]


RULE = NgramTargetInKey()
