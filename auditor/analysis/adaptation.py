"""Shared by the TTT and SLOT rules: where gradient steps on validation data happen,
where tokens are scored, and in which order.

For every function with a gradient step (`.backward()`, `autograd.grad`, an optimizer
step with a closure) on validation-tainted values, or a call to a function that trains
on its validation arguments, the enclosing loops are compared with the loops of the
scoring statements (`loss_sum += ...`, `nll.append(...)`, `_accumulate_bpb(...)`):

- score-first: in the loop that holds both, the score comes before the step (legal);
- train-first: the step comes first, or the scores come after the training loop;
- epoch-rescore: an epoch/pass loop encloses both, so tokens are rescored after training;
- no-score: the function only trains (a pre-eval TTT pass over the validation set).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import libcst as cst
from libcst.helpers import get_full_name_for_node

from auditor.analysis import Analysis, Scope
from auditor.analysis.flow import TARGET, TRAIN, VAL
from auditor.analysis.index import Function, own_nodes

OPTIMIZER = re.compile(r"(?:^|\.)(Adam\w*|SGD|LBFGS|RMSprop|Adagrad|Adafactor|Lion)$|optim\.\w+$")
NO_GRAD = re.compile(r"(no_grad|inference_mode)")

ORDER_RANK = {"score-first": 0, "no-score": 1, "train-first": 2, "epoch-rescore": 3}


@dataclass
class Event:
    node: cst.CSTNode
    line: int
    loops: list[cst.CSTNode]  # enclosing For/While, innermost first
    no_grad: bool = False


@dataclass
class Adaptation:
    function: Function
    scope: Scope
    updates: list[Event]
    scores: list[Event]
    order: str
    update: Event  # the step the verdict is about
    score: Event | None
    delta_names: set[str] = field(default_factory=set)  # SLOT: fresh tensors being optimized
    via_call: str | None = None  # the update is a call to this training function

    local_only: bool = False  # every optimizer here trains a module built here (warm-up, probe)

    @property
    def is_slot(self) -> bool:
        return bool(self.delta_names)

    @property
    def adapts_given_model(self) -> bool:
        """Whether the steps change a model the caller handed in (not a throwaway built here)."""
        return not self.local_only and not self.is_slot


def _context(node: cst.CSTNode, scope: Scope) -> tuple[list[cst.CSTNode], bool]:
    loops, no_grad = [], False
    current = scope.parent(node)
    while current is not None:
        kind = current.__class__  # (libcst's classes have no subclasses; its isinstance is slow)
        if kind is cst.For or kind is cst.While:
            loops.append(current)
        elif kind is cst.With:
            for item in current.items:
                name = get_full_name_for_node(item.item.func if isinstance(item.item, cst.Call) else item.item) or ""
                if NO_GRAD.search(name):
                    no_grad = True
        current = scope.parent(current)
    return loops, no_grad


def _name(node: cst.CSTNode | None) -> str:
    if node is None:
        return ""
    return get_full_name_for_node(node) or ""


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _score_event(node: cst.CSTNode, scope: Scope, score_names: set[str], accumulating: set[str],
                 analysis: Analysis | None = None) -> bool:
    """A statement that adds a loss to the reported score: an in-place write of a value
    computed from the targets (or from validation data through a computation) into a value
    that reaches the report (`s += nll`, `s.add_(...)`, `xs.append(...)`, `xs[i] = ...`), or
    a call that hands such a value to a helper which accumulates into it. Copying input
    tokens into a batch buffer is no score."""
    kind = node.__class__
    if kind is not cst.AugAssign and kind is not cst.Call and kind is not cst.Assign:
        return False  # (exact class checks: isinstance on libcst's abstract bases is slow)

    def scored(value: cst.CSTNode) -> bool:
        if analysis is None:
            return True
        if isinstance(value, cst.Subscript) and VAL in analysis.kinds(scope.function, value.value, scope):
            return False  # the tokens themselves copied into a buffer, not a loss
        kinds = analysis.kinds(scope.function, value, scope)
        if TARGET in kinds:
            return True
        return VAL in kinds and not isinstance(value, (cst.Subscript, cst.Name, cst.Attribute)) and any(
            isinstance(n, cst.Call) for n in _subnodes(value))

    if isinstance(node, cst.AugAssign) and isinstance(node.operator, (cst.AddAssign, cst.SubtractAssign)):
        return _score_root(node.target) in score_names and scored(node.value)
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        if node.func.attr.value in ("add_", "index_add_", "scatter_add_", "append", "extend") \
                and _score_root(node.func.value) in score_names and node.args:
            return any(scored(a.value) for a in node.args)
    if isinstance(node, cst.Call) and isinstance(scope.parent(node), cst.Expr):
        if _leaf(_name(node.func)) in accumulating and any(_score_root(a.value) in score_names for a in node.args):
            return any(scored(a.value) for a in node.args)
    if isinstance(node, cst.Assign):
        for target in node.targets:
            if isinstance(target.target, cst.Subscript) and _score_root(target.target) in score_names:
                return scored(node.value)
    return False


def _subnodes(node: cst.CSTNode):
    """The code nodes under `node` (layout left out: callers look for calls)."""
    from auditor.analysis import code_children

    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(code_children(current))


def _score_root(node: cst.CSTNode) -> str:
    """The accumulated value's name as values.py keys it: `s` of `s[i]`, `self.s` of `self.s.x`."""
    while isinstance(node, (cst.Subscript, cst.Call)):
        node = node.value if isinstance(node, cst.Subscript) else node.func.value if isinstance(node.func, cst.Attribute) else node.func
    name = _name(node)
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "self" and len(parts) > 1 else parts[0]


def in_place_roots(function: Function) -> frozenset[str]:
    """Names a function writes in place: `s += v`, `s[i] += v`, `s.add_(v)`, `xs.append(v)`.
    Computed once per function (several analyses ask)."""
    cached = function.__dict__.get("_in_place_roots")
    if cached is not None:
        return cached
    found = set()
    for node in own_nodes(function):
        if node.__class__ is not ast.AugAssign and node.__class__ is not ast.Call:
            continue  # (ast's classes have no subclasses)
        target = None
        if isinstance(node, ast.AugAssign):
            target = node.target
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "add_", "index_add_", "scatter_add_", "append", "extend"):
            target = node.func.value
        name = _base_name(target)
        if name:
            found.add(name)
    function._in_place_roots = frozenset(found)
    return function._in_place_roots


def _base_name(node: ast.AST | None) -> str | None:
    """`t` of `t`, `t[k]`, `t.x[k]`: the variable a write goes into."""
    while isinstance(node, (ast.Subscript, ast.Attribute)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _accumulating_helpers(analysis: Analysis) -> set[str]:
    """Names of the submission's functions that write in place into one of their parameters."""
    return analysis.memo("accumulating-helpers", lambda: {
        f.name for f in analysis.index.functions if in_place_roots(f) & set(f.params)})


_NOT_NAMES = {"for", "in", "if", "and", "or", "not", "is", "None", "True", "False", "lambda"}


def _node_roots(node: cst.CSTNode) -> set[str]:
    """The names an expression reads, `a` of `a.b.c` (from the tree, without generating code)."""
    from auditor.analysis import code_children

    found, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current.__class__ is cst.Name:
            found.add(current.value)
        elif current.__class__ is cst.Attribute:
            stack.append(current.value)  # the attribute's own name is not a variable
        else:
            stack.extend(code_children(current))  # (no name in layout)
    return found - _NOT_NAMES


def _local_sources(scope: Scope, classes: set[str] = frozenset(),
                   functions: set[str] = frozenset()) -> dict[str, set[str]]:
    """For each local name, the names its value is made of: assignments, `.append(x)`,
    `.extend(xs)`, and loop variables. A constructor call (one of the submission's classes,
    or a library class such as `nn.Parameter(...)`) is a new object and contributes nothing,
    so a LoRA built here is local while `[p for p in model.parameters()]` stays tied to
    `model`."""
    sources: dict[str, set[str]] = {}
    for node in scope.walk():
        kind = node.__class__
        if kind is cst.Assign:
            base = node.value  # the call a chain starts with: `Lora(...).to(device)` is built here
            while isinstance(base, cst.Call) and isinstance(base.func, cst.Attribute) and isinstance(base.func.value, cst.Call):
                base = base.func.value
            called = _leaf(_name(base.func)) if isinstance(base, cst.Call) else ""
            built = called in classes or (called[:1].isupper() and called not in functions)
            parts = set() if built else _node_roots(node.value)
            for target in node.targets:
                for name in _node_roots(target.target):
                    sources.setdefault(name, set()).update(parts)
        elif kind is cst.For:
            parts = _node_roots(node.iter)
            for name in _node_roots(node.target):
                sources.setdefault(name, set()).update(parts)
        elif (kind is cst.Call and isinstance(node.func, cst.Attribute)
              and node.func.attr.value in ("append", "extend", "add") and node.args):
            owner = _name(node.func.value).split(".")[0]
            if owner:
                sources.setdefault(owner, set()).update(_node_roots(node.args[0].value))
    return sources


def _closure(names: set[str], sources: dict[str, set[str]]) -> set[str]:
    seen, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(sources.get(name, ()))
    return seen


def _optimizer_calls(scope: Scope, analysis: Analysis | None = None) -> list[cst.Call]:
    own = _optimizer_classes(analysis) if analysis is not None else set()
    return [node for node in scope.walk() if node.__class__ is cst.Call
            and (OPTIMIZER.search(_name(node.func)) or _leaf(_name(node.func)) in own)
            and "lr_scheduler" not in _name(node.func)]


def _optimizer_classes(analysis: Analysis) -> set[str]:
    """The submission's own optimizers: classes derived from torch's Optimizer (a library
    base, so the name survives a rename), directly or through another of its classes."""
    def compute() -> set[str]:
        found: set[str] = set()
        for _ in range(3):
            for name, defs in analysis.index.classes.items():
                for node in defs:
                    bases = {(ast.unparse(b).rsplit(".", 1)[-1]) for b in node.bases}
                    if "Optimizer" in bases or bases & found:
                        found.add(name)
        return found
    return analysis.memo("optimizer-classes", compute)


_FACTORY = re.compile(r"^torch\.(zeros|ones|full|empty|randn)\w*$")


def _requires_grad(call: cst.Call) -> bool:
    """`torch.zeros(..., requires_grad=True)`, `torch.zeros(...).requires_grad_()`,
    `nn.Parameter(torch.zeros(...))`: a fresh tensor that gradients will update."""
    while True:  # along a chain: torch.zeros(..., requires_grad=True).to(device)
        if any(a.keyword is not None and a.keyword.value == "requires_grad" and _name(a.value) == "True"
               for a in call.args):
            return True
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "requires_grad_" and not call.args:
            return True
        if _name(call.func).endswith("nn.Parameter") and call.args and isinstance(call.args[0].value, cst.Call) \
                and re.match(r"^torch\.(zeros|full|empty|randn)", _name(call.args[0].value.func)):
            return True
        if isinstance(call.func, cst.Attribute) and isinstance(call.func.value, cst.Call):
            call = call.func.value
            continue
        return False


def _delta_names(scope: Scope, sources: dict[str, set[str]], analysis: Analysis | None = None) -> set[str]:
    """Tensors created here with requires_grad and handed to an optimizer built here (SLOT)."""
    created: set[str] = set()
    fresh: set[str] = set()  # tensors made here from a factory: torch.zeros(...), ...
    for node in scope.walk():
        kind = node.__class__
        if kind is cst.Assign and len(node.targets) == 1 and isinstance(node.value, cst.Call):
            target = _name(node.targets[0].target)
            if not target:
                continue
            if _requires_grad(node.value):
                created.add(target)
            if _FACTORY.match(_name(node.value.func)):
                fresh.add(target)
        elif kind is cst.Call and isinstance(node.func, cst.Attribute) and node.func.attr.value == "requires_grad_":
            # delta.requires_grad_() on a fresh tensor; not p.requires_grad_(True) over model parameters
            if _name(node.func.value) in fresh:
                created.add(_name(node.func.value))
    optimized: set[str] = set()
    for call in _optimizer_calls(scope, analysis):
        if call.args:
            optimized |= _closure(_node_roots(call.args[0].value), sources)
    return created & optimized


def _trains_local_modules_only(scope: Scope, sources: dict[str, set[str]], analysis: Analysis | None = None) -> bool:
    """True when every optimizer built here optimizes modules that are also built here.

    A compile warm-up on a throwaway LoRA, or a diagnostics probe, leaves the evaluated
    model untouched (e.g. 1530's warm-up, deleted before scoring). A module built here that
    the reported score is then computed with is no throwaway.
    """
    function = scope.function
    given = set(function.params) | {"self"}
    if analysis is not None:
        given |= analysis.score.of(function)
    optimizers = _optimizer_calls(scope, analysis)
    if not optimizers:
        return False
    for call in optimizers:
        if not call.args:
            return False
        roots = _node_roots(call.args[0].value)
        if not roots or not roots <= set(sources) or _closure(roots, sources) & given:
            return False
    return True


def _update_events(analysis: Analysis, scope: Scope, trainers: dict[str, Function]) -> tuple[list[Event], str | None]:
    function = scope.function
    # functions visible here by name: its own closures and those of the functions around it
    enclosing, chain = set(), function
    while chain is not None and chain.qualname != "<module>":
        enclosing.add(chain)
        chain = chain.parent
    nested = {f.name for f in analysis.index.functions if f.parent in enclosing}
    events, via = [], None
    for node in scope.walk():
        if node.__class__ is not cst.Call:
            continue
        func = node.func
        receiver = None
        if isinstance(func, cst.Attribute) and func.attr.value == "backward":
            receiver = func.value
        elif _name(func) in ("torch.autograd.grad", "autograd.grad") and node.args:
            receiver = node.args[0].value
        elif isinstance(func, cst.Attribute) and func.attr.value == "step" and node.args and _name(node.args[0].value) in nested:
            # optimizer.step(closure), L-BFGS style: the backward is inside the closure
            if _function_is_val(analysis, function):
                loops, no_grad = _context(node, scope)
                events.append(Event(node, scope.lines(node)[0], loops, no_grad))
            continue
        elif _leaf(_name(func)) in trainers and (node.args or _is_closure_of(trainers[_leaf(_name(func))], function)):
            # a trainer handed validation data, or a closure of this function that trains
            # on what it reads from here
            # (an argument of training and validation data together is training on mixed
            # data: val-data-in-training's, not adaptation on the validation set)
            if _is_closure_of(trainers[_leaf(_name(func))], function) or any(
                    VAL in kinds and TRAIN not in kinds
                    for kinds in (analysis.kinds(function, arg.value, scope) for arg in node.args)):
                loops, no_grad = _context(node, scope)
                events.append(Event(node, scope.lines(node)[0], loops, no_grad))
                via = _leaf(_name(func))
            continue
        if receiver is not None and VAL in analysis.kinds(function, receiver, scope):
            loops, no_grad = _context(node, scope)
            events.append(Event(node, scope.lines(node)[0], loops, no_grad))
    return events, via


def _is_closure_of(inner: Function, outer: Function) -> bool:
    return inner.parent is outer and outer.qualname != "<module>"


def _function_is_val(analysis: Analysis, function: Function) -> bool:
    """Whether the function, or one it is nested in (whose values it reads), holds val data."""
    chain = function
    while chain is not None and chain.qualname != "<module>":
        if analysis.taint.of(chain, VAL):
            return True
        chain = chain.parent
    return False


def _classify(updates: list[Event], scores: list[Event], is_epoch) -> tuple[str, Event, Event | None]:
    worst: tuple[str, Event, Event | None] | None = None
    for update in updates:
        order, score = _order_for(update, scores, is_epoch)
        if worst is None or ORDER_RANK[order] > ORDER_RANK[worst[0]]:
            worst = (order, update, score)
    assert worst is not None
    return worst


def _order_for(update: Event, scores: list[Event], is_epoch) -> tuple[str, Event | None]:
    for loop in update.loops:
        inside = [s for s in scores if any(l is loop for l in s.loops)]
        if not inside:
            continue
        first = min(inside, key=lambda s: s.line)
        outer = update.loops[update.loops.index(loop):]
        for enclosing in outer:
            if is_epoch(enclosing) and any(any(l is enclosing for l in s.loops) for s in inside):
                return "epoch-rescore", first
        if first.line < update.line:
            return "score-first", first
        return "train-first", first
    later = [s for s in scores if s.line > update.line]
    if later:
        return "train-first", min(later, key=lambda s: s.line)
    earlier = [s for s in scores if s.line < update.line]
    if earlier:
        # Every loss that reaches the report was added before this step, outside any loop
        # shared with it: one chunk's body (a helper called per chunk) scores, then trains.
        return "score-first", min(earlier, key=lambda s: s.line)
    return "no-score", None


class _EpochLoops:
    """_is_epoch_loop of one scope's loops, each answered once (_classify asks per update)."""

    def __init__(self, analysis: Analysis, scope: Scope):
        self.analysis, self.scope, self.known = analysis, scope, {}

    def __call__(self, loop: cst.CSTNode) -> bool:
        key = id(loop)
        if key not in self.known:
            self.known[key] = (loop, _is_epoch_loop(self.analysis, self.scope, loop))
        return self.known[key][1]


def _is_epoch_loop(analysis: Analysis, scope: Scope, loop: cst.CSTNode) -> bool:
    """A loop that repeats the same data: it does not iterate over the data itself, and its
    variable (or anything computed from it) never selects data inside it: it indexes or
    slices nothing, bounds no inner loop, and is handed to no call together with the
    validation tokens. `for _ in range(k): for chunk in chunks: ...` repeats; `for i in
    range(n): window = toks[i * L:(i + 1) * L]` walks the data. A `while` loop is read the
    same way: its counters (names in its test that it increments) or what it takes with
    `next(...)` are its variables."""
    if not isinstance(loop, (cst.For, cst.While)):
        return False
    function = scope.function
    body = _loop_body(loop)
    if isinstance(loop, cst.For):
        if VAL in analysis.kinds(function, loop.iter, scope):
            return False
        derived = _node_roots(loop.target)
        if not derived:
            return True
    else:
        derived, tested = set(), _node_roots(loop.test)
        for node in body:
            if isinstance(node, cst.AugAssign) and _node_roots(node.target) & tested:
                derived |= _node_roots(node.target)
            elif isinstance(node, cst.Assign) and isinstance(node.value, cst.Call) and _name(node.value.func) == "next":
                if node.value.args and VAL in analysis.kinds(function, node.value.args[0].value, scope):
                    return False  # it walks an iterator over the data
                for target in node.targets:
                    derived |= _node_roots(target.target)
        if not derived:
            return False  # nothing to tell repetition from walking: not a repeat
    # A nested helper called in the body is part of it (a loop body moved into a closure):
    # its nodes are read with it, its own questions asked in its own scope.
    owner = {id(node): function for node in body}
    for node in list(body):
        if isinstance(node, cst.Call):
            for closure in _called_closures(analysis, function, node):
                inner = analysis.scope(closure).walk()
                owner.update((id(n), closure) for n in inner)
                body = body + inner
    for _ in range(3):
        grown = False
        for node in body:
            if node.__class__ in _ASSIGNMENTS and node.value is not None:
                if _node_roots(node.value) & derived:
                    targets = node.targets if isinstance(node, cst.Assign) else [node]
                    for target in targets:
                        names = _node_roots(target.target) - derived
                        if names:
                            derived |= names
                            grown = True
        if not grown:
            break
    for node in body:
        kind = node.__class__  # (libcst's classes have no subclasses; its isinstance is slow)
        if kind is cst.Subscript:
            if any(_node_roots(element.slice) & derived for element in node.slice):
                return False
        elif kind is cst.For and node is not loop:
            if _node_roots(node.iter) & derived:
                return False
        elif kind is cst.While and node is not loop:
            if _node_roots(node.test) & derived:
                return False
        elif kind is cst.Call and node.args:
            with_derived = [a for a in node.args if _node_roots(a.value) & derived]
            others = [a for a in node.args if a not in with_derived]
            where = owner.get(id(node), function)
            if with_derived and any(VAL in analysis.kinds(where, a.value, analysis.scope(where)) for a in others):
                return False
    return True


_ASSIGNMENTS = frozenset({cst.Assign, cst.AugAssign, cst.AnnAssign})


def _called_closures(analysis: Analysis, function: Function, call: cst.Call) -> list[Function]:
    """The nested functions of `function` that this call runs."""
    return [callee for callee in analysis.index.resolve(_leaf(_name(call.func))) if callee.parent is function]


def free_names(function: Function) -> frozenset[str]:
    """Names a function reads but does not bind (a closure's reads of the function around
    it); computed once per function."""
    cached = function.__dict__.get("_free_names")
    if cached is None:
        nodes = own_nodes(function)
        local = set(function.params) | {n.id for n in nodes
                                        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        cached = function._free_names = frozenset(
            {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local)
    return cached


def _loop_body(loop: cst.CSTNode) -> list[cst.CSTNode]:
    """The nodes of a loop's body (and a while loop's test), nested functions excluded."""
    from auditor.analysis import code_children

    skip = {id(getattr(loop, "target", None)), id(getattr(loop, "iter", None))}
    nodes, stack = [], [child for child in code_children(loop) if id(child) not in skip]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(child for child in code_children(node)
                     if child.__class__ not in (cst.FunctionDef, cst.ClassDef, cst.Lambda))
    return nodes


def adaptations(analysis: Analysis) -> list[Adaptation]:
    """Every function that takes gradient steps on validation data, classified. Cached."""
    return analysis.memo("adaptations", lambda: _find_adaptations(analysis))


def _find_adaptations(analysis: Analysis) -> list[Adaptation]:
    results: dict[Function, Adaptation] = {}
    trainers: dict[str, Function] = {}
    # First the functions with direct steps; then, round by round, the functions that call
    # a function found to only train (trainers sit a few calls deep: eval -> global SGD ->
    # step helper). A function is looked at again only when it calls a newly found trainer.
    to_visit = [f for f in analysis.index.functions if _may_train_on_val(analysis, f)]
    for _ in range(4):
        for function in to_visit:
            scope = analysis.scope(function)
            updates, via = _update_events(analysis, scope, trainers)
            if not updates:
                continue
            scores = []
            score_names = analysis.score.of(function)
            accumulating = _accumulating_helpers(analysis)
            for node in scope.walk():
                if _score_event(node, scope, score_names, accumulating, analysis):
                    loops, no_grad = _context(node, scope)
                    scores.append(Event(node, scope.lines(node)[0], loops, no_grad))
            is_epoch = _EpochLoops(analysis, scope)
            order, update, score = _classify(updates, scores, is_epoch)
            if order == "no-score":
                # Losses this function returns without reporting them (a first pass whose
                # figure is only logged): taken before each step, they make a score-first pass.
                returned = analysis.score.returned_by(function) - score_names
                own = [Event(node, scope.lines(node)[0], *_context(node, scope)) for node in scope.walk()
                       if _score_event(node, scope, returned, accumulating, analysis)]
                own_order, own_update, own_score = _classify(updates, own, is_epoch)
                if own_order == "score-first":
                    order, update, score, scores = own_order, own_update, own_score, own
            sources = _local_sources(scope, set(analysis.index.classes), set(analysis.index.by_name))
            results[function] = Adaptation(function, scope, updates, scores, order, update, score,
                                           _delta_names(scope, sources, analysis), via,
                                           _trains_local_modules_only(scope, sources, analysis))
        new_trainers = {f.name: f for f, a in results.items()
                        if a.order == "no-score" and a.adapts_given_model and f.name not in trainers}
        if not new_trainers:
            break
        trainers.update(new_trainers)
        to_visit = [f for f in analysis.index.functions if _calls_any(analysis, f, new_trainers)]
    # A training-only helper called from a score-first loop is part of that loop.
    changed = True
    while changed:
        changed = False
        for name, trainer in trainers.items():
            callers = [a for a in results.values() if a.via_call == name]
            if (callers and all(a.order == "score-first" for a in callers) and trainer in results
                    and results[trainer].order != "score-first"):
                results[trainer].order = "score-first"
                results[trainer].score = callers[0].score
                changed = True
    _repeated_passes(analysis, results)
    # A closure that only trains is part of the function that defines and calls it: that
    # function's adaptation (its loops, its scores, its optimizer's tensors) is the verdict.
    # (called directly, or handed to `optimizer.step(closure)` as L-BFGS takes it)
    for function, adaptation in list(results.items()):
        parent = function.parent
        if (adaptation.order == "no-score" and parent is not None and parent.qualname != "<module>"
                and parent in results):
            del results[function]
    return list(results.values())


def _repeated_passes(analysis: Analysis, results: dict[Function, Adaptation]) -> None:
    """A score-first pass (score each chunk, then train on it) called again and again on the
    same validation tokens by a loop that repeats: every pass after the first scores tokens
    the model has already trained on. The caller is an epoch-rescore adaptation."""
    passes = {a.function.name: a for a in results.values() if a.order == "score-first" and a.adapts_given_model}
    if not passes:
        return
    for function in analysis.index.functions:
        if function in results or not _calls_any(analysis, function, passes):
            continue
        if not any(isinstance(loop, (ast.For, ast.While)) and any(
                isinstance(n, ast.Call) and _call_leaf(n) in passes for n in ast.walk(loop))
                for loop in own_nodes(function)):
            continue  # no pass is called from inside a loop here (checked on the ast, before libcst)
        scope = analysis.scope(function)
        for node in scope.walk():
            if node.__class__ is not cst.Call or _leaf(_name(node.func)) not in passes:
                continue
            if not any(VAL in analysis.kinds(function, a.value, scope) for a in node.args):
                continue
            loops, no_grad = _context(node, scope)
            if any(_is_epoch_loop(analysis, scope, loop) for loop in loops):
                event = Event(node, scope.lines(node)[0], loops, no_grad)
                results[function] = Adaptation(function, scope, [event], [], "epoch-rescore", event, None,
                                               via_call=_leaf(_name(node.func)))
                break


def mixed_training_calls(analysis: Analysis) -> list[tuple[Function, ast.Call, Function]]:
    """Calls that hand a function taking gradient steps one argument made of training and
    validation data together (`fit(model, stream(train_glob, val_glob))`): validation
    tokens mixed into the training data. (caller, call, callee), cached."""
    def compute():
        steppers = {a.function for a in adaptations(analysis)}
        found = []
        for function in analysis.index.functions:
            for node in own_nodes(function):
                if not isinstance(node, ast.Call):
                    continue
                callees = [c for c in analysis.index.resolve(_call_leaf(node)) if c in steppers]
                if not callees:
                    continue
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    kinds = analysis.kinds(function, arg, line=node.lineno)
                    if VAL in kinds and TRAIN in kinds:
                        found.extend((function, node, callee) for callee in callees)
                        break
        return found
    return analysis.memo("mixed-training-calls", compute)


def trains_on_mixed_data_only(analysis: Analysis, function: Function) -> bool:
    """Whether every call that hands `function` validation data mixes it into training data."""
    mixed = [call for _, call, callee in mixed_training_calls(analysis) if callee is function]
    if not mixed:
        return False
    for caller in analysis.index.functions:
        for node in own_nodes(caller):
            if isinstance(node, ast.Call) and _call_leaf(node) == function.name and node not in mixed:
                if any(VAL in analysis.kinds(caller, a, line=node.lineno) for a in node.args):
                    return False
    return True


def _call_leaf(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _may_train_on_val(analysis: Analysis, function: Function) -> bool:
    """Cheap ast pre-check before parsing with libcst: a step whose loss carries val data."""
    enclosing = function.parent
    if not analysis.taint.of(function, VAL) and not (
            enclosing is not None and enclosing.qualname != "<module>" and analysis.taint.of(enclosing, VAL)):
        return False
    for node in own_nodes(function):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "backward" and VAL in analysis.kinds(function, node.func.value):
            return True
        if node.func.attr == "grad" and node.args and VAL in analysis.kinds(function, node.args[0]):
            return True
        if node.func.attr == "step" and node.args:
            return True
    return False


def _calls_any(analysis: Analysis, function: Function, trainers: dict[str, Function]) -> bool:
    text = analysis.text_of(function)
    return any(f"{name}(" in text for name in trainers)
