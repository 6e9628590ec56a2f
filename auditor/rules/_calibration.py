"""Shared by the calibration rules: calls that collect quantization statistics (GPTQ
Hessians and the like), and which data they read."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from auditor.analysis import Analysis
import re

from auditor.analysis.index import Function, call_name, dotted, own_nodes
from auditor.rules._patterns import CALIBRATION


NOT_DATA = re.compile(r"(?i)(model|net$|module|^h$|^args$|hparams|hyper|config|cfg|device|rank|world|^self$)")


@dataclass
class CalibrationCall:
    function: Function  # where the call is
    node: ast.Call
    kinds: set[str]  # data kinds its arguments (or the callee itself) read


def calibration_calls(analysis: Analysis) -> list[CalibrationCall]:
    return analysis.memo("calibration_calls", lambda: _find_calibration_calls(analysis))


def _find_calibration_calls(analysis: Analysis) -> list[CalibrationCall]:
    found = []
    for function in analysis.index.functions:
        if CALIBRATION.search(function.qualname):
            continue  # calls inside the calibration code itself are its internals
        for node in own_nodes(function):
            if isinstance(node, ast.Call) and CALIBRATION.search(call_name(node)):
                kinds = set()
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    # the model and settings are not data, whatever flowed near them
                    if not NOT_DATA.search((dotted(arg) or "").rsplit(".", 1)[-1]):
                        kinds |= analysis.kinds(function, arg)
                for callee in analysis.index.resolve(call_name(node)):
                    # a calibration function that opens its own loader on train_files
                    kinds |= {k for k, names in analysis.taint.intrinsic.get(callee, {}).items() if names}
                found.append(CalibrationCall(function, node, kinds))
    return found
