"""Small tree helpers shared by several rules."""

from __future__ import annotations

import ast
import io
import tokenize

from auditor.analysis import source_segment
from auditor.analysis.index import Unit


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
