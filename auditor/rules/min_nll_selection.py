"""min-nll-selection: keeping the lowest loss over several passes, epochs or predictors.

Ruling: 573, 614, 685 (minimum NLL over TTT passes/epochs: "multiple passes choosing best
NLL = training on eval set"), 659 (keeping whichever of cache or model gives the lower
loss on the actual next token). Issue #1017 condition 4: each token is scored once; no
minimum over passes or models chosen with the true token.

Legal instead: one pass, each token scored once and that score reported (score-first TTT
may train between chunks, never rescore them).
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.index import call_args, call_name, child_nodes, full_name, node_roots, own_nodes, walk
from auditor.analysis.adaptation import adaptations
from auditor.analysis.flow import TARGET, VAL
from auditor.analysis.values import _facts
from auditor.rules._patterns import elements, subscript_elements
from auditor.rules.base import Rule, where

MINIMUM = re.compile(r"(^|\.)(minimum|fmin|min|amin)$")


# Twins: a per-token pick between the model's and a count table's loss, by the true token or not.
_PICK = '''
import math
import numpy as np

def pick_lower(logp, counts, seq):
    kept = -logp[np.arange(len(seq) - 1), seq[1:]]
    for i in range(len(seq) - 1):
        ctx, nxt = int(seq[i]), int(seq[i + 1])
        row = counts.setdefault(ctx, {})
        other = -math.log((row.get(nxt, 0) + 1) / (sum(row.values()) + 1024))
        previous = kept[i]
        if {choice}
            kept[i] = other
        row[nxt] = row.get(nxt, 0) + 1
    return float(kept.sum())

if __name__ == "__main__":
    seq = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(f"val_bpb:{pick_lower(np.zeros((len(seq) - 1, 1024)), {}, seq):.4f}")
'''


class MinNllSelection(Rule):
    id = "min-nll-selection"
    prefilter = re.compile(r"minimum|fmin|amin|\bmin\(|<")

    def relevant(self, analysis, function):
        # Where the tokens are trained on between the passes, or where a per-token loss is
        # computed (a choice between predictors, 659); a best-of-EMA/SWA pick by validation
        # score in main() is another matter, not a per-token minimum.
        return _adapting(analysis, function) or bool(analysis.taint.of(function, TARGET))

    def check_scope(self, analysis, scope):
        function = scope.function
        score = analysis.score.of(function)
        if function.parent is not None:  # a closure fills its function's scored names
            score = score | analysis.score.of(function.parent)
        # without training between passes, only a choice made token by token counts
        per_token_only = not _adapting(analysis, function)

        def loss_on_tokens(node) -> bool:
            """Computed from the validation tokens or their targets: a loss, not a size."""
            return bool(analysis.kinds(function, node, scope) & {VAL, TARGET})

        for node in scope.walk():
            if node.__class__ is ast.Call and MINIMUM.search(full_name(node.func)) and not per_token_only:
                args = call_args(node)
                if len(args) < 2:
                    continue
                kept = _assigned_by(scope, node)
                # between two losses, or a loss and the running minimum (`best = min(best, nll)`);
                # `min(x, 1.0)` is a clamp
                compared = sum(loss_on_tokens(a) or bool(node_roots(a) & kept) for a in args)
                if not any(loss_on_tokens(a) for a in args) or compared < 2:
                    continue
                # kept for the score, not a bound on positions (`end = min(start + L, n)`)
                if kept & score and not kept & _index_names(scope):
                    yield self.hit(scope, node, self._message(function, scope.code(node)))
            elif node.__class__ is ast.If and node.test.__class__ is ast.Compare:
                comparison = node.test
                if not any(op.__class__ in (ast.Lt, ast.LtE, ast.Gt) for op in comparison.ops):
                    continue
                sides = [comparison.left, *comparison.comparators]
                if not all(loss_on_tokens(side) for side in sides):
                    continue
                compared = {n for side in sides for n in node_roots(side)}
                # and what they were read from: `old = nll[t]; if new < old: nll[t] = new` keeps
                # the lower of two predictors' losses in the scored array (659)
                depends = _facts(function, analysis.index).depends
                compared |= {source for name in compared for source in depends.get(name, ())}
                body_targets = {n for stmt in _statements(node.body)
                                for n in _target_roots(stmt, elements_only=per_token_only)}
                # the branch keeps the lower value in one of the compared names (a running best)
                if per_token_only and not _log_derived(function, compared, node.test):
                    continue  # counts or sizes compared position by position (a PPM table's max count)
                copies = not per_token_only and _copies_into(node.body, compared)
                if (body_targets & compared or copies) and (body_targets | compared) & score:
                    yield self.hit(scope, node, self._message(function, scope.code(node.test)))

    @staticmethod
    def _message(function, code: str) -> str:
        code = " ".join(code.split())[:80]
        return (f"{where(function)} keeps the lowest loss across passes, epochs or predictors (`{code}`): the reported score is a "
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
        _PICK.replace("{choice}", "len(row) > 8:  # the choice is made from the context, not the true token"),
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
        _PICK.replace("{choice}", "other < previous:"),
    ]


def _statements(block: list[ast.stmt]):
    """The assignments in a block of statements, nested ones included."""
    stack = list(block)
    while stack:
        node = stack.pop()
        if node.__class__ in (ast.Assign, ast.AugAssign, ast.AnnAssign):
            yield node
        stack.extend(child_nodes(node))


def _copies_into(block: list[ast.stmt], names: set[str]) -> bool:
    stack = list(block)
    while stack:
        node = stack.pop()
        if node.__class__ is ast.Call and node.func.__class__ is ast.Attribute and node.func.attr == "copy_":
            if node_roots(node.func.value) & names:
                return True
        stack.extend(child_nodes(node))
    return False


def _index_names(scope) -> set[str]:
    """Names used as positions: slice bounds (`toks[start:end]`) or arithmetic indices
    (`toks[end - 1]`), not boolean masks (`nll[nll < inf]`)."""
    found = set()
    for node in scope.walk():
        if node.__class__ is ast.Slice:
            for bound in (node.lower, node.upper):
                if bound is not None:
                    found |= node_roots(bound)
        elif node.__class__ is ast.Subscript:
            for item in subscript_elements(scope.function.unit, node):
                if item.__class__ in (ast.Name, ast.BinOp):
                    found |= node_roots(item)
    return found


# what makes a value a loss: it went through a logarithm (a log-probability, an NLL)
_LOG_CALLS = frozenset({"log", "log2", "log10", "log1p", "log_softmax", "logsumexp", "logaddexp", "cross_entropy",
                        "nll_loss"})


def _log_derived(function, names: set[str], test: ast.expr) -> bool:
    """Whether the compared values are losses: the test, or an assignment in the function to
    one of the names it reads (here, through `compared`'s sources), calls a logarithm."""
    if any(node.__class__ is ast.Call and full_name(node.func).rsplit(".", 1)[-1] in _LOG_CALLS
           for node in walk(test)):
        return True
    for node in own_nodes(function):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            written = {sub.id for target in targets for sub in ast.walk(target) if isinstance(sub, ast.Name)}
            if written & names and any(sub.__class__ is ast.Call and call_name(sub).rsplit(".", 1)[-1] in _LOG_CALLS
                                       for sub in ast.walk(node.value)):
                return True
    return False


def _adapting(analysis, function) -> bool:
    adapting = analysis.memo("min-nll-adapting", lambda: {a.function for a in adaptations(analysis)})
    return function in adapting or function.parent in adapting  # a closure is part of its pass


def _target_roots(stmt: ast.stmt, elements_only: bool = False) -> set[str]:
    """Names a statement writes: `best` of `best = ...` and of `best[idx] = ...` (only the
    latter with `elements_only`)."""
    targets = []
    if stmt.__class__ is ast.Assign:
        targets = stmt.targets
    elif stmt.__class__ in (ast.AugAssign, ast.AnnAssign):
        targets = [stmt.target]
    found = set()
    for target in targets:
        for node in elements(target) if target.__class__ in (ast.Tuple, ast.List) else [target]:
            if elements_only and node.__class__ is not ast.Subscript:
                continue
            while node.__class__ in (ast.Subscript, ast.Attribute):
                node = node.value
            if node.__class__ is ast.Name:
                found.add(node.id)
    return found


def _assigned_by(scope, node: ast.AST) -> set[str]:
    """Names the statement holding `node` assigns."""
    current = node
    while current is not None and not isinstance(current, ast.stmt):
        current = scope.parent(current)
    return _target_roots(current) if current is not None else set()


RULE = MinNllSelection()
