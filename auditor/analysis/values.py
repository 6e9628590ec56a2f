"""The reported score: which values reach what the run reports as its result.

A value is part of the score because it reaches the report, not because of its name. The
report is a call (a print, a logger, a JSON dump) or a dict whose text carries `val_bpb` or
`val_loss`; the slice runs backward from its arguments through assignments, in-place
accumulation (`s += ...`, `s.add_(...)`, `xs.append(...)`, `xs[i] = ...`), the return values
of the submission's own functions it calls, and the parameters of helpers it hands an
accumulator to. A snippet with no such report (a rule's example) uses every function's
return as its report.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from auditor.analysis.index import Function, Index, call_name, child_nodes, dotted, own_nodes

REPORT_TEXT = re.compile(r"val_bpb|val_loss|\bbpb\b")
_ACCUMULATE = {"add_", "index_add_", "scatter_add_", "append", "extend", "copy_", "mul_", "sub_", "put_", "insert"}


@dataclass
class Score:
    """Names (roots and `self.x` attributes) whose value reaches the reported score, by function."""

    names: dict[Function, set[str]] = field(default_factory=dict)
    reported: bool = False  # False when no report was found and returns stood in for it
    # Per function, the names its own return value is made of (reported or not).
    returns: dict[Function, set[str]] = field(default_factory=dict)

    def of(self, function: Function) -> set[str]:
        return self.names.get(function, set())

    def returned_by(self, function: Function) -> set[str]:
        return self.returns.get(function, set())


def _root(node: ast.AST) -> str | None:
    """`loss_sum` for `loss_sum`, `loss_sum[i]`, `loss_sum.item()`; `self.x` for `self.x[...]`."""
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        elif isinstance(node, ast.Starred):
            node = node.value
        else:
            break
    name = dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
    if name is None:
        return None
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "self" and len(parts) > 1 else parts[0]


def _walk(node: ast.AST):
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(child_nodes(current))


def _walk_list(node: ast.AST) -> list[ast.AST]:
    """_walk's nodes, in its order, as a list."""
    out, stack = [], [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(child_nodes(current))
    return out


def _reads(node: ast.AST) -> set[str]:
    """Root names an expression reads (`self.x` kept as a field of its own)."""
    return _reads_of(_walk(node))


def _reads_of(nodes) -> set[str]:
    found = set()
    for sub in nodes:
        if sub.__class__ is ast.Name:
            found.add(sub.id)
        elif sub.__class__ is ast.Attribute and sub.value.__class__ is ast.Name and sub.value.id == "self":
            found.add("self." + sub.attr)
    return found


def _targets(target: ast.AST) -> set[str]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return {n for element in target.elts for n in _targets(element)}
    root = _root(target)
    return {root} if root else set()


def _text_reports(node: ast.AST) -> bool:
    return any(sub.__class__ is ast.Constant and isinstance(sub.value, str) and REPORT_TEXT.search(sub.value)
               for sub in _walk(node))


@dataclass
class _FunctionFacts:
    depends: dict[str, set[str]] = field(default_factory=dict)  # name -> names its value is made of
    calls_into: dict[str, list[Function]] = field(default_factory=dict)  # name -> callees whose return it holds
    returns: set[str] = field(default_factory=set)  # names in return/yield expressions
    handed: list[tuple[ast.Call, list[Function]]] = field(default_factory=list)  # calls to own functions
    seeds: set[str] = field(default_factory=set)  # names in report calls / report dicts
    reported_calls: list[Function] = field(default_factory=list)  # own functions called inside a report


# the classes of node that _facts looks at (ast's classes have no subclasses)
_FACT_NODES = frozenset({ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For, ast.AsyncFor,
                         ast.comprehension, ast.withitem, ast.Return, ast.Yield, ast.Call, ast.Dict})


def _facts(function: Function, index: Index) -> _FunctionFacts:
    """Dependences among a function's names and its calls into the submission's own
    functions; computed once per function (flow's summaries and the score share it)."""
    cached = function.__dict__.get("_value_facts")
    if cached is not None:
        return cached
    facts = function._value_facts = _FunctionFacts()

    def resolve(name: str) -> list[Function]:
        return index.resolve(name) if index is not None else []

    def depend(names: set[str], value: ast.AST) -> None:
        nodes = _walk_list(value)
        reads = _reads_of(nodes)
        callees = [c for call in nodes if call.__class__ is ast.Call
                   for c in resolve(call_name(call))]
        for name in names:
            facts.depends.setdefault(name, set()).update(reads - {name})
            if callees:
                facts.calls_into.setdefault(name, []).extend(callees)

    nodes = own_nodes(function)
    # Whether any string here names the report: if none does, no call or dict can report
    # (every argument and key is among the function's own nodes), and none is walked.
    reporting = any(n.__class__ is ast.Constant and isinstance(n.value, str) and REPORT_TEXT.search(n.value)
                    for n in nodes)
    for node in nodes:
        if node.__class__ not in _FACT_NODES:
            continue  # (most nodes: names, constants, operators)
        if isinstance(node, ast.Assign):
            for target in node.targets:
                depend(_targets(target), node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            depend(_targets(node.target), node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            depend(_targets(node.target), node.iter)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            depend(_targets(node.optional_vars), node.context_expr)
        elif isinstance(node, (ast.Return, ast.Yield)) and node.value is not None:
            facts.returns |= _reads(node.value)
            depend({"<return>"}, node.value)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in _ACCUMULATE:
                owner = _root(node.func.value)
                if owner:
                    for arg in node.args:
                        depend({owner}, arg)
            callees = resolve(call_name(node))
            if callees:
                facts.handed.append((node, callees))
            if reporting and any(_text_reports(a) for a in [*node.args, *(k.value for k in node.keywords)]):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    facts.seeds |= _reads(arg)
                    # print(f"val_bpb: {evaluate(model, tokens)}"): what evaluate returns is reported
                    for call in (n for n in _walk(arg) if n.__class__ is ast.Call):
                        facts.reported_calls.extend(resolve(call_name(call)))
        elif reporting and isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is not None and _text_reports(key):
                    facts.seeds |= _reads(value)
    return facts


def returned_names(function: Function, index: Index) -> set[str]:
    """The names a function's return (or yield) values are made of, through its own
    assignments and in-place writes, and those of its closures (a loop body moved into a
    nested helper that appends to the function's list)."""
    fact = _facts(function, index)
    nested = [_facts(f, index) for f in index.functions if f.parent is function] if index is not None else []
    closure, stack = set(), list(fact.returns)
    while stack:
        name = stack.pop()
        if name not in closure:
            closure.add(name)
            stack.extend(fact.depends.get(name, ()))
            for inner in nested:
                stack.extend(inner.depends.get(name, ()))
    return closure


def compute_score(index: Index) -> Score:
    facts = {f: _facts(f, index) for f in index.functions}
    # who calls whom, for a report made inside a helper (`show(total, count)`): the
    # caller's arguments are what the helper's parameters report
    callers: dict[Function, list[tuple[Function, ast.Call]]] = {}
    for function, fact in facts.items():
        for call, callees in fact.handed:
            for callee in callees:
                callers.setdefault(callee, []).append((function, call))
    score = Score(reported=any(f.seeds for f in facts.values()))
    for function in facts:
        score.returns[function] = returned_names(function, index)
    work: list[tuple[Function, str]] = []
    call_roots: dict[int, tuple[list, list]] = {}  # id(call) -> roots of its arguments, keywords

    def mark(function: Function, name: str) -> None:
        names = score.names.setdefault(function, set())
        if name not in names:
            names.add(name)
            work.append((function, name))

    for function, fact in facts.items():
        seeds = fact.seeds if score.reported else fact.returns
        for name in seeds:
            mark(function, name)
        if score.reported:
            for callee in fact.reported_calls:
                for name in facts[callee].returns:
                    mark(callee, name)
    while work:
        function, name = work.pop()
        fact = facts[function]
        if name in function.params:
            params = list(function.params)
            if function.cls is not None and params and params[0] in ("self", "cls"):
                params = params[1:]
            position = params.index(name) if name in params else None
            for caller, call in callers.get(function, ()):
                args = []
                if position is not None and position < len(call.args):
                    args.append(call.args[position])
                args += [k.value for k in call.keywords if k.arg == name]
                for arg in args:
                    for read in _reads(arg):
                        mark(caller, read)
        for source in fact.depends.get(name, ()):
            mark(function, source)
        for callee in fact.calls_into.get(name, ()):
            for returned in facts[callee].returns:
                mark(callee, returned)
        # An accumulator handed to a helper is filled there: the helper's parameter is it.
        for call, callees in fact.handed:
            roots = call_roots.get(id(call))
            if roots is None:  # (asked once per name that reaches the score: computed once)
                roots = call_roots[id(call)] = ([_root(arg) for arg in call.args],
                                                [(k.arg, _root(k.value)) for k in call.keywords if k.arg])
            positions = [i for i, root in enumerate(roots[0]) if root == name]
            keywords = [arg for arg, root in roots[1] if root == name]
            for callee in callees:
                params = list(callee.params)
                if callee.cls is not None and params and params[0] in ("self", "cls"):
                    params = params[1:]
                for position in positions:
                    if position < len(params):
                        mark(callee, params[position])
                for keyword in keywords:
                    if keyword in callee.params:
                        mark(callee, keyword)
    return score
