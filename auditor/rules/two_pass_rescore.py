"""two-pass-rescore: scoring validation tokens again after adapting to them.

Ruling: 846, 853, 870 (a second n-gram pass rescoring tokens with a cache completed on the
whole validation set), 991 (a score-first TTT pass over all tokens, then a re-score of
the whole set with the adapted weights, reporting the second score). Issue #1017
condition 4: each token is scored once; no rescoring after adaptation.

Legal instead: a single pass whose cache or adapted weights only ever hold tokens already
scored (an online cache that scores a chunk, then inserts it).
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.flow import VAL
from auditor.analysis.index import call_args, call_name, dotted, full_name, is_name, own_nodes
from auditor.analysis.adaptation import _base_name, adaptations, free_names
from auditor.rules.base import Hit, Rule, where

# In-place writes into a table (a count cache, a probability store).
_TABLE_METHODS = ("index_add_", "scatter_add_", "index_put_", "put_", "scatter_")

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
        yield from self._rescore_with_filled_state(analysis)

    def _rescore_with_filled_state(self, analysis):
        """Two calls that score the validation tokens with one shared object, where the first
        call fills that object from them (a cache's inserts, a model's training): the second
        call's score reaches the report, so tokens are scored again with state built from
        themselves (846: pass 1 scores and fills the cache, pass 2 rescores with it)."""
        for function in analysis.index.functions:
            score = analysis.score.of(function)
            if not score or not analysis.taint.of(function, VAL):
                continue
            calls = []
            for node in own_nodes(function):
                if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
                    continue
                callees = analysis.index.resolve(call_name(node.value))
                assigned = {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                if not callees or not assigned & score:
                    continue
                args = list(node.value.args)
                closures = [c for c in callees if c.parent is function]
                if not closures and not any(VAL in analysis.kinds(function, a, line=node.lineno) for a in args):
                    continue
                shared = {i: a.id for i, a in enumerate(args) if isinstance(a, ast.Name)
                          and VAL not in analysis.kinds(function, a, line=node.lineno)}
                filled = {shared[i] for callee in callees for i in _mutated_positions(analysis, callee) if i in shared}
                used = set(shared.values())
                for closure in closures:
                    # a nested pass works on this function's objects directly (`cache` read freely)
                    free = free_names(closure)
                    used |= free
                    filled |= free & _written_through(analysis, closure)
                calls.append((node, used, filled))
            for i, (first, _, filled) in enumerate(calls):
                for second, used, _ in calls[i + 1:]:
                    common = {n for n in filled & used if not _renewed(function, n, first.lineno, second.lineno)}
                    if common and not _same_loop(function, first, second) and not _exclusive(function, first, second):
                        name = sorted(common)[0]
                        yield Hit(function, second.lineno, second.end_lineno or second.lineno,
                                  f"{where(function)} scores the validation tokens again at line {second.lineno} with "
                                  f"`{name}`, which the scoring pass at line {first.lineno} filled from those tokens "
                                  "(rulings on 846, 870, 991; Issue #1017 condition 4)")
                        return

    def _named_second_passes(self, analysis):
        """A scoring pass after a table was filled from the validation tokens outside that
        pass: the second pass reads counts of tokens it has not reached yet (846, 870).

        An online cache scores a chunk and then inserts it, inside one loop: legal. Here an
        insert into the table happens, and later a statement adds to the reported score
        from outside any loop that holds the insert."""
        writers = _table_writers(analysis)
        for function in analysis.index.functions:
            if not analysis.taint.of(function, VAL) or not analysis.score.of(function):
                continue
            if not (writers & _called_names(function) or _writes_table(function)):
                continue
            if not _may_insert(analysis, function, writers):
                continue  # no insert to find: spare the walk
            yield from self._second_pass_in(analysis, analysis.scope(function), writers)

    def _second_pass_in(self, analysis, scope, writers):
        function = scope.function
        inserts, scores = _pass_events(self, analysis, scope, writers)
        # A closure called here (a loop body moved into a helper) does its work at the call.
        for node in scope.walk():
            if node.__class__ is not ast.Call:
                continue
            for closure in analysis.index.resolve(_leaf(full_name(node.func))):
                if closure.parent is not function:
                    continue
                inner_inserts, inner_scores = analysis.memo(
                    f"pass-events:{id(closure)}", lambda c=closure: _pass_events(self, analysis, analysis.scope(c), writers))
                at = (scope.lines(node)[0], _loops_of(node, scope), node)
                if inner_inserts:
                    inserts.append(at + (_table_of(inner_inserts[0][2]),))
                if inner_scores:
                    scores.append(at + (analysis.text_of(closure),))
        for insert_line, insert_loops, insert, table in inserts:
            before = [s for s in scores if s[0] < insert_line or _shares_loop(s[1], insert_loops)]
            after = [s for s in scores if s[0] > insert_line and not _shares_loop(s[1], insert_loops)]
            # the later pass reads what was filled: the table, or the object whose method filled it
            reads = bool(table) and any(table in _names_in(scope.code(loops[-1] if loops else node) + "\n" + code)
                                        for _, loops, node, code in after)
            if after and (before or reads):
                line = after[0][0]
                yield self.hit(scope, after[0][2],
                               f"{where(function)} scores validation tokens again (line {line}) after filling a table "
                               f"from them at line {insert_line}, outside the pass that scored them: the second pass "
                               "reads counts of tokens it has not reached yet (rulings on 846, 870; Issue #1017 "
                               "condition 4)")
                return

    @staticmethod
    def _insert(analysis, scope, node, writers) -> bool:
        # (_may_insert is its ast-side precondition: keep the two in step)
        """A write into a table at validation-derived positions, or a call that makes one."""
        function = scope.function
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
            return any(VAL in analysis.kinds(function, key, scope) for key in _keys(node.target))
        if isinstance(node, ast.Call):
            name = full_name(node.func).rsplit(".", 1)[-1]
            args = call_args(node)
            if name in _TABLE_METHODS or full_name(node.func).endswith("add.at"):
                return any(VAL in analysis.kinds(function, a, scope) for a in args)
            if name in writers and isinstance(scope.parent(node), ast.Expr):
                return any(VAL in analysis.kinds(function, a, scope) for a in args)
        return False

    def _rescore_after_training(self, analysis):
        """Caller order: a call that trains on val data, then a call that scores val data with the same model."""
        # Only after a pass that scored the tokens: a pre-eval TTT followed by the eval is
        # ttt-train-before-score, not a second pass.
        trainers = {a.function.name: a for a in adaptations(analysis)
                    if a.order == "score-first" and a.adapts_given_model}
        # a function whose nested pass scores and trains is that pass for its callers
        trainers.update({a.function.parent.name: _as_parent(a) for a in list(trainers.values())
                         if a.function.parent is not None and a.function.parent.qualname != "<module>"})
        if not trainers:
            return
        # a scorer: its result reaches the reported score, and it reads validation data
        scorers = {f.name for f in analysis.index.functions
                   if analysis.score.of(f) and analysis.taint.of(f, VAL) and f.name not in trainers}
        for function in analysis.index.functions:
            text = analysis.text_of(function)
            if not any(f"{name}(" in text for name in trainers):
                continue
            scope = analysis.scope(function)
            trained_models: dict[str, int] = {}
            for node in scope.walk():
                if node.__class__ is not ast.Call:
                    continue
                name = full_name(node.func).rsplit(".", 1)[-1]
                if name == "load_state_dict" and isinstance(node.func, ast.Attribute):
                    # weights restored (e.g. the dequantized state) after TTT: a fresh model
                    trained_models.pop(full_name(node.func.value), None)
                    continue
                if name not in trainers and name not in scorers:
                    continue  # (nothing below is done for any other call)
                args = call_args(node)
                if not any(VAL in analysis.kinds(function, a, scope) for a in args):
                    continue
                # the model: the argument whose parameters the trainer optimizes
                trained_positions = set()
                if name in trainers:
                    trained_positions = _mutated_positions(analysis, trainers[name].function)
                    models = {full_name(a) for i, a in enumerate(args) if i in trained_positions}
                else:
                    models = {full_name(a) for a in args if is_name(a)}
                line = scope.lines(node)[0]
                if name in trainers and not _copies_model(analysis, trainers[name].function):
                    for model in models:
                        trained_models[model] = (line, node)
                elif name in scorers:
                    for model in models:
                        trained_at = trained_models.get(model)
                        if trained_at is not None and trained_at[0] < line and not _in_other_branches(
                                scope, trained_at[1], node):
                            yield self.hit(scope, node,
                                           f"`{name}` scores the validation set again with `{model}` after it was "
                                           f"trained on those tokens at line {trained_at[0]} "
                                           "(ruling on 991; Issue #1017 condition 4)")

    # Legal and illegal twins: the same two evaluations, in the two orders.
    VALID = [
        _TTT_EVAL_PAIR.format(first="eval_val", second="eval_val_ttt"),
        # the two evaluations in the two branches of one `if`: only one of them runs
        _TTT_EVAL_PAIR.format(first="eval_val_ttt", second="eval_val").replace(
            "    print(eval_val_ttt(model, val_tokens))\n    print(eval_val(model, val_tokens))",
            "    if len(val_tokens) > 4096:\n        print(eval_val_ttt(model, val_tokens))\n"
            "    else:\n        print(eval_val(model, val_tokens))"),
    ]
    INVALID = [
        _TTT_EVAL_PAIR.format(first="eval_val_ttt", second="eval_val"),
        '''
import numpy as np

def evaluate(tokens, logp, table):
    first = 0.0
    for i in range(1, len(tokens)):
        first -= logp[i, tokens[i]]                 # pass 1 scores each token ...
        table[tokens[i - 1], tokens[i]] += 1        # ... and fills the table with it
    total = 0.0
    for i in range(1, len(tokens)):                 # pass 2 reads counts of later tokens
        counts = table[tokens[i - 1]]
        p = 0.8 * np.exp(logp[i]) + 0.2 * counts / max(counts.sum(), 1)
        total -= np.log(p[tokens[i]])
    return first, total

if __name__ == "__main__":
    data = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    _, result = evaluate(data, np.zeros((len(data), 1024)), np.zeros((1024, 1024)))
    print(f"val_bpb:{result:.4f}")
''',
    ]


def _in_other_branches(scope, first, second) -> bool:
    """Whether two nodes sit in the two branches of one `if` (`if a: ... elif b: ...`):
    never both run."""
    def branches(node):
        found, child, parent = {}, node, scope.parent(node)
        while parent is not None:
            if isinstance(parent, ast.If) and (child in parent.body or child in parent.orelse):
                found[id(parent)] = "body" if child in parent.body else "orelse"
            child, parent = parent, scope.parent(parent)
        return found
    first_in, second_in = branches(first), branches(second)
    return any(second_in.get(key) not in (None, side) for key, side in first_in.items())


def _copies_model(analysis, function) -> bool:
    """A trainer that adapts a deep copy leaves the caller's model untouched."""
    return "deepcopy(" in analysis.text_of(function)


RULE = TwoPassRescore()


def _pass_events(rule, analysis, scope, writers):
    """(inserts, scores) of one function: (line, enclosing loops, node, table or code)."""
    from auditor.analysis.adaptation import _accumulating_helpers, _score_event

    score_names = analysis.score.of(scope.function)
    accumulating = _accumulating_helpers(analysis)
    inserts, scores = [], []
    for node in scope.walk():
        if node.__class__ not in _EVENT_NODES:
            continue  # neither an insert nor a score can be anything else
        if rule._insert(analysis, scope, node, writers):
            inserts.append((scope.lines(node)[0], _loops_of(node, scope), node, _table_of(node)))
        elif _score_event(node, scope, score_names, accumulating, analysis) or _scoring_call(
                analysis, scope, node, score_names):
            scores.append((scope.lines(node)[0], _loops_of(node, scope), node, ""))
    return inserts, scores


# the statements and calls that _insert, _score_event and _scoring_call look at
_EVENT_NODES = frozenset({ast.AugAssign, ast.Call, ast.Assign})


def _may_insert(analysis, function, writers, closures: bool = True) -> bool:
    """Whether `function` holds a statement that _insert could take, or calls one of its
    closures that does (their inserts count at the call), read from the function's own
    nodes before its scope is walked. Without one, _second_pass_in has no insert and finds
    nothing (main() calling its logging and schedule closures, in most files).

    A superset of _insert: every name in a call's callee expression stands in for the leaf
    of its full name (`add.at` ends in `at`); only a `t[k] += v` whose key is a plain
    name or constant is decided here, by the same kinds() question _insert asks of the key
    (its code parses back to the same expression, asked at the same statement line)."""
    anywhere = _ALWAYS_INSERT_NAMES
    if closures:
        anywhere = anywhere | {f.name for f in analysis.index.functions
                               if f.parent is function and _may_insert(analysis, f, writers, closures=False)}
    nodes = own_nodes(function)
    statements = {id(n.value) for n in nodes if n.__class__ is ast.Expr and n.value.__class__ is ast.Call}
    for node in nodes:
        kind = node.__class__
        if kind is ast.AugAssign and isinstance(node.target, ast.Subscript):
            key = node.target.slice
            if not (key.__class__ is ast.Constant or dotted(key) is not None) \
                    or VAL in analysis.kinds(function, key, line=node.lineno):
                return True
        elif kind is ast.Call:
            names = _callee_names(node.func)
            if not names.isdisjoint(anywhere) or (id(node) in statements and not names.isdisjoint(writers)):
                return True
    return False


_ALWAYS_INSERT_NAMES = frozenset(_TABLE_METHODS) | {"at"}


def _callee_names(func: ast.AST) -> set[str]:
    """Every name and attribute in a callee expression (its full name's leaf is one)."""
    found = set()
    for node in ast.walk(func):
        if node.__class__ is ast.Name:
            found.add(node.id)
        elif node.__class__ is ast.Attribute:
            found.add(node.attr)
    return found


def _scoring_call(analysis, scope, node, score_names) -> bool:
    """`loss, bpb = evaluate(...)`: a value of the report taken from a function that scores."""
    if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
        return False
    targets = {name for t in node.targets for name in _written_names(t)}
    if not targets & score_names:
        return False
    scorers = analysis.memo("scoring-functions", lambda: _scoring_functions(analysis))
    return _leaf(full_name(node.value.func)) in scorers


def _scoring_functions(analysis) -> set[str]:
    """Functions that add losses in place into values that reach the report."""
    from auditor.analysis.adaptation import in_place_roots

    return {f.name for f in analysis.index.functions
            if analysis.taint.of(f, VAL) and in_place_roots(f) & analysis.score.of(f)}


def _keys(subscript: ast.Subscript) -> list[ast.AST]:
    """The keys of `t[k]`, `t[i, j]`; slices are no key."""
    key = subscript.slice
    return [k for k in (key.elts if isinstance(key, ast.Tuple) else [key]) if not isinstance(k, ast.Slice)]


def _written_names(target):
    """Every name in an assignment's target, attributes' included (`self.loss` gives `self`
    and `loss`), as libcst's Name nodes are."""
    for node in ast.walk(target):
        if node.__class__ is ast.Name:
            yield node.id
        elif node.__class__ is ast.Attribute:
            yield node.attr


def _loops_of(node, scope):
    from auditor.analysis.adaptation import _context

    return _context(node, scope)[0]


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _shares_loop(loops_a, loops_b) -> bool:
    return any(a is b for a in loops_a for b in loops_b)


def _called_names(function) -> set[str]:
    """(computed once per function: every round of _table_writers asks again)"""
    found = function.__dict__.get("_called_names")
    if found is None:
        found = function._called_names = frozenset(
            n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            for n in own_nodes(function) if isinstance(n, ast.Call))
    return found


def _writes_table(function) -> bool:
    """In-place writes into a table: `t[k] += 1`, `t.scatter_add_(...)`, `np.add.at(t, ...)`,
    or `t += np.bincount(keys)`. (One pass over the function's nodes, answered once.)"""
    found = function.__dict__.get("_writes_table")
    if found is None:
        found = function._writes_table = _finds_table_write(own_nodes(function))
    return found


def _finds_table_write(nodes) -> bool:
    bincount = augmented = False
    for node in nodes:
        kind = node.__class__  # (ast's classes have no subclasses)
        if kind is ast.AugAssign:
            if isinstance(node.target, ast.Subscript):
                return True
            augmented = True
        elif kind is ast.Call:
            # (`.at` is the only attribute whose code can end with "add.at": unparse only those)
            if isinstance(node.func, ast.Attribute) and (
                    node.func.attr in _TABLE_METHODS
                    or (node.func.attr == "at" and ast.unparse(node.func).endswith("add.at"))):
                return True
            bincount = bincount or call_name(node) == "bincount"
    return bincount and augmented


def _table_writers(analysis) -> set[str]:
    """The submission's functions that write into a table (a cache's insert or build),
    directly or through a helper they call (`build` -> `_add_counts`)."""
    def compute() -> set[str]:
        functions = [f for f in analysis.index.functions if f.qualname != "<module>"]
        found = {f.name for f in functions if _writes_table(f)}
        for _ in range(3):
            grown = {f.name for f in functions if f.name not in found and _called_names(f) & found}
            if not grown:
                break
            found |= grown
        return found
    return analysis.memo("table-writers", compute)


def _table_of(node) -> str:
    """The name of the table an insert writes: `t` of `t[k] += 1`, `cache` of `cache.add(...)`."""
    if isinstance(node, ast.AugAssign):
        target = node.target
        while isinstance(target, ast.Subscript):
            target = target.value
        return full_name(target).split(".")[0] if full_name(target).split(".")[0] != "self" else full_name(target)
    if isinstance(node, ast.Call):
        if full_name(node.func).endswith("add.at") and call_args(node):
            return full_name(call_args(node)[0])
        if isinstance(node.func, ast.Attribute):
            return full_name(node.func.value)
    return ""


def _names_in(code: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][\w.]*", code)) | {n.split(".")[0] for n in re.findall(r"[A-Za-z_][\w.]*", code)}


def _renewed(function, name: str, after: int, before: int) -> bool:
    """Whether `name` is rebuilt or reloaded between two lines (a fresh model or cache)."""
    for node in own_nodes(function):
        line = getattr(node, "lineno", 0)
        if not after < line < before:
            continue
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
        if isinstance(node, ast.Call) and call_name(node) in ("load_state_dict", "reset", "clear") \
                and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == name:
            return True
    return False


def _call_root(call: ast.Call) -> str | None:
    """`model` of `model(x)` and of `model.score(x)`; None for a method of a value (`x.to(d)`)
    whose receiver is itself computed."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id
    return None


def _as_parent(adaptation):
    """The adaptation of a closure, seen from the function that defines and calls it."""
    from dataclasses import replace

    return replace(adaptation, function=adaptation.function.parent)


def _written_through(analysis, function) -> set[str]:
    """Names whose tables a function writes: `t[k] += 1`, `obj.insert(...)` of a table writer."""
    writers = _table_writers(analysis)
    found = set()
    for node in own_nodes(function):
        target = None
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
            target = node.target
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                node.func.attr in writers or node.func.attr in _TABLE_METHODS):
            target = node.func.value
        name = _base_name(target)
        if name:
            found.add(name)
    return found


def _call_root_name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _model_positions(analysis, function, depth: int = 0) -> set[int]:
    """Positions of the parameters a function runs as a model: calls them (`net(x)`), or
    hands them to a helper that does."""
    params = list(function.params)
    if function.cls is not None and params and params[0] in ("self", "cls"):
        params = params[1:]
    found = set()
    for node in own_nodes(function):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in params:
            found.add(params.index(node.func.id))
        if depth < 2:
            for callee in analysis.index.resolve(call_name(node)):
                if callee is function:
                    continue
                inner = _model_positions(analysis, callee, depth + 1)
                for position in inner:
                    if position < len(node.args) and isinstance(node.args[position], ast.Name) \
                            and node.args[position].id in params:
                        found.add(params.index(node.args[position].id))
    return found


def _exclusive(function, first: ast.AST, second: ast.AST) -> bool:
    """Whether two statements sit in the two branches of one `if` (never both run)."""
    for node in own_nodes(function):
        if isinstance(node, ast.If) and node.orelse:
            body = {id(n) for stmt in node.body for n in ast.walk(stmt)}
            orelse = {id(n) for stmt in node.orelse for n in ast.walk(stmt)}
            if (id(first) in body and id(second) in orelse) or (id(first) in orelse and id(second) in body):
                return True
    return False


def _names_of(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _data_params(analysis, function) -> set[str]:
    """Parameters that carry validation or training data (not the model being trained)."""
    return analysis.taint.of(function, VAL) | analysis.taint.of(function, "train") | analysis.taint.of(function, "target")


def _same_loop(function, first: ast.AST, second: ast.AST) -> bool:
    for node in own_nodes(function):
        if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
            inside = {id(n) for n in ast.walk(node)}
            if id(first) in inside and id(second) in inside:
                return True
    return False


def _mutated_positions(analysis, function, depth: int = 0) -> set[int]:
    """Positions (after self) of the parameters a function fills: table writes through them
    (`p[k] += 1`, `p.update(...)` of a table-writing method), or gradient steps on the
    models they are (`p(x).backward()`, `p.parameters()` in a function that steps)."""
    key = f"mutated:{id(function)}"
    if depth == 0 and key in analysis._memo:
        return analysis._memo[key]
    params = list(function.params)
    if function.cls is not None and params and params[0] in ("self", "cls"):
        params = params[1:]
    found = {params.index(n) for n in _mutated_names(analysis, function, set(params), depth)}
    if depth == 0:
        analysis._memo[key] = found
    return found


def _mutated_names(analysis, function, candidates: set[str], depth: int = 0) -> set[str]:
    """Which of `candidates` (parameters, or a closure's free names) the function fills."""
    nodes = own_nodes(function)
    steps = any(isinstance(n, ast.Call) and call_name(n) in ("backward", "step") for n in nodes)
    data = _data_params(analysis, function)
    found: set[str] = _written_through(analysis, function) & candidates
    root = _base_name

    for node in nodes:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and steps \
                and node.func.attr in ("parameters", "named_parameters") and root(node.func.value) in candidates:
            found.add(root(node.func.value))
        if isinstance(node, ast.Call) and call_name(node) == "backward" and isinstance(node.func, ast.Attribute):
            # the models the loss was computed with: what is called in it, `model(x).backward()`,
            # `loss = model(x, y); loss.backward()`, `model.score(x).backward()`
            loss = [node.func.value]
            names = _names_of(node.func.value)
            for stmt in nodes:
                if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in stmt.targets):
                    loss.append(stmt.value)
            called = set()
            for call in (c for expr in loss for c in ast.walk(expr) if isinstance(c, ast.Call)):
                called.add(_call_root(call))
                # a helper that runs the model it is handed: `per_pos(model, x, y).backward()`
                for callee in analysis.index.resolve(call_name(call)):
                    positions = _model_positions(analysis, callee)
                    called |= {_call_root_name(a) for i, a in enumerate(call.args) if i in positions}
            found |= {n for n in called if n in candidates and n not in data}
        if depth < 2 and isinstance(node, ast.Call):
            for callee in analysis.index.resolve(call_name(node)):
                if callee is function:
                    continue
                for position in _mutated_positions(analysis, callee, depth + 1):
                    if position < len(node.args) and root(node.args[position]) in candidates:
                        found.add(root(node.args[position]))
                if callee.parent is function:
                    # a closure fills this function's objects it reads freely
                    found |= _mutated_names(analysis, callee, free_names(callee) & candidates, depth + 1)
    return found
