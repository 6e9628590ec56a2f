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

from auditor.analysis import NESTED_CODE, Analysis, Scope
from auditor.analysis.flow import TARGET, TRAIN, VAL
from auditor.analysis.index import Function, call_args, child_nodes, full_name, is_name, node_roots, own_nodes, walk

OPTIMIZER = re.compile(r"(?:^|\.)(Adam\w*|SGD|LBFGS|RMSprop|Adagrad|Adafactor|Lion)$|optim\.\w+$")
NO_GRAD = re.compile(r"(no_grad|inference_mode)")

ORDER_RANK = {"score-first": 0, "no-score": 1, "train-first": 2, "epoch-rescore": 3}


@dataclass
class Event:
    node: ast.AST
    line: int
    loops: list[ast.AST]  # enclosing For/While, innermost first
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


_LOOPS = frozenset({ast.For, ast.AsyncFor, ast.While})
_WITHS = frozenset({ast.With, ast.AsyncWith})


def _context(node: ast.AST, scope: Scope) -> tuple[list[ast.AST], bool]:
    loops, no_grad = [], False
    current = scope.parent(node)
    while current is not None:
        kind = current.__class__
        if kind in _LOOPS:
            loops.append(current)
        elif kind in _WITHS:
            for item in current.items:
                if NO_GRAD.search(full_name(item.context_expr)):
                    no_grad = True
        current = scope.parent(current)
    return loops, no_grad


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _score_event(node: ast.AST, scope: Scope, score_names: set[str], accumulating: set[str],
                 analysis: Analysis | None = None) -> bool:
    """A statement that adds a loss to the reported score: an in-place write of a value
    computed from the targets (or from validation data through a computation) into a value
    that reaches the report (`s += nll`, `s.add_(...)`, `xs.append(...)`, `xs[i] = ...`), or
    a call that hands such a value to a helper which accumulates into it. Copying input
    tokens into a batch buffer is no score."""
    kind = node.__class__
    if kind is not ast.AugAssign and kind is not ast.Call and kind is not ast.Assign:
        return False

    def scored(value: ast.AST) -> bool:
        if analysis is None:
            return True
        if isinstance(value, ast.Subscript) and VAL in analysis.kinds(scope.function, value.value, scope):
            return False  # the tokens themselves copied into a buffer, not a loss
        kinds = analysis.kinds(scope.function, value, scope)
        if TARGET in kinds:
            return True
        return VAL in kinds and not (value.__class__ is ast.Subscript or is_name(value)) and any(isinstance(n, ast.Call) for n in walk(value))

    if kind is ast.AugAssign and isinstance(node.op, (ast.Add, ast.Sub)):
        return _score_root(node.target) in score_names and scored(node.value)
    if kind is ast.Call and isinstance(node.func, ast.Attribute):
        args = call_args(node)
        if node.func.attr in ("add_", "index_add_", "scatter_add_", "append", "extend") \
                and _score_root(node.func.value) in score_names and args:
            return any(scored(a) for a in args)
    if kind is ast.Call and isinstance(scope.parent(node), ast.Expr):
        args = call_args(node)
        if _leaf(full_name(node.func)) in accumulating and any(_score_root(a) in score_names for a in args):
            return any(scored(a) for a in args)
    if kind is ast.Assign:
        for target in node.targets:
            if isinstance(target, ast.Subscript) and _score_root(target) in score_names:
                return scored(node.value)
    return False


def _score_root(node: ast.AST) -> str:
    """The accumulated value's name as values.py keys it: `s` of `s[i]`, `self.s` of `self.s.x`."""
    while isinstance(node, (ast.Subscript, ast.Call)):
        node = node.value if isinstance(node, ast.Subscript) else node.func.value if isinstance(node.func, ast.Attribute) else node.func
    name = full_name(node)
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
        if kind is ast.Assign:
            base = node.value  # the call a chain starts with: `Lora(...).to(device)` is built here
            while isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and isinstance(base.func.value, ast.Call):
                base = base.func.value
            called = _leaf(full_name(base.func)) if isinstance(base, ast.Call) else ""
            built = called in classes or (called[:1].isupper() and called not in functions)
            parts = set() if built else node_roots(node.value)
            for target in node.targets:
                for name in node_roots(target):
                    sources.setdefault(name, set()).update(parts)
        elif kind is ast.For or kind is ast.AsyncFor:
            parts = node_roots(node.iter)
            for name in node_roots(node.target):
                sources.setdefault(name, set()).update(parts)
        elif (kind is ast.Call and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("append", "extend", "add") and (node.args or node.keywords)):
            owner = full_name(node.func.value).split(".")[0]
            if owner:
                sources.setdefault(owner, set()).update(node_roots(call_args(node)[0]))
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


def _optimizer_calls(scope: Scope, analysis: Analysis | None = None) -> list[ast.Call]:
    own = _optimizer_classes(analysis) if analysis is not None else set()
    return [node for node in scope.walk() if node.__class__ is ast.Call
            and (OPTIMIZER.search(full_name(node.func)) or _leaf(full_name(node.func)) in own)
            and "lr_scheduler" not in full_name(node.func)]


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


def _requires_grad(call: ast.Call) -> bool:
    """`torch.zeros(..., requires_grad=True)`, `torch.zeros(...).requires_grad_()`,
    `nn.Parameter(torch.zeros(...))`: a fresh tensor that gradients will update."""
    while True:  # along a chain: torch.zeros(..., requires_grad=True).to(device)
        if any(k.arg == "requires_grad" and full_name(k.value) == "True" for k in call.keywords):
            return True
        args = call_args(call)
        if isinstance(call.func, ast.Attribute) and call.func.attr == "requires_grad_" and not args:
            return True
        if full_name(call.func).endswith("nn.Parameter") and args and isinstance(args[0], ast.Call) \
                and re.match(r"^torch\.(zeros|full|empty|randn)", full_name(args[0].func)):
            return True
        if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Call):
            call = call.func.value
            continue
        return False


def _delta_names(scope: Scope, sources: dict[str, set[str]], analysis: Analysis | None = None) -> set[str]:
    """Tensors created here with requires_grad and handed to an optimizer built here (SLOT)."""
    created: set[str] = set()
    fresh: set[str] = set()  # tensors made here from a factory: torch.zeros(...), ...
    for node in scope.walk():
        kind = node.__class__
        if kind is ast.Assign and len(node.targets) == 1 and isinstance(node.value, ast.Call):
            target = full_name(node.targets[0])
            if not target:
                continue
            if _requires_grad(node.value):
                created.add(target)
            if _FACTORY.match(full_name(node.value.func)):
                fresh.add(target)
        elif kind is ast.Call and isinstance(node.func, ast.Attribute) and node.func.attr == "requires_grad_":
            # delta.requires_grad_() on a fresh tensor; not p.requires_grad_(True) over model parameters
            if full_name(node.func.value) in fresh:
                created.add(full_name(node.func.value))
    optimized: set[str] = set()
    for call in _optimizer_calls(scope, analysis):
        args = call_args(call)
        if args:
            optimized |= _closure(node_roots(args[0]), sources)
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
        args = call_args(call)
        if not args:
            return False
        roots = node_roots(args[0])
        if not roots or not roots <= set(sources) or _closure(roots, sources) & given:
            return False
    return True


def _update_events(analysis: Analysis, scope: Scope,
                   trainers: dict[str, Function]) -> tuple[list[Event], str | None]:
    function = scope.function
    # functions visible here by name: its own closures and those of the functions around it
    enclosing, chain = set(), function
    while chain is not None and chain.qualname != "<module>":
        enclosing.add(chain)
        chain = chain.parent
    nested = {f.name for f in analysis.index.functions if f.parent in enclosing}
    events, via = [], None
    for node in scope.walk():
        if node.__class__ is not ast.Call:
            continue
        func = node.func
        args = call_args(node)
        receiver = None
        if isinstance(func, ast.Attribute) and func.attr == "backward":
            receiver = func.value
        elif full_name(func) in ("torch.autograd.grad", "autograd.grad") and args:
            receiver = args[0]
        elif isinstance(func, ast.Attribute) and func.attr == "step" and args and full_name(args[0]) in nested:
            # optimizer.step(closure), L-BFGS style: the backward is inside the closure
            if _function_is_val(analysis, function):
                loops, no_grad = _context(node, scope)
                events.append(Event(node, scope.lines(node)[0], loops, no_grad))
            continue
        elif _leaf(full_name(func)) in trainers and (args or _is_closure_of(trainers[_leaf(full_name(func))], function)):
            # a trainer handed validation data, or a closure of this function that trains
            # on what it reads from here
            # (an argument of training and validation data together is training on mixed
            # data: val-data-in-training's, not adaptation on the validation set)
            if _is_closure_of(trainers[_leaf(full_name(func))], function) or any(
                    VAL in kinds and TRAIN not in kinds
                    for kinds in (analysis.kinds(function, arg, scope) for arg in args)):
                loops, no_grad = _context(node, scope)
                events.append(Event(node, scope.lines(node)[0], loops, no_grad))
                via = _leaf(full_name(func))
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

    def __call__(self, loop: ast.AST) -> bool:
        key = id(loop)
        if key not in self.known:
            self.known[key] = (loop, _is_epoch_loop(self.analysis, self.scope, loop))
        return self.known[key][1]


def _is_epoch_loop(analysis: Analysis, scope: Scope, loop: ast.AST) -> bool:
    """A loop that repeats the same data: it does not iterate over the data itself, and its
    variable (or anything computed from it) never selects data inside it: it indexes or
    slices nothing, bounds no inner loop, and is handed to no call together with the
    validation tokens. `for _ in range(k): for chunk in chunks: ...` repeats; `for i in
    range(n): window = toks[i * L:(i + 1) * L]` walks the data. A `while` loop is read the
    same way: its counters (names in its test that it increments) or what it takes with
    `next(...)` are its variables."""
    if loop.__class__ not in _LOOPS:
        return False
    function = scope.function
    body = _loop_body(loop)
    if loop.__class__ is not ast.While:
        if VAL in analysis.kinds(function, loop.iter, scope):
            return False
        derived = node_roots(loop.target)
        if not derived:
            return True
    else:
        derived, tested = set(), node_roots(loop.test)
        for node in body:
            if isinstance(node, ast.AugAssign) and node_roots(node.target) & tested:
                derived |= node_roots(node.target)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and full_name(node.value.func) == "next":
                args = call_args(node.value)
                if args and VAL in analysis.kinds(function, args[0], scope):
                    return False  # it walks an iterator over the data
                for target in node.targets:
                    derived |= node_roots(target)
        if not derived:
            return False  # nothing to tell repetition from walking: not a repeat
    # A nested helper called in the body is part of it (a loop body moved into a closure):
    # its nodes are read with it, its own questions asked in its own scope.
    owner = {id(node): function for node in body}
    for node in list(body):
        if isinstance(node, ast.Call):
            for closure in _called_closures(analysis, function, node):
                inner = analysis.scope(closure).walk()
                owner.update((id(n), closure) for n in inner)
                body = body + inner
    for _ in range(3):
        grown = False
        for node in body:
            if node.__class__ in _ASSIGNMENTS and node.value is not None:
                if node_roots(node.value) & derived:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        names = node_roots(target) - derived
                        if names:
                            derived |= names
                            grown = True
        if not grown:
            break
    for node in body:
        kind = node.__class__  # (ast's classes have no subclasses)
        if kind is ast.Subscript:
            if node_roots(node.slice) & derived:
                return False
        elif (kind is ast.For or kind is ast.AsyncFor) and node is not loop:
            if node_roots(node.iter) & derived:
                return False
        elif kind is ast.While and node is not loop:
            if node_roots(node.test) & derived:
                return False
        elif kind is ast.Call and (node.args or node.keywords):
            args = call_args(node)
            with_derived = [a for a in args if node_roots(a) & derived]
            others = [a for a in args if a not in with_derived]
            where = owner.get(id(node), function)
            if with_derived and any(VAL in analysis.kinds(where, a, analysis.scope(where)) for a in others):
                return False
    return True


_ASSIGNMENTS = frozenset({ast.Assign, ast.AugAssign, ast.AnnAssign})


def _called_closures(analysis: Analysis, function: Function, call: ast.Call) -> list[Function]:
    """The nested functions of `function` that this call runs."""
    return [callee for callee in analysis.index.resolve(_leaf(full_name(call.func))) if callee.parent is function]


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


def _loop_body(loop: ast.AST) -> list[ast.AST]:
    """The nodes of a loop's body (and a while loop's test), nested functions excluded."""
    skip = {id(getattr(loop, "target", None)), id(getattr(loop, "iter", None))}
    nodes, stack = [], [child for child in child_nodes(loop) if id(child) not in skip]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(child for child in child_nodes(node) if child.__class__ not in NESTED_CODE)
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
            continue  # no pass is called from inside a loop here
        scope = analysis.scope(function)
        for node in scope.walk():
            if node.__class__ is not ast.Call or _leaf(full_name(node.func)) not in passes:
                continue
            if not any(VAL in analysis.kinds(function, a, scope) for a in call_args(node)):
                continue
            loops, no_grad = _context(node, scope)
            if any(_is_epoch_loop(analysis, scope, loop) for loop in loops):
                event = Event(node, scope.lines(node)[0], loops, no_grad)
                results[function] = Adaptation(function, scope, [event], [], "epoch-rescore", event, None,
                                               via_call=_leaf(full_name(node.func)))
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
    """Cheap pre-check before the scope's walk: a step whose loss carries val data."""
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
