"""The index: every function and class of a submission, and who references whom.

Built from Python's `ast` (fast, exact line numbers) over the main script and the helper
modules it imports. Rules read the same trees, one function at a time (a `Scope`, see
analysis/__init__.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

MODULE_SCOPE = "<module>"


@dataclass
class Unit:
    """One analyzed file: the main script or a helper module it imports."""

    path: Path
    display: str  # path as shown in findings
    text: str
    tree: ast.Module
    packing: str = ""  # how the text was unpacked, "" when plain
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()

    def line_text(self, line: int) -> str:
        return self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""


@dataclass(eq=False)
class Function:
    qualname: str  # "eval_val", "Cache.lookup", "main.<locals>.inner", or "<module>"
    name: str
    node: ast.AST  # FunctionDef/AsyncFunctionDef, or the Module for module scope
    unit: Unit
    cls: str | None  # enclosing class name, for methods
    params: list[str]
    top: ast.stmt | None  # the top-level statement that contains it (None for <module>)
    parent: "Function | None" = None
    _own_nodes: list | None = field(default=None, repr=False)

    @property
    def lineno(self) -> int:
        return getattr(self.node, "lineno", 1)

    @property
    def end_lineno(self) -> int:
        return getattr(self.node, "end_lineno", len(self.unit.lines))

    def body(self) -> list[ast.stmt]:
        return self.node.body if not isinstance(self.node, ast.Module) else [
            s for s in self.node.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]

    def source(self) -> str:
        return "\n".join(self.unit.lines[self.lineno - 1:self.end_lineno])

    def __repr__(self) -> str:
        return f"Function({self.qualname}@{self.unit.display}:{self.lineno})"


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SCOPE_CLASSES = frozenset(_SCOPES)  # (ast's classes have no subclasses: a set lookup is isinstance)


# Fields that hold plain values (names, levels, flags) in every ast class: never a child.
# Load/store contexts and operators are nodes, but one instance of each is shared by the
# whole tree and no walk looks for them (`node.ctx`, `node.op` are read where they
# matter): a quarter of all nodes.
_VALUE_FIELDS = frozenset({"id", "attr", "name", "arg", "module", "asname", "type_comment", "level", "conversion",
                           "is_async", "kind", "ctx", "op", "ops"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}


def _child_fields(cls: type) -> tuple[str, ...]:
    # a Constant's value is a Python constant, never a node
    fields = _CHILD_FIELDS[cls] = () if cls is ast.Constant else tuple(
        name for name in cls._fields if name not in _VALUE_FIELDS)
    return fields


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """ast.iter_child_nodes, same order, without contexts and operators (see _VALUE_FIELDS),
    as a list kept on the node: the analyses walk each tree several times (index, flow,
    reach, values). Callers must not change the list."""
    known = node.__dict__.get("_auditor_children")  # (a miss costs less than an AttributeError)
    if known is not None:
        return known
    names = _CHILD_FIELDS.get(node.__class__)
    if names is None:
        names = _child_fields(node.__class__)
    out = []
    for name in names:
        value = getattr(node, name, None)
        if isinstance(value, ast.AST):
            out.append(value)
        elif value.__class__ is list:
            for item in value:
                if isinstance(item, ast.AST):
                    out.append(item)
    node._auditor_children = out
    return out


def walk(node: ast.AST) -> list[ast.AST]:
    """ast.walk's nodes in ast.walk's order (breadth first; no contexts, no operators), as a list."""
    out = [node]
    position = 0
    while position < len(out):
        out.extend(child_nodes(out[position]))
        position += 1
    return out


def _own_walk(statements: list[ast.stmt]) -> tuple[list[ast.AST], list[ast.AST]]:
    """(own nodes in source order, directly nested defs/classes) of a body of statements.

    A lambda's body is part of the code around it: `run(lambda: evaluate(model, tokens))`
    calls `evaluate` from here, with this function's values."""
    nodes, nested = [], []
    stack = [s for s in reversed(statements) if not isinstance(s, _SCOPES)]
    nested.extend(s for s in statements if isinstance(s, _SCOPES))  # a def right in the body
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in reversed(child_nodes(node)):
            if child.__class__ in _SCOPE_CLASSES:
                nested.append(child)
            else:
                stack.append(child)
    return nodes, nested


def own_nodes(function: Function) -> list[ast.AST]:
    """The function's own code in order, not that of nested functions and classes (cached)."""
    if function._own_nodes is None:
        function._own_nodes = _own_walk(function.body())[0]
    return function._own_nodes


def call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


@dataclass
class Index:
    units: list[Unit]
    functions: list[Function] = field(default_factory=list)
    by_name: dict[str, list[Function]] = field(default_factory=dict)
    classes: dict[str, list[ast.ClassDef]] = field(default_factory=dict)
    class_units: dict[str, Unit] = field(default_factory=dict)

    @property
    def main(self) -> Unit:
        return self.units[0]

    def module_scope(self, unit: Unit) -> Function:
        for function in self.functions:
            if function.unit is unit and function.qualname == MODULE_SCOPE:
                return function
        raise KeyError(unit.display)

    def resolve(self, name: str) -> list[Function]:
        return self.by_name.get(name, [])

def build_index(units: list[Unit]) -> Index:
    index = Index(units=units)
    for unit in units:
        module_fn = Function(MODULE_SCOPE, MODULE_SCOPE, unit.tree, unit, None, [], None)
        index.functions.append(module_fn)
        for stmt in unit.tree.body:
            _index_stmt(index, unit, stmt, stmt, prefix="", cls=None, parent=module_fn)
    for function in index.functions:
        if function.qualname != MODULE_SCOPE:
            index.by_name.setdefault(function.name, []).append(function)
    return index


def _index_stmt(index: Index, unit: Unit, stmt: ast.AST, top: ast.stmt, prefix: str, cls: str | None,
                parent: Function) -> None:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = stmt.args
        params = [a.arg for a in (*args.posonlyargs, *args.args)]
        params += [a.arg for a in args.kwonlyargs]
        function = Function(prefix + stmt.name, stmt.name, stmt, unit, cls, params, top, parent)
        index.functions.append(function)
        function._own_nodes, nested = _own_walk(stmt.body)
        for child in nested:
            _index_stmt(index, unit, child, top, f"{prefix}{stmt.name}.<locals>.", None, function)
        return
    if isinstance(stmt, ast.ClassDef):
        index.classes.setdefault(stmt.name, []).append(stmt)
        index.class_units.setdefault(stmt.name, unit)
        for child in stmt.body:
            _index_stmt(index, unit, child, top, f"{prefix}{stmt.name}.", stmt.name, parent)
        return
    # defs inside module-level if/try blocks (e.g. optional imports with fallbacks)
    if isinstance(stmt, (ast.If, ast.Try, ast.With)) and not prefix:
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                _index_stmt(index, unit, child, top, prefix, cls, parent)
            elif isinstance(child, (ast.If, ast.Try, ast.ExceptHandler, ast.With)):
                for grandchild in ast.iter_child_nodes(child):
                    if isinstance(grandchild, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        _index_stmt(index, unit, grandchild, top, prefix, cls, parent)


def node_roots(node: ast.AST) -> set[str]:
    """The names an expression holds, `a` of `a.b.c` (keyword and lambda parameter names
    included: they name what is passed)."""
    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        cls = current.__class__
        if cls is ast.Name:
            found.add(current.id)
        elif cls is ast.Attribute:
            stack.append(current.value)  # the attribute's own name is not a variable
        else:
            if cls is ast.keyword and current.arg is not None:
                found.add(current.arg)
            elif cls is ast.arg:
                found.add(current.arg)
            stack.extend(child_nodes(current))
    return found


def full_name(node: ast.AST | None) -> str:
    """`a.b.c` for a name or attribute chain, the callee's of a call, the container's of a
    subscript; "" for anything else. True, False and None count as names, and an attribute
    of anything else reads `None.attr` (the readings of libcst's get_full_name_for_node,
    which the rules were first written with)."""
    if node is None:
        return ""
    cls = node.__class__
    if cls is ast.Name:
        return node.id
    if cls is ast.Attribute:
        return f"{full_name(node.value) or None}.{node.attr}"
    if cls is ast.Call:
        return full_name(node.func)
    if cls is ast.Subscript:
        return full_name(node.value)
    if is_name(node):  # True, False, None
        return str(node.value)
    return ""


def is_name(node: ast.AST) -> bool:
    """A name or an attribute; True, False and None count as names (libcst's reading, which
    the rules were first written with)."""
    cls = node.__class__
    return cls is ast.Name or cls is ast.Attribute or (
        cls is ast.Constant and (node.value is None or node.value is True or node.value is False))


def call_args(call: ast.Call, named: bool = True) -> list[ast.expr]:
    """The values passed to a call in source order: positional ones, `*xs` and `**kw` (as
    `xs` and `kw`), and, with `named`, those of keyword arguments."""
    values = [a.value if a.__class__ is ast.Starred else a for a in call.args]
    keywords = [k.value for k in call.keywords if named or k.arg is None]
    if not keywords:
        return values
    # a keyword may come before `*xs` (`f(a, key=1, *rest)`)
    return sorted(values + keywords, key=lambda v: (v.lineno, v.col_offset))
