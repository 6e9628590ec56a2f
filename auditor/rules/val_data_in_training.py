"""val-data-in-training: validation tokens used to train or calibrate the model.

Ruling: 44, 152, 262 (training on the validation split, directly or mixed in), 168/275
(a "paid prefix" of validation targets stored in the artifact), 728 (GPTQ calibration on
validation tokens not yet scored; 624 collects Hessians from val_tokens). The challenge
README: no validation data during training.
"""

from __future__ import annotations

import ast
import re

from auditor.analysis.flow import TRAIN, VAL
from auditor.analysis.index import own_nodes
from auditor.rules._calibration import calibration_calls
from auditor.rules.base import Hit, Rule, where

PAID_PREFIX = re.compile(r"(?i)paid_prefix|prefix_blob|val_prefix_tokens")
STORED_OR_COPIED = re.compile(r"(?i)paid_prefix|prefix_blob|val_prefix_tokens|copy|symlink|rename")


class ValDataInTraining(Rule):
    id = "val-data-in-training"

    def check(self, analysis):
        for call in calibration_calls(analysis):
            if VAL in call.kinds:
                yield Hit(call.function, call.node.lineno, call.node.end_lineno or call.node.lineno,
                          f"calibration `{ast.unparse(call.node.func)}` in {where(call.function)} reads validation "
                          "tokens before they are scored (ruling on 728; Issue #1017 condition 3)")
        for function in analysis.index.functions:
            if not STORED_OR_COPIED.search(analysis.text_of(function)):
                continue
            for node in own_nodes(function):
                if isinstance(node, (ast.Assign, ast.Call)) and PAID_PREFIX.search(ast.unparse(node)[:400]) and (
                        isinstance(node, ast.Call) and re.search(r"(?i)load", ast.unparse(node.func))):
                    yield Hit(function, node.lineno, node.lineno,
                              f"{where(function)} loads stored validation tokens (a paid prefix) into the artifact "
                              "used for scoring (rulings on 168, 275)")
                    break
                if isinstance(node, ast.Call) and re.search(r"(?i)(copy|symlink|link|rename)", ast.unparse(node.func)):
                    if len(node.args) >= 2 and VAL in analysis.kinds(function, node.args[0]) and TRAIN in analysis.kinds(function, node.args[1]):
                        yield Hit(function, node.lineno, node.lineno,
                                  f"{where(function)} copies a validation shard to a training file (ruling on 64)")

    VALID = [
        '''
def main():
    train_loader = DistributedTokenLoader("fineweb_train_*.bin")
    model = build_model()
    collect_hessians(model, train_loader)

if __name__ == "__main__":
    main()
''',
    ]
    INVALID = [
        '''
def main():
    val_tokens = load_validation_tokens("fineweb_val_*.bin")
    model = build_model()
    collect_hessians(model, val_tokens)
    print(eval_val(model, val_tokens))

if __name__ == "__main__":
    main()
''',
    ]


RULE = ValDataInTraining()
