"""Data flow: which names hold validation tokens, and which hold training data.

Per function, names are tainted by sources (`load_validation_tokens(...)`, a
`fineweb_val_*` path, `val_tokens`, `val_data.*`; `fineweb_train_*`, `train_files`,
train loaders), then through assignments, loops, `with ... as`, slices and calls:
an argument that carries a taint taints the callee's parameter, and a callee that
returns a tainted value taints its call. Flow-insensitive within a function, iterated
to a fixpoint across functions.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from auditor.analysis.index import MODULE_SCOPE, Function, Index, call_name, dotted, own_nodes

VAL = "val"
TRAIN = "train"

_VAL_NAME = re.compile(r"^(val_tokens|val_data|val_ids|val_stream|val_np|val_tok|val_seq|validation_tokens|eval_tokens)\w*$|(^|\.)val_data(\.|$)")
_VAL_CALL = re.compile(r"(?i)^(load_?val\w*|load_validation\w*|_?load_val\w*|get_val_tokens|read_val\w*)$")
_VAL_STRING = re.compile(r"fineweb_val|_val_\*|val_\*\.bin|/val\b")
_VAL_ATTR = re.compile(r"^(val_files|val_path|val_pattern|val_glob|val_bin|val_shards?)$")

_TRAIN_NAME = re.compile(r"^(train_loader|train_stream|train_tokens|train_data)$")
_TRAIN_CALL = re.compile(r"^(DistributedTokenLoader|TokenStream|\w*TrainLoader|\w*TokenLoader|ShuffledSequenceLoader|\w*DataLoader)$")
_TRAIN_STRING = re.compile(r"fineweb_train")
_TRAIN_ATTR = re.compile(r"^(train_files|train_path|train_pattern|train_glob|train_shards?)$")

# Calls whose result does not carry the data onward (sizes, shapes, dtypes, devices).
_OPAQUE_CALLS = {"len", "numel", "size", "isinstance", "print", "log0", "range", "str", "repr", "type", "min", "max",
                 "int", "float", "enumerate", "zip"}


@dataclass
class Taint:
    names: dict[Function, dict[str, set[str]]] = field(default_factory=dict)  # fn -> kind -> names
    # What a function's return value carries from its own sources, whatever its arguments:
    # a shard reader called once with a val file and once with a train file returns neither.
    returns: dict[str, set[str]] = field(default_factory=dict)  # function name -> kinds
    # name -> {line of an assignment: kinds it put in the name}, for flow-sensitive reads.
    defs: dict[Function, dict[str, dict[int, set[str]]]] = field(default_factory=dict)
    # Names tainted by the function's own sources, not by what callers passed in.
    intrinsic: dict[Function, dict[str, set[str]]] = field(default_factory=dict)

    def of(self, function: Function, kind: str) -> set[str]:
        return self.names.get(function, {}).get(kind, set())


_TRAIN_HINT = re.compile(r"(?i)train")
_VAL_HINT = re.compile(r"(?i)(^|_)val")
_SOURCE_HINT = re.compile(r"val|train|fineweb|load_|Loader|TokenStream")


class _Flow:
    def __init__(self, index: Index):
        self.index = index
        self.taint = Taint()
        self.changed = False
        self.dirty: set[Function] = set()

    @property
    def intrinsic(self) -> dict:
        """Taint from the function's own sources only (no parameter bindings): for returns."""
        return self.taint.intrinsic

    def kinds_of(self, function: Function, expr: ast.AST, intrinsic: bool = False, line: int | None = None) -> set[str]:
        """The taint kinds an expression carries inside `function` (at `line`, when given).

        With a line, a local name carries what its latest assignment above that line put in
        it: `x, y = train_loader.next_batch()` in a warm-up loop is training data even if
        `x` holds validation tokens elsewhere in main(). Without one earlier (a loop's back
        edge, a parameter), every assignment counts.
        """
        static, names, calls = _expr_facts(expr)
        kinds = set(static)
        tainted = (self.intrinsic if intrinsic else self.taint.names).get(function)
        if tainted:
            defs = self.taint.defs.get(function, {}) if line is not None and not intrinsic else {}
            remaining = names
            if defs:
                remaining = set()
                for name in names:
                    lines = defs.get(name)
                    earlier = [l for l in lines if l < line] if lines else None
                    if earlier:
                        kinds |= lines[max(earlier)]
                    else:
                        remaining.add(name)
            for kind, tainted_names in tainted.items():
                if kind not in kinds and not tainted_names.isdisjoint(remaining):
                    kinds.add(kind)
        returns = self.taint.returns
        for name, receiver in calls:
            if name in returns:
                returned = returns[name]
                # Methods are matched by name across classes: train_loader.next_batch() is
                # not the val loader's next_batch(), whatever that one returns.
                if receiver and _TRAIN_HINT.search(receiver):
                    returned = returned - {VAL}
                elif receiver and _VAL_HINT.search(receiver):
                    returned = returned - {TRAIN}
                kinds |= returned
        return kinds

    def add(self, function: Function, kind: str, name: str, intrinsic: bool = False) -> None:
        table = self.intrinsic if intrinsic else self.taint.names
        names = table.setdefault(function, {}).setdefault(kind, set())
        if name not in names:
            names.add(name)
            self.changed = True
            self.dirty.add(function)

    def run(self) -> Taint:
        nodes = {}
        for function in self.index.functions:
            # Functions with no source of taint wait until a caller hands them some.
            text = "\n".join(function.unit.lines[function.lineno - 1:function.end_lineno]) if function.qualname != MODULE_SCOPE else function.unit.text
            if _SOURCE_HINT.search(text):
                self.dirty.add(function)
            nodes[function] = [n for n in own_nodes(function) if isinstance(n, _FLOW_NODES)]
        rounds = 0
        while self.dirty and rounds < 12:
            rounds += 1
            work, self.dirty = self.dirty, set()
            returns_before = {k: set(v) for k, v in self.taint.returns.items()}
            for function in work:
                for _ in range(4):  # intra-function fixpoint: flow backwards through loops
                    self.changed = False
                    for node in nodes[function]:
                        self._node(function, node)
                    if not self.changed:
                        break
            if self.taint.returns != returns_before:
                # a callee now returns tainted data: its callers must look again
                grown = {k for k, v in self.taint.returns.items() if v != returns_before.get(k)}
                for function, function_nodes in nodes.items():
                    if any(isinstance(n, ast.Call) and call_name(n) in grown for n in function_nodes):
                        self.dirty.add(function)
        return self.taint

    def _bind_targets(self, function: Function, target: ast.AST, kinds: set[str], intrinsic: bool = False) -> None:
        for kind in kinds:
            for sub in ast.walk(target):
                if isinstance(sub, (ast.Name, ast.Attribute)):
                    name = dotted(sub)
                    if name:
                        self.add(function, kind, name, intrinsic)
                    if isinstance(sub, ast.Attribute):
                        break
                elif isinstance(sub, ast.Subscript):
                    name = dotted(sub.value)
                    if name:
                        self.add(function, kind, name, intrinsic)
                    break

    def _assign(self, function: Function, value: ast.AST, target: ast.AST, line: int | None = None) -> None:
        kinds = self.kinds_of(function, value, line=line)
        defs = self.taint.defs.setdefault(function, {})
        if line is not None:
            for name in _target_names(target):
                at = defs.setdefault(name, {}).setdefault(line, set())
                if not kinds <= at:
                    at |= kinds
                    self.changed = True
        if kinds and (line is None or isinstance(target, ast.Subscript)):
            # A partial write (x[i] = v, x += v, x.append(v)) adds to whatever x holds,
            # whichever assignment made it: flow-insensitive for mutated containers.
            base = target.value if isinstance(target, ast.Subscript) else target
            for name in _target_names(base):
                for at in defs.get(name, {}).values():
                    if not kinds <= at:
                        at |= kinds
                        self.changed = True
        if kinds:
            self._bind_targets(function, target, kinds)
            own = self.kinds_of(function, value, intrinsic=True)
            if own:
                self._bind_targets(function, target, own, intrinsic=True)

    def _node(self, function: Function, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._assign(function, node.value, target, node.lineno)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            self._assign(function, node.value, node.target, node.lineno)
        elif isinstance(node, ast.AugAssign):
            self._assign(function, node.value, node.target)  # x += v keeps what x held
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._assign(function, node.iter, node.target, node.lineno)
        elif isinstance(node, ast.comprehension):
            self._assign(function, node.iter, node.target)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._assign(function, node.context_expr, node.optional_vars, node.context_expr.lineno)
        elif isinstance(node, ast.Return) and node.value is not None:
            kinds = self.kinds_of(function, node.value, intrinsic=True, line=node.lineno)
            if kinds:
                returned = self.taint.returns.setdefault(function.name, set())
                if not kinds <= returned:
                    returned |= kinds
                    self.changed = True
        elif isinstance(node, ast.Call):
            self._call(function, node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # obj.method(tainted) taints obj: cache.update(val_tokens), buf.extend(...)
            call = node.value
            if isinstance(call.func, ast.Attribute) and call.func.attr in _MUTATORS and call.args:
                owner = dotted(call.func.value)
                if owner:
                    for arg in call.args:
                        self._assign(function, arg, call.func.value)

    def _call(self, function: Function, call: ast.Call) -> None:
        name = call_name(call)
        if not name or name in _OPAQUE_CALLS:
            return
        callees = self.index.resolve(name)
        if not callees:
            return
        arg_kinds = [self.kinds_of(function, a, line=call.lineno) for a in call.args]
        kw_kinds = {kw.arg: self.kinds_of(function, kw.value, line=call.lineno) for kw in call.keywords if kw.arg}
        if not any(arg_kinds) and not any(kw_kinds.values()):
            return
        for callee in callees:
            params = list(callee.params)
            if callee.cls is not None and params and params[0] in ("self", "cls"):
                params = params[1:]
            for position, kinds in enumerate(arg_kinds):
                if kinds and position < len(params):
                    for kind in kinds:
                        self.add(callee, kind, params[position])
            for keyword, kinds in kw_kinds.items():
                if kinds and keyword in callee.params:
                    for kind in kinds:
                        self.add(callee, kind, keyword)


_MUTATORS = ("append", "extend", "update", "add", "put", "insert", "copy_")
_FLOW_NODES = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For, ast.AsyncFor, ast.comprehension,
               ast.withitem, ast.Return, ast.Call, ast.Expr)


def _expr_facts(expr: ast.AST) -> tuple[frozenset, frozenset, tuple]:
    """(kinds from sources, names read, functions called) of an expression; cached, since
    the fixpoint asks about the same expressions many times."""
    facts = getattr(expr, "_auditor_facts", None)
    if facts is not None:
        return facts
    static: set[str] = set()
    names: set[str] = set()
    calls: list[str] = []
    for node in _walk_expr(expr):
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = dotted(node)
            if name is None:
                if isinstance(node, ast.Attribute):
                    name = node.attr
                else:
                    continue
            names.add(name)
            leaf = name.rsplit(".", 1)[-1]
            if _VAL_NAME.search(leaf) or _VAL_NAME.search(name) or _VAL_ATTR.match(leaf):
                static.add(VAL)
            if _TRAIN_NAME.match(leaf) or _TRAIN_ATTR.match(leaf):
                static.add(TRAIN)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _VAL_STRING.search(node.value):
                static.add(VAL)
            if _TRAIN_STRING.search(node.value):
                static.add(TRAIN)
        elif isinstance(node, ast.Call):
            name = call_name(node)
            if _VAL_CALL.match(name):
                static.add(VAL)
            if _TRAIN_CALL.match(name):
                static.add(TRAIN)
            receiver = dotted(node.func.value) if isinstance(node.func, ast.Attribute) else None
            calls.append((name, (receiver or "").rsplit(".", 1)[-1]))
    facts = (frozenset(static), frozenset(names), tuple(calls))
    expr._auditor_facts = facts  # kept on the node: it lives as long as the tree
    return facts


def _target_names(target: ast.AST) -> list[str]:
    """Names an assignment replaces whole (`x`, `a, b`, `self.x`; not `x[i]`)."""
    if isinstance(target, (ast.Name, ast.Attribute)):
        name = dotted(target)
        return [name] if name else []
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _walk_expr(expr: ast.AST):
    """Walk an expression, but not into lambdas or calls that only read sizes."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.Call) and call_name(node) in _OPAQUE_CALLS:
            continue
        if isinstance(node, ast.Attribute) and node.attr in ("shape", "dtype", "device", "numel", "size"):
            continue
        if isinstance(node, ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))


def compute_flow(index: Index) -> Taint:
    return _Flow(index).run()


def expr_kinds(taint: Taint, index: Index, function: Function, expr: ast.AST) -> set[str]:
    flow = _Flow(index)
    flow.taint = taint
    return flow.kinds_of(function, expr)
