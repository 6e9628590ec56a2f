"""Shared by val-data-in-training and train-data-at-eval: where calibration reads data.

Calibration (GPTQ and the like) is recognised by what it does, not by its name: it
collects activation statistics from forward passes, through forward hooks
(`register_forward_hook`) or by accumulating second moments of activations
(`H += x.T @ x`, `H.addmm_(x.t(), x)`). A calibration call is a call of such a collector;
its data kinds are those of its arguments there (a wrapper's parameters carry what its
callers passed in) and of the data the collector opens itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from auditor.analysis import Analysis
from auditor.analysis.index import Function, call_name, own_nodes, walk

_HOOKS = {"register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook"}
_MATMUL_CALLS = {"matmul", "mm", "bmm", "einsum", "addmm", "addmm_", "baddbmm_", "outer"}


@dataclass
class CalibrationCall:
    function: Function  # where the call is
    node: ast.Call
    kinds: set[str]  # data kinds its arguments (or the callee itself) read


def calibration_calls(analysis: Analysis) -> list[CalibrationCall]:
    return analysis.memo("calibration_calls", lambda: _find_calibration_calls(analysis))


def _transposed(node: ast.AST) -> bool:
    for sub in walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in ("T", "mT", "H"):
            return True
        if isinstance(sub, ast.Call) and call_name(sub) in ("t", "transpose", "permute"):
            return True
    return False


def _second_moment(node: ast.AST) -> bool:
    """`x.T @ x`, `torch.matmul(x.t(), x)`, `h.addmm_(x.t(), x)`: a statistic of activations."""
    for sub in walk(node):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.MatMult) and _transposed(sub):
            return True
        if isinstance(sub, ast.Call) and call_name(sub) in _MATMUL_CALLS and _transposed(sub):
            return True
    return False


def _collects(function: Function) -> bool:
    for node in own_nodes(function):
        if node.__class__ is not ast.Call and node.__class__ is not ast.AugAssign:
            continue  # (ast's classes have no subclasses)
        if isinstance(node, ast.Call) and call_name(node) in _HOOKS:
            return True
        if isinstance(node, ast.AugAssign) and _second_moment(node.value):
            return True
        if isinstance(node, ast.Call) and call_name(node) in ("addmm_", "add_", "copy_") and _second_moment(node):
            return True
    return False


def calibration_functions(analysis: Analysis) -> set[Function]:
    """Collectors, with the functions their hooks are nested in."""
    def compute() -> set[Function]:
        found = set()
        for function in analysis.index.functions:
            if function.qualname != "<module>" and _collects(function):
                chain = function
                while chain is not None and chain.qualname != "<module>":
                    found.add(chain)  # a hook nested in a collector: the collector too
                    chain = chain.parent
        return found
    return analysis.memo("calibration-functions", compute)


def _find_calibration_calls(analysis: Analysis) -> list[CalibrationCall]:
    """Every call of a collector, with the data its arguments carry there (parameters carry
    what callers passed in, so a wrapper's call shows the caller's data) and the data the
    collector opens itself."""
    code = calibration_functions(analysis)
    names = {f.name for f in code}
    found = []
    for function in analysis.index.functions:
        for node in own_nodes(function):
            if isinstance(node, ast.Call) and call_name(node) in names:
                callees = [c for c in analysis.index.resolve(call_name(node)) if c in code and c is not function]
                if not callees:
                    continue
                # the model handed in is not data, whatever data trained it: only the other
                # arguments count
                modules = set().union(*(_module_params(c) for c in callees))
                kinds = set()
                for position, arg in enumerate(node.args):
                    if position not in modules:
                        kinds |= analysis.kinds(function, arg, line=node.lineno)
                for keyword in node.keywords:
                    if keyword.arg not in modules:
                        kinds |= analysis.kinds(function, keyword.value, line=node.lineno)
                for callee in callees:
                    kinds |= _opened_by(analysis, callee, code)
                found.append(CalibrationCall(function, node, kinds - {"target"}))
    return found


_MODULE_METHODS = {"modules", "named_modules", "parameters", "named_parameters", "state_dict", "eval", "train",
                   "children", "named_children", "buffers"}


def _module_params(function: Function) -> set:
    """Positions and names of the parameters a function uses as a model: it calls them, or
    walks their modules or parameters."""
    params = list(function.params)
    if function.cls is not None and params and params[0] in ("self", "cls"):
        params = params[1:]
    found: set = set()
    for node in own_nodes(function):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            target = node.func.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MODULE_METHODS \
                and isinstance(node.func.value, ast.Name):
            target = node.func.value.id
        if target in params:
            found |= {params.index(target), target}
    return found


def _opened_by(analysis: Analysis, function: Function, code: set[Function], depth: int = 0) -> set[str]:
    kinds = {k for k, names in analysis.taint.intrinsic.get(function, {}).items() if names and k != "target"}
    if depth < 3:
        called = {call_name(n) for n in own_nodes(function) if isinstance(n, ast.Call)}
        for callee in code:
            if callee.name in called and callee is not function:
                kinds |= _opened_by(analysis, callee, code, depth + 1)
    return kinds
