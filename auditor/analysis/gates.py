"""Same-position gates: a per-position output that exists only when the token at that
position has some property.

An online expert walks the target tokens left to right and writes its prediction for
position i into `out[i]`. Causal experts read tokens before i only. A gated one decides
*whether* to predict at i from the token at i itself (`if lut[tok]: out[i] = ...` with
`tok` the element at i, or an earlier `if lut[tok]: continue`): the hint's presence tells
the scorer something about the realized token (rulings on 2018, 1967, 2041, 2118; the
1026 mix applied only when the target's own count is > 0).

What counts is position, never a name:
- the target sequence is a value the flow analysis marks as target, or validation tokens
  read from position 1 on (`tokens[1:]`: the tokens the positions before them predict),
  followed forward into the functions it is passed to;
- the element at i is the loop's element of `enumerate(seq)` (also through `iter`/`next`)
  or `seq[i]` with `i` the loop counter;
- the gate is an `if` whose test is computed from that element.

An expert can also be switched off by its configuration: a frequency output (written as a
quotient) whose every threshold test in the caller asks for more than 1 under the run
configuration never opens (`WORD_TAU=99`), and its gated outputs do nothing.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from auditor.analysis.config import UNKNOWN, Evaluator
from auditor.analysis.flow import TARGET, VAL, _positional_params
from auditor.analysis.index import MODULE_SCOPE, Function, call_name, own_nodes, walk

_CASTS = {"float", "int", "float32", "float64", "float16", "asarray", "array", "tensor"}
# calls whose result is their first argument's values, converted or copied
_CONVERSIONS = {"asarray", "ascontiguousarray", "array", "copy", "as_tensor", "from_numpy", "tensor", "int64",
                "int32", "uint16", "list", "tuple"}


_LOOPS = (ast.For, ast.While)


@dataclass
class Gate:
    """Outputs a function writes per position only when the target there passes a test."""

    function: Function
    test: ast.expr  # the `if` test computed from the element at the written position
    write: ast.Assign  # the first gated `out[i] = ...`
    outputs: dict[str, bool] = field(default_factory=dict)  # gated array -> written as a quotient
    returned: list[str | None] = field(default_factory=list)  # what each returned position is

    @property
    def line(self) -> int:
        return self.test.lineno


@dataclass
class GateUse:
    """A call of a gated function whose results reach the score."""

    gate: Gate
    caller: Function
    call: ast.Call
    closed_by: str = ""  # why the gate can never open under the run configuration, if so


def gated_uses(analysis) -> list[GateUse]:
    return analysis.memo("gated-uses", lambda: _gated_uses(analysis))


def _gated_uses(analysis) -> list[GateUse]:
    sequences = _target_sequences(analysis)
    nested: dict[Function, dict[str, ast.AST]] = {}
    for function in analysis.index.functions:
        if function.parent is not None:
            nested.setdefault(function.parent, {})[function.name] = function.node
    gates = [gate for function, names in sequences.items()
             for gate in _gates_in(function, names, nested.get(function, {}))]
    uses = []
    for gate in gates:
        for caller, call, bound in _calls_of(analysis, gate):
            if not _reaches_score(analysis, gate, caller, bound):
                continue
            uses.append(GateUse(gate, caller, call, _closed(analysis, gate, caller, bound)))
    return uses


# --- the target sequence, followed forward ---------------------------------------------


def _target_sequences(analysis) -> dict[Function, set[str]]:
    assigns: dict[Function, list[ast.Assign]] = {}
    calls: dict[Function, list[ast.Call]] = {}
    found: dict[Function, set[str]] = {}
    for function in analysis.index.functions:
        own_assigns, own_calls = [], []
        for node in own_nodes(function):
            if node.__class__ is ast.Assign and len(node.targets) == 1 and node.targets[0].__class__ is ast.Name:
                own_assigns.append(node)
            elif node.__class__ is ast.Call and (node.args or node.keywords):
                own_calls.append(node)
        assigns[function], calls[function] = own_assigns, own_calls
        names = set(analysis.taint.of(function, TARGET))
        names |= {node.targets[0].id for node in own_assigns if _from_position_one(analysis, function, node.value)}
        if names:
            found[function] = names
    work = list(found)
    for _ in range(10 * len(analysis.index.functions) + 10):  # each step grows a set: bounded
        if not work:
            break
        function = work.pop()
        names = found[function]
        grown = True
        while grown:  # views and conversions of the sequence in this function
            grown = False
            for node in assigns[function]:
                if node.targets[0].id not in names and _root_name(node.value) in names:
                    names.add(node.targets[0].id)
                    grown = True
        for node in calls[function]:  # ... and the parameters it is passed to
            positions = [i for i, a in enumerate(node.args) if _root_name(a) in names]
            keywords = [k.arg for k in node.keywords if k.arg and _root_name(k.value) in names]
            if not positions and not keywords:
                continue
            for callee in _callees(analysis, function, node):
                params = _positional_params(callee)
                passed = {params[i] for i in positions if i < len(params)} | {k for k in keywords if k in callee.params}
                have = found.setdefault(callee, set())
                if not passed <= have:
                    have |= passed
                    work.append(callee)
    return {f: names for f, names in found.items() if names}


def _from_position_one(analysis, function: Function, value: ast.expr) -> bool:
    """`val[1:]` (through `.cpu().numpy().astype(...)`): validation tokens from position 1,
    the targets of the positions before them."""
    if not (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Slice)):
        return False
    index = value.slice
    if index.upper is not None or index.step is not None or not (
            isinstance(index.lower, ast.Constant) and index.lower.value == 1):
        return False
    return VAL in analysis.kinds(function, value.value)


def _root_name(node: ast.AST) -> str | None:
    """The variable a value is a view or conversion of: `x`, `x.astype(t)`, `np.asarray(x)`,
    `np.ascontiguousarray(x.astype(t, copy=False))`, `x[:n]`."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and not isinstance(func.value, ast.Name) or (
                    isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id not in ("np", "numpy", "torch")):
                node = func.value  # x.astype(...), x.cpu()
            elif node.args and call_name(node) in _CONVERSIONS:
                node = node.args[0]  # np.asarray(x), torch.as_tensor(x)
            else:
                return None
        else:
            return None


# --- loops over the sequence and their gated writes ------------------------------------


def _gates_in(function: Function, sequences: set[str], helpers: dict[str, ast.AST]) -> list[Gate]:
    gates = []
    iterators = _enumerate_iterators(function, sequences)
    for node in own_nodes(function):
        if node.__class__ not in _LOOPS:
            continue
        loop = _loop_over(node, sequences, iterators)
        if loop is None:
            continue
        counter, elements, body = loop
        body = _inline_helpers(helpers, body)
        gate = _gated_write(body, counter, elements | _element_reads(body, counter, sequences), sequences)
        if gate is None:
            continue
        test, write, outputs = gate
        returned = _returned_positions(function)
        if not set(outputs) & {r for r in returned if r}:
            continue
        gates.append(Gate(function, test, write, outputs, returned))
    return gates


def _inline_helpers(helpers: dict[str, ast.AST], body: list[ast.stmt]) -> list[ast.stmt]:
    """The loop body with calls of the function's own nested helpers (by name) replaced by
    their bodies (a loop body moved into a closure does its work at the call), parameters
    bound to the arguments."""
    if not helpers:
        return body
    out: list[ast.stmt] = []
    for stmt in body:
        call = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
        helper = helpers.get(call.func.id) if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else None
        if not isinstance(helper, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(stmt)
            continue
        params = [a.arg for a in helper.args.posonlyargs + helper.args.args]
        for param, argument in zip(params, call.args):
            out.append(ast.copy_location(ast.Assign(targets=[ast.Name(param, ast.Store())], value=argument), stmt))
        for keyword in call.keywords:
            if keyword.arg:
                out.append(ast.copy_location(
                    ast.Assign(targets=[ast.Name(keyword.arg, ast.Store())], value=keyword.value), stmt))
        out.extend(s for s in helper.body if not isinstance(s, ast.Return))
    return out


def _enumerate_iterators(function: Function, sequences: set[str]) -> set[str]:
    """Names bound to `iter(enumerate(seq))`: a for loop rewritten with next()."""
    names = set()
    for node in own_nodes(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Call) and call_name(node.value) == "iter" and node.value.args \
                and _enumerated(node.value.args[0], sequences):
            names.add(node.targets[0].id)
    return names


def _enumerated(node: ast.AST, sequences: set[str]) -> bool:
    return isinstance(node, ast.Call) and call_name(node) == "enumerate" and bool(node.args) \
        and _root_name(node.args[0]) in sequences


def _loop_over(node, sequences, iterators) -> tuple[str, set[str], list[ast.stmt]] | None:
    """(counter, element names, body) of a loop that walks a target sequence by position."""
    if isinstance(node, ast.For):
        if _enumerated(node.iter, sequences) and isinstance(node.target, ast.Tuple) and len(node.target.elts) == 2 \
                and isinstance(node.target.elts[0], ast.Name):
            return node.target.elts[0].id, _names(node.target.elts[1]), node.body
        if isinstance(node.iter, ast.Call) and call_name(node.iter) == "range" and isinstance(node.target, ast.Name):
            return node.target.id, set(), node.body
        return None
    if not isinstance(node, ast.While):
        return None
    # `while True: try: item = next(it) ...; i, tok = item` (for over enumerate, rewritten)
    items = set()
    for stmt in walk(ast.Module(body=node.body, type_ignores=[])):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call) and call_name(stmt.value) == "next" \
                and stmt.value.args and isinstance(stmt.value.args[0], ast.Name) \
                and stmt.value.args[0].id in iterators:
            target = stmt.targets[0]
            if isinstance(target, ast.Tuple) and len(target.elts) == 2 and isinstance(target.elts[0], ast.Name):
                return target.elts[0].id, _names(target.elts[1]), node.body
            if isinstance(target, ast.Name):
                items.add(target.id)
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Name) and stmt.value.id in items:
            target = stmt.targets[0]
            if isinstance(target, ast.Tuple) and len(target.elts) == 2 and isinstance(target.elts[0], ast.Name):
                return target.elts[0].id, _names(target.elts[1]), node.body
    # `i = 0; while i < n: ...; i += 1` (for over range, rewritten)
    test = node.test
    if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and any(
            isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name) and s.target.id == test.left.id
            for s in node.body):
        return test.left.id, set(), node.body
    return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in walk(node) if isinstance(n, ast.Name)}


def _element_reads(body: list[ast.stmt], counter: str, sequences: set[str]) -> set[str]:
    """Names assigned the element at the counter: `tok = seq[i]`, `tok = int(seq[i])`."""
    names = set()
    for stmt in body:
        if isinstance(stmt, ast.Assign) and any(
                isinstance(n, ast.Subscript) and _root_name(n.value) in sequences and _is_name(n.slice, counter)
                for n in walk(stmt.value)):
            for target in stmt.targets:
                names |= _names(target)
    return names


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _gated_write(body, counter, elements, sequences):
    """(test, first write, {output: quotient}) of writes `out[counter] = v` that run only
    when a test computed from the element at the counter holds."""
    if not elements:
        return None
    derived = set(elements)
    for _ in range(3):  # values computed from the element, in the loop body
        for stmt in _statements(body):
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None \
                    and _names(stmt.value) & derived:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, (ast.Name, ast.Tuple)):
                        derived |= _names(target)
    found: dict[str, bool] = {}
    first: list = []  # (test, write, whether the test guards the write directly)

    def visit(statements: list[ast.stmt], gate: ast.expr | None, direct: bool) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.If):
                own = stmt.test if _names(stmt.test) & derived else None
                visit(stmt.body, own or gate, own is not None or direct)
                visit(stmt.orelse, own or gate, own is not None or direct)
                if own is not None and any(isinstance(s, ast.Continue) for s in stmt.body):
                    gate, direct = own, False  # `if lut[tok]: ...; continue`: the rest runs only otherwise
                continue
            if isinstance(stmt, (ast.For, ast.While, ast.With, ast.Try)):
                inner = [s for part in ("body", "orelse", "finalbody") for s in getattr(stmt, part, [])]
                inner += [s for handler in getattr(stmt, "handlers", []) for s in handler.body]
                visit(inner, gate, direct)
                continue
            if gate is not None and isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Subscript) and _is_name(target.slice, counter) \
                            and isinstance(target.value, ast.Name) and target.value.id not in sequences:
                        found[target.value.id] = found.get(target.value.id, False) or any(
                            isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) for n in walk(stmt.value))
                        first.append((gate, stmt, direct))

    visit(body, None, False)
    if not first:
        return None
    # cite an `if` that guards the write itself before a `continue` that skips it
    test, write, _ = sorted(first, key=lambda f: not f[2])[0]
    return test, write, found


def _statements(body: list[ast.stmt]):
    for stmt in body:
        yield stmt
        for part in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(stmt, part, []) or [])


def _returned_positions(function: Function) -> list[str | None]:
    """What the function returns, position by position: `return a, b` -> ["a", "b"]."""
    for node in own_nodes(function):
        if isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Tuple):
                return [_root_name(e) for e in node.value.elts]
            return [_root_name(node.value)]
    return []


# --- where the gated outputs go ----------------------------------------------------------


def _calls_of(analysis, gate: Gate):
    """(caller, call, {bound name: output}) for each call of the gated function."""
    gate_outputs = gate.returned
    for caller in analysis.index.functions:
        for node in own_nodes(caller):
            if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
                continue
            if gate.function not in _callees(analysis, caller, node.value):
                continue
            target = node.targets[0]
            bound = {}
            if isinstance(target, ast.Tuple):
                for element, output in zip(target.elts, gate_outputs):
                    if isinstance(element, ast.Name) and output:
                        bound[element.id] = output
            elif isinstance(target, ast.Name) and len(gate_outputs) == 1 and gate_outputs[0]:
                bound[target.id] = gate_outputs[0]
            yield caller, node.value, bound


def _reaches_score(analysis, gate: Gate, caller: Function, bound: dict[str, str]) -> bool:
    gated = {name for name, output in bound.items() if output in gate.outputs}
    return bool(gated & (analysis.score.of(caller) | analysis.score.returned_by(caller)))


def _closed(analysis, gate: Gate, caller: Function, bound: dict[str, str]) -> str:
    """Why a gated frequency can never pass its threshold under the run configuration
    (every `freq >= T` in the caller has T > 1), or ""."""
    frequencies = {name for name, output in bound.items() if gate.outputs.get(output)}
    if not frequencies:
        return ""
    for node in own_nodes(caller):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.GtE, ast.Gt))
                and _root_name(node.left) in frequencies):
            continue
        values = _values_of(analysis, caller, node.comparators[0])
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1 for v in values):
            name = _root_name(node.left)
            shown = ", ".join(f"{v:g}" for v in sorted(set(values)))
            return f"`{ast.unparse(node)}` asks a frequency for more than 1 ({shown} under the run configuration)"
    return ""


def _values_of(analysis, function: Function, expr: ast.expr) -> list:
    """The values an expression takes under the run configuration: constants, settings,
    and a parameter's arguments at every call (or its default); [] when any is unknown."""
    while isinstance(expr, ast.Call) and len(expr.args) == 1 and call_name(expr) in _CASTS:
        expr = expr.args[0]
    evaluator = Evaluator(analysis.config)
    if isinstance(expr, ast.Name) and expr.id in function.params and function.qualname != MODULE_SCOPE:
        values = []
        for caller, call in _call_sites(analysis, function):
            argument = _argument(function, call, expr.id)
            if argument is None:
                argument = _default(function, expr.id)
            value = UNKNOWN if argument is None else evaluator.value(argument)
            if value is UNKNOWN:
                return []
            values.append(value)
        if not values:
            default = _default(function, expr.id)
            value = UNKNOWN if default is None else evaluator.value(default)
            return [] if value is UNKNOWN else [value]
        return values
    value = evaluator.value(expr)
    return [] if value is UNKNOWN else [value]


def _call_sites(analysis, function: Function):
    for caller in analysis.index.functions:
        for node in own_nodes(caller):
            if isinstance(node, ast.Call) and function in _callees(analysis, caller, node):
                yield caller, node


def _callees(analysis, caller: Function, call: ast.Call) -> list[Function]:
    """The functions a call may run; for `obj.m()` with `obj = SomeClass(...)` in the caller,
    only that class's `m` (two expert classes both have a `process_chunk`)."""
    callees = analysis.index.resolve(call_name(call))
    func = call.func
    if len(callees) < 2 or not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return callees
    classes = {call_name(node.value) for node in own_nodes(caller)
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
               and any(_is_name(t, func.value.id) for t in node.targets)}
    classes &= set(analysis.index.classes)
    return [f for f in callees if f.cls in classes] if classes else callees


def _argument(function: Function, call: ast.Call, param: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == param:
            return keyword.value
    params = _positional_params(function)
    if param in params and params.index(param) < len(call.args):
        return call.args[params.index(param)]
    return None


def _default(function: Function, param: str) -> ast.expr | None:
    arguments = function.node.args
    positional = arguments.posonlyargs + arguments.args
    for arg, default in zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults):
        if arg.arg == param:
            return default
    for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        if arg.arg == param:
            return default
    return None
