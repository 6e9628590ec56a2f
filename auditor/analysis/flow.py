"""Data flow: which values are validation tokens, training tokens, and targets.

Meaning comes from what the code does, never from what a value is called:
- validation / training data is what is read from the validation / training split: a string
  that names its shards (`fineweb_val_*.bin`), an environment variable that the run
  configuration points at them, an attribute or module constant assigned from one of those,
  followed through assignments, loops, `with ... as`, slices, containers and calls (an
  argument taints the callee's parameter; a callee that returns data from its own sources
  taints its call; an object built from data carries it into its methods' results);
- a target is a value one position ahead of an input from the same buffer (`buf[s+1:e+1]`
  against `buf[s:e]`, `buf[1:]` against `buf[:-1]`, `toks[i]` against `toks[i-1]`), or what
  is passed where a loss reads the target (`cross_entropy(logits, t)`, `.gather(-1, t)`),
  traced back to the caller's argument; anything computed from a target is target-derived.

Per function, flow-insensitive apart from `defs` (latest assignment above a read), iterated
to a fixpoint across functions.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from auditor.analysis.index import MODULE_SCOPE, Function, Index, call_name, child_nodes, dotted, own_nodes, walk

VAL = "val"
TRAIN = "train"
TARGET = "target"

# Strings that name the challenge's shards (file names are data, not vocabulary: a rename
# keeps them, since the files on disk are called that).
_VAL_STRING = re.compile(r"fineweb_val|_val_\*|val_\*\.bin|/val\b")
_TRAIN_STRING = re.compile(r"fineweb_train")
# Library calls that read an environment variable: os.environ.get / os.getenv.
_ENV_GETTERS = {"get", "getenv", "environ"}

# Calls whose result does not carry the data onward (sizes, shapes, dtypes, devices).
# (`zip` and `enumerate` carry their sequences' data: a loop head binds them element-wise,
# any other use, `iter(zip(a, b))` of a for rewritten as a while, carries all of it)
_OPAQUE_CALLS = {"len", "numel", "size", "isinstance", "print", "range", "str", "repr", "type",
                 "hasattr", "getattr", "id", "bool"}
# Losses whose second argument (or `target=`) is the token being predicted.
_LOSS_TARGET_ARG = {"cross_entropy": 1, "nll_loss": 1, "binary_cross_entropy": 1}


@dataclass
class Taint:
    names: dict[Function, dict[str, set[str]]] = field(default_factory=dict)  # fn -> kind -> names
    # What a function's return value carries from its own sources, whatever its arguments:
    # a shard reader called once with a val file and once with a train file returns neither.
    returns: dict[str, set[str]] = field(default_factory=dict)  # function name -> kinds
    # name -> {line of an assignment: kinds it put in the name}, for flow-sensitive reads.
    defs: dict[Function, dict[str, dict[int, set[str]]]] = field(default_factory=dict)
    # Names tainted by the function's own sources, not by what callers passed in.
    intrinsic: dict[Function, dict[str, set[str]]] = field(default_factory=dict)
    # Attributes assigned data from the assigning function's own sources (a config class's
    # `val_files = ...fineweb_val_*`, `self.tokens = read(<val path>)`): any `x.attr` reads it.
    fields: dict[str, set[str]] = field(default_factory=dict)
    # Module-level names with data from their own sources, read by functions as globals.
    globals: dict[str, set[str]] = field(default_factory=dict)
    # Per function, the code of subscripts that read a target (one position ahead).
    target_exprs: dict[Function, set[str]] = field(default_factory=dict)
    # Per function, names that hold a target wherever they are read (a loss's target argument).
    target_names: dict[Function, set[str]] = field(default_factory=dict)
    local_names: dict[Function, set[str]] = field(default_factory=dict)
    # Per function, the parameters its return value is made of (a summary for callers).
    return_params: dict[Function, set[str]] = field(default_factory=dict)
    # Per closure, the lines where its function calls it.
    closure_calls: dict[Function, list[int]] = field(default_factory=dict)

    def of(self, function: Function, kind: str) -> set[str]:
        return self.names.get(function, {}).get(kind, set())


class _Flow:
    def __init__(self, index: Index, env: dict[str, str] | None = None):
        self.index = index
        self.env = env or {}
        self.taint = Taint()
        self._closures: dict[Function, list[Function]] = {}
        self.changed = False
        self.dirty: set[Function] = set()
        self._passes: dict[int, tuple] = {}  # id(call) -> (call, _passes_through's answer)
        self._callee_cache: dict[tuple, tuple] = {}  # ids of (call, caller) -> (call, _callees' answer)
        self._returning: set[Function] = set()  # closures whose returns are being read

    @property
    def intrinsic(self) -> dict:
        """Taint from the function's own sources only (no parameter bindings): for returns."""
        return self.taint.intrinsic

    def kinds_of(self, function: Function, expr: ast.AST, intrinsic: bool = False, line: int | None = None) -> set[str]:
        """The taint kinds an expression carries inside `function` (at `line`, when given).

        With a line, a local name carries what its latest assignment above that line put in
        it: `x, y = train_batches.next()` in a warm-up loop is training data even if `x`
        holds validation tokens elsewhere in main(). Without one earlier (a loop's back
        edge, a parameter), every assignment counts.
        """
        static, names, calls, subscripts = _expr_facts(expr, self.env, self._passes_through)
        kinds = set(static)
        targets = self.taint.target_exprs.get(function)
        if targets and not targets.isdisjoint(subscripts):
            kinds.add(TARGET)
        marked = self.taint.target_names.get(function)
        if marked and not marked.isdisjoint(names):
            kinds.add(TARGET)
        fields = self.taint.fields
        if fields:
            for name in names:
                if "." in name:
                    found = fields.get(name.rsplit(".", 1)[-1])
                    if found:
                        kinds |= found
        enclosing = function.parent
        if enclosing is not None and enclosing.qualname != MODULE_SCOPE:
            # a closure reads the enclosing function's names it does not bind itself
            local = self._locals(function)
            free = {n for n in names if n.split(".", 1)[0] not in local}
            if free:
                # what those names hold where the closure is called (a loop body moved into
                # a helper reads the loop's current values, not every value they ever take)
                kinds |= self.kinds_of(enclosing, _Names(free), intrinsic=intrinsic,
                                       line=self._call_line(function))
        if self.taint.globals:
            local = self._locals(function)
            for name in names:
                root = name.split(".", 1)[0]
                if root not in local:
                    found = self.taint.globals.get(root)
                    if found:
                        kinds |= found
        tainted = (self.intrinsic if intrinsic else self.taint.names).get(function)
        if tainted:
            defs = self.taint.defs.get(function, {}) if line is not None and not intrinsic else {}
            remaining = names
            if defs:
                remaining = set()
                for name in names:
                    lines = defs.get(name)
                    earlier = [l for l in lines if l < line] if lines else None
                    if earlier:
                        kinds |= lines[max(earlier)]
                    else:
                        remaining.add(name)
            for kind, tainted_names in tainted.items():
                if kind not in kinds and not tainted_names.isdisjoint(remaining):
                    kinds.add(kind)
        returns = self.taint.returns
        for name, receiver in calls:
            closure = self._closure_of(function, name) if not receiver else None
            if closure is not None:
                # A closure runs inside this call of its function: what it returns carries
                # this call's data (the function's parameters included).
                kinds |= self._closure_returns(closure, intrinsic)
                continue
            if name in returns and (not receiver or receiver == "self" or len(self.index.resolve(name)) == 1):
                # A method called on an object carries that object's data through the
                # receiver's own taint; its name alone says nothing (two loader objects of
                # one class return different splits), unless only one function has it.
                kinds |= returns[name]
        return kinds

    def _closure_of(self, function: Function, name: str) -> Function | None:
        if not self._closures:
            self._closures = _closures_by_parent(self.index)
        for candidate in self._closures.get(function, ()):
            if candidate.name == name:
                return candidate
        return None

    def _closure_returns(self, closure: Function, intrinsic: bool) -> set[str]:
        if closure in self._returning:
            return set()
        self._returning.add(closure)
        try:
            kinds: set[str] = set()
            for node in own_nodes(closure):
                if isinstance(node, ast.Return) and node.value is not None:
                    kinds |= self.kinds_of(closure, node.value, intrinsic=intrinsic, line=node.lineno)
            kinds.discard(TARGET)
            return kinds
        finally:
            self._returning.discard(closure)

    def _call_line(self, closure: Function) -> int | None:
        """The first line where the enclosing function calls this closure by name."""
        lines = self.taint.closure_calls.get(closure)
        if lines is None:
            lines = self.taint.closure_calls[closure] = sorted(
                n.lineno for n in own_nodes(closure.parent)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == closure.name)
        return lines[0] if lines else None

    def _passes_through(self, call: ast.Call):
        """(positions, keywords) of the arguments a submission function's return value is made
        of (`fit(model, data)` returns the model, not the data); None for anything else.
        Answered once per call (nested expressions are walked again from each level)."""
        key = id(call)
        known = self._passes.get(key)
        if known is None:
            known = self._passes[key] = (call, self._compute_passes_through(call))
        return known[1]

    def _compute_passes_through(self, call: ast.Call):
        name = call_name(call)
        callees = self.index.resolve(name) if name else []
        if not callees:
            return None
        summaries = self.taint.return_params
        positions: set[int] = set()
        keywords: set[str] = set()
        for callee in callees:
            reach = summaries.get(callee)
            if reach is None:
                reach = summaries[callee] = _params_in_return(callee, self.index)
            params = _positional_params(callee)
            positions |= {i for i, p in enumerate(params) if p in reach}
            rest = _vararg(callee)
            if rest and rest in reach:
                positions |= set(range(len(params), len(call.args)))
            keywords |= reach
        return positions, keywords

    def _locals(self, function: Function) -> set[str]:
        """Names a function binds itself (parameters and assignments): these shadow globals."""
        found = self.taint.local_names.get(function)
        if found is None:
            found = set(function.params)
            if function.qualname != MODULE_SCOPE:
                for node in own_nodes(function):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        found.add(node.id)
            self.taint.local_names[function] = found
        return found

    def add(self, function: Function, kind: str, name: str, intrinsic: bool = False) -> None:
        table = self.intrinsic if intrinsic else self.taint.names
        names = table.setdefault(function, {}).setdefault(kind, set())
        if name not in names:
            names.add(name)
            self.changed = True
            self.dirty.add(function)
            self.dirty.update(self._closures.get(function, ()))  # they read this function's names
            parent = function.parent
            if parent is not None and parent.qualname != MODULE_SCOPE:
                self.dirty.add(parent)  # it reads what this closure returns

    def run(self) -> Taint:
        self._closures = _closures_by_parent(self.index)
        nodes = {}
        for function in self.index.functions:
            nodes[function] = [n for n in own_nodes(function) if n.__class__ in _FLOW_NODE_CLASSES]
        self._find_targets(nodes)
        self._class_fields()
        texts = {f: (f.source() if f.qualname != MODULE_SCOPE else "") for f in self.index.functions}
        # First the functions with a source of their own (a shard name, an environment
        # variable the run points at data, a target); the rest wait until a caller, a
        # field or a module constant hands them data.
        seeds = re.compile("|".join([_VAL_STRING.pattern, _TRAIN_STRING.pattern,
                                     *(re.escape(k) for k, v in self.env.items() if _string_kinds(v))]))
        self.dirty = {f for f in self.index.functions
                      if f.qualname == MODULE_SCOPE or seeds.search(texts[f])
                      or f in self.taint.target_exprs or f in self.taint.target_names}
        self.dirty |= self._readers(texts, set(self.taint.fields), set())
        rounds = 0
        while self.dirty and rounds < 12:
            rounds += 1
            work, self.dirty = self.dirty, set()
            returns_before = {k: set(v) for k, v in self.taint.returns.items()}
            fields_before = {k: set(v) for k, v in self.taint.fields.items()}
            globals_before = {k: set(v) for k, v in self.taint.globals.items()}
            for function in work:
                for _ in range(4):  # intra-function fixpoint: flow backwards through loops
                    self.changed = False
                    for node in nodes[function]:
                        self._node(function, node)
                    if not self.changed:
                        break
                if function.qualname == MODULE_SCOPE:
                    for kind, names in self.intrinsic.get(function, {}).items():
                        for name in names:
                            if "." not in name:
                                self._grow(self.taint.globals, name, {kind})
            if self.taint.fields != fields_before or self.taint.globals != globals_before:
                # a new data attribute or constant: the functions that read it look again
                new_fields = {k for k, v in self.taint.fields.items() if v != fields_before.get(k)}
                new_globals = {k for k, v in self.taint.globals.items() if v != globals_before.get(k)}
                self.dirty |= self._readers(texts, new_fields, new_globals)
            if self.taint.returns != returns_before:
                # a callee now returns tainted data: its callers must look again
                grown = {k for k, v in self.taint.returns.items() if v != returns_before.get(k)}
                for function, function_nodes in nodes.items():
                    if any(isinstance(n, ast.Call) and call_name(n) in grown for n in function_nodes):
                        self.dirty.add(function)
        return self.taint

    def _readers(self, texts: dict, fields: set[str], names: set[str]) -> set[Function]:
        """Functions whose text reads one of these attributes (`.attr`) or names."""
        if not fields and not names:
            return set()
        parts = [r"\." + re.escape(f) + r"\b" for f in fields] + [r"\b" + re.escape(n) + r"\b" for n in names]
        pattern = re.compile("|".join(parts))
        return {f for f, text in texts.items() if f.qualname == MODULE_SCOPE or pattern.search(text)}

    @staticmethod
    def _grow(table: dict[str, set[str]], key: str, kinds: set[str]) -> bool:
        have = table.setdefault(key, set())
        if kinds <= have:
            return False
        have |= kinds
        return True

    # --- sources that need the whole program -------------------------------------------

    def _class_fields(self) -> None:
        """Class-body assignments (a Hyperparameters class's paths) are attribute fields."""
        for class_name, definitions in self.index.classes.items():
            for node in definitions:
                module = self.index.module_scope(self.index.class_units[class_name])
                for stmt in node.body:
                    value = getattr(stmt, "value", None)
                    if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or value is None:
                        continue
                    kinds = self.kinds_of(module, value) - {TARGET}
                    if kinds:
                        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                        for target in targets:
                            for name in _target_names(target):
                                self._grow(self.taint.fields, name.rsplit(".", 1)[-1], kinds)

    def _find_targets(self, nodes: dict[Function, list]) -> None:
        """Targets by position (shifted reads of one buffer) and by use (a loss's target
        argument), then traced back from a callee's parameter to its callers' arguments."""
        target_params: dict[Function, set[int | str]] = {}
        for function in self.index.functions:
            shifted = _shifted_subscripts(own_nodes(function))
            if shifted:
                self.taint.target_exprs[function] = shifted
            calls = [node for node in own_nodes(function) if node.__class__ is ast.Call]
            # `x.gather(d, i).squeeze(d)`: one entry picked per position
            squeezed = {id(c.func.value) for c in calls if c.func.__class__ is ast.Attribute
                        and c.func.attr == "squeeze" and c.func.value.__class__ is ast.Call}
            for node in calls:
                argument = _loss_target_argument(node, id(node) in squeezed)
                if argument is not None:
                    self._mark_target(function, argument, target_params)
        for _ in range(4):
            grown = False
            for function in self.index.functions:
                for node in nodes[function]:
                    if not isinstance(node, ast.Call):
                        continue
                    for callee in self._callees(node, function):
                        positions = target_params.get(callee)
                        if not positions:
                            continue
                        params = _positional_params(callee)
                        for position, arg in enumerate(node.args):
                            if position < len(params) and params[position] in positions:
                                grown |= self._mark_target(function, arg, target_params)
                        for keyword in node.keywords:
                            if keyword.arg in positions:
                                grown |= self._mark_target(function, keyword.value, target_params)
            if not grown:
                break

    def _callees(self, call: ast.Call, caller: Function) -> list[Function]:
        """(once per call: _find_targets asks again every round)"""
        key = (id(call), id(caller))
        known = self._callee_cache.get(key)
        if known is None:
            known = self._callee_cache[key] = (call, self._find_callees(call, caller))
        return known[1]

    def _find_callees(self, call: ast.Call, caller: Function) -> list[Function]:
        name = call_name(call)
        callees = self.index.resolve(name) if name else []
        if not callees and self._calls_an_object(call, caller):
            # `model(x, t)` calls the module's forward (a library method name, kept by renames)
            callees = [f for f in self.index.resolve("forward") if f.cls is not None]
        return callees

    def _calls_an_object(self, call: ast.Call, caller: Function) -> bool:
        """A call of a model the submission holds in a variable (`model(x, t)`), not of a
        library function, a builtin, an imported name or a submodule (`self.mlp(x)`)."""
        func = call.func
        if isinstance(func, ast.Name):
            chain = caller
            while chain is not None:
                if func.id in self._locals(chain) and chain.qualname != MODULE_SCOPE:
                    return True
                chain = chain.parent
        return False

    def _mark_target(self, function: Function, expr: ast.AST, target_params: dict) -> bool:
        grown = False
        if isinstance(expr, ast.Subscript):
            exprs = self.taint.target_exprs.setdefault(function, set())
            code = _code(expr)
            if code not in exprs:
                exprs.add(code)
                grown = True
        root = expr
        while isinstance(root, (ast.Attribute, ast.Subscript, ast.Call)):
            if isinstance(root, ast.Call):
                if not isinstance(root.func, ast.Attribute):
                    break
                root = root.func.value  # t.view(-1), t.long(), t.to(device)
            else:
                root = root.value
        if isinstance(root, ast.Name):
            self.taint.target_names.setdefault(function, set()).add(root.id)
            before = len(self.taint.names.get(function, {}).get(TARGET, ()))
            self.add(function, TARGET, root.id)
            self.add(function, TARGET, root.id, intrinsic=True)
            grown |= len(self.taint.names[function][TARGET]) != before
            if root.id in function.params:
                positions = target_params.setdefault(function, set())
                if root.id not in positions:
                    positions.add(root.id)
                    grown = True
        return grown

    # --- propagation --------------------------------------------------------------------

    def _bind_targets(self, function: Function, target: ast.AST, kinds: set[str], intrinsic: bool = False) -> None:
        for kind in kinds:
            for sub in walk(target):
                if isinstance(sub, (ast.Name, ast.Attribute)):
                    name = dotted(sub)
                    if name:
                        self.add(function, kind, name, intrinsic)
                        # `docs.append(v)` on a free `docs` fills the function's list (a name
                        # the closure assigns is its own: the locals check stops there)
                        self._write_through_closure(function, name, kind, intrinsic)
                    if isinstance(sub, ast.Attribute):
                        break
                elif isinstance(sub, ast.Subscript):
                    name = dotted(sub.value)
                    if name:
                        self.add(function, kind, name, intrinsic)
                        self._write_through_closure(function, name, kind, intrinsic)
                    break

    def _write_through_closure(self, function: Function, name: str, kind: str, intrinsic: bool = False) -> None:
        """A closure that writes into an object of its function (`buf[i] = v` on a free
        `buf`) fills that object for the function too (in the table the write was made in:
        an intrinsic write says nothing about what the function's call was given)."""
        root = name.split(".", 1)[0]
        enclosing = function.parent
        while enclosing is not None and enclosing.qualname != MODULE_SCOPE and root not in self._locals(function):
            self.add(enclosing, kind, root, intrinsic)
            for at in () if intrinsic else self.taint.defs.get(enclosing, {}).get(root, {}).values():
                if kind not in at:  # whichever assignment made the object, it now holds this
                    at.add(kind)
                    self.dirty.add(enclosing)
            if root in self._locals(enclosing):
                break
            function, enclosing = enclosing, enclosing.parent

    def _assign(self, function: Function, value: ast.AST, target: ast.AST, line: int | None = None) -> None:
        kinds = self.kinds_of(function, value, line=line)
        defs = self.taint.defs.setdefault(function, {})
        if line is not None:
            for name in _target_names(target):
                at = defs.setdefault(name, {}).setdefault(line, set())
                if not kinds <= at:
                    at |= kinds
                    self.changed = True
        if kinds and (line is None or isinstance(target, ast.Subscript)):
            # A partial write (x[i] = v, x += v, x.append(v)) adds to whatever x holds,
            # whichever assignment made it: flow-insensitive for mutated containers.
            base = target.value if isinstance(target, ast.Subscript) else target
            for name in _target_names(base):
                for at in defs.get(name, {}).values():
                    if not kinds <= at:
                        at |= kinds
                        self.changed = True
        if kinds:
            self._bind_targets(function, target, kinds)
            own = self.kinds_of(function, value, intrinsic=True)
            if own:
                self._bind_targets(function, target, own, intrinsic=True)
                data = own - {TARGET}
                if data:
                    for sub in walk(target):
                        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                            self._grow(self.taint.fields, sub.attr, data)

    def _assign_loop(self, function: Function, iterable: ast.AST, target: ast.AST, line) -> None:
        """A loop's variables: `for a, b in zip(xs, ys)` binds each to its own sequence's
        elements, `for i, x in enumerate(xs)` binds `x` to xs's and `i` to a counter."""
        if iterable.__class__ is ast.Call and iterable.func.__class__ is ast.Name \
                and target.__class__ in (ast.Tuple, ast.List) and not iterable.keywords \
                and not any(a.__class__ is ast.Starred for a in iterable.args):
            name, args, parts = iterable.func.id, iterable.args, target.elts
            if name == "zip" and len(args) == len(parts):
                for arg, part in zip(args, parts):
                    self._assign(function, arg, part, line)
                return
            if name == "enumerate" and len(args) in (1, 2) and len(parts) == 2:
                self._assign(function, ast.Constant(0), parts[0], line)  # a counter holds no data
                self._assign(function, args[0], parts[1], line)
                return
        self._assign(function, iterable, target, line)

    def _node(self, function: Function, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._assign(function, node.value, target, node.lineno)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            self._assign(function, node.value, node.target, node.lineno)
        elif isinstance(node, ast.AugAssign):
            self._assign(function, node.value, node.target)  # x += v keeps what x held
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._assign_loop(function, node.iter, node.target, node.lineno)
        elif isinstance(node, ast.comprehension):
            # Its variables live in the comprehension: a definition just before its line (so
            # its own expression reads it), not a write into every value the function's
            # names of that spelling ever held (`name` of a later loop is not this one).
            self._assign_loop(function, node.iter, node.target, node.target.lineno - 0.5)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._assign(function, node.context_expr, node.optional_vars, node.context_expr.lineno)
        elif isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
            kinds = self.kinds_of(function, node.value, intrinsic=True, line=getattr(node, "lineno", None))
            kinds.discard(TARGET)  # a helper's target is its caller's business (found by position there)
            if kinds:
                returned = self.taint.returns.setdefault(function.name, set())
                if not kinds <= returned:
                    returned |= kinds
                    self.changed = True
        elif isinstance(node, ast.Call):
            self._call(function, node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # obj.method(tainted) taints obj: cache.update(val_tokens), buf.extend(...)
            call = node.value
            # (torch's in-place methods end in "_": x.bitwise_xor_(v), x.index_add_(0, i, v))
            if isinstance(call.func, ast.Attribute) and call.args and (
                    call.func.attr in _MUTATORS or (call.func.attr.endswith("_") and not call.func.attr.startswith("_"))):
                owner = call.func.value
                while isinstance(owner, ast.Subscript):
                    owner = owner.value  # t[:, k:].bitwise_xor_(v) writes into t
                if dotted(owner):
                    for arg in call.args:
                        self._assign(function, arg, call.func.value)

    def _call(self, function: Function, call: ast.Call) -> None:
        name = call_name(call)
        if not name or name in _OPAQUE_CALLS:
            return
        callees = self.index.resolve(name)
        if not callees:
            return
        arg_kinds = [self.kinds_of(function, a, line=call.lineno) for a in call.args]
        kw_kinds = {kw.arg: self.kinds_of(function, kw.value, line=call.lineno) for kw in call.keywords if kw.arg}
        if not any(arg_kinds) and not any(kw_kinds.values()):
            return
        for callee in callees:
            params = _positional_params(callee)
            rest = _vararg(callee)
            for position, kinds in enumerate(arg_kinds):
                name = params[position] if position < len(params) else rest
                if kinds and name:
                    for kind in kinds:
                        self.add(callee, kind, name)
            for keyword, kinds in kw_kinds.items():
                if kinds and keyword in callee.params:
                    for kind in kinds:
                        self.add(callee, kind, keyword)


def _closures_by_parent(index: Index) -> dict[Function, list[Function]]:
    closures: dict[Function, list[Function]] = {}
    for function in index.functions:
        if function.parent is not None and function.parent.qualname != MODULE_SCOPE:
            closures.setdefault(function.parent, []).append(function)
    return closures


def _vararg(function: Function) -> str | None:
    """The name of a `*rest` parameter, which takes the positional arguments beyond the others."""
    arguments = getattr(function.node, "args", None)
    vararg = getattr(arguments, "vararg", None)
    return vararg.arg if vararg is not None else None


def _params_in_return(function: Function, index: Index) -> set[str]:
    """Parameters the function's return (or yield) values are computed from, through its
    own assignments and in-place writes; every parameter when it returns nothing checkable."""
    from auditor.analysis.values import returned_names

    closure = returned_names(function, index)
    params = [*function.params, *([_vararg(function)] if _vararg(function) else [])]
    return {p for p in params if p in closure or any(c.startswith(p + ".") for c in closure)}


class _Names(ast.AST):
    """A stand-in expression that reads the given names (for closures' free variables)."""

    def __init__(self, names: set[str]):
        super().__init__()
        self._auditor_facts = (frozenset(), frozenset(names), (), frozenset())


def _positional_params(function: Function) -> list[str]:
    params = list(function.params)
    if function.cls is not None and params and params[0] in ("self", "cls"):
        params = params[1:]
    return params


_MUTATORS = ("append", "extend", "update", "add", "put", "insert", "copy_")
_FLOW_NODES = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr, ast.For, ast.AsyncFor, ast.comprehension,
               ast.withitem, ast.Return, ast.Yield, ast.YieldFrom, ast.Call, ast.Expr)
_FLOW_NODE_CLASSES = frozenset(_FLOW_NODES)  # (ast's classes have no subclasses)


def _code(node: ast.AST) -> str:
    text = getattr(node, "_auditor_code", None)
    if text is None:
        text = ast.unparse(node)
        node._auditor_code = text
    return text


def _expr_facts(expr: ast.AST, env: dict[str, str], passes=None) -> tuple[frozenset, frozenset, tuple, frozenset]:
    """(kinds from sources, names read, functions called, subscripts read) of an expression;
    cached on the node, since the fixpoint asks about the same expressions many times.

    The walk goes into neither lambdas, nor calls that only read sizes, nor the arguments
    that a called function of the submission does not pass on to its result."""
    facts = expr.__dict__.get("_auditor_facts")
    if facts is not None:
        return facts
    static: set[str] = set()
    names: set[str] = set()
    calls: list[tuple[str, str]] = []
    subscripts: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        kind = node.__class__  # (ast's classes have no subclasses: identity is isinstance)
        if kind is ast.Name:
            names.add(node.id)
        elif kind is ast.Attribute:
            name = dotted(node)
            # an attribute of a call's result: still a field read
            names.add(name if name is not None else "?." + node.attr)
            if node.attr in _SIZE_ATTRIBUTES:
                continue
        elif kind is ast.Constant:
            if node.value.__class__ is str:
                static |= _string_kinds(node.value)
            continue
        elif kind is ast.Subscript:
            subscripts.add(_code(node))
            variable = _env_variable(node)
            if variable and variable in env:
                static |= _string_kinds(env[variable])
        elif kind is ast.Call:
            name = call_name(node)
            variable = _env_variable(node)
            if variable and variable in env:
                static |= _string_kinds(env[variable])
            receiver = dotted(node.func.value) if node.func.__class__ is ast.Attribute else None
            calls.append((name, (receiver or "").rsplit(".", 1)[-1]))
            if name in _OPAQUE_CALLS:
                continue
            if passes is not None:
                kept = passes(node)
                if kept is not None:
                    positions, keywords = kept
                    stack.append(node.func)
                    stack.extend(a for i, a in enumerate(node.args) if i in positions or a.__class__ is ast.Starred)
                    stack.extend(k.value for k in node.keywords if k.arg is None or k.arg in keywords)
                    continue
        elif kind is ast.Lambda:
            continue
        stack.extend(child_nodes(node))
    facts = (frozenset(static), frozenset(names), tuple(calls), frozenset(subscripts))
    expr._auditor_facts = facts  # kept on the node: it lives as long as the tree
    return facts


_SIZE_ATTRIBUTES = frozenset({"shape", "dtype", "device", "numel", "size"})


def _string_kinds(text: str) -> set[str]:
    kinds = set()
    if _VAL_STRING.search(text):
        kinds.add(VAL)
    if _TRAIN_STRING.search(text):
        kinds.add(TRAIN)
    return kinds


def _env_variable(node: ast.AST) -> str | None:
    """The variable of `os.environ.get("X", ...)`, `os.getenv("X")`, `os.environ["X"]`."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        if isinstance(func, ast.Attribute) and (func.attr == "getenv" or (
                func.attr == "get" and isinstance(func.value, (ast.Attribute, ast.Name))
                and (dotted(func.value) or "").endswith("environ"))):
            value = node.args[0].value
            return value if isinstance(value, str) else None
    if isinstance(node, ast.Subscript) and (dotted(node.value) or "").endswith("environ"):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    return None


def _loss_target_argument(call: ast.Call, squeezed: bool = False) -> ast.AST | None:
    """The argument a loss or a gather reads as the target token, if any. A gather reads a
    target when it picks one entry per position (its index gains a unit dimension, or its
    result loses one: `lp.gather(-1, y.unsqueeze(-1)).squeeze(-1)`); a gather of many
    entries per row (`h.gather(1, chunk_index)`, a table lookup) reads positions, not tokens."""
    name = call_name(call)
    position = _LOSS_TARGET_ARG.get(name)
    if position is not None:
        for keyword in call.keywords:
            if keyword.arg == "target":
                return keyword.value
        return call.args[position] if len(call.args) > position else None
    if name == "gather":
        # t.gather(dim, index) / torch.gather(t, dim, index) on log-probabilities
        is_function = isinstance(call.func, ast.Attribute) and dotted(call.func.value) == "torch"
        position = 2 if is_function else 1
        index = next((k.value for k in call.keywords if k.arg == "index"), None)
        if index is None and len(call.args) > position:
            index = call.args[position]
        return index if index is not None and (squeezed or _adds_unit_dim(index)) else None
    if name == "take_along_dim":
        return call.args[1] if len(call.args) > 1 else None
    return None


def _adds_unit_dim(index: ast.AST) -> bool:
    """`y.unsqueeze(-1)`, `y[..., None]`, `y[:, None]`, `y.view(-1, 1)`, `y.reshape(n, 1)`."""
    if index.__class__ is ast.Call and index.func.__class__ is ast.Attribute:
        if index.func.attr == "unsqueeze":
            return True
        if index.func.attr in ("view", "reshape") and index.args:
            last = index.args[-1]
            return last.__class__ is ast.Constant and last.value == 1
        return _adds_unit_dim(index.func.value) if index.func.attr in ("long", "to", "clamp", "int") else False
    if index.__class__ is ast.Subscript:
        parts = index.slice.elts if index.slice.__class__ is ast.Tuple else [index.slice]
        return any(p.__class__ is ast.Constant and p.value is None for p in parts)
    return False


# --- targets by position -------------------------------------------------------------


def _offset(node: ast.AST | None, upper: bool) -> tuple[str, int] | None:
    """An index as (symbolic part, constant): `i + 1` -> ("i", 1); `-1` at a slice's upper
    bound counts from the end; a missing bound is the start or the end."""
    if node is None:
        return ("<end>", 0) if upper else ("", 0)
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        if upper and node.value < 0:
            return ("<end>", node.value)
        return ("", node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int):
        return ("<end>", -node.operand.value) if upper else ("", -node.operand.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and isinstance(node.right, ast.Constant) \
            and isinstance(node.right.value, int) and not isinstance(node.right.value, bool):
        inner = _offset(node.left, False)
        if inner is None:
            return None
        sign = 1 if isinstance(node.op, ast.Add) else -1
        return (inner[0], inner[1] + sign * node.right.value)
    if isinstance(node, (ast.Name, ast.Attribute, ast.BinOp, ast.Call, ast.Subscript)):
        return (_code(node), 0)
    return None


def _last_index(node: ast.Subscript) -> ast.AST:
    index = node.slice
    if isinstance(index, ast.Tuple) and index.elts:
        return index.elts[-1]
    return index


def _shifted_subscripts(nodes: list[ast.AST]) -> set[str]:
    """Subscripts that read one position ahead of another read of the same buffer."""
    slices: dict[str, list[tuple[tuple, tuple, ast.Subscript]]] = {}
    scalars: dict[str, list[tuple[tuple, ast.Subscript]]] = {}
    for node in nodes:
        if not isinstance(node, ast.Subscript) or not isinstance(node.ctx, ast.Load):
            continue
        base = dotted(node.value) or _code(node.value)
        index = _last_index(node)
        if isinstance(index, ast.Slice):
            if index.step is not None:
                continue
            low, high = _offset(index.lower, False), _offset(index.upper, True)
            if low is not None and high is not None:
                slices.setdefault(base, []).append((low, high, node))
        else:
            at = _offset(index, False)
            if at is not None and at[0] not in ("", "<end>"):
                scalars.setdefault(base, []).append((at, node))
    found: set[str] = set()
    for base, reads in slices.items():
        spans = {(low, high) for low, high, _ in reads}
        for low, high, node in reads:
            if ((low[0], low[1] - 1), (high[0], high[1] - 1)) in spans:
                found.add(_code(node))
    for base, reads in scalars.items():
        for (symbol, constant), node in reads:
            # the furthest read ahead of the others: `t[i]` beside `t[i-1]`, `t[i-2]`
            before = any(s == symbol and c < constant for (s, c), _ in reads) and not any(
                s == symbol and c > constant for (s, c), _ in reads)
            covered = any(high == (symbol, constant) and low != high for low, high, _ in slices.get(base, ()))
            if before or covered:
                found.add(_code(node))
    return found


def _target_names(target: ast.AST) -> list[str]:
    """Names an assignment replaces whole (`x`, `a, b`, `self.x`; not `x[i]`)."""
    if isinstance(target, (ast.Name, ast.Attribute)):
        name = dotted(target)
        return [name] if name else []
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def compute_flow(index: Index, env: dict[str, str] | None = None) -> Taint:
    return _Flow(index, env).run()
