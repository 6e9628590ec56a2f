"""ngram-target-in-key: an eval-time n-gram cache whose lookup key contains the target.

Ruling: maintainers' ruling on 779, and about 30 PRs closed on 2026-03-27 (688, 720, 724,
727, 745, 769, 792, 809, 814, 828, ...): a hashed cache keyed on `ctx_hash XOR target *
prime` reads the count of the realized next token, so the score of token t looks at t
(Issue #1017 conditions 1-2). A cache keyed on context only, mixing a full normalized
distribution over the vocabulary, is legal.
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.flow import TARGET, VAL
from auditor.analysis.index import call_args, child_nodes, full_name, walk
from auditor.rules._patterns import elements, subscript_elements
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

        statements = _Statements(scope)
        for node in scope.walk():
            parts = None
            kind = node.__class__
            if kind is ast.BinOp and node.op.__class__ is ast.BitXor:
                parts = [node.left, node.right]
            elif kind is ast.Call and _library_hash(analysis, node):
                args = call_args(node)
                parts = args if len(args) >= 2 else None
            elif kind is ast.Subscript:
                key = subscript_elements(function.unit, node)[0]
                if key.__class__ is ast.Tuple and len(key.elts) >= 2:
                    parts = elements(key)
            if not parts:
                continue
            extends = kind is ast.BinOp and self._extends_a_key(analysis, scope, statements, node)
            if not (extends or target_and_context(parts)):
                continue
            if not self._used_for_lookup(scope, node):
                continue  # an insert after scoring: the key of a count, legal
            yield self.hit(scope, node, self._message(function, scope.code(node)))

    @staticmethod
    def _extends_a_key(analysis, scope, statements, node) -> bool:
        """`full = ctx ^ (tok * P)` where `ctx` is itself a key here: the two keys read the
        count of context+token and of context, i.e. the probability of that very token (the
        realized one; a full distribution would combine the context with every candidate of
        the vocabulary, not with tokens of the stream). A rolling update `h = h * P ^ tok`
        replaces the key and is not this."""
        function = scope.function
        statement = statements.of(node)
        assigned = statements.assigned_names(statement)
        for base, other in ((node.left, node.right), (node.right, node.left)):
            if any(n.__class__ in (ast.Subscript, ast.Call) for n in walk(base)):
                continue  # tokens read here are parts of a key being built, not a key
            roots = _roots(base)
            if not roots or roots & assigned:
                continue
            if VAL not in analysis.kinds(function, other, scope) or VAL not in analysis.kinds(function, base, scope):
                continue
            if _used_as_key_elsewhere(scope, statements, roots, statement):
                return True
        return False

    @staticmethod
    def _used_for_lookup(scope, node) -> bool:
        """Whether the key reads a table (not only writes one): directly in a read subscript,
        or through a name it is assigned to that some read subscript or call uses."""
        for current, parent in _up_to_statement(scope, node):
            if _inserts(current, parent):
                return False
            if parent.__class__ is ast.Assign:
                names = {t.id for t in parent.targets if t.__class__ is ast.Name}
                if not names:
                    return not any(t.__class__ is ast.Subscript for t in parent.targets)
                returned = {n for r in scope.walk() if r.__class__ is ast.Return and r.value is not None
                            for n in _roots(r.value)}
                return bool(names & returned) or any(_reads_name(scope, n, names) for n in _keys(scope))
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


# statements that hold others
_COMPOUND = frozenset({ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.TryStar,
                       ast.Match, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})
_DEFS = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})


class _Statements:
    """The statement a node is in, as a line of code counts it: simple statements joined by
    `;` are one (`ctx = a ^ b; key = ctx ^ t`), and those written on the line of their
    block's header (`if hit: key = ctx ^ t`) are part of that compound statement. A group
    of simple statements is represented by its first one; None above the function's body."""

    def __init__(self, scope):
        self.scope = scope
        self._first: dict[int, ast.stmt] = {}  # id(simple statement) -> first of its line
        self._groups: dict[int, list[ast.stmt]] = {}  # id(first) -> the statements of its line
        lines = scope.function.unit.lines
        blocks = [scope.function.node.body]
        while blocks:
            block = blocks.pop()
            group: list[ast.stmt] = []
            for stmt in block:
                if stmt.__class__ in _COMPOUND:
                    group = []
                    if stmt.__class__ not in _DEFS:  # (the code of a function of its own)
                        blocks.extend(_blocks(stmt))
                    continue
                if not group or group[-1].end_lineno != stmt.lineno:
                    group = [stmt]
                    self._groups[id(stmt)] = group
                else:
                    group.append(stmt)
                self._first[id(stmt)] = group[0]
        # a line that starts after a block's header is part of that statement
        self._in_header = {first for first, group in self._groups.items()
                           if lines[group[0].lineno - 1].encode()[:group[0].col_offset].strip()}

    def of(self, node: ast.AST) -> ast.stmt | None:
        current = node
        while current is not None and not isinstance(current, ast.stmt):
            current = self.scope.parent(current)
        if current is None or current.__class__ in _COMPOUND:
            return current
        first = self._first.get(id(current), current)
        if id(first) not in self._in_header:
            return first
        while current is not None and current.__class__ not in _COMPOUND:
            current = self.scope.parent(current)
        return current

    def assigned_names(self, statement: ast.stmt | None) -> set[str]:
        found = set()
        for small in self._groups.get(id(statement), []) if statement.__class__ not in _COMPOUND else []:
            if small.__class__ is ast.Assign:
                for target in small.targets:
                    found |= _roots(target)
            elif small.__class__ is ast.AugAssign:
                found |= _roots(small.target)
        return found


def _blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    """The blocks of statements a compound statement holds."""
    if stmt.__class__ is ast.Match:
        return [case.body for case in stmt.cases]
    blocks = [stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])]
    return blocks + [handler.body for handler in getattr(stmt, "handlers", [])]


def _roots(node) -> set[str]:
    """Every name written in an expression, attribute and keyword names included."""
    found = set()
    for current in walk(node):
        cls = current.__class__
        if cls is ast.Name:
            found.add(current.id)
        elif cls is ast.Attribute:
            found.add(current.attr)
        elif (cls is ast.keyword or cls is ast.arg) and current.arg is not None:
            found.add(current.arg)
    return found


def _keys(scope):
    """What the subscripts of the function are indexed by, item by item."""
    for node in scope.walk():
        if node.__class__ is ast.Subscript:
            yield from subscript_elements(scope.function.unit, node)


def _used_as_key_elsewhere(scope, statements, roots: set[str], statement) -> bool:
    """Whether one of `roots` indexes a table, or makes a key that is returned or indexes
    one, in a statement other than `statement`."""
    keys = set(roots)
    returned: set[str] = set()
    for node in scope.walk():
        if node.__class__ is ast.Return and node.value is not None:
            returned |= _roots(node.value)
    for node in scope.walk():
        if node.__class__ is ast.Assign and _roots(node.value) & roots and statements.of(node) is not statement:
            for target in node.targets:
                keys |= _roots(target)
    for key in _keys(scope):
        if _roots(key) & keys and statements.of(key) is not statement:
            return True
    return bool((keys - roots) & returned)


def _reads_name(scope, key, names: set[str]) -> bool:
    """A read of one of `names` as (part of) a subscript key, outside an insert."""
    if not _roots(key) & names:
        return False
    return not any(_inserts(current, parent) or (parent.__class__ is ast.Assign and current in parent.targets)
                   for current, parent in _up_to_statement(scope, key))


def _up_to_statement(scope, node):
    """(node, parent) pairs from `node` up to the statement that holds it (included)."""
    current, parent = node, scope.parent(node)
    while parent is not None and not isinstance(current, ast.stmt) and parent.__class__ not in _COMPOUND:
        yield current, parent
        current, parent = parent, scope.parent(parent)


def _inserts(current, parent) -> bool:
    """`current` is what an insert writes: the target of `t[k] += 1`, an argument of
    `np.add.at` / `scatter_add_` / `bincount`."""
    if parent.__class__ is ast.AugAssign and current is parent.target:
        return True
    return parent.__class__ is ast.Call and full_name(parent.func).endswith(_INSERTS)
