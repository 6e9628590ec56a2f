"""Small libcst helpers shared by several rules."""

from __future__ import annotations

import ast

import libcst as cst
from libcst.helpers import get_full_name_for_node


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
