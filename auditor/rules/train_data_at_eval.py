"""train-data-at-eval: calibration on training data after the 600 s training clock.

Ruling: 593, 606, 615, 626, 639 (GPTQ Hessians collected from the training loader after
training used the full 600 s: "calibration must fit in training 600s; artifact creation
is not untimed"); 609, 1028. Calibration inside the training budget (a reserve deducted
from the wallclock, e.g. GPTQ_RESERVE_SECONDS, as in 1218) or on self-generated text
(1019) is legal.
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.config import UNKNOWN
from auditor.analysis.flow import TRAIN
from auditor.analysis.calibration import calibration_calls
from auditor.analysis.index import walk
from auditor.rules.base import Hit, Rule, where

RESERVE_SETTING = re.compile(r"(?i)reserve")


_CALIBRATE_AFTER_TRAINING = '''
import os

MAX_WALLCLOCK_SECONDS = float(os.environ.get("MAX_WALLCLOCK_SECONDS", "600"))
{setting}

def second_moments(model, batches, steps=8):
    stats = {{}}
    def hook(module, inputs, output):
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        stats[module] = stats.get(module, 0) + x.T @ x
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    for _ in range(steps):
        model(batches.next_batch()[0])
    for handle in handles:
        handle.remove()
    return stats

def main():
    limit_ms = {limit}
    stream = TokenStream("fineweb_train_*.bin")
    model = train(build_model(), stream, limit_ms)
    second_moments(model, TokenStream("fineweb_train_*.bin"))

if __name__ == "__main__":
    main()
'''


class TrainDataAtEval(Rule):
    id = "train-data-at-eval"

    def check(self, analysis):
        calls = [c for c in calibration_calls(analysis) if TRAIN in c.kinds]
        if not calls or _reserves_time(analysis):
            return
        for call in calls:
            yield Hit(call.function, call.node.lineno, call.node.end_lineno or call.node.lineno,
                      f"calibration `{ast.unparse(call.node.func)}` in {where(call.function)} reads training data "
                      "after the training loop, and no time is reserved for it inside the 600 s budget "
                      "(rulings on 593, 615, 1028)")

    # Twins: the same calibration after training, with and without time reserved for it.
    VALID = [_CALIBRATE_AFTER_TRAINING.format(
        setting='RESERVE = float(os.environ.get("GPTQ_RESERVE_SECONDS", "10"))',
        limit="1000 * (MAX_WALLCLOCK_SECONDS - RESERVE)")]
    INVALID = [_CALIBRATE_AFTER_TRAINING.format(setting="", limit="1000 * MAX_WALLCLOCK_SECONDS")]


def _reserves_time(analysis) -> bool:
    """A reserve for calibration deducted from the training clock, under the run configuration.

    Judged by the environment variables the script reads (their names are the interface the
    run command uses, so a rename of the script's identifiers keeps them): a `*RESERVE*`
    variable with a positive value, or, with none, the training clock setting
    (`MAX_WALLCLOCK_SECONDS`) reduced by a subtraction somewhere in the code."""
    found_setting = False
    for variable, setting in analysis.config.env_settings.items():
        if RESERVE_SETTING.search(variable):
            found_setting = True
            value = analysis.config.env_value(variable, UNKNOWN) if variable in analysis.config.run.env else (
                analysis.config.attr_value(setting.attr) if setting.attr else UNKNOWN)
            if value is UNKNOWN:
                continue
            try:
                if float(value) > 0:
                    return True
            except (TypeError, ValueError):
                continue
    if found_setting:
        return False
    clock = analysis.config.env_settings.get("MAX_WALLCLOCK_SECONDS")
    if clock is None or not clock.attr:
        return False
    settings = {name for name in analysis.config.settings if name != clock.attr}

    def leaves(node) -> set[str]:
        return {n.attr if isinstance(n, ast.Attribute) else n.id for n in walk(node)
                if isinstance(n, (ast.Attribute, ast.Name))}

    # the clock, and names computed from it (`limit_ms = 1000 * args.clock`)
    trees = [walk(unit.tree) for unit in analysis.index.units]  # (ast.walk's order, walked once)
    from_clock = {clock.attr}
    for nodes in trees:
        for node in nodes:
            if isinstance(node, ast.Assign) and leaves(node.value) & from_clock:
                from_clock |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    # ... reduced by another setting: `clock - reserve`, `limit -= reserve`
    for nodes in trees:
        for node in nodes:
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
                if leaves(node.left) & from_clock and leaves(node.right) & settings:
                    return True
            elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Sub):
                if leaves(node.target) & from_clock and leaves(node.value) & settings:
                    return True
    return False


RULE = TrainDataAtEval()
