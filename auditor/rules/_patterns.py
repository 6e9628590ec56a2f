"""Small libcst helpers shared by several rules: names in an expression, target-ish and
n-gram-ish vocabulary, calibration calls."""

from __future__ import annotations

import re

import libcst as cst
from libcst.helpers import get_full_name_for_node

# Names that hold the token being predicted (the one that must not be looked at).
TARGET = re.compile(r"^(y|ys|yb|y_\w+|\w+_y|tgt\w*|\w*_tgts?|targets?|target_\w+|\w+_targets?|next_tok\w*|nxt\w*|labels?)$")
# Code that implements an eval-time n-gram / mixture predictor.
NGRAM = re.compile(r"(?i)ngram|n_gram|backoff|\bppm|_ppm|mixer|hedge|tilt|trigram|bigram_cache|expert")
CALIBRATION = re.compile(r"(?i)(hessian|calibrat|gptq_?cal\b|gptq_collect|collect_stats|_calib\b|calib_)")


def names_in(node: cst.CSTNode) -> list[str]:
    """Dotted names read in an expression: `a`, `self.counts`, `x.y.z`."""
    found: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (cst.Name, cst.Attribute)):
            name = get_full_name_for_node(current)
            if name:
                found.append(name)
                if isinstance(current, cst.Attribute):
                    stack.append(current.value)
                continue
        stack.extend(current.children)
    return found


def leaves(node: cst.CSTNode) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name in names_in(node)}


def mentions_target(node: cst.CSTNode) -> bool:
    return any(TARGET.match(leaf) for leaf in leaves(node))


def full_name(node: cst.CSTNode | None) -> str:
    return (get_full_name_for_node(node) or "") if node is not None else ""


def assigned_names(node: cst.CSTNode) -> list[str]:
    """Names bound by an Assign/AugAssign/AnnAssign node (tuple targets unpacked)."""
    targets = []
    if isinstance(node, cst.Assign):
        targets = [t.target for t in node.targets]
    elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
        targets = [node.target]
    out = []
    for target in targets:
        if isinstance(target, (cst.Tuple, cst.List)):
            out.extend(full_name(e.value) for e in target.elements)
        elif isinstance(target, cst.Subscript):
            out.append(full_name(target.value))
        else:
            out.append(full_name(target))
    return [n for n in out if n]
