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

from auditor.analysis.index import Function, Index, call_name, dotted, own_nodes

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
    returns: dict[str, set[str]] = field(default_factory=dict)  # function name -> kinds returned

    def of(self, function: Function, kind: str) -> set[str]:
        return self.names.get(function, {}).get(kind, set())


class _Flow:
    def __init__(self, index: Index):
        self.index = index
        self.taint = Taint()
        self.changed = True

    def kinds_of(self, function: Function, expr: ast.AST) -> set[str]:
        """The taint kinds an expression carries inside `function`."""
        kinds: set[str] = set()
        tainted = self.taint.names.get(function, {})
        for node in _walk_expr(expr):
            if isinstance(node, (ast.Name, ast.Attribute)):
                name = dotted(node)
                if name is None:
                    if isinstance(node, ast.Attribute):
                        name = node.attr
                    else:
                        continue
                leaf = name.rsplit(".", 1)[-1]
                for kind, names in tainted.items():
                    if name in names:
                        kinds.add(kind)
                if _VAL_NAME.search(leaf) or _VAL_NAME.search(name) or _VAL_ATTR.match(leaf):
                    kinds.add(VAL)
                if _TRAIN_NAME.match(leaf) or _TRAIN_ATTR.match(leaf):
                    kinds.add(TRAIN)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _VAL_STRING.search(node.value):
                    kinds.add(VAL)
                if _TRAIN_STRING.search(node.value):
                    kinds.add(TRAIN)
            elif isinstance(node, ast.Call):
                name = call_name(node)
                if _VAL_CALL.match(name):
                    kinds.add(VAL)
                if _TRAIN_CALL.match(name):
                    kinds.add(TRAIN)
                kinds |= self.taint.returns.get(name, set())
        return kinds

    def add(self, function: Function, kind: str, name: str) -> None:
        names = self.taint.names.setdefault(function, {}).setdefault(kind, set())
        if name not in names:
            names.add(name)
            self.changed = True

    def run(self) -> Taint:
        rounds = 0
        while self.changed and rounds < 8:
            self.changed = False
            rounds += 1
            for function in self.index.functions:
                self._function(function)
        return self.taint

    def _function(self, function: Function) -> None:
        for _ in range(4):  # intra-function fixpoint; flow across loops needs a few passes
            before = self.changed
            self.changed = False
            for node in own_nodes(function):
                self._node(function, node)
            moved = self.changed
            self.changed = before or moved
            if not moved:
                break

    def _bind_targets(self, function: Function, target: ast.AST, kinds: set[str]) -> None:
        for kind in kinds:
            for sub in ast.walk(target):
                if isinstance(sub, (ast.Name, ast.Attribute)):
                    name = dotted(sub)
                    if name:
                        self.add(function, kind, name)
                    if isinstance(sub, ast.Attribute):
                        break
                elif isinstance(sub, ast.Subscript):
                    name = dotted(sub.value)
                    if name:
                        self.add(function, kind, name)
                    break

    def _node(self, function: Function, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            kinds = self.kinds_of(function, node.value)
            if kinds:
                for target in node.targets:
                    self._bind_targets(function, target, kinds)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            kinds = self.kinds_of(function, node.value)
            if kinds:
                self._bind_targets(function, node.target, kinds)
        elif isinstance(node, ast.NamedExpr):
            kinds = self.kinds_of(function, node.value)
            if kinds:
                self._bind_targets(function, node.target, kinds)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            kinds = self.kinds_of(function, node.iter)
            if kinds:
                self._bind_targets(function, node.target, kinds)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            kinds = self.kinds_of(function, node.context_expr)
            if kinds:
                self._bind_targets(function, node.optional_vars, kinds)
        elif isinstance(node, ast.Return) and node.value is not None:
            kinds = self.kinds_of(function, node.value)
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
            if isinstance(call.func, ast.Attribute) and call.func.attr in ("append", "extend", "update", "add", "put", "insert", "copy_"):
                kinds = set().union(*(self.kinds_of(function, a) for a in call.args)) if call.args else set()
                owner = dotted(call.func.value)
                if kinds and owner:
                    for kind in kinds:
                        self.add(function, kind, owner)

    def _call(self, function: Function, call: ast.Call) -> None:
        name = call_name(call)
        if not name or name in _OPAQUE_CALLS:
            return
        callees = self.index.resolve(name)
        if not callees:
            return
        arg_kinds = [self.kinds_of(function, a) for a in call.args]
        kw_kinds = {kw.arg: self.kinds_of(function, kw.value) for kw in call.keywords if kw.arg}
        if not any(arg_kinds) and not any(kw_kinds.values()):
            return
        via_attribute = isinstance(call.func, ast.Attribute)
        for callee in callees:
            params = list(callee.params)
            if callee.cls is not None and params and params[0] in ("self", "cls") and via_attribute:
                params = params[1:]
            elif callee.cls is not None and params and params[0] == "self":
                params = params[1:]
            for position, kinds in enumerate(arg_kinds):
                if kinds and position < len(params):
                    for kind in kinds:
                        self.add(callee, kind, params[position])
            for keyword, kinds in kw_kinds.items():
                if kinds and keyword in callee.params:
                    for kind in kinds:
                        self.add(callee, kind, keyword)


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
