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

from auditor.analysis.flow import TARGET, VAL
from auditor.rules._patterns import full_name
from auditor.rules.base import Rule, where

# In-place writes that insert into a table: a key there counts a token already scored.
_INSERTS = ("add.at", "index_add_", "scatter_add_", "index_put_", "bincount")


class NgramTargetInKey(Rule):
    id = "ngram-target-in-key"
    # a hashed key (XOR, a hash call) or a tuple key: the shapes a cache key takes
    prefilter = re.compile(r"\^|hash|\[\s*\(")

    def relevant(self, analysis, function):
        # the function must see targets: shifted reads, a loss target, or values passed in
        return bool(analysis.taint.of(function, TARGET) or analysis.taint.target_exprs.get(function)
                    or analysis.taint.of(function, VAL))

    def check_scope(self, analysis, scope):
        function = scope.function

        def kinds(node):
            return analysis.kinds(function, node, scope)

        def target_and_context(parts) -> bool:
            """One part is the realized target; another is context (other tokens, not the target)."""
            part_kinds = [kinds(p) for p in parts]
            has_target = any(TARGET in k for k in part_kinds)
            has_context = any(TARGET not in k and VAL in k for k in part_kinds)
            return has_target and has_context

        # (libcst's node classes have no subclasses; its isinstance is slow on a miss)
        for node in scope.walk():
            parts = None
            kind = node.__class__
            if kind is cst.BinaryOperation and node.operator.__class__ is cst.BitXor:
                parts = [node.left, node.right]
            elif kind is cst.Call and _library_hash(analysis, node):
                parts = [a.value for a in node.args] if len(node.args) >= 2 else None
            elif kind is cst.Subscript and node.slice[0].slice.__class__ is cst.Index:
                key = node.slice[0].slice.value
                if isinstance(key, cst.Tuple) and len(key.elements) >= 2:
                    parts = [e.value for e in key.elements]
            if not parts:
                continue
            extends = isinstance(node, cst.BinaryOperation) and self._extends_a_key(analysis, scope, node)
            if not (extends or target_and_context(parts)):
                continue
            if not self._used_for_lookup(scope, node):
                continue  # an insert after scoring: the key of a count, legal
            yield self.hit(scope, node, self._message(function, scope.code(node)))

    @staticmethod
    def _extends_a_key(analysis, scope, node) -> bool:
        """`full = ctx ^ (tok * P)` where `ctx` is itself a key here: the two keys read the
        count of context+token and of context, i.e. the probability of that very token (the
        realized one; a full distribution would combine the context with every candidate of
        the vocabulary, not with tokens of the stream). A rolling update `h = h * P ^ tok`
        replaces the key and is not this."""
        function = scope.function
        statement = _statement_of(scope, node)
        assigned = _assigned_names(statement)
        for base, other in ((node.left, node.right), (node.right, node.left)):
            if any(isinstance(n, (cst.Subscript, cst.Call)) for n in _walk(base)):
                continue  # tokens read here are parts of a key being built, not a key
            roots = _roots(base)
            if not roots or roots & assigned:
                continue
            if VAL not in analysis.kinds(function, other, scope) or VAL not in analysis.kinds(function, base, scope):
                continue
            if _used_as_key_elsewhere(scope, roots, statement):
                return True
        return False

    @staticmethod
    def _used_for_lookup(scope, node) -> bool:
        """Whether the key reads a table (not only writes one): directly in a read subscript,
        or through a name it is assigned to that some read subscript or call uses."""
        for current, parent in _up_to_statement(scope, node):
            if _inserts(current, parent):
                return False
            if isinstance(parent, cst.Assign):
                names = {full_name(t.target) for t in parent.targets if isinstance(t.target, cst.Name)}
                if not names:
                    return not any(isinstance(t.target, cst.Subscript) for t in parent.targets)
                returned = {n.value for r in scope.walk() if isinstance(r, cst.Return) and r.value is not None
                            for n in _walk(r.value) if isinstance(n, cst.Name)}
                return bool(names & returned) or any(_reads_name(scope, n, names) for n in scope.walk())
        return True

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


def _library_hash(analysis, node) -> bool:
    """`hash(...)`, `hashlib.*`, `xxhash.*`: a library's hash (the submission's own hashing
    helpers are analyzed inside, where their XORs are)."""
    name = full_name(node.func)
    if "hash" not in name.lower():
        return False
    return not analysis.index.resolve(name.rsplit(".", 1)[-1])


_STATEMENTS = frozenset({cst.SimpleStatementLine, cst.ClassDef, cst.For, cst.FunctionDef, cst.If, cst.Match,
                         cst.Try, cst.TryStar, cst.While, cst.With})


def _statement_of(scope, node):
    current = node
    while current is not None and current.__class__ not in _STATEMENTS:
        current = scope.parent(current)
    return current


def _assigned_names(statement) -> set[str]:
    found = set()
    for small in getattr(statement, "body", []) if isinstance(statement, cst.SimpleStatementLine) else []:
        if isinstance(small, cst.Assign):
            for target in small.targets:
                found |= _roots(target.target)
        elif isinstance(small, cst.AugAssign):
            found |= _roots(small.target)
    return found


def _roots(node) -> set[str]:
    return {n.value for n in _walk(node) if isinstance(n, cst.Name)}


def _used_as_key_elsewhere(scope, roots: set[str], statement) -> bool:
    """Whether one of `roots` indexes a table, or makes a key that is returned or indexes
    one, in a statement other than `statement`."""
    keys = set(roots)
    returned: set[str] = set()
    for node in scope.walk():
        if node.__class__ is cst.Return and node.value is not None:
            returned |= _roots(node.value)
    for node in scope.walk():
        if node.__class__ is cst.Assign and _roots(node.value) & roots and _statement_of(scope, node) is not statement:
            for target in node.targets:
                keys |= _roots(target.target)
    for node in scope.walk():
        if node.__class__ is cst.SubscriptElement and _roots(node.slice) & keys \
                and _statement_of(scope, node) is not statement:
            return True
    return bool((keys - roots) & returned)


def _reads_name(scope, node, names: set[str]) -> bool:
    """A read of one of `names` as (part of) a subscript key, outside an insert."""
    if not isinstance(node, cst.SubscriptElement):
        return False
    if not any(isinstance(n, cst.Name) and n.value in names for n in _walk(node)):
        return False
    return not any(_inserts(current, parent) or isinstance(parent, cst.AssignTarget)
                   for current, parent in _up_to_statement(scope, node))


def _up_to_statement(scope, node):
    """(node, parent) pairs from `node` up to the statement that holds it."""
    current, parent = node, scope.parent(node)
    while parent is not None and parent.__class__ not in _STATEMENTS:
        yield current, parent
        current, parent = parent, scope.parent(parent)


def _inserts(current, parent) -> bool:
    """`current` is what an insert writes: the target of `t[k] += 1`, an argument of
    `np.add.at` / `scatter_add_` / `bincount`."""
    if isinstance(parent, cst.AugAssign) and current is parent.target:
        return True
    return isinstance(parent, cst.Call) and full_name(parent.func).endswith(_INSERTS)


def _walk(node):
    from auditor.analysis import cst_children

    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(cst_children(current))
