"""Static discovery of a submission's model construction, with `ast` only.

From the entry point (the `__main__` block, else `main()`), walk the module functions it
reaches and collect calls to classes that look like torch modules, e.g.
`base_model = GPT(vocab_size=args.vocab_size, ...)`. For each call, collect the
assignments its arguments depend on (`args = Hyperparameters()`), following function
parameters back to their callers, so the child can evaluate the call by itself.
"""

from __future__ import annotations

import ast
import builtins
import sys
from dataclasses import asdict, dataclass, field

_MODULE_BASES = {"Module", "nn.Module", "torch.nn.Module"}
_MAX_PARAM_HOPS = 4
_MODEL_NAMES = {"model", "base_model", "net", "gpt", "raw_model"}
_LIBRARIES = {"torch", "numpy", "sentencepiece", "triton", "flash_attn", "flash_attn_interface", "mamba_ssm",
              "transformers", "einops", "typing_extensions", "tiktoken", "datasets", "huggingface_hub"}


@dataclass
class ModelCall:
    class_name: str
    call: str  # source of the call expression
    function: str  # function it sits in ("<main>" for the __main__ block)
    line: int
    bindings: list[str] = field(default_factory=list)  # statements to run first, in order
    attr_uses: dict[str, list[str]] = field(default_factory=dict)  # name -> attrs read in the call
    score: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Discovery:
    candidates: list[ModelCall]
    entry_calls: list[list[int]]  # [first, last] lines of unguarded top-level entry calls

    def to_json(self) -> dict:
        return {"candidates": [c.to_json() for c in self.candidates], "entry_calls": self.entry_calls}


def _base_name(node: ast.expr) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - any odd base expression is just "unknown"
        return ""


def _is_main_guard(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare):
        return False
    parts = [stmt.test.left, *stmt.test.comparators]
    names = {p.id for p in parts if isinstance(p, ast.Name)}
    values = {p.value for p in parts if isinstance(p, ast.Constant)}
    return "__name__" in names and "__main__" in values


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


class _Module:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.globals: set[str] = set(dir(builtins))
        self.imported: set[str] = set()
        self.imported_from: dict[str, str] = {}  # name -> top-level module of `from M import name`
        self.main_block: list[ast.stmt] = []
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[stmt.name] = stmt
            elif isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = stmt
            elif _is_main_guard(stmt):
                self.main_block.extend(stmt.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    self.imported.add((alias.asname or alias.name).split(".")[0])
                    if isinstance(node, ast.ImportFrom):
                        source = "." if node.level else (node.module or "").split(".")[0]
                        self.imported_from[alias.asname or alias.name] = source
        for stmt in tree.body:
            for node in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) else [stmt]:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.globals.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    self.globals.add(node.id)
        self.globals |= self.imported

    def is_module_class(self, name: str, seen: frozenset = frozenset()) -> bool:
        cls = self.classes.get(name)
        if cls is None or name in seen:
            return False
        for base in cls.bases:
            text = _base_name(base)
            if text in _MODULE_BASES or self.is_module_class(text, seen | {name}):
                return True
        return False

    def subtree_size(self, name: str, seen: frozenset = frozenset()) -> int:
        """How many module classes a class builds, transitively: the model builds the most."""
        cls = self.classes.get(name)
        if cls is None or name in seen:
            return 0
        used = {_called_name(n) for n in ast.walk(cls) if isinstance(n, ast.Call)} & set(self.classes)
        used.discard(name)
        return len(used) + sum(self.subtree_size(u, seen | {name}) for u in used)

    def is_sibling_import(self, name: str) -> bool:
        """A class imported from the submission's own helper module (not a library)."""
        source = self.imported_from.get(name)
        if source is None or not name[:1].isupper():
            return False
        return source == "." or (source not in sys.stdlib_module_names and source not in _LIBRARIES)

    def component_classes(self) -> set[str]:
        """Module classes built inside other classes: parts of a model, not the model."""
        inside: set[str] = set()
        for cls in self.classes.values():
            for node in ast.walk(cls):
                if isinstance(node, ast.Call) and _called_name(node) in self.classes and _called_name(node) != cls.name:
                    inside.add(_called_name(node))
        return inside


def _calls_in(body: list[ast.stmt]) -> list[ast.Call]:
    calls = []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                calls.append(node)
    return sorted(calls, key=lambda c: (c.lineno, c.col_offset))


def _entry(module: _Module) -> tuple[list[tuple[str, list[ast.stmt]]], list[list[int]]]:
    """Entry scopes, in order, and lines of unguarded top-level entry calls."""
    unguarded = []
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            name = _called_name(stmt.value)
            if name in module.functions:
                unguarded.append(stmt)
    scopes: list[tuple[str, list[ast.stmt]]] = []
    if module.main_block:
        scopes.append(("<main>", module.main_block))
    if unguarded:
        scopes.append(("<module>", unguarded))
    if not scopes and "main" in module.functions:
        scopes.append(("main", module.functions["main"].body))
    return scopes, [[s.lineno, s.end_lineno or s.lineno] for s in unguarded]


def _reachable(module: _Module, scopes: list[tuple[str, list[ast.stmt]]]) -> list[tuple[str, list[ast.stmt]]]:
    order = list(scopes)
    seen = {name for name, _ in scopes}
    queue = list(scopes)
    while queue:
        _, body = queue.pop(0)
        for call in _calls_in(body):
            name = _called_name(call)
            if name in module.functions and name not in seen:
                seen.add(name)
                scope = (name, module.functions[name].body)
                order.append(scope)
                queue.append(scope)
    return order


def _assigned_names(stmt: ast.stmt) -> set[str]:
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets = [stmt.target]
    names = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def _loaded_names(node: ast.AST) -> list[str]:
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in found:
            found.append(sub.id)
        elif isinstance(sub, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            pass
    return found


class _Binder:
    """Collects the statements that give a call's free names their values."""

    def __init__(self, module: _Module, scopes: list[tuple[str, list[ast.stmt]]]):
        self.module = module
        self.scopes = scopes
        self.statements: list[str] = []
        # Each scope is searched again for every name and parameter it binds: walk it once.
        self._assigns: dict[str, list[ast.Assign | ast.AnnAssign]] = {}
        self._calls: dict[str, list[ast.Call]] = {}

    def assigns_in(self, scope: str, body: list[ast.stmt]) -> list[ast.Assign | ast.AnnAssign]:
        if scope not in self._assigns:
            self._assigns[scope] = sorted(
                (node for stmt in body for node in ast.walk(stmt) if isinstance(node, (ast.Assign, ast.AnnAssign))),
                key=lambda n: n.lineno,
            )
        return self._assigns[scope]

    def calls_in(self, scope: str, body: list[ast.stmt]) -> list[ast.Call]:
        if scope not in self._calls:
            self._calls[scope] = _calls_in(body)
        return self._calls[scope]

    def function_def(self, name: str):
        return self.module.functions.get(name)

    def resolve(self, names: list[str], scope: str, before_line: int, hops: int = 0, seen: set | None = None) -> None:
        seen = set() if seen is None else seen
        body = self.module.main_block if scope == "<main>" else (
            self.function_def(scope).body if self.function_def(scope) else []
        )
        assigns = self.assigns_in(scope, body)
        func = self.function_def(scope)
        params = {}
        if func is not None:
            args = func.args
            positional = [*args.posonlyargs, *args.args]
            defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            for index, (arg, default) in enumerate(zip(positional, defaults)):
                params[arg.arg] = (index, default)
            for arg, default in zip(args.kwonlyargs, args.kw_defaults):
                params[arg.arg] = (None, default)
        for name in names:
            key = (scope, name)
            if key in seen or name in self.module.globals and name not in params:
                continue
            seen.add(key)
            assign = None
            for node in assigns:
                if node.lineno < before_line and name in _assigned_names(node):
                    assign = node
            if assign is not None:
                value = assign.value
                self.resolve([n for n in _loaded_names(value) if n != name], scope, assign.lineno, hops, seen)
                self._add(ast.unparse(assign))
            elif name in params and hops < _MAX_PARAM_HOPS:
                self._bind_param(scope, name, params[name], hops, seen)

    def _bind_param(self, scope: str, name: str, param: tuple, hops: int, seen: set) -> None:
        index, default = param
        for caller, body in self.scopes:
            for call in self.calls_in(caller, body):
                if _called_name(call) != scope:
                    continue
                value = None
                if index is not None and index < len(call.args) and not isinstance(call.args[index], ast.Starred):
                    value = call.args[index]
                for kw in call.keywords:
                    if kw.arg == name:
                        value = kw.value
                if value is None:
                    continue
                self.resolve(_loaded_names(value), caller, call.lineno, hops + 1, seen)
                if not (isinstance(value, ast.Name) and value.id == name):
                    self._add(f"{name} = {ast.unparse(value)}")
                return
        if default is not None:
            self._add(f"{name} = {ast.unparse(default)}")

    def _add(self, statement: str) -> None:
        if statement not in self.statements:
            self.statements.append(statement)


def discover_model(tree: ast.Module) -> Discovery:
    module = _Module(tree)
    scopes, entry_lines = _entry(module)
    reachable = _reachable(module, scopes)
    if not any(name not in ("<main>", "<module>") for name, _ in reachable):
        # No entry found: fall back to every module function, in file order.
        reachable = reachable + [(name, fn.body) for name, fn in module.functions.items()]
    components = module.component_classes()
    candidates: list[ModelCall] = []
    seen_calls: set[tuple[str, int]] = set()
    for order, (scope, body) in enumerate(reachable):
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    targets = [ast.unparse(t) for t in node.targets]
                    # `model = GPT(...).to(device).bfloat16()`: the target names the innermost call too.
                    value = node.value
                    while isinstance(value, ast.Call):
                        value._assigned_to = targets  # type: ignore[attr-defined]
                        owner = value.func.value if isinstance(value.func, ast.Attribute) else None
                        value = owner if isinstance(owner, ast.Call) else None
        for call in _calls_in(body):
            name = _called_name(call)
            if name is None or (scope, call.lineno) in seen_calls:
                continue
            known_module = module.is_module_class(name)
            foreign = name not in module.classes and module.is_sibling_import(name)
            if not (known_module or foreign):
                continue
            seen_calls.add((scope, call.lineno))
            # The model is the root class that builds the most module classes.
            score = 2 * module.subtree_size(name) + (0 if name in components else 4)
            targets = [t.split(".")[-1].lower() for t in getattr(call, "_assigned_to", [])]
            if any(t in _MODEL_NAMES for t in targets):
                score += 6
            elif any("model" in t for t in targets):
                score += 2
            attr_uses: dict[str, list[str]] = {}
            for sub in ast.walk(call):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                    attr_uses.setdefault(sub.value.id, [])
                    if sub.attr not in attr_uses[sub.value.id]:
                        attr_uses[sub.value.id].append(sub.attr)
            binder = _Binder(module, reachable)
            binder.resolve(_loaded_names(call), scope, call.lineno)
            candidates.append(
                ModelCall(
                    class_name=name,
                    call=ast.unparse(call),
                    function=scope,
                    line=call.lineno,
                    bindings=binder.statements,
                    attr_uses=attr_uses,
                    score=score,
                )
            )
    candidates.sort(key=lambda c: -c.score)  # stable: earlier in the run wins ties
    return Discovery(candidates=candidates, entry_calls=entry_lines)


def strip_entry_calls(text: str, spans: list[list[int]]) -> str:
    """Replace unguarded top-level entry calls (`main()`) with `pass`, keeping line numbers."""
    if not spans:
        return text
    source_lines = text.splitlines(keepends=True)
    for first, last in spans:
        for index in range(first - 1, min(last, len(source_lines))):
            ending = "\n" if source_lines[index].endswith("\n") else ""
            source_lines[index] = ("pass" if index == first - 1 else "") + ending
    return "".join(source_lines)
