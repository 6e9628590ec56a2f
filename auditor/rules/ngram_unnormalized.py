"""ngram-unnormalized: an eval-time n-gram / expert mixture computed only at the target,
or an expert whose hint at a position exists only when the realized token there passes a test.

Ruling: 720, 745, 824 (mixers evaluated only at the realized token, not renormalized),
1026 (mix applied only when the target's own count is > 0), 1185 (p(target|ctx) blended
into the target log-prob; "must renormalize over the vocabulary"), 2041/2118/2083
(gates and byte-PPM spreads that depend on the realized token; 1900/1902 excluded PPM-D byte
mixtures from the leaderboard under condition 2), 2018/1967 (word-start and
within-word experts gating on the realized token's class). Issue #1017 conditions 1 and 2:
the score of token t must come from a full distribution that sums to 1, computed without
looking at t.

Legal instead: mixing full distributions, then reading the target's entry; a token-only
expert whose hint at t comes from tokens before t; a gated expert that the run
configuration switches off (a frequency threshold above 1, as in 2135).
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.index import call_args, full_name
from auditor.analysis.flow import TARGET
from auditor.analysis.gates import gated_uses
from auditor.rules._patterns import elements
from auditor.rules.base import Hit, Rule, where

LOG_MIX = re.compile(r"(logsumexp|logaddexp)$")
MIX_HINT = re.compile(r"\(\s*1(\.0*)?\s*-|logsumexp|logaddexp|exp\([^\n]*\+[^\n]*exp\(|log1p\(|log\(\s*1(\.0*)?\s*\+")


MAXIMUM = re.compile(r"(^|\.)(max|maximum|fmax)$")


def _is_log1p_exp(node: ast.AST) -> bool:
    """`log1p(exp(...))` or `log(1 + exp(...))`: the tail of a log-add-exp."""
    if node.__class__ is not ast.Call:
        return False
    args = call_args(node)
    if not args:
        return False
    name = full_name(node.func).rsplit(".", 1)[-1]
    inner = args[0]
    if name == "log" and inner.__class__ is ast.BinOp and inner.op.__class__ is ast.Add and _is_one(inner.left):
        name, inner = "log1p", inner.right
    return name == "log1p" and inner.__class__ is ast.Call and full_name(inner.func).rsplit(".", 1)[-1] == "exp"


def _is_one(node: ast.AST) -> bool:
    return node.__class__ is ast.Constant and node.value.__class__ in (int, float) and node.value == 1


def _is_one_minus(node: ast.AST) -> bool:
    return node.__class__ is ast.BinOp and node.op.__class__ is ast.Sub and _is_one(node.left)


class NgramUnnormalized(Rule):
    id = "ngram-unnormalized"
    prefilter = MIX_HINT

    def check(self, analysis):
        yield from super().check(analysis)
        yield from self._target_gates(analysis)

    def _target_gates(self, analysis):
        for use in gated_uses(analysis):
            gate = use.gate
            test = " ".join(ast.unparse(gate.test).split())
            test = test if len(test) <= 80 else test[:77] + "..."
            if use.closed_by:
                yield Hit(use.caller, use.call.lineno, use.call.end_lineno or use.call.lineno,
                          f"{where(gate.function)} hints at a position only when the realized token there passes "
                          f"`{test}` (line {gate.line}), but its gate never opens here: {use.closed_by}; not counted",
                          severity="info")
                continue
            message = (f"{where(gate.function)} writes its hint for a position only when the realized token at that "
                       f"position passes `{test}`, so whether the score is tilted depends on the target "
                       f"(results used by {where(use.caller)} at line {use.call.lineno}; rulings on 2018, 1967, 2041, "
                       "2118; Issue #1017 condition 1)")
            if analysis.live(use.caller, use.call.lineno)[0]:
                yield Hit(gate.function, gate.line, gate.write.end_lineno or gate.write.lineno, message)
            else:  # judged where it would run: the caller's dormant line says why it does not
                yield Hit(use.caller, use.call.lineno, use.call.end_lineno or use.call.lineno, message)

    def relevant(self, analysis, function):
        return bool(analysis.taint.of(function, TARGET) or analysis.taint.target_exprs.get(function))

    def check_scope(self, analysis, scope):
        function = scope.function
        for node in scope.walk():
            operands = self._mixture(node)
            if not operands or _normalizes(scope, node, operands):
                continue
            # An operand computed from the realized target (its probability, its count, its
            # NLL): the mixture exists only at that token, not over the vocabulary.
            picked = [o for o in operands if TARGET in analysis.kinds(function, o, scope)]
            if picked and _feeds_the_score(analysis, scope, node):
                code = " ".join(scope.code(node).split())
                code = code if len(code) <= 80 else code[:77] + "..."
                yield self.hit(scope, node,
                               f"mixture in {where(function)} is computed for the realized target only (`{code}`), "
                               "not as a normalized distribution over the vocabulary (rulings on 720, 1026, 1185; "
                               "Issue #1017 condition 2)")

    @staticmethod
    def _mixture(node: ast.AST) -> list[ast.AST]:
        """The operands of `(1 - a) * P + a * Q` or of a log-domain mix, else []."""
        kind = node.__class__
        if kind is ast.BinOp and node.op.__class__ is ast.Add:
            left, right = node.left, node.right
            if all(side.__class__ is ast.BinOp and side.op.__class__ is ast.Mult for side in (left, right)):
                if any(_is_one_minus(f) for side in (left, right) for f in (side.left, side.right)):
                    return [left, right]
            # log-sum-exp written by hand: exp(lp_a + log(1 - a) - m) + exp(lp_b + log(a) - m)
            sides = [left, right]
            if all(side.__class__ is ast.Call and full_name(side.func).rsplit(".", 1)[-1] == "exp"
                   and call_args(side) for side in sides):
                return [call_args(side)[0] for side in sides]
            # log-add-exp written by hand: max(a, b) + log1p(exp(-abs(a - b)))
            for peak, tail in ((left, right), (right, left)):
                if peak.__class__ is ast.Call and MAXIMUM.search(full_name(peak.func)) \
                        and len(call_args(peak)) == 2 and _is_log1p_exp(tail):
                    return call_args(peak)
        elif kind is ast.Call and LOG_MIX.search(full_name(node.func)):
            func = node.func
            library = full_name(func).startswith(("torch.", "np.", "numpy.", "math.", "scipy."))
            receiver = [func.value] if func.__class__ is ast.Attribute and not library else []
            operands = receiver + call_args(node, named=False)
            if full_name(func).endswith("logsumexp") and operands:
                # over a stack of components (a mixture), or one tensor: a mixture when the
                # tensor holds per-position values of the target (experts' NLLs), a plain
                # normalization over the vocabulary otherwise (the check reads the target)
                first = operands[0]
                if first.__class__ in (ast.List, ast.Tuple):
                    return elements(first)
                if first.__class__ is ast.Call and full_name(first.func).rsplit(".", 1)[-1] in ("stack", "cat"):
                    stacked = call_args(first)
                    if stacked and stacked[0].__class__ in (ast.List, ast.Tuple):
                        return elements(stacked[0])
                return [first]
            return operands
        return []

    VALID = [
        '''
import numpy as np

def previous_token_hints(seq, table):
    hint = np.zeros(len(seq), dtype=np.int64)
    seen = np.zeros(len(seq), dtype=np.float32)
    prev = 0
    for i, tok in enumerate(seq):
        hint[i] = table.get(prev, 0)  # from the token before i only
        seen[i] = 1.0
        table[prev] = int(tok)
        prev = int(tok)
    return hint, seen

def score(logp, tokens):
    targets = tokens[1:]
    hint, seen = previous_token_hints(targets, {})
    return float(-(logp + 0.1 * seen).sum())

if __name__ == "__main__":
    tokens = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(f"val_bpb:{score(np.zeros(len(tokens) - 1), tokens):.4f}")
''',
        '''
import torch

def eval_with_ngram_mixer(logits, y, ngram_dist, alpha=0.2):
    probs = (1 - alpha) * torch.softmax(logits, -1) + alpha * ngram_dist
    return -torch.log(probs.gather(-1, y[:, None])).sum()

if __name__ == "__main__":
    print(eval_with_ngram_mixer(*load_validation_tokens("fineweb_val_*.bin")))
''',
        '''
import math
import numpy as np

def blended_nll(model_logp, cache_logp, seq, weight=0.2):
    total = 0.0
    for i in range(len(seq) - 1):
        a = math.log(1 - weight) + model_logp[i]  # full distributions over the vocabulary
        b = math.log(weight) + cache_logp[i]
        mixed = np.maximum(a, b) + np.log1p(np.exp(-np.abs(a - b)))
        total -= mixed[int(seq[i + 1])]
    return total

if __name__ == "__main__":
    seq = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    uniform = np.full((len(seq) - 1, 1024), -math.log(1024))
    print(f"val_bpb:{blended_nll(uniform, uniform, seq):.4f}")
''',
    ]
    INVALID = [
        '''
import numpy as np

def word_start_hints(seq, starts_word, table):
    hint = np.zeros(len(seq), dtype=np.int64)
    conf = np.zeros(len(seq), dtype=np.float32)
    prev = 0
    for i, tok in enumerate(seq):
        opens_word = bool(starts_word[int(tok)])  # the class of the token being scored
        if opens_word and prev in table:
            hint[i] = table[prev][0]
            conf[i] = table[prev][1] / (table[prev][1] + 1)
        table[prev] = (int(tok), table.get(prev, (0, 0))[1] + 1)
        prev = int(tok)
    return hint, conf

def score(logp, tokens, starts_word):
    targets = tokens[1:]
    hint, conf = word_start_hints(targets, starts_word, {})
    gate = conf >= 0.5
    return float(-(logp + gate * conf).sum())

if __name__ == "__main__":
    tokens = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(f"val_bpb:{score(np.zeros(len(tokens) - 1), tokens, np.ones(1024)):.4f}")
''',
        '''
import math

def eval_with_ngram_cache(nlls, val_tokens, counts, alpha=0.2):
    loss = 0.0
    for pos, nll in enumerate(nlls):
        target = val_tokens[pos + 1]
        ctx = tuple(val_tokens[max(0, pos - 2):pos + 1])
        ngram_prob = counts.get(ctx, {}).get(target, 0) / max(sum(counts.get(ctx, {}).values()), 1)
        if ngram_prob > 0:
            model_p = math.exp(-nll)
            loss -= math.log((1.0 - alpha) * model_p + alpha * ngram_prob)
        else:
            loss += nll
    return loss

if __name__ == "__main__":
    print(eval_with_ngram_cache([], load_validation_tokens("fineweb_val_*.bin"), {}))
''',
        '''
import math
import numpy as np

def blended_nll(model_logp, counts, seq, weight=0.2):
    total = 0.0
    for i in range(len(seq) - 1):
        ctx, nxt = int(seq[i]), int(seq[i + 1])
        row = counts.setdefault(ctx, {})
        seen = row.get(nxt, 0)
        if seen > 0:  # the cache takes part only when the true token is in it
            a = math.log(1 - weight) + model_logp[i, nxt]
            b = math.log(weight) + math.log(seen / sum(row.values()))
            total -= max(a, b) + math.log1p(math.exp(-abs(a - b)))
        else:
            total -= model_logp[i, nxt]
        row[nxt] = seen + 1
    return total

if __name__ == "__main__":
    seq = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(f"val_bpb:{blended_nll(np.zeros((len(seq) - 1, 1024)), {}, seq):.4f}")
''',
    ]


def _feeds_the_score(analysis, scope, node) -> bool:
    """Whether the mixture is (part of) a value that reaches the reported score or the
    function's result, not a running statistic kept in a field (an EMA of counts)."""
    function = scope.function
    wanted = analysis.score.of(function) | analysis.score.returned_by(function)
    statement = node
    while statement is not None and not isinstance(statement, ast.stmt):
        statement = scope.parent(statement)
    if statement.__class__ is ast.Return:
        return True
    if statement.__class__ in (ast.Assign, ast.AugAssign, ast.AnnAssign):
        targets = statement.targets if statement.__class__ is ast.Assign else [statement.target]
        written = set()
        for target in targets:
            while target.__class__ is ast.Subscript:
                target = target.value
            parts = full_name(target).split(".")
            written.add(".".join(parts[:2]) if parts[0] == "self" and len(parts) > 1 else parts[0])
        return bool(written & wanted)
    return True  # an expression statement, a condition or a call argument: judged by where it goes


def _normalizes(scope, node, operands) -> bool:
    """`t - logsumexp(t, dim=-1, keepdim=True)`: a log-softmax written by hand, which makes
    one distribution sum to 1; not a mixture of several."""
    parent = scope.parent(node)
    if not (node.__class__ is ast.Call and parent.__class__ is ast.BinOp and parent.op.__class__ is ast.Sub
            and parent.right is node):
        return False
    return len(operands) == 1 and scope.code(parent.left).strip() == scope.code(operands[0]).strip()


RULE = NgramUnnormalized()
