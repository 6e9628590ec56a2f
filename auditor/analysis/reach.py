"""Reachability: what runs under the run configuration, and what is dormant.

From the entry point (the main script's module-level code, `if __name__ == "__main__":`
included), statements are walked with the configuration evaluator: a branch whose test
is false under the run configuration is dormant, as is code after an early `return`
taken under it. A function is live when live code references it; a method when its class
is live and its name is referenced from live code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from auditor.analysis.config import UNKNOWN, Config, Evaluator
from auditor.analysis.index import MODULE_SCOPE, Function, Index, child_nodes, own_nodes, walk
from auditor.findings import Dormancy

ALWAYS_LIVE_METHODS = {"__init__", "__post_init__", "__call__", "forward", "__enter__", "__exit__", "__iter__",
                       "__next__", "__getitem__", "__len__"}


@dataclass
class Span:
    start: int
    end: int
    reason: Dormancy


@dataclass
class Reach:
    live: set[Function] = field(default_factory=set)
    dormant_spans: dict[Function, list[Span]] = field(default_factory=dict)
    live_classes: set[str] = field(default_factory=set)

    def status(self, function: Function, line: int) -> tuple[bool, Dormancy | None]:
        """(is live, why not) for a line of a function."""
        chain = function
        while chain is not None:
            if chain not in self.live:
                return False, Dormancy("not-called", f"`{chain.qualname}` is never called from the entry point "
                                                     "under the run configuration")
            for span in self.dormant_spans.get(chain, ()):
                if span.start <= line <= span.end:
                    return False, span.reason
            chain = chain.parent if chain.parent is not None and chain.parent.qualname != MODULE_SCOPE else None
        return True, None

def _describe_test(test: ast.expr, config: Config) -> Dormancy:
    attrs = []
    for node in walk(test):
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name and name in config.settings and name not in attrs:
            attrs.append(name)
        if isinstance(node, ast.Call):
            from auditor.analysis.config import env_call_name

            var = env_call_name(node, config.env_helpers)
            if var and var not in attrs:
                attrs.append(var)
    details = []
    for name in attrs[:3]:
        if name in config.settings:
            details.append(config.describe(name))
        elif name in config.run.env:
            details.append(f"{name}={config.run.env[name]} (run configuration)")
        else:
            details.append(f"{name} unset")
    text = ast.unparse(test)
    if len(text) > 80:
        text = text[:77] + "..."
    if details:  # a setting of the run configuration decides the test
        return Dormancy("flag-off", f"`{text}` is false ({'; '.join(details)})")
    return Dormancy("condition-false", f"`{text}` is false")


class _Walker:
    def __init__(self, index: Index, config: Config, reach: Reach):
        self.index = index
        self.config = config
        self.reach = reach
        self.referenced_names: set[str] = set()
        self.referenced_attrs: set[str] = set()
        self.queue: list[Function] = []

    def run(self) -> None:
        for unit in self.index.units:
            self._mark(self.index.module_scope(unit))
        while True:
            while self.queue:
                self._walk_function(self.queue.pop())
            before = len(self.reach.live)
            self._resolve()
            if len(self.reach.live) == before and not self.queue:
                break

    def _mark(self, function: Function) -> None:
        if function not in self.reach.live:
            self.reach.live.add(function)
            self.queue.append(function)

    def _resolve(self) -> None:
        for name in list(self.referenced_names):
            if name in self.index.classes:
                self._mark_class(name)
        for function in self.index.functions:
            if function in self.reach.live or function.qualname == MODULE_SCOPE:
                continue
            if function.cls is None:
                if function.name in self.referenced_names or function.name in self.referenced_attrs:
                    if function.parent is None or function.parent.qualname == MODULE_SCOPE or function.parent in self.reach.live:
                        self._mark(function)
            elif function.cls in self.reach.live_classes and (
                function.name in ALWAYS_LIVE_METHODS or function.name in self.referenced_attrs
                or function.name in self.referenced_names
            ):
                self._mark(function)

    def _mark_class(self, name: str) -> None:
        if name in self.reach.live_classes:
            return
        self.reach.live_classes.add(name)
        for cls in self.index.classes.get(name, []):
            for base in cls.bases:
                base_name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else None
                if base_name and base_name in self.index.classes:
                    self._mark_class(base_name)
            # class-level statements (decorators, class attributes) run on definition
            for stmt in cls.body:
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self._collect(stmt)

    def _walk_function(self, function: Function) -> None:
        evaluator = Evaluator(self.config, local=_single_assignments(function, self.config))
        spans: list[Span] = []
        self._walk(function.body(), evaluator, spans)
        if isinstance(function.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in function.node.decorator_list:
                self._collect(deco)
            for default in (*function.node.args.defaults, *function.node.args.kw_defaults):
                if default is not None:
                    self._collect(default)
        if spans:
            self.reach.dormant_spans.setdefault(function, []).extend(spans)

    def _walk(self, stmts: list[ast.stmt], evaluator: Evaluator, spans: list[Span]) -> None:
        for position, stmt in enumerate(stmts):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(stmt, ast.If):
                truth = evaluator.truth(stmt.test)
                self._collect(stmt.test)
                if truth is True:
                    self._walk(stmt.body, evaluator, spans)
                    if stmt.orelse:
                        spans.append(Span(stmt.orelse[0].lineno, stmt.orelse[-1].end_lineno,
                                          _describe_test(ast.UnaryOp(ast.Not(), stmt.test), self.config)))
                    if _terminates(stmt.body) and position + 1 < len(stmts):
                        rest = stmts[position + 1:]
                        spans.append(Span(rest[0].lineno, rest[-1].end_lineno, Dormancy(
                            "early-return", f"an earlier return is taken: `{ast.unparse(stmt.test)[:60]}` holds")))
                        return
                elif truth is False:
                    spans.append(Span(stmt.body[0].lineno, stmt.body[-1].end_lineno,
                                      _describe_test(stmt.test, self.config)))
                    self._walk(stmt.orelse, evaluator, spans)
                else:
                    self._walk(stmt.body, evaluator, spans)
                    self._walk(stmt.orelse, evaluator, spans)
                continue
            if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
                self._collect(stmt.iter if not isinstance(stmt, ast.While) else stmt.test)
                if isinstance(stmt, ast.While) and evaluator.truth(stmt.test) is False:
                    spans.append(Span(stmt.body[0].lineno, stmt.body[-1].end_lineno,
                                      _describe_test(stmt.test, self.config)))
                else:
                    self._walk(stmt.body, evaluator, spans)
                self._walk(stmt.orelse, evaluator, spans)
                continue
            if isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    self._collect(item.context_expr)
                self._walk(stmt.body, evaluator, spans)
                continue
            if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
                self._walk(stmt.body, evaluator, spans)
                for handler in stmt.handlers:
                    self._walk(handler.body, evaluator, spans)
                self._walk(stmt.orelse, evaluator, spans)
                self._walk(stmt.finalbody, evaluator, spans)
                continue
            if isinstance(stmt, ast.Match):
                self._collect(stmt.subject)
                for case in stmt.cases:
                    self._walk(case.body, evaluator, spans)
                continue
            self._collect(stmt)

    def _collect(self, node: ast.AST) -> None:
        """Names a live statement references. Nested defs are walked when they are reached."""
        stack = [node]
        while stack:
            sub = stack.pop()
            if sub.__class__ is ast.Name:
                self.referenced_names.add(sub.id)
                continue  # (its one child is its Load/Store context)
            elif sub.__class__ is ast.Attribute:
                self.referenced_attrs.add(sub.attr)
            elif isinstance(sub, ast.Constant):
                if isinstance(sub.value, str) and sub.value.isidentifier():
                    # getattr(obj, "name"), registries of functions by name
                    self.referenced_attrs.add(sub.value)
                continue
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
                continue
            stack.extend(child_nodes(sub))


def _terminates(stmts: list[ast.stmt]) -> bool:
    return bool(stmts) and isinstance(stmts[-1], (ast.Return, ast.Raise))


_BINDING_NODES = frozenset({ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr})


def _single_assignments(function: Function, config: Config) -> dict:
    """Local names assigned once from a config-evaluable expression: `use_ttt = args.ttt_enabled`."""
    counts: dict[str, int] = {}
    values: dict[str, ast.expr] = {}
    for node in own_nodes(function):
        if node.__class__ not in _BINDING_NODES:
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name_node in walk(target):
                    if isinstance(name_node, ast.Name):
                        counts[name_node.id] = counts.get(name_node.id, 0) + 1
                        values[name_node.id] = node.value if isinstance(target, ast.Name) else None
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr)):
            for name_node in walk(node.target):
                if isinstance(name_node, ast.Name):
                    counts[name_node.id] = counts.get(name_node.id, 0) + 2
    local = {}
    evaluator = Evaluator(config)
    for name, count in counts.items():
        expr = values.get(name)
        if count == 1 and expr is not None and _mentions_config(expr):
            value = evaluator.value(expr)
            if value is not UNKNOWN and (value is None or isinstance(value, (bool, int, float, str))):
                local[name] = value
    return local


def _mentions_config(expr: ast.expr) -> bool:
    return any(isinstance(n, (ast.Attribute, ast.Name, ast.Call, ast.Subscript)) for n in walk(expr))


def compute_reach(index: Index, config: Config) -> Reach:
    reach = Reach()
    _Walker(index, config, reach).run()
    return reach
