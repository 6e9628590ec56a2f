"""val-data-in-training: validation tokens used to train or calibrate the model.

Ruling: 44, 152, 262 (training on the validation split, directly or mixed in), 168/275
(a "paid prefix" of validation targets stored in the artifact), 728 (GPTQ calibration on
validation tokens not yet scored; 624 collects Hessians from val_tokens). The challenge
README: no validation data during training.

Legal instead: training and calibration on the training shards only, inside the 600 s
budget; validation tokens are only read to be scored.
"""

from __future__ import annotations

import ast
import re

from auditor.analysis import analyze_source
from auditor.analysis.flow import TARGET, TRAIN, VAL
from auditor.analysis.index import call_name, own_nodes
from auditor.analysis.adaptation import mixed_training_calls
from auditor.analysis.calibration import calibration_calls
from auditor.rules.base import Hit, Rule, where
from auditor.source import Source, SourceError, decode_text, read_bytes_checked

COPIED = re.compile(r"copy|symlink|rename|link\(")
# Library calls that write an object into a file (the artifact among them).
SERIALIZE = re.compile(r"^(save|savez|savez_compressed|dump|write|write_bytes|tofile)$")
COPY_CALL = re.compile(r"(?i)^(copy\w*|symlink|link|rename|replace|copyfile)$")


_CALIBRATE_ON = '''
import numpy as np
import torch

def moments(model, tokens):
    stats = {{}}
    def hook(module, inputs, output):
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        stats[module] = stats.get(module, 0) + x.T @ x
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model(torch.as_tensor(tokens)[None])
    for handle in handles:
        handle.remove()
    return stats

def main():
    model = build_model()
    moments(model, {data})

if __name__ == "__main__":
    main()
'''

_STORE = '''
import numpy as np
import torch

def main():
    weights = build_model().state_dict()
    torch.save({{"w": weights, "extra": {data}}}, "final_model.pt")

if __name__ == "__main__":
    main()
'''


class ValDataInTraining(Rule):
    id = "val-data-in-training"

    def check(self, analysis):
        for call in calibration_calls(analysis):
            if VAL in call.kinds:
                yield Hit(call.function, call.node.lineno, call.node.end_lineno or call.node.lineno,
                          f"calibration `{ast.unparse(call.node.func)}` in {where(call.function)} reads validation "
                          "tokens before they are scored (ruling on 728; Issue #1017 condition 3)")
        for function in analysis.index.functions:
            for node in own_nodes(function):
                if isinstance(node, ast.Call) and SERIALIZE.match(call_name(node)) and _stores_tokens(analysis, function, node):
                    yield Hit(function, node.lineno, node.lineno,
                              f"{where(function)} stores validation tokens in a file it writes (a paid prefix in the "
                              "artifact), so the model is scored with validation data it carries "
                              "(rulings on 168, 275)")
                    break
        yield from _targets_matched_to_stored_tokens(analysis)
        yield from _run_configuration_trains_on_val(analysis)
        for caller, call, callee in mixed_training_calls(analysis):
            yield Hit(caller, call.lineno, call.end_lineno or call.lineno,
                      f"{where(caller)} hands `{callee.name}`, which takes gradient steps, data made of training and "
                      "validation shards together: the model trains on validation tokens (rulings on 44, 152, 262)")
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
            if not (COPIED.search(text) and "fineweb_val" in text and "fineweb_train" in text):
                continue
            try:
                sibling = analyze_source(Source(path=path, text=text, raw_bytes=b""), display=path.name)
            except SourceError:
                continue
            for hit in _val_copied_to_train(sibling):
                hit.always_live = True
                yield hit

    # Twins: the same second-moment calibration on training and on validation tokens.
    VALID = [_CALIBRATE_ON.format(data='TokenStream("fineweb_train_*.bin").take(4096)'),
             _STORE.format(data="weights")]
    INVALID = [_CALIBRATE_ON.format(data='np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)[:4096]'),
               _STORE.format(data='np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)[:65536]')]


def _targets_matched_to_stored_tokens(analysis):
    """Scoring code that compares the targets, position by position, with a token sequence it
    did not read from the validation split: a stored copy of validation targets (168)."""
    for function in analysis.index.functions:
        if not analysis.score.of(function) or not analysis.taint.of(function, TARGET):
            continue
        for node in own_nodes(function):
            if not isinstance(node, ast.Compare) or not any(isinstance(op, ast.Eq) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            kinds = [analysis.kinds(function, side, line=node.lineno) for side in sides]
            stored = [side for side, k in zip(sides, kinds) if not k & {VAL, TARGET, TRAIN}
                      and _is_slice(_defining_value(function, side))]
            if stored and any(TARGET in k for k in kinds):
                yield Hit(function, node.lineno, node.lineno,
                          f"{where(function)} compares the targets position by position with a stored token sequence "
                          f"(`{ast.unparse(node)[:60]}`): validation targets carried in the artifact (a paid prefix; "
                          "rulings on 168, 275)")
                break


# A shell step of the README that copies or links files: `ln -s SRC DST`, `cp SRC DST`.
_SHELL_COPY = re.compile(r"^[ \t$>]*(?:sudo[ \t]+)?(?:ln|cp|mv|rsync)[ \t]([^\n|;&]{1,500})", re.M)


def _run_configuration_trains_on_val(analysis):
    """The run configuration points training at validation shards: the README copies or
    links a val shard to a train shard name, or sets a variable whose default is the
    training split to a validation pattern (Issue #2127's doubled data paths)."""
    from auditor.analysis.flow import _string_kinds

    module = analysis.index.module_scope(analysis.main)
    submission = analysis.submission
    readme = submission.readme_text if submission is not None else ""
    for match in _SHELL_COPY.finditer(readme):
        words = [w for w in match.group(1).split() if not w.startswith("-")]
        if len(words) >= 2 and VAL in _string_kinds(" ".join(words[:-1])) and TRAIN in _string_kinds(words[-1]):
            line = readme.count("\n", 0, match.start()) + 1
            hit = Hit(module, 1, 1, f"the README's run steps copy validation shards to training shard names "
                                    f"(README line {line}: `{match.group(0).strip()[:80]}`), so the model trains on "
                                    "validation tokens (rulings on 44, 64; challenge README)")
            hit.always_live = True
            yield hit
            break
    for variable, value in analysis.config.run.env.items():
        setting = analysis.config.env_settings.get(variable)
        if setting is None or VAL not in _string_kinds(value):
            continue
        default = " ".join(n.value for n in ast.walk(setting.expr) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        if TRAIN in _string_kinds(default):
            hit = Hit(module, setting.line, setting.line,
                      f"the run configuration sets {variable}={value[:60]}, a validation pattern, where the script "
                      "reads its training shards, so the model trains on validation tokens (rulings on 44, 152)")
            hit.always_live = True
            yield hit


def _defining_value(function, node: ast.AST) -> ast.AST:
    """What a local name was assigned (its last assignment), else the node itself."""
    if isinstance(node, ast.Name):
        for stmt in reversed(own_nodes(function)):
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets):
                return stmt.value
    return node


def _is_slice(node: ast.AST) -> bool:
    """A slice of a sequence, possibly moved or cast: `seq[a:b]`, `seq[a:b].to(device)`."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func.value
    return isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)


def _stores_tokens(analysis, function, call) -> bool:
    """A slice of the validation tokens themselves (not a value computed from them, like a
    score) among what a serialization call writes."""
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        for sub in ast.walk(arg):
            if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Slice) \
                    and VAL in analysis.kinds(function, sub.value, line=call.lineno):
                return True
    return False


def _val_copied_to_train(analysis):
    for function in analysis.index.functions:
        if not COPIED.search(analysis.text_of(function)):
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
