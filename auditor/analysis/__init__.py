"""The parsed submission, built once per file and shared by every rule.

`Analysis` holds the files (main script and imported helpers, unpacked when packed), the
ast index, the configuration, reachability and data flow. Rules look at one function at a
time through a `Scope`: its own ast nodes, their parents and statement lines, walked once
and only for functions that a rule's prefilter matches.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from auditor.analysis.config import Config, build_config, env_helpers
from auditor.analysis.flow import Taint, _Flow, compute_flow
from auditor.analysis.index import MODULE_SCOPE, Function, Index, Unit, build_index, child_nodes, own_nodes, walk
from auditor.analysis.reach import Reach, compute_reach
from auditor.analysis.values import Score, compute_score
from auditor.source import Source, SourceError, decode_text, parse_python, read_bytes_checked
from auditor.submission import RunConfig, Submission


@dataclass
class Scope:
    """One function's own code as ast nodes (nested defs, classes and lambdas left out)."""

    function: Function
    statements: list[ast.stmt]
    _nodes: list[ast.AST] | None = None
    _parents: dict[int, ast.AST] | None = None

    def lines(self, node: ast.AST) -> tuple[int, int]:
        """(first, last) line of the statement that holds `node`, in the file."""
        current = node
        while current is not None:
            if isinstance(current, ast.stmt):
                return (current.lineno, current.end_lineno or current.lineno)
            current = self.parent(current)
        return (self.function.lineno, self.function.lineno)

    def code(self, node: ast.AST) -> str:
        return source_segment(self.function.unit, node)

    def walk(self) -> list[ast.AST]:
        """Every node of the function's own code, in source order."""
        if self._nodes is None:
            self._walk_once()
        return self._nodes

    def parent(self, node: ast.AST) -> ast.AST | None:
        if self._parents is None:
            self._walk_once()
        return self._parents.get(id(node))

    def _walk_once(self) -> None:
        nodes, parents = [], {}
        stack = [(node, None) for node in reversed(self.statements) if node.__class__ not in NESTED_CODE]
        while stack:
            node, parent = stack.pop()
            nodes.append(node)
            if parent is not None:
                parents[id(node)] = parent
            for child in reversed(child_nodes(node)):
                if child.__class__ not in NESTED_CODE:
                    stack.append((child, node))
        self._nodes, self._parents = nodes, parents


# what a Scope's walk skips with its subtree: the code of a function of its own (contexts
# and operators are no children at all, see index.child_nodes)
NESTED_CODE = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda})


def source_segment(unit: Unit, node: ast.AST) -> str:
    """The text of `node` as written (ast's offsets count UTF-8 bytes)."""
    first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    if first is None or last is None:
        return ast.unparse(node)
    lines = [line.encode() for line in unit.lines[first - 1:last]]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][node.col_offset:node.end_col_offset].decode(errors="replace")
    lines[0], lines[-1] = lines[0][node.col_offset:], lines[-1][:node.end_col_offset]
    return b"\n".join(lines).decode(errors="replace")


@dataclass
class Analysis:
    index: Index
    config: Config
    reach: Reach
    taint: Taint
    submission: Submission | None = None
    _scopes: dict[Function, Scope] = field(default_factory=dict)
    _texts: dict[Function, str] = field(default_factory=dict)
    _memo: dict[str, object] = field(default_factory=dict)
    _flow: _Flow | None = None  # answers kinds()

    @property
    def main(self) -> Unit:
        return self.index.main

    @cached_property
    def score(self) -> Score:
        """What reaches the reported val_bpb / val_loss (see values.py)."""
        return compute_score(self.index)

    def scope(self, function: Function) -> Scope:
        scope = self._scopes.get(function)
        if scope is None:
            if function.qualname == MODULE_SCOPE:
                # imports and constant tables hold nothing a rule looks for
                statements = [stmt for stmt in function.body() if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                              and any(n.__class__ is ast.Call for n in walk(stmt))]
            else:
                statements = list(function.node.body)
            scope = self._scopes[function] = Scope(function, statements)
        return scope

    # --- questions rules ask ------------------------------------------------------

    def kinds(self, function: Function, expr: ast.AST, scope: Scope | None = None,
              line: int | None = None, intrinsic: bool = False) -> set[str]:
        """Taint kinds ('val', 'train') an expression carries in a function (at `line`; in
        a scope, at the first line of the statement that holds it, otherwise at its own)."""
        if line is None:
            line = scope.lines(expr)[0] if scope is not None else getattr(expr, "lineno", None)
        if self._flow is None:  # (kinds_of only reads the taint and fills its summary caches)
            self._flow = _Flow(self.index, self.config.run.env)
            self._flow.taint = self.taint
        return self._flow.kinds_of(function, expr, intrinsic=intrinsic, line=line)

    def live(self, function: Function, line: int | None = None) -> tuple[bool, str]:
        return self.reach.status(function, line if line is not None else function.lineno)

    def memo(self, key: str, compute):
        """A result several rules share (e.g. the TTT loop analysis), computed once."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def functions_matching(self, pattern: re.Pattern) -> list[Function]:
        return [f for f in self.index.functions if pattern.search(self.text_of(f))]

    def text_of(self, function: Function) -> str:
        if function not in self._texts:
            self._texts[function] = function.source() if function.qualname != MODULE_SCOPE else _module_text(function)
        return self._texts[function]


def _module_text(function: Function) -> str:
    lines = function.unit.lines
    return "\n".join("\n".join(lines[s.lineno - 1:s.end_lineno]) for s in function.body())


# --- building an Analysis -----------------------------------------------------------


def analyze_source(source: Source, submission: Submission | None = None, run: RunConfig | None = None,
                   display: str | None = None) -> Analysis:
    tree = source.tree if source.tree is not None else parse_python(source.text)
    units = [Unit(source.path, display or str(source.path), source.text, tree, source.packing)]
    if submission is not None:
        for helper in _imported_siblings(tree, source.text, source.path):
            try:
                text = decode_text(read_bytes_checked(helper), what=helper.name)
                units.append(Unit(helper, _display_beside(units[0].display, helper), text, parse_python(text)))
            except SourceError:
                continue  # a helper we cannot read is reported by its own classify run
    index = build_index(units)
    run_config = run if run is not None else (submission.run_config if submission else RunConfig())
    helpers = env_helpers((f.node, own_nodes(f)) for f in index.functions if f.qualname != MODULE_SCOPE)
    config = build_config(tree, run_config, _all_own_nodes(index, units[0]), units[0].text, helpers)
    for unit in units[1:]:
        helper_config = build_config(unit.tree, run_config, _all_own_nodes(index, unit), unit.text, helpers)
        for name, setting in helper_config.settings.items():
            config.settings.setdefault(name, setting)
        for name, setting in helper_config.env_settings.items():
            config.env_settings.setdefault(name, setting)
    reach = compute_reach(index, config)
    taint = compute_flow(index, run_config.env)
    return Analysis(index=index, config=config, reach=reach, taint=taint, submission=submission)


def _all_own_nodes(index: Index, unit: Unit):
    for function in index.functions:
        if function.unit is unit:
            yield from own_nodes(function)


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+\.?(\w+)|import[ \t]+([\w., \t]+))", re.M)


def _imported_siblings(tree: ast.Module, text: str, script: Path) -> list[Path]:
    """Python files of the script's folder that it imports (found in the text: no tree walk)."""
    names: set[str] = set()
    for match in _IMPORT.finditer(text):
        if match.group(1):
            names.add(match.group(1))
        else:
            names.update(part.split(" as ")[0].strip().split(".")[0] for part in match.group(2).split(","))
    found = []
    for name in sorted(n for n in names if n):
        candidate = script.parent / f"{name}.py"
        if candidate.is_file() and candidate != script:
            found.append(candidate)
    return found


def _display_beside(main_display: str, helper: Path) -> str:
    parent = Path(main_display).parent
    return str(parent / helper.name) if str(parent) != "." else helper.name


def analyze_text(text: str, run: RunConfig | None = None, path: str = "<snippet>.py") -> Analysis:
    """Analysis of a snippet of code (rule examples and tests)."""
    source = Source(path=Path(path), text=text, raw_bytes=text.encode())
    return analyze_source(source, run=run, display=path)
