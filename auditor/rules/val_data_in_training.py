"""val-data-in-training: validation tokens used to train or calibrate the model.

Ruling: 44, 152, 262 (training on the validation split, directly or mixed in), 168/275
(a "paid prefix" of validation targets stored in the artifact), 728 (GPTQ calibration on
validation tokens not yet scored; 624 collects Hessians from val_tokens). The challenge
README: no validation data during training.
"""

from __future__ import annotations

import ast
import re

from auditor.analysis import analyze_source
from auditor.analysis.flow import TRAIN, VAL
from auditor.analysis.index import call_name, own_nodes
from auditor.rules._calibration import calibration_calls
from auditor.rules.base import Hit, Rule, where
from auditor.source import Source, SourceError, decode_text, read_bytes_checked

PAID_PREFIX = re.compile(r"(?i)paid_prefix|prefix_blob|val_prefix_tokens")
STORED_OR_COPIED = re.compile(r"(?i)paid_prefix|prefix_blob|val_prefix_tokens|copy|symlink|rename")
SIBLING_HINT = re.compile(r"copy|symlink|rename|link\(")
COPY_CALL = re.compile(r"(?i)^(copy\w*|symlink|link|rename|replace|copyfile)$")


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
                if not isinstance(node, ast.Call):
                    continue
                name = call_name(node)
                if re.search(r"(?i)load", name) and PAID_PREFIX.search(ast.unparse(node)[:400]):
                    yield Hit(function, node.lineno, node.lineno,
                              f"{where(function)} loads stored validation tokens (a paid prefix) into the artifact "
                              "used for scoring (rulings on 168, 275)")
                    break
        yield from _val_copied_to_train(analysis)
        yield from self._sibling_scripts(analysis)

    def _sibling_scripts(self, analysis):
        """Other scripts of the record folder (data prep, launchers): a val shard copied to train."""
        submission = analysis.submission
        if submission is None or not submission.is_record_folder:
            return
        analyzed = {unit.path.resolve() for unit in analysis.index.units}
        for path in sorted(submission.root.glob("*.py")):
            if path.resolve() in analyzed:
                continue
            try:
                text = decode_text(read_bytes_checked(path), what=path.name)
            except SourceError:
                continue
            if not (SIBLING_HINT.search(text) and "fineweb_val" in text and "fineweb_train" in text):
                continue
            try:
                sibling = analyze_source(Source(path=path, text=text, raw_bytes=b""), display=path.name)
            except SourceError:
                continue
            for hit in _val_copied_to_train(sibling):
                hit.always_live = True
                yield hit

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


def _val_copied_to_train(analysis):
    for function in analysis.index.functions:
        if not STORED_OR_COPIED.search(analysis.text_of(function)):
            continue
        for node in own_nodes(function):
            if isinstance(node, ast.Call) and COPY_CALL.search(call_name(node)) and len(node.args) >= 2:
                # the function's own paths, not parameters: a generic copy helper called once
                # for a val file and once for a train file copies neither into the other
                source, destination = (analysis.kinds(function, a, intrinsic=True) for a in node.args[:2])
                if VAL in source and TRAIN not in source and TRAIN in destination and VAL not in destination:
                    yield Hit(function, node.lineno, node.lineno,
                              f"{where(function)} copies a validation shard to a training shard path, so the model "
                              "trains on validation tokens (ruling on 64; challenge README)")


RULE = ValDataInTraining()
