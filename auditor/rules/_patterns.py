"""Small tree helpers shared by several rules."""

from __future__ import annotations

import ast
import io
import tokenize

import libcst as cst
from libcst.helpers import get_full_name_for_node

from auditor.analysis import source_segment
from auditor.analysis.index import Unit


def full_name(node: cst.CSTNode | None) -> str:
    """`a.b.c` for a name or attribute chain, "" for anything else."""
    return (get_full_name_for_node(node) or "") if node is not None else ""


def dotted_name(node: ast.AST | None) -> str:
    """`a.b.c` for a name or attribute chain, the callee's of a call, the container's of a
    subscript; "" for anything else (libcst's get_full_name_for_node on ast)."""
    if node is None:
        return ""
    cls = node.__class__
    if cls is ast.Name:
        return node.id
    if cls is ast.Attribute:
        return f"{dotted_name(node.value) or None}.{node.attr}"
    if cls is ast.Call:
        return dotted_name(node.func)
    if cls is ast.Subscript:
        return dotted_name(node.value)
    return ""


def call_args(call: ast.Call, named: bool = True) -> list[ast.expr]:
    """The values passed to a call in source order: positional ones, `*xs` and `**kw` (as
    `xs` and `kw`), and, with `named`, those of keyword arguments."""
    values = [a.value if a.__class__ is ast.Starred else a for a in call.args]
    keywords = [k.value for k in call.keywords if named or k.arg is None]
    if not keywords:
        return values
    # a keyword may come before `*xs` (`f(a, key=1, *rest)`)
    return sorted(values + keywords, key=lambda v: (v.lineno, v.col_offset))


def elements(node: ast.Tuple | ast.List) -> list[ast.expr]:
    """A tuple's or list's items, `xs` for a `*xs` in it."""
    return [e.value if e.__class__ is ast.Starred else e for e in node.elts]


def subscript_elements(unit: Unit, node: ast.Subscript) -> list[ast.expr]:
    """What a subscript is indexed by, item by item: `a` and `b` of `t[a, b]`, the one tuple
    of `t[(a, b)]` (a key written as a tuple), the ast.Slice of `t[i:j]`."""
    key = node.slice
    if key.__class__ is ast.Tuple and not _parenthesized(unit, key):
        return list(key.elts)
    return [key]


def _parenthesized(unit: Unit, node: ast.AST) -> bool:
    """Whether the node's text is wrapped in one pair of parentheses: `(a, b)`, not `(a), b`."""
    text = source_segment(unit, node)
    if not text.startswith("("):
        return False
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.OP:
                continue
            if token.string in "([{":
                depth += 1
            elif token.string in ")]}":
                depth -= 1
                if depth == 0:  # the first parenthesis closes here: at the end, or before it
                    return token.end == (text.count("\n") + 1, len(text) - (text.rfind("\n") + 1))
    except (tokenize.TokenError, SyntaxError):
        return False
    return False
