"""The parsed submission, built once per file and shared by every rule.

`Analysis` holds the files (main script and imported helpers, unpacked when packed), the
ast index, the configuration, reachability and data flow. Rules look at libcst trees of
single functions (`Scope`), parsed lazily per top-level statement: libcst costs ~10x
`ast.parse`, so only code that a rule's prefilter matches is parsed with it.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from itertools import zip_longest
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from auditor.analysis.config import Config, build_config, env_helpers
from auditor.analysis.flow import Taint, _Flow, compute_flow
from auditor.analysis.index import MODULE_SCOPE, Function, Index, Unit, build_index, child_nodes, own_nodes
from auditor.analysis.reach import Reach, compute_reach
from auditor.analysis.values import Score, compute_score
from auditor.source import Source, SourceError, decode_text, parse_python, read_bytes_checked
from auditor.submission import RunConfig, Submission


_CHILD_FIELDS: dict[type, list[str]] = {}
# class -> 1 for a libcst node, 2 for a list or tuple, 0 for anything else: CSTNode is an
# abstract base class, and isinstance against one costs a call per value; this, a lookup.
_VALUE_KIND: dict[type, int] = {}


def _value_kind(cls: type) -> int:
    kind = _VALUE_KIND[cls] = 1 if issubclass(cls, cst.CSTNode) else 2 if issubclass(cls, (list, tuple)) else 0
    return kind


def cst_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """A node's children from its dataclass fields: three times faster than libcst's
    `children` (which visits to find them). Statements keep their order; inside an
    expression the order can differ (a keyword before its value), which no rule relies on."""
    names = _CHILD_FIELDS.get(type(node))
    if names is None:
        names = _CHILD_FIELDS[type(node)] = [f.name for f in dataclasses.fields(node)]
    kinds = _VALUE_KIND
    out = []
    for name in names:
        value = getattr(node, name)
        kind = kinds.get(value.__class__)
        if kind is None:
            kind = _value_kind(value.__class__)
        if kind == 1:
            out.append(value)
        elif kind == 2:
            for item in value:
                item_kind = kinds.get(item.__class__)
                if item_kind is None:
                    item_kind = _value_kind(item.__class__)
                if item_kind == 1:
                    out.append(item)
    return out


@dataclass
class Scope:
    """One function's code as libcst nodes, with absolute line numbers."""

    function: Function
    statements: list[cst.CSTNode]
    positions: dict[int, tuple[int, int]]  # id(node) -> (start line, end line), absolute
    modules: list[cst.Module]
    _nodes: list[cst.CSTNode] | None = None
    _parents: dict[int, cst.CSTNode] | None = None

    def lines(self, node: cst.CSTNode) -> tuple[int, int]:
        """(first, last) line of the statement that holds `node`, in the file."""
        current = node
        while current is not None:
            found = self.positions.get(id(current))
            if found is not None:
                return found
            current = self.parent(current)
        return (self.function.lineno, self.function.lineno)

    def code(self, node: cst.CSTNode) -> str:
        return self.modules[0].code_for_node(node)

    def walk(self) -> list[cst.CSTNode]:
        """Every libcst node of the function's own code (nested defs excluded), in order;
        whitespace, newlines and comments left out (half of all nodes, and no rule's business)."""
        if self._nodes is None:
            self._walk_once()
        return self._nodes

    def parent(self, node: cst.CSTNode) -> cst.CSTNode | None:
        if self._parents is None:
            self._walk_once()
        return self._parents.get(id(node))

    def _walk_once(self) -> None:
        # libcst computes `children` on every access: walk once and keep nodes and parents.
        nodes, parents = [], {}
        # a def right in the body is a function of its own (closures are analyzed apart)
        stack = [(node, None) for node in reversed(self.statements)
                 if not isinstance(node, (cst.FunctionDef, cst.ClassDef))]
        while stack:
            node, parent = stack.pop()
            nodes.append(node)
            if parent is not None:
                parents[id(node)] = parent
            for child in reversed(cst_children(node)):
                if child.__class__ in _NOT_WALKED:
                    continue
                stack.append((child, node))
        self._nodes, self._parents = nodes, parents


@dataclass
class AstScope:
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
        stack = [(node, None) for node in reversed(self.statements) if node.__class__ not in _AST_NOT_WALKED]
        while stack:
            node, parent = stack.pop()
            nodes.append(node)
            if parent is not None:
                parents[id(node)] = parent
            for child in reversed(child_nodes(node)):
                if child.__class__ not in _AST_NOT_WALKED:
                    stack.append((child, node))
        self._nodes, self._parents = nodes, parents


# what an AstScope's walk skips with its subtree: the code of a function of its own, and
# contexts and operators (ast shares one instance of each across the tree: no parent)
_AST_NOT_WALKED = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.Load, ast.Store,
                             ast.Del, *(cls for base in (ast.operator, ast.boolop, ast.unaryop, ast.cmpop)
                                        for cls in base.__subclasses__())})


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


# libcst's layout classes: whitespace, newlines, comments (with only more layout inside)
_LAYOUT = frozenset({cst.SimpleWhitespace, cst.ParenthesizedWhitespace, cst.TrailingWhitespace, cst.Newline,
                     cst.EmptyLine, cst.Comment})
# what a Scope's walk skips with its subtree: layout, and the code of a function of its own
_NOT_WALKED = _LAYOUT | {cst.FunctionDef, cst.ClassDef, cst.Lambda}


def code_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """cst_children without layout: for walks that look for code (half the nodes are layout)."""
    return [child for child in cst_children(node) if child.__class__ not in _LAYOUT]


@dataclass
class Analysis:
    index: Index
    config: Config
    reach: Reach
    taint: Taint
    submission: Submission | None = None
    _cst_cache: dict[int, tuple[cst.Module, dict[int, tuple[int, int]]]] = field(default_factory=dict)
    _scopes: dict[Function, Scope] = field(default_factory=dict)
    _texts: dict[Function, str] = field(default_factory=dict)
    unparsed: list[Function] = field(default_factory=list)  # functions libcst could not read
    _parsed_code: dict[str, ast.AST] = field(default_factory=dict)  # libcst code -> ast, for kinds()
    _node_code: dict[tuple[int, int], tuple] = field(default_factory=dict)  # libcst node -> its ast, for kinds()
    _memo: dict[str, object] = field(default_factory=dict)
    _flow: _Flow | None = None  # answers kinds()
    # id(ast def) -> (its libcst def, the parse that holds it, that parse's statement lines)
    _cst_defs: dict[int, tuple[cst.FunctionDef, cst.Module, dict]] = field(default_factory=dict)
    _ast_scopes: dict[Function, AstScope] = field(default_factory=dict)

    @property
    def main(self) -> Unit:
        return self.index.main

    @cached_property
    def score(self) -> Score:
        """What reaches the reported val_bpb / val_loss (see values.py)."""
        return compute_score(self.index)

    # --- libcst access ------------------------------------------------------------

    def _parse_span(self, unit: Unit, start: int, end: int, statements: list[ast.stmt],
                    indented: bool = False) -> tuple[cst.Module, dict[int, tuple[int, int]]]:
        """libcst tree of lines start..end (the ast `statements`), with statement lines.

        Lines come from the ast: the two trees hold the same statements in the same order,
        so pairing them costs nothing, where libcst's PositionProvider re-generates the
        code (a third of the run time). If the pairing fails, the provider is used.
        `indented` lines (a method, a nested def) are parsed as the body of an `if 1:`, so
        their text stays exactly as written."""
        key = hash((unit.display, start, end))
        if key not in self._cst_cache:
            text = "\n".join(unit.lines[start - 1:end]) + "\n"
            module = cst.parse_module("if 1:\n" + text if indented else text)
            body = module.body[0].body.body if indented else module.body
            positions = self._pair(module, body, statements)
            if positions is None:
                raw = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
                offset = start - 1 - indented
                positions = {id(node): (rng.start.line + offset, rng.end.line + offset) for node, rng in raw.items()
                             if isinstance(node, (cst.BaseSmallStatement, cst.BaseCompoundStatement,
                                                  cst.SimpleStatementLine))}
            self._cst_cache[key] = (module, positions)
        return self._cst_cache[key]

    def _pair(self, module: cst.Module, body, statements: list[ast.stmt]) -> dict[int, tuple[int, int]] | None:
        """Statement lines of a parse (None if it does not pair with the ast); the defs it
        holds are recorded with it, so their scopes reuse this parse."""
        defs: dict[int, cst.FunctionDef] = {}
        positions = _pair_statement_lines(body, statements, defs)
        for stmt_id, node in defs.items() if positions is not None else ():
            self._cst_defs[stmt_id] = (node, module, positions)
        return positions

    def scope(self, function: Function) -> Scope:
        if function in self._scopes:
            return self._scopes[function]
        try:
            scope = self._build_scope(function)
        except (cst.ParserSyntaxError, cst.CSTValidationError, RecursionError):
            # libcst is stricter than ast on some minified code (`else()`, `and'x'`): read
            # the function as ast prints it back (the same statements, so lines still pair);
            # failing that, rules see no statements in it, and the result says so.
            scope = self._scope_from_unparse(function)
            if scope is None:
                scope = Scope(function, [], {}, [cst.Module(body=[])])
                self.unparsed.append(function)
        self._scopes[function] = scope
        return scope

    def _scope_from_unparse(self, function: Function) -> Scope | None:
        if function.qualname == MODULE_SCOPE:
            return None
        try:
            module = cst.parse_module(ast.unparse(function.node) + "\n")
        except (cst.ParserSyntaxError, cst.CSTValidationError, RecursionError, ValueError):
            return None
        if self._pair(module, module.body, [function.node]) is None or id(function.node) not in self._cst_defs:
            return None
        node, module, positions = self._cst_defs[id(function.node)]
        body = list(node.body.body) if isinstance(node.body, cst.IndentedBlock) else [node.body]
        return Scope(function, body, positions, [module])

    def _build_scope(self, function: Function) -> Scope:
        unit = function.unit
        if function.qualname == MODULE_SCOPE:
            statements, positions, modules = [], {}, []
            # Imports and constant tables hold nothing a rule looks for: parse only runs of
            # statements that call something, each run in one libcst parse.
            runs: list[list[ast.stmt]] = [[]]
            for stmt in function.body():
                if isinstance(stmt, (ast.Import, ast.ImportFrom)) or not any(
                        isinstance(n, ast.Call) for n in ast.walk(stmt)):
                    if runs[-1]:
                        runs.append([])
                    continue
                runs[-1].append(stmt)
            for run in (r for r in runs if r):
                start, end = _first_line(run[0]), run[-1].end_lineno
                # the span also holds the defs between these statements: pair with all of them
                inside = [s for s in unit.tree.body if start <= _first_line(s) and s.end_lineno <= end]
                module, pos = self._parse_span(unit, start, end, inside)
                statements.extend(n for n in module.body if not isinstance(n, (cst.FunctionDef, cst.ClassDef)))
                positions.update(pos)
                modules.append(module)
            scope = Scope(function, statements, positions, modules or [cst.Module(body=[])])
        else:
            # its own def, not the whole top-level statement (a class of twenty methods for one)
            paired = self._cst_defs.get(id(function.node))  # when an enclosing scope's parse paired it
            if paired is not None:
                node, module, positions = paired
            else:
                indented = function.node.col_offset > 0
                module, positions = self._parse_span(unit, _first_line(function.node), function.node.end_lineno,
                                                     [function.node], indented)
                paired = self._cst_defs.get(id(function.node))
                node = paired[0] if paired is not None else _find_def(module, positions, function)
            body = list(node.body.body) if node is not None and isinstance(node.body, cst.IndentedBlock) else (
                [node.body] if node is not None else [])
            scope = Scope(function, body, positions, [module])
        return scope

    def ast_scope(self, function: Function) -> AstScope:
        scope = self._ast_scopes.get(function)
        if scope is None:
            if function.qualname == MODULE_SCOPE:
                # imports and constant tables hold nothing a rule looks for
                statements = [stmt for stmt in function.body() if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                              and any(n.__class__ is ast.Call for n in ast.walk(stmt))]
            else:
                statements = list(function.node.body)
            scope = self._ast_scopes[function] = AstScope(function, statements)
        return scope

    # --- questions rules ask --------------------------------------------------------

    def kinds(self, function: Function, expr: cst.CSTNode | ast.AST, scope: Scope | None = None,
              line: int | None = None, intrinsic: bool = False) -> set[str]:
        """Taint kinds ('val', 'train') an expression carries in a function (at `line`)."""
        if line is None and isinstance(expr, ast.AST):
            # in a scope, the line of the statement that holds it (a loop body's own lines)
            line = scope.lines(expr)[0] if isinstance(scope, AstScope) else getattr(expr, "lineno", None)
        elif line is None and scope is not None:
            line = scope.lines(expr)[0]
        if isinstance(expr, cst.CSTNode):
            module = (scope or self.scope(function)).modules[0]
            # the same node asked about again (rules and the fixpoints do): no code generated
            key = (id(expr), id(module))
            known = self._node_code.get(key)
            if known is None:
                code = module.code_for_node(expr).strip()
                parsed = self._parsed_code.get(code)
                if parsed is None:
                    try:
                        parsed = ast.parse(code, mode="eval")
                    except SyntaxError:
                        try:
                            parsed = ast.parse(code)
                        except SyntaxError:
                            parsed = ast.Constant(None)
                    self._parsed_code[code] = parsed
                known = self._node_code[key] = (expr, module, parsed)  # (nodes kept alive: ids stay theirs)
            expr = known[2]
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


def _cst_statements(statements):
    """Statements of a libcst block in the order ast lists them (small statements split)."""
    for stmt in statements:
        if isinstance(stmt, cst.SimpleStatementLine):
            yield from stmt.body
            continue
        yield stmt
        if isinstance(stmt, cst.Try) or type(stmt).__name__ == "TryStar":
            blocks = [stmt.body, *(h.body for h in stmt.handlers), *((stmt.orelse.body,) if stmt.orelse else ()),
                      *((stmt.finalbody.body,) if stmt.finalbody else ())]
        elif isinstance(stmt, cst.Match):
            blocks = [case.body for case in stmt.cases]
        else:
            blocks = [stmt.body]
            orelse = getattr(stmt, "orelse", None)
            if isinstance(orelse, cst.If):
                blocks.append(orelse)  # elif: a statement of its own, as in ast
            elif orelse is not None:
                blocks.append(orelse.body)
        for block in blocks:
            if isinstance(block, cst.If):
                yield from _cst_statements([block])
            elif isinstance(block, cst.SimpleStatementSuite):
                yield from block.body
            else:
                yield from _cst_statements(block.body)


def _ast_statements(statements):
    for stmt in statements:
        yield stmt
        if isinstance(stmt, ast.Match):
            blocks = [case.body for case in stmt.cases]
        else:
            blocks = [getattr(stmt, "body", None) if isinstance(getattr(stmt, "body", None), list) else [],
                      *(h.body for h in getattr(stmt, "handlers", ())),
                      getattr(stmt, "orelse", []) or [], getattr(stmt, "finalbody", []) or []]
        for block in blocks:
            yield from _ast_statements(block)


def _pair_statement_lines(cst_body, ast_body, defs: dict | None = None) -> dict[int, tuple[int, int]] | None:
    """Lines of each libcst statement, from the ast statement it pairs with; `defs` gets the
    libcst def of each ast def (by id of the ast node)."""
    pairs = list(zip_longest(_cst_statements(cst_body), _ast_statements(ast_body)))
    positions: dict[int, tuple[int, int]] = {}
    for node, stmt in pairs:
        if node is None or stmt is None:
            return None
        if _KIND.get(type(node).__name__, type(node).__name__) != type(stmt).__name__.replace("Async", ""):
            return None
        positions[id(node)] = (stmt.lineno, stmt.end_lineno or stmt.lineno)
        if defs is not None and node.__class__ is cst.FunctionDef:
            defs[id(stmt)] = node
    return positions


# libcst class names that differ from ast's for the same statement
_KIND = {"Del": "Delete"}


def _module_text(function: Function) -> str:
    lines = function.unit.lines
    return "\n".join("\n".join(lines[s.lineno - 1:s.end_lineno]) for s in function.body())


def _first_line(stmt: ast.stmt) -> int:
    decorators = getattr(stmt, "decorator_list", None) or []
    return min([stmt.lineno, *(d.lineno for d in decorators)])


def _find_def(module: cst.Module, positions: dict, function: Function) -> cst.FunctionDef | None:
    """The libcst def of `function` in `module`, searched for when the statement pairing
    (which records it directly) fell back to libcst's positions."""
    first, target_line = _first_line(function.node), function.lineno
    best = None
    stack: list[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if node.__class__ is cst.FunctionDef and node.name.value == function.name:
            if first <= positions.get(id(node), (0, 0))[0] <= target_line:
                return node
            best = best or node
        stack.extend(cst_children(node))  # (libcst's own `children` re-visits the node: slow)
    return best


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
