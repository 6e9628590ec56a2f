"""Behaviour-preserving libcst transforms of a submission, for metamorphic tests of classify.

A verdict that changes when the code is rewritten without changing what it does is not
evidence. Each transform takes the Python files of one record folder ({relative path:
source}) and returns them rewritten:

- `rename`: every identifier the submission defines (functions, classes, parameters and the
  keyword arguments that name them at call sites, variables, loop and comprehension
  variables, attributes assigned in the submission, dataclass fields) gets a neutral name
  (`v17`, `f3`, `C2`), consistently across the folder's modules. Kept: library APIs (import
  bindings and attributes reached through them), builtins, dunders, `self`/`cls`, string
  literals, names a getattr-like string or an argparse option spells, attribute names that
  library objects also have (`weight`, `forward`, `step`: see `library_attributes`),
  attribute names that name-pattern strings match (`"attn_scale" in name`), and the
  configuration names the README or logs mention (`ttt_epochs: 3`, `TTT_EPOCHS=3`).
- `extract`: the body of a loop inside a function becomes a nested helper; names the body
  rebinds are passed in and returned; only where no return/break/continue/yield/super/
  locals()/del is in the body.
- `while`: `for x in range(a, b[, s])` becomes a counter loop; any other `for` becomes
  `iter()`/`next()` with `StopIteration`.
- `wrap`: runs of top-level functions become staticmethods of a class, references
  (importers in the same folder included) rewritten to `C.f`.

Names are chosen deterministically from a seed and never collide with an identifier that
already occurs in the folder. `transform_folder` applies one transform to a folder on disk
(a packed script, an exec'd lzma/base85 blob, is written out decoded and transformed).
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import libcst as cst

Files = dict[str, str]


class TransformError(Exception):
    """A file the transform cannot handle (libcst cannot parse it, or a rewrite failed)."""


# --- shared helpers -------------------------------------------------------------------------


_PARSED: dict[str, cst.Module] = {}
_PARSED_AST: dict[str, ast.Module] = {}


def _parse_one(path: str, text: str) -> cst.Module:
    """libcst trees are immutable: one parse serves every transform of a folder."""
    if text not in _PARSED:
        if len(_PARSED) > 16:
            _PARSED.clear()
        try:
            _PARSED[text] = cst.parse_module(text)
        except (cst.ParserSyntaxError, RecursionError, ValueError) as exc:
            raise TransformError(f"{path}: libcst cannot parse it: {str(exc).splitlines()[0][:200]}") from None
    return _PARSED[text]


def parse_files(files: Files) -> dict[str, cst.Module]:
    return {path: _parse_one(path, text) for path, text in files.items()}


def ast_files(files: Files) -> dict[str, ast.Module]:
    out = {}
    for path, text in files.items():
        if text not in _PARSED_AST:
            if len(_PARSED_AST) > 16:
                _PARSED_AST.clear()
            try:
                _PARSED_AST[text] = ast.parse(text.removeprefix("\ufeff"))  # a BOM the file was saved with
            except SyntaxError:
                # 3.12 f-strings (nested quotes): this Python cannot parse them; with their
                # contents blanked the bindings the collector needs are all still there
                from auditor.source import blank_fstrings

                try:
                    _PARSED_AST[text] = ast.parse(blank_fstrings(text))
                except (SyntaxError, ValueError, RecursionError) as exc:
                    raise TransformError(f"{path}: not valid Python: {exc}") from None
            except (ValueError, RecursionError) as exc:
                raise TransformError(f"{path}: not valid Python: {exc}") from None
        out[path] = _PARSED_AST[text]
    return out


def module_names(files: Files) -> set[str]:
    """Importable names of the folder's own modules (sibling helpers)."""
    return {Path(p).stem for p in files}


def dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr.value}" if head else None
    return None


def chain_root(node: cst.BaseExpression) -> cst.Name | None:
    """The Name at the root of a.b.c / a.b().c / a[0].b, if any."""
    while True:
        if isinstance(node, cst.Name):
            return node
        if isinstance(node, cst.Attribute):
            node = node.value
        elif isinstance(node, cst.Call):
            node = node.func
        elif isinstance(node, cst.Subscript):
            node = node.value
        else:
            return None


def all_identifiers(files: Files) -> set[str]:
    """Every word of the sources (a superset of the identifiers): new names avoid them all."""
    seen: set[str] = set()
    for text in files.values():
        seen.update(_WORD.findall(text))
    return seen


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class NameMaker:
    """Fresh neutral names (`v1`, `f2`, `C3`) that collide with nothing already in use."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken) | set(keyword.kwlist) | set(dir(builtins))
        self.count: dict[str, int] = defaultdict(int)

    def make(self, prefix: str) -> str:
        while True:
            self.count[prefix] += 1
            name = f"{prefix}{self.count[prefix]}"
            if name not in self.taken:
                self.taken.add(name)
                return name


def bound_names(target: cst.BaseExpression) -> list[str]:
    """Names bound by an assignment / for / with target (tuples, lists, starred)."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        out = []
        for element in target.elements:
            out += bound_names(element.value)
        return out
    if isinstance(target, cst.StarredElement):
        return bound_names(target.value)
    return []


# --- library attributes ---------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def library_attributes() -> frozenset[str]:
    """Attribute and method names of the library objects submissions use (tensors, modules,
    optimizers, arrays, builtin containers...): an attribute the submission assigns under
    one of these names may be read or overridden by library code, so it keeps its name."""
    import argparse
    import collections
    import concurrent.futures
    import io
    import logging
    import pathlib
    import queue
    import subprocess
    import threading
    import types

    objects: list = [object, type, str, bytes, bytearray, list, dict, set, frozenset, tuple, int, float, complex,
                     bool, memoryview, BaseException, Exception, io.BytesIO, io.StringIO, io.TextIOWrapper,
                     pathlib.Path, threading.Thread, threading.Event, queue.Queue, collections.deque,
                     collections.OrderedDict, collections.Counter, collections.defaultdict, argparse.Namespace,
                     argparse.ArgumentParser, logging.Logger, subprocess.Popen, types.SimpleNamespace,
                     functools.partial, concurrent.futures.ThreadPoolExecutor, concurrent.futures.Future,
                     types.ModuleType, types.FunctionType]
    names: set[str] = {"weight", "bias", "data", "grad", "shape", "dtype", "device", "requires_grad", "training",
                       "param_groups", "state", "defaults"}
    try:
        import numpy as np

        objects += [np.ndarray, np.generic, np.memmap, np.dtype, np.random.Generator]
    except ImportError:  # the bench still runs; fewer names are protected
        pass
    try:
        import torch
        import torch.nn as nn
        import torch.optim as optim
        import torch.utils.data as data

        objects += [torch.Tensor, nn.Parameter, torch.dtype, torch.device, torch.Generator, torch.autograd.Function,
                    torch.autograd.function.FunctionCtx, optim.Optimizer, data.Dataset, data.IterableDataset,
                    data.DataLoader, data.Sampler, torch.cuda.Event, torch.cuda.Stream, torch.Size]
        for holder in (nn, optim, optim.lr_scheduler):
            for name in dir(holder):
                value = getattr(holder, name, None)
                if isinstance(value, type):
                    objects.append(value)
        # instance attributes (`weight`, `bias`, `param_groups`) are not in dir() of a class
        param = nn.Parameter(torch.zeros(2))
        instances = [nn.Linear(2, 2), nn.Embedding(2, 2), nn.LayerNorm(2), nn.Conv1d(1, 1, 1),
                     nn.BatchNorm1d(2), nn.MultiheadAttention(4, 2), nn.Dropout(), nn.GELU(), nn.Softmax(-1),
                     optim.SGD([param], lr=0.1), optim.AdamW([param])]
        if hasattr(nn, "RMSNorm"):
            instances.append(nn.RMSNorm(2))
        for instance in instances:
            objects.append(instance)
            names.update(vars(instance))
    except ImportError:
        pass
    for obj in objects:
        names.update(dir(obj))
    return frozenset(names)


# --- rename ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GETATTR_LIKE = {"getattr", "setattr", "hasattr", "delattr"}


@dataclass
class Inventory:
    """What the folder's code defines, imports and spells in strings."""

    siblings: set[str]
    defined: set[str] = field(default_factory=set)  # names bound by the submission
    members: set[str] = field(default_factory=set)  # attributes: class members and assigned attributes
    classes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    signatures: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # callable -> its params
    open_signatures: set[str] = field(default_factory=set)  # callables that take **kwargs
    class_bases: dict[str, list[str]] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)  # names bound by imports of libraries
    sibling_aliases: set[str] = field(default_factory=set)  # names bound to sibling modules
    library_chain_attrs: set[str] = field(default_factory=set)  # attributes read through a library import
    named_strings: set[str] = field(default_factory=set)  # names spelled whole in getattr/argparse strings
    pattern_tokens: set[str] = field(default_factory=set)  # tokens of name-pattern strings
    plain_strings: set[str] = field(default_factory=set)  # identifier-shaped plain string literals
    module_level: set[str] = field(default_factory=set)  # names assigned at module level
    settings: set[str] = field(default_factory=set)  # names assigned a literal or an env var read


def _dotted_ast(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted_ast(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _root_ast(node: ast.expr) -> str | None:
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return None


_LITERAL_NODES = (ast.Constant, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.operator, ast.unaryop,
                  ast.expr_context)


def _setting_value(value: ast.expr) -> bool:
    for node in ast.walk(value):
        if isinstance(node, ast.Call):
            name = _dotted_ast(node.func) or ""
            if "environ" in name or "getenv" in name or "env" in name.split(".")[-1].lower():
                return True
        if isinstance(node, ast.Subscript) and "environ" in (_dotted_ast(node.value) or ""):
            return True
    return all(isinstance(node, _LITERAL_NODES) for node in ast.walk(value))


class Collector(ast.NodeVisitor):
    """What a module defines, imports and spells in strings (ast: fast on 100 kB scripts)."""

    def __init__(self, inv: Inventory):
        self.inv = inv
        self.frames: list[str] = []  # "class:<name>" or "def"
        self.fstring_parts: set[int] = set()

    def in_class_body(self) -> bool:
        return bool(self.frames) and self.frames[-1].startswith("class:")

    def collect_imports(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    if alias.name.split(".")[0] in self.inv.siblings:
                        self.inv.sibling_aliases.add(bound)
                    else:
                        self.inv.imported.add(bound)
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                sibling = source.split(".")[-1] in self.inv.siblings or (not source and node.level > 0)
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    bound = alias.asname or alias.name
                    if sibling:
                        if alias.name in self.inv.siblings:
                            self.inv.sibling_aliases.add(bound)
                        elif alias.asname:
                            self.inv.defined.add(bound)
                    else:
                        self.inv.imported.add(bound)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        inv = self.inv
        inv.defined.add(node.name)
        inv.classes.add(node.name)
        if self.in_class_body():
            inv.members.add(node.name)
        inv.class_bases[node.name] = [_dotted_ast(b) or "" for b in node.bases]
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                inv.signatures[node.name].add(stmt.target.id)
                inv.params.add(stmt.target.id)
        for deco in node.decorator_list:
            self.visit(deco)
        for base in (*node.bases, *node.keywords):
            self.visit(base)
        self.frames.append(f"class:{node.name}")
        for stmt in node.body:
            self.visit(stmt)
        self.frames.pop()

    def _function(self, node) -> None:
        inv = self.inv
        inv.defined.add(node.name)
        inv.functions.add(node.name)
        owner = node.name
        if self.in_class_body():
            inv.members.add(node.name)
            if node.name == "__init__":
                owner = self.frames[-1].split(":", 1)[1]
        args = node.args
        names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        inv.signatures[owner].update(names)
        if args.kwarg is not None:
            inv.open_signatures.add(owner)
        for deco in node.decorator_list:
            self.visit(deco)
        self.visit(args)
        if node.returns is not None:
            self.visit(node.returns)
        self.frames.append("def")
        for stmt in node.body:
            self.visit(stmt)
        self.frames.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.frames.append("def")
        self.generic_visit(node)
        self.frames.pop()

    def visit_arg(self, node: ast.arg) -> None:
        self.inv.defined.add(node.arg)
        self.inv.params.add(node.arg)
        if node.annotation is not None:
            self.visit(node.annotation)

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.inv.defined.add(node.id)
            if self.in_class_body():
                self.inv.members.add(node.id)
            elif not self.frames:
                self.inv.module_level.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._setting(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._setting([node.target], node.value)
        self.generic_visit(node)

    def _setting(self, targets: list[ast.expr], value: ast.expr | None) -> None:
        """A configuration value: a literal, or something read from the environment."""
        if value is None:
            if not self.in_class_body():
                return
        elif not _setting_value(value):
            return
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name) and (not self.frames or self.in_class_body()):
                    self.inv.settings.add(node.id)
                elif isinstance(node, ast.Attribute):
                    self.inv.settings.add(node.attr)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.inv.defined.add(node.name)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        root = _root_ast(node)
        if isinstance(node.ctx, ast.Load):
            if root is not None and root in self.inv.imported:
                self.inv.library_chain_attrs.add(node.attr)
        elif root is None or root not in self.inv.imported:
            self.inv.members.add(node.attr)  # obj.x = ... on the submission's objects
        else:
            self.inv.library_chain_attrs.add(node.attr)  # torch.backends.x = ... sets a library attribute
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = _dotted_ast(node.func) or ""
        last = func.split(".")[-1]
        if last in _GETATTR_LIKE and len(node.args) >= 2:
            self._spelled(node.args[1])
        if last == "add_argument":
            for arg in node.args:
                self._spelled(arg)
        self.generic_visit(node)

    def _spelled(self, expr: ast.expr) -> None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            self.inv.named_strings.add(expr.value.lstrip("-").replace("-", "_"))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if not isinstance(value, str) or len(value) > 200 or any(c.isspace() for c in value):
            return
        if _TOKEN.fullmatch(value):
            self.inv.plain_strings.add(value)
        # `"attn_scale" in name`, ("q_gain", ...), "a,b,c": tokens that name patterns match
        self.inv.pattern_tokens.update(t for t in _TOKEN.findall(value) if len(t) >= 3)


KEEP_ALWAYS = {"self", "cls", "_"}


def _reached_through_module_aliases(trees) -> set[str]:
    """Names read as attributes of the module itself (`core = sys.modules[__name__]; core.f()`):
    an attribute lookup by spelling, which a rename of `def f` would break."""
    import ast as _ast

    aliases, found = set(), set()
    for tree in trees:
        for node in _ast.walk(tree):
            if isinstance(node, _ast.Assign) and isinstance(node.value, _ast.Subscript) \
                    and _ast.unparse(node.value.value) == "sys.modules":
                aliases |= {t.id for t in node.targets if isinstance(t, _ast.Name)}
    for tree in trees:
        for node in _ast.walk(tree):
            if isinstance(node, _ast.Attribute) and isinstance(node.value, _ast.Name) and node.value.id in aliases:
                found.add(node.attr)
    return found


def rename_plan(files: Files, siblings: set[str], keep: set[str], seed: int) -> tuple[Inventory, dict[str, str]]:
    inv = Inventory(siblings=siblings)
    trees = ast_files(files)
    for tree in trees.values():  # imports first: attribute targets rooted at a library are known
        Collector(inv).collect_imports(tree)
    for tree in trees.values():
        Collector(inv).visit(tree)
    protected = set(KEEP_ALWAYS) | set(dir(builtins)) | inv.imported | inv.sibling_aliases | siblings
    protected |= inv.named_strings
    # configuration the README or logs spell (`ttt_epochs: 3`, `TTT_EPOCHS=3`) names settings:
    # fields, attributes and module names assigned a literal or an env read; a local `loss` or a
    # module-level `val_tokens = load(...)` that a log also prints is renamed
    spelled = {k.lower() for k in keep}
    protected |= {n for n in inv.settings if n.lower() in spelled}
    protected |= {n for n in inv.defined | inv.members if n.startswith("__") and n.endswith("__")}
    protected |= _reached_through_module_aliases(trees.values())
    library = library_attributes()
    for attr in inv.members:
        if attr in library or attr in inv.library_chain_attrs or attr in inv.plain_strings:
            protected.add(attr)
        elif any(token in attr for token in inv.pattern_tokens if "_" in token or len(token) >= 4):
            # state-dict names matched by substring ("attn_scale" in name) keep their spelling
            protected.add(attr)
    candidates = sorted((inv.defined | inv.members) - protected)
    random.Random(seed).shuffle(candidates)
    maker = NameMaker(all_identifiers(files))
    plan = {}
    for name in candidates:
        prefix = "C" if name in inv.classes else "f" if name in inv.functions else "v"
        plan[name] = maker.make(prefix)
    return inv, plan


class Renamer(cst.CSTTransformer):
    def __init__(self, inv: Inventory, plan: dict[str, str]):
        self.inv = inv
        self.plan = plan
        self.decisions: dict[int, str | None] = {}  # id(Name) -> new value, None: keep
        self.class_stack: list[str] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.class_stack.append(node.name.value)

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self.class_stack.pop()
        return updated

    def visit_Attribute(self, node: cst.Attribute) -> None:
        attr = node.attr.value
        root = node.value
        if isinstance(root, cst.Name) and root.value in self.inv.sibling_aliases:
            self.decisions[id(node.attr)] = self.plan.get(attr) if attr in self.inv.defined else None
        elif attr in self.inv.members:
            self.decisions[id(node.attr)] = self.plan.get(attr)
        else:
            self.decisions[id(node.attr)] = None

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        # module paths are never renamed; the imported name of a sibling's definition is
        for name in _names_in(node.name):
            self.decisions[id(name)] = None
        if isinstance(node.name, cst.Name) and self._sibling_import:
            self.decisions[id(node.name)] = self.plan.get(node.name.value)

    _sibling_import = False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        source = dotted(node.module) if node.module else ""
        self._sibling_import = (source or "").split(".")[-1] in self.inv.siblings or (not source and bool(node.relative))
        if node.module is not None:
            for name in _names_in(node.module):
                self.decisions[id(name)] = None

    def leave_ImportFrom(self, original, updated):
        self._sibling_import = False
        return updated

    def visit_Import(self, node: cst.Import) -> None:
        self._sibling_import = False

    def visit_Call(self, node: cst.Call) -> None:
        rename = self._keyword_policy(node)
        for arg in node.args:
            if arg.keyword is not None:
                kw = arg.keyword.value
                self.decisions[id(arg.keyword)] = self.plan.get(kw) if rename(kw) else None

    def _keyword_policy(self, node: cst.Call) -> Callable[[str], bool]:
        inv = self.inv
        never = lambda kw: False  # noqa: E731
        func = node.func
        name = dotted(func) or ""
        last = name.split(".")[-1] if name else ""
        if last in ("partial", "replace") and node.args and isinstance(node.args[0].value, cst.Name):
            target = node.args[0].value.value
            if target in inv.functions or target in inv.classes:
                return self._by_signature(target)
            if last == "replace":  # dataclasses.replace(obj, field=...)
                return lambda kw: kw in inv.members
        if isinstance(func, cst.Name):
            if func.value in inv.imported or (func.value in dir(builtins) and func.value not in inv.defined):
                return never
            if func.value in inv.functions or func.value in inv.classes:
                return self._by_signature(func.value)
            return lambda kw: kw in inv.params  # a local holding a model or a function
        if isinstance(func, cst.Attribute):
            root = chain_root(func)
            attr = func.attr.value
            if root is not None and root.value in inv.sibling_aliases:
                return self._by_signature(attr)
            if isinstance(func.value, cst.Call) and dotted(func.value.func) == "super":
                bases = inv.class_bases.get(self.class_stack[-1], []) if self.class_stack else []
                own = [b for b in bases if b in inv.classes]
                if own and attr == "__init__":
                    return lambda kw: any(kw in inv.signatures.get(b, ()) for b in own)
                return never
            if root is not None and root.value in inv.imported:
                return never
            if attr in inv.members and attr in self.plan:
                return self._by_signature(attr)
            return never
        return lambda kw: kw in inv.params  # self.blocks[i](x, ...), f()(...)

    def _by_signature(self, callee: str) -> Callable[[str], bool]:
        inv = self.inv
        seen: set[str] = set()
        params: set[str] = set()
        todo = [callee]
        while todo:  # a class without __init__ takes its submission base's
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            params |= inv.signatures.get(name, set())
            if name in inv.classes and not inv.signatures.get(name):
                todo += [b for b in inv.class_bases.get(name, []) if b in inv.classes]
        return lambda kw: kw in params

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        key = id(original)
        if key in self.decisions:
            new = self.decisions[key]
        elif original.value in self.inv.defined:
            new = self.plan.get(original.value)
        else:
            new = None
        return updated.with_changes(value=new) if new else updated


def _names_in(node: cst.BaseExpression) -> list[cst.Name]:
    if isinstance(node, cst.Name):
        return [node]
    if isinstance(node, cst.Attribute):
        return _names_in(node.value) + [node.attr]
    return []


def rename(files: Files, keep: set[str] = frozenset(), seed: int = 0) -> Files:
    modules = parse_files(files)
    inv, plan = rename_plan(files, module_names(files), set(keep), seed)
    return {path: module.visit(Renamer(inv, plan)).code for path, module in modules.items()}


# --- scope facts for the structural transforms -------------------------------------------------


class _Uses(cst.CSTVisitor):
    """Stores and loads of names in a statement list, nested scopes included for loads only."""

    def __init__(self):
        self.stores: set[str] = set()
        self.loads: set[str] = set()
        self.unsafe: list[str] = []
        self.depth = 0  # nested function/lambda/class/comprehension depth
        self.loop_depth = 0
        self.declared: set[str] = set()  # global/nonlocal names of this scope

    def _nested(self, node) -> bool:
        self.depth += 1
        return True

    def _unnest(self, node) -> None:
        self.depth -= 1

    visit_FunctionDef = _nested
    visit_Lambda = _nested
    visit_ClassDef = _nested
    visit_ListComp = _nested
    visit_SetComp = _nested
    visit_DictComp = _nested
    visit_GeneratorExp = _nested
    leave_FunctionDef = _unnest
    leave_Lambda = _unnest
    leave_ClassDef = _unnest
    leave_ListComp = _unnest
    leave_SetComp = _unnest
    leave_DictComp = _unnest
    leave_GeneratorExp = _unnest

    def visit_FunctionDef_name(self, node) -> None:
        pass

    def _store(self, target: cst.BaseExpression) -> None:
        if self.depth == 0:
            self.stores.update(bound_names(target))

    def visit_Assign(self, node):
        for t in node.targets:
            self._store(t.target)

    def visit_AugAssign(self, node):
        self._store(node.target)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self._store(node.target)
        elif self.depth == 0 and isinstance(node.target, cst.Name):
            self.unsafe.append("bare annotation")

    def visit_For(self, node):
        self._store(node.target)
        if self.depth == 0:
            self.loop_depth += 1
            if node.asynchronous is not None:
                self.unsafe.append("async for")

    def leave_For(self, node):
        if self.depth == 0:
            self.loop_depth -= 1

    def visit_While(self, node):
        if self.depth == 0:
            self.loop_depth += 1

    def leave_While(self, node):
        if self.depth == 0:
            self.loop_depth -= 1

    def visit_With(self, node):
        if self.depth == 0 and node.asynchronous is not None:
            self.unsafe.append("async with")

    def visit_WithItem(self, node):
        if node.asname is not None:
            self._store(node.asname.name)

    def visit_ExceptHandler(self, node):
        if node.name is not None:
            self._store(node.name.name)

    def visit_NamedExpr(self, node):
        self.stores.update(bound_names(node.target))  # binds in the enclosing function scope

    def visit_Import(self, node):
        if self.depth == 0:
            self.unsafe.append("import")

    def visit_ImportFrom(self, node):
        if self.depth == 0:
            self.unsafe.append("import")

    def visit_Return(self, node):
        if self.depth == 0:
            self.unsafe.append("return")

    def visit_Yield(self, node):
        if self.depth == 0:
            self.unsafe.append("yield")

    def visit_Await(self, node):
        if self.depth == 0:
            self.unsafe.append("await")

    def visit_Break(self, node):
        if self.depth == 0 and self.loop_depth == 0:
            self.unsafe.append("break")

    def visit_Continue(self, node):
        if self.depth == 0 and self.loop_depth == 0:
            self.unsafe.append("continue")

    def visit_Global(self, node):
        self.unsafe.append("global")
        if self.depth == 0:
            self.declared.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node):
        self.unsafe.append("nonlocal")
        if self.depth == 0:
            self.declared.update(n.name.value for n in node.names)

    def visit_Del(self, node):
        if self.depth == 0:
            self.unsafe.append("del")

    def visit_Name(self, node: cst.Name) -> None:
        self.loads.add(node.value)
        if node.value in ("super", "locals", "vars", "exec", "eval", "__class__"):
            self.unsafe.append(node.value)


_USES_MEMO: dict[int, tuple[cst.CSTNode, _Uses]] = {}


def uses_of(nodes) -> _Uses:
    """Stores/loads of a statement list; per-statement results are memoized (trees are immutable)."""
    total = _Uses()
    for node in nodes:
        hit = _USES_MEMO.get(id(node))
        if hit is None or hit[0] is not node:
            one = _Uses()
            node.visit(one)
            if len(_USES_MEMO) > 200_000:
                _USES_MEMO.clear()
            _USES_MEMO[id(node)] = (node, one)
        else:
            one = hit[1]
        total.stores |= one.stores
        total.loads |= one.loads
        total.unsafe += one.unsafe
        total.declared |= one.declared
    return total


def _function_defs_and_classes(statement: cst.CSTNode) -> list[str]:
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return [statement.name.value]
    return []


# --- extract loop bodies -----------------------------------------------------------------------


class _LoopExtractor(cst.CSTTransformer):
    """Inside each function, a loop body becomes a nested helper called from the loop."""

    def __init__(self, maker: NameMaker):
        self.maker = maker
        self.functions: list[dict] = []  # per enclosing function: params, statements seen
        self.count = 0

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        params = {p.name.value for p in (*node.params.params, *node.params.posonly_params,
                                         *node.params.kwonly_params)}
        for star in (node.params.star_arg, node.params.star_kwarg):
            if isinstance(star, cst.Param):
                params.add(star.name.value)
        decls = set()

        class Decls(cst.CSTVisitor):
            def visit_FunctionDef(self, inner):
                return inner is node

            def visit_ClassDef(self, inner):
                return False

            def visit_Global(self, g):
                decls.update(n.name.value for n in g.names)

            def visit_Nonlocal(self, g):
                decls.update(n.name.value for n in g.names)

        node.visit(Decls())
        self.functions.append({"params": params, "decls": decls})

    def leave_FunctionDef(self, original, updated):
        self.functions.pop()
        return updated

    def visit_ClassDef(self, node):
        self.functions.append(None)  # a class body: loops here are not extracted

    def leave_ClassDef(self, original, updated):
        self.functions.pop()
        return updated

    def visit_Lambda(self, node):
        return False

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock):
        return updated.with_changes(body=self._rewrite_block(updated.body))

    def _rewrite_block(self, statements) -> list:
        if not self.functions or self.functions[-1] is None:
            return list(statements)
        out: list = []
        for index, stmt in enumerate(statements):
            if isinstance(stmt, (cst.For, cst.While)) and getattr(stmt, "asynchronous", None) is None:
                replaced = self._extract(stmt, statements[:index])
                if replaced is not None:
                    out += replaced
                    continue
            out.append(stmt)
        return out

    def _extract(self, loop, before) -> list | None:
        info = self.functions[-1]
        body = loop.body
        if not isinstance(body, cst.IndentedBlock):
            return None
        uses = uses_of(body.body)
        if uses.unsafe:
            return None
        target_names = set(bound_names(loop.target)) if isinstance(loop, cst.For) else set()
        assigned = sorted(n for n in uses.stores if n not in info["decls"])
        passed, fresh = [], []
        bound_before = set(info["params"]) | target_names
        bound_before |= _unconditionally_bound(before)
        for name in assigned:
            if _fresh_in_body(name, body.body):
                fresh.append(name)
            elif name in bound_before:
                passed.append(name)
            else:
                return None  # possibly unbound at the call: not safe
        helper = self.maker.make("f")
        decl_lines = []
        used_decls = sorted(n for n in uses.stores | uses.loads if n in info["decls"])
        results = passed + fresh
        new_body = list(body.body)
        if used_decls:
            # global/nonlocal names of the function stay shared
            return None
        if results:
            value = (cst.Name(results[0]) if len(results) == 1 else
                     cst.Tuple([cst.Element(cst.Name(n)) for n in results]))
            new_body.append(cst.SimpleStatementLine([cst.Return(value)]))
        definition = cst.FunctionDef(
            name=cst.Name(helper),
            params=cst.Parameters(params=[cst.Param(cst.Name(n)) for n in passed]),
            body=cst.IndentedBlock(body=decl_lines + new_body),
        )
        call = cst.Call(cst.Name(helper), args=[cst.Arg(cst.Name(n)) for n in passed])
        if not results:
            line = cst.SimpleStatementLine([cst.Expr(call)])
        else:
            target = (cst.Name(results[0]) if len(results) == 1 else
                      cst.Tuple([cst.Element(cst.Name(n)) for n in results], lpar=[], rpar=[]))
            line = cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(target)], call)])
        self.count += 1
        new_loop = loop.with_changes(body=body.with_changes(body=[line]))
        return [definition, new_loop]


def _fresh_in_body(name: str, statements) -> bool:
    """The first top-level statement that mentions `name` assigns it without reading it."""
    for stmt in statements:
        uses = uses_of([stmt])
        if name not in uses.loads and name not in uses.stores:
            continue
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign):
            assign = stmt.body[0]
            targets = set()
            for t in assign.targets:
                targets.update(bound_names(t.target))
            if name in targets and name not in uses_of([assign.value]).loads:
                # the name must not also be read inside a target (x[x] = ...)
                return all(isinstance(t.target, (cst.Name, cst.Tuple, cst.List)) for t in assign.targets)
        return False
    return False


def _unconditionally_bound(statements) -> set[str]:
    """Names bound by plain assignments among a block's earlier statements."""
    bound: set[str] = set()
    for stmt in statements:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Assign):
                    for t in small.targets:
                        bound.update(bound_names(t.target))
                elif isinstance(small, cst.AnnAssign) and small.value is not None:
                    bound.update(bound_names(small.target))
                elif isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(getattr(small, "names", None), cst.ImportStar):
                    for alias in small.names:
                        bound.add(alias.asname.name.value if alias.asname else (dotted(alias.name) or "").split(".")[0])
        elif isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            bound.add(stmt.name.value)
        elif isinstance(stmt, cst.With):
            for item in stmt.items:
                if item.asname is not None:
                    bound.update(bound_names(item.asname.name))
            bound |= _unconditionally_bound(stmt.body.body if isinstance(stmt.body, cst.IndentedBlock) else [])
    return bound


def extract_loop_bodies(files: Files, seed: int = 0) -> Files:
    modules = parse_files(files)
    maker = NameMaker(all_identifiers(files))
    out = {}
    for path, module in modules.items():
        out[path] = _rewrite_nested_first(module, _LoopExtractor(maker)).code
    return out


def _rewrite_nested_first(module: cst.Module, transformer: cst.CSTTransformer) -> cst.Module:
    return module.visit(transformer)


# --- for -> while ---------------------------------------------------------------------------------


class _ForToWhile(cst.CSTTransformer):
    def __init__(self, maker: NameMaker, range_rebound: bool):
        self.maker = maker
        self.range_rebound = range_rebound
        self.count = 0

    def leave_IndentedBlock(self, original, updated):
        return updated.with_changes(body=self._rewrite(updated.body))

    def leave_Module(self, original, updated):
        return updated.with_changes(body=self._rewrite(updated.body))

    def _rewrite(self, statements) -> list:
        out: list = []
        for stmt in statements:
            if isinstance(stmt, cst.For) and stmt.asynchronous is None and isinstance(stmt.body, cst.IndentedBlock):
                replaced = self._convert(stmt)
                if replaced is not None:
                    out += replaced
                    self.count += 1
                    continue
            out.append(stmt)
        return out

    def _convert(self, loop: cst.For) -> list | None:
        body = list(loop.body.body)
        if loop.orelse is not None:
            else_uses = uses_of(loop.orelse.body.body)
            if any(u in ("break", "continue") for u in else_uses.unsafe):
                return None
        it = loop.iter
        if (not self.range_rebound and isinstance(it, cst.Call) and isinstance(it.func, cst.Name)
                and it.func.value == "range" and 1 <= len(it.args) <= 3
                and all(a.keyword is None and a.star == "" for a in it.args)
                and isinstance(loop.target, cst.Name)):
            return self._range_loop(loop, body, [a.value for a in it.args])
        return self._iter_loop(loop, body)

    def _range_loop(self, loop, body, args) -> list:
        counter, stop, step = self.maker.make("v"), self.maker.make("v"), None
        start = args[0] if len(args) >= 2 else cst.Integer("0")
        end = args[1] if len(args) >= 2 else args[0]
        setup = [_assign(counter, start), _assign(stop, end)]
        step_value: int | None = 1
        if len(args) == 3:
            literal = _int_literal(args[2])
            step_value = literal
            step = self.maker.make("v")
            setup.append(_assign(step, args[2]))
        less = cst.Comparison(cst.Name(counter), [cst.ComparisonTarget(cst.LessThan(), cst.Name(stop))])
        more = cst.Comparison(cst.Name(counter), [cst.ComparisonTarget(cst.GreaterThan(), cst.Name(stop))])
        if step_value is None:  # sign known only at run time
            positive = cst.Comparison(cst.Name(step), [cst.ComparisonTarget(cst.GreaterThan(), cst.Integer("0"))])
            test = cst.IfExp(test=positive, body=less, orelse=more)
        else:
            test = less if step_value > 0 else more
        increment = cst.SimpleStatementLine([cst.AugAssign(cst.Name(counter), cst.AddAssign(),
                                                           cst.Name(step) if step else cst.Integer("1"))])
        head = [cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(loop.target)], cst.Name(counter))]), increment]
        loop_stmt = cst.While(test=test, body=loop.body.with_changes(body=head + body), orelse=loop.orelse,
                              leading_lines=loop.leading_lines)
        return setup + [loop_stmt]

    def _iter_loop(self, loop, body) -> list:
        iterator, item = self.maker.make("v"), self.maker.make("v")
        setup = [_assign(iterator, cst.Call(cst.Name("iter"), [cst.Arg(loop.iter)]))]
        handler_body = list(loop.orelse.body.body) if loop.orelse is not None else []
        handler_body.append(cst.SimpleStatementLine([cst.Break()]))
        fetch = cst.Try(
            body=cst.IndentedBlock([_assign(item, cst.Call(cst.Name("next"), [cst.Arg(cst.Name(iterator))]))]),
            handlers=[cst.ExceptHandler(body=cst.IndentedBlock(handler_body), type=cst.Name("StopIteration"))],
        )
        bind = cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(_no_parens(loop.target))], cst.Name(item))])
        loop_stmt = cst.While(test=cst.Name("True"), body=loop.body.with_changes(body=[fetch, bind] + body),
                              leading_lines=loop.leading_lines)
        return setup + [loop_stmt]


def _no_parens(target):
    if isinstance(target, cst.Tuple) and not target.lpar:
        return target.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return target


def _assign(name: str, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(name))], value)])


def _int_literal(node) -> int | None:
    if isinstance(node, cst.Integer):
        return int(node.evaluated_value)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and isinstance(node.expression, cst.Integer):
        return -int(node.expression.evaluated_value)
    return None


def for_to_while(files: Files, seed: int = 0) -> Files:
    modules = parse_files(files)
    maker = NameMaker(all_identifiers(files))
    out = {}
    trees = ast_files(files)
    for path, module in modules.items():
        rebound = _binds_name(trees[path], "range")
        out[path] = module.visit(_ForToWhile(maker, rebound)).code
    return out


def _binds_name(tree: ast.Module, name: str) -> bool:
    inv = Inventory(siblings=set())
    Collector(inv).collect_imports(tree)
    Collector(inv).visit(tree)
    return name in inv.defined or name in inv.imported


# --- wrap top-level functions into classes ------------------------------------------------------


def _group_functions(module: cst.Module) -> list[list[int]]:
    """Runs of consecutive top-level functions that can share one class (none of them uses
    another of its own run in a decorator, default or annotation, evaluated in the class body)."""
    groups: list[list[int]] = []
    current: list[int] = []
    names_in_current: set[str] = set()
    for index, stmt in enumerate(module.body):
        if isinstance(stmt, cst.FunctionDef):
            header = [d for d in stmt.decorators] + [p for p in (*stmt.params.params, *stmt.params.kwonly_params,
                                                                  *stmt.params.posonly_params)]
            if stmt.returns is not None:
                header.append(stmt.returns)
            loads = uses_of(header).loads
            if loads & names_in_current or stmt.name.value in {"__getattr__", "__dir__"}:
                groups.append(current)
                current, names_in_current = [], set()
            current.append(index)
            names_in_current.add(stmt.name.value)
        else:
            if current:
                groups.append(current)
            current, names_in_current = [], set()
    if current:
        groups.append(current)
    return [g for g in groups if g]


def _all_import_froms(module: cst.CSTNode) -> list[cst.ImportFrom]:
    found: list[cst.ImportFrom] = []

    class _Collect(cst.CSTVisitor):
        def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
            found.append(node)

    module.visit(_Collect())
    return found


def _bound_by_import(stmt: cst.ImportFrom) -> list[str]:
    if isinstance(stmt.names, cst.ImportStar):
        return []
    return [alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name)
            else alias.name.value for alias in stmt.names if isinstance(alias.name, cst.Name)]


class _WrapRefs(cst.CSTTransformer):
    """References to moved functions become `Class.func`, unless a local binding shadows them."""

    def __init__(self, owner: dict[str, str], sibling_owner: dict[str, dict[str, str]], siblings: set[str]):
        self.owner = owner  # function -> class of this module
        self.sibling_owner = sibling_owner  # sibling module -> function -> class
        self.siblings = siblings
        self.names: dict[str, tuple[str, str]] = {}  # name -> (class, function)
        self.skip: set[int] = set()  # ids of Names that are not references (def names, attrs, keywords)
        self.scopes: list[set[str]] = []  # local bindings of the enclosing functions

    def visit_Module(self, node: cst.Module) -> None:
        imported = {}
        # names imported from a sibling whose functions moved into a class: `Class.func`,
        # at module level or inside a function (`from helper import f` in main())
        for stmt in _all_import_froms(node):
            for small in [stmt]:
                if isinstance(small.names, cst.ImportStar):
                    continue
                source = (dotted(small.module) or "").split(".")[-1] if small.module else ""
                owners = self.sibling_owner.get(source, {})
                for alias in small.names:
                    name = alias.name.value if isinstance(alias.name, cst.Name) else None
                    if name in owners:
                        bound = alias.asname.name.value if alias.asname else name
                        imported[bound] = (owners[name], name)
        self.names = {name: (cls, name) for name, cls in self.owner.items()} | imported

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.skip.add(id(node.name))
        params = node.params
        bound = {p.name.value for p in (*params.params, *params.posonly_params, *params.kwonly_params)}
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                bound.add(star.name.value)
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else [node.body]
        uses = uses_of(body)
        # a sibling's function imported here (`from helper import f` in main()) is rewritten
        # to `Class.func` like a global one; any other binding of the name shadows it
        imported_here = {name for stmt in _all_import_froms(node) for name in _bound_by_import(stmt)
                         if name in self.names}
        self.scopes.append((bound | (uses.stores - imported_here)) - uses.declared)

    def leave_FunctionDef(self, original, updated):
        self.scopes.pop()
        return updated

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self.scopes.append({p.name.value for p in (*node.params.params, *node.params.kwonly_params)})

    def leave_Lambda(self, original, updated):
        self.scopes.pop()
        return updated

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.skip.add(id(node.name))

    def visit_Param(self, node: cst.Param) -> None:
        self.skip.add(id(node.name))

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.skip.add(id(node.attr))

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        for name in _names_in(node.name):
            self.skip.add(id(name))
        if node.asname is not None and isinstance(node.asname.name, cst.Name):
            self.skip.add(id(node.asname.name))

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None:
            for name in _names_in(node.module):
                self.skip.add(id(name))

    def visit_Global(self, node: cst.Global) -> None:
        for item in node.names:
            self.skip.add(id(item.name))

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        for item in node.names:
            self.skip.add(id(item.name))

    def leave_Name(self, original: cst.Name, updated: cst.Name):
        where = self.names.get(original.value)
        if where is None or id(original) in self.skip or any(original.value in scope for scope in self.scopes):
            return updated
        cls, func = where
        return cst.Attribute(cst.Name(cls), cst.Name(func))

    def leave_ImportFrom(self, original: cst.ImportFrom, updated: cst.ImportFrom):
        source = (dotted(original.module) or "").split(".")[-1] if original.module else ""
        if source not in self.sibling_owner or isinstance(original.names, cst.ImportStar):
            return updated
        owners = self.sibling_owner[source]
        names = []
        added: set[str] = set()
        for alias in updated.names:
            name = alias.name.value if isinstance(alias.name, cst.Name) else None
            if name in owners:
                if owners[name] not in added:
                    added.add(owners[name])
                    names.append(cst.ImportAlias(cst.Name(owners[name])))
            else:
                names.append(alias)
        names = [n.with_changes(comma=cst.MaybeSentinel.DEFAULT) for n in names]
        return updated.with_changes(names=names)

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        # helper.func -> helper.C1.func
        if isinstance(original.value, cst.Name) and original.value.value in self.sibling_owner:
            owners = self.sibling_owner[original.value.value]
            if original.attr.value in owners:
                return updated.with_changes(value=cst.Attribute(updated.value, cst.Name(owners[original.attr.value])))
        return updated


def wrap_functions(files: Files, seed: int = 0) -> Files:
    modules = parse_files(files)
    maker = NameMaker(all_identifiers(files))
    siblings = module_names(files)
    plans: dict[str, list[list[int]]] = {}
    owners: dict[str, dict[str, str]] = {}
    for path, module in modules.items():
        groups = _group_functions(module)
        plans[path] = groups
        owner = {}
        for group in groups:
            cls = maker.make("C")
            for index in group:
                owner[module.body[index].name.value] = cls
        owners[path] = owner
    by_module = {Path(p).stem: owners[p] for p in modules}
    out = {}
    for path, module in modules.items():
        refs = _WrapRefs(owners[path], {m: o for m, o in by_module.items() if m != Path(path).stem}, siblings)
        rewritten = module.visit(refs)
        out[path] = _regroup(rewritten, plans[path], owners[path]).code
    return out


def _regroup(module: cst.Module, groups: list[list[int]], owner: dict[str, str]) -> cst.Module:
    first_of = {g[0]: g for g in groups}
    members = {i for g in groups for i in g}
    body: list = []
    for index, stmt in enumerate(module.body):
        if index in first_of:
            group = first_of[index]
            methods = []
            for position, member in enumerate(group):
                func = module.body[member]
                decorators = [cst.Decorator(cst.Name("staticmethod"))] + list(func.decorators)
                methods.append(func.with_changes(decorators=decorators,
                                                 leading_lines=func.leading_lines if position else []))
            cls = owner[module.body[group[0]].name.value]
            body.append(cst.ClassDef(name=cst.Name(cls), body=cst.IndentedBlock(methods),
                                     leading_lines=module.body[group[0]].leading_lines))
        elif index not in members:
            body.append(stmt)
    return module.with_changes(body=body)


# --- registry and folders -------------------------------------------------------------------------

TRANSFORMS: dict[str, Callable[..., Files]] = {
    "rename": rename,
    "extract": extract_loop_bodies,
    "while": for_to_while,
    "wrap": wrap_functions,
}


def config_names(folder: Path) -> set[str]:
    """Names the run configuration spells: log keys (`ttt_epochs: 3`) and README env vars."""
    from auditor.source import SourceError
    from auditor.submission import load_submission

    try:
        run = load_submission(folder).run_config
    except SourceError:
        return set()
    return set(run.values) | {name.lower() for name in run.env}


def read_folder_code(folder: Path) -> Files:
    """The folder's .py files, with a packed (exec'd blob) file replaced by its decoded source."""
    from auditor.source import SourceError, read_source

    files: Files = {}
    for path in sorted(folder.rglob("*.py")):
        if not path.is_file():
            continue
        relative = str(path.relative_to(folder))
        try:
            source = read_source(path)
        except SourceError as exc:
            raise TransformError(f"{relative}: {exc}") from None
        if source.packing and "file:" not in source.packing:
            files[relative] = source.text
        else:
            files[relative] = source.raw_bytes.decode("utf-8", "replace") if source.raw_bytes else source.text
    return files


def _compiles(text: str) -> bool:
    try:
        compile(text, "<original>", "exec")
        return True
    except (SyntaxError, ValueError):
        return False


def transform_folder(folder: Path, name: str, dest: Path, seed: int = 0) -> Path:
    """Copy `folder` to `dest` with its Python files rewritten by transform `name`."""
    files = read_folder_code(folder)
    if name == "rename":
        changed = rename(files, keep=config_names(folder), seed=seed)
    else:
        changed = TRANSFORMS[name](files, seed=seed)
    for relative, text in changed.items():
        try:
            compile(text, relative, "exec")
        except (SyntaxError, ValueError) as exc:
            if _compiles(files[relative]):
                raise TransformError(f"{relative}: the {name} transform produced invalid Python: {exc}") from None
            try:  # newer syntax than this Python's (3.12 f-strings): libcst must still read it
                cst.parse_module(text)
            except cst.ParserSyntaxError as exc2:
                raise TransformError(f"{relative}: the {name} transform produced invalid Python: {exc2}") from None
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest)
    for relative, text in changed.items():
        (dest / relative).write_text(text)
    return dest
