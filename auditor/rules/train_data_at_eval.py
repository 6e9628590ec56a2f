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
from auditor.rules._calibration import calibration_calls
from auditor.rules.base import Hit, Rule, where

RESERVE_SETTING = re.compile(r"(?i)reserve")
RESERVE_CODE = re.compile(
    r"(?i)(wallclock|budget|max_train\w*|train_time\w*)\w*\s*(-=|=[^\n]*-)[^\n]*(gptq|calib|reserve)")


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

    VALID = [
        '''
import os

GPTQ_RESERVE_SECONDS = float(os.environ.get("GPTQ_RESERVE_SECONDS", "10"))

def main():
    max_wallclock_ms = 600_000 - GPTQ_RESERVE_SECONDS * 1000
    train_loader = DistributedTokenLoader("fineweb_train_*.bin")
    model = train(build_model(), train_loader, max_wallclock_ms)
    collect_hessians(model, train_loader)

if __name__ == "__main__":
    main()
''',
    ]
    INVALID = [
        '''
def main():
    max_wallclock_ms = 600_000
    train_loader = DistributedTokenLoader("fineweb_train_*.bin")
    model = train(build_model(), train_loader, max_wallclock_ms)
    collect_hessians(model, DistributedTokenLoader("fineweb_train_*.bin"))

if __name__ == "__main__":
    main()
''',
    ]


def _reserves_time(analysis) -> bool:
    """A reserve for calibration deducted from the training clock, under the run configuration."""
    found_setting = False
    for name in list(analysis.config.settings):
        if RESERVE_SETTING.search(name):
            found_setting = True
            value = analysis.config.attr_value(name)
            if value is UNKNOWN:
                continue
            try:
                if float(value) > 0:
                    return True
            except (TypeError, ValueError):
                continue
    if found_setting:
        return False
    return any(RESERVE_CODE.search(unit.text) for unit in analysis.index.units)


RULE = TrainDataAtEval()
