"""Small libcst helpers shared by several rules."""

from __future__ import annotations

import libcst as cst
from libcst.helpers import get_full_name_for_node


def full_name(node: cst.CSTNode | None) -> str:
    """`a.b.c` for a name or attribute chain, "" for anything else."""
    return (get_full_name_for_node(node) or "") if node is not None else ""
