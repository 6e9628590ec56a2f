"""Configuration: the script's defaults, overridden by the run configuration.

Defaults come from `os.environ.get(...)`/`os.getenv(...)` and env helper calls, the
attributes of Hyperparameters-like classes and dataclasses, argparse arguments and
module-level constants. The run configuration (README command env, log lines) overrides
them, so `if args.ngram_enabled:` is judged with the value the submission ran with.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from auditor.submission import RunConfig
from auditor.analysis.index import walk


class _UnknownType:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:  # never let UNKNOWN be tested by accident
        raise TypeError("UNKNOWN has no truth value")


UNKNOWN: Any = _UnknownType()


@dataclass
class Setting:
    """One configurable value of the script."""

    attr: str | None  # attribute name (args.<attr>), or module constant name
    env: str | None  # environment variable it reads
    expr: ast.expr  # the default expression, as written
    line: int


@dataclass
class Config:
    settings: dict[str, Setting] = field(default_factory=dict)  # by attr (lower) or constant
    env_settings: dict[str, Setting] = field(default_factory=dict)  # by env var name
    run: RunConfig = field(default_factory=RunConfig)
    env_helpers: frozenset[str] = frozenset()  # the submission's env-reading functions
    _cache: dict[str, Any] = field(default_factory=dict)

    def env_value(self, name: str, default: Any) -> Any:
        if name in self.run.env:
            return self.run.env[name]
        setting = self.env_settings.get(name)
        if setting is not None and setting.attr and setting.attr.lower() in self.run.values:
            return self.run.values[setting.attr.lower()]
        return default

    def attr_value(self, attr: str) -> Any:
        """Value of args.<attr> (or a module constant) under the run configuration."""
        if attr in self._cache:
            return self._cache[attr]
        self._cache[attr] = UNKNOWN  # cycle guard
        setting = self.settings.get(attr) or self.settings.get(attr.lower())
        value: Any = UNKNOWN
        if attr.lower() in self.run.values and (setting is None or setting.env is None or setting.env not in self.run.env):
            value = literal(self.run.values[attr.lower()])
        elif setting is not None:
            value = Evaluator(self).value(setting.expr)
        self._cache[attr] = value
        return value

    def describe(self, attr: str) -> str:
        """Where a value comes from, for messages: 'TTT_ENABLED=1 (README)'."""
        setting = self.settings.get(attr)
        env = setting.env if setting else None
        value = self.attr_value(attr)
        shown = "?" if value is UNKNOWN else repr(value)
        if env and env in self.run.env:
            return f"{env}={self.run.env[env]} (run configuration)"
        if attr.lower() in self.run.values:
            return f"{attr}={self.run.values[attr.lower()]} (train log)"
        if env:
            return f"{env} defaults to {shown}"
        return f"{attr} = {shown}"

    def run_environment(self) -> dict[str, str]:
        """Env vars the submission ran with: README env plus log values mapped to their env names."""
        env = dict(self.run.env)
        for attr, raw in self.run.values.items():
            setting = self.settings.get(attr)
            if setting is not None and setting.env and setting.env not in env:
                env[setting.env] = raw
        return env


def literal(text: str) -> Any:
    """A log or env string as a Python value: '1' -> 1, 'True' -> True, '0.5' -> 0.5."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off", "none", ""):
        return False if lowered != "none" else None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _truthy_env(value: Any) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


_CASTS = {"int": int, "float": float, "str": str}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def env_helpers(definitions) -> frozenset[str]:
    """The submission's own functions that read the environment variable their first
    parameter names (`def f(name, default): return int(os.environ.get(name, default))`).
    `definitions`: (definition, its own nodes) pairs, or a module whose definitions are searched."""
    if isinstance(definitions, ast.Module):
        definitions = [(n, walk(n)) for n in walk(definitions)
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found = set()
    for node, nodes in definitions:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.args.args:
            continue
        first = node.args.args[0].arg
        for sub in nodes:
            if sub.__class__ is not ast.Call and sub.__class__ is not ast.Subscript:
                continue
            key = None
            if isinstance(sub, ast.Call) and sub.args and isinstance(sub.args[0], ast.Name):
                func = sub.func
                if (isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)) or \
                        (isinstance(func, ast.Attribute) and func.attr == "getenv"):
                    key = sub.args[0].id
            elif isinstance(sub, ast.Subscript) and _is_environ(sub.value) and isinstance(sub.slice, ast.Name):
                key = sub.slice.id
            if key == first:
                found.add(node.name)
                break
    return frozenset(found)


def env_call_name(call: ast.Call, helpers: frozenset[str] = frozenset()) -> str | None:
    """The env var an expression reads: os.environ.get("X"), os.getenv("X"), or one of the
    submission's env helpers (`helpers`, found by what they do) called with "X"."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return None
    var = call.args[0].value
    if isinstance(func, ast.Attribute) and name == "get" and _is_environ(func.value):
        return var
    if name == "getenv" or (name in helpers and var.isupper()):
        return var
    return None


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in ("environ", "ENV", "env", "E")
    )


class Evaluator:
    """Evaluates configuration expressions; anything it cannot know is UNKNOWN."""

    def __init__(self, config: Config, local: dict[str, Any] | None = None):
        self.config = config
        self.local = local or {}

    def truth(self, node: ast.expr) -> bool | None:
        value = self.value(node)
        if value is UNKNOWN:
            return None
        try:
            return bool(value)
        except Exception:
            return None

    def value(self, node: ast.expr) -> Any:
        try:
            return self._value(node)
        except RecursionError:
            return UNKNOWN
        except Exception:
            return UNKNOWN

    def _value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.local:
                return self.local[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            if node.id in self.config.settings and self.config.settings[node.id].attr == node.id:
                return self.config.attr_value(node.id)
            return UNKNOWN
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in ("os", "sys", "torch", "math", "np"):
                return UNKNOWN
            if node.attr in self.config.settings:
                return self.config.attr_value(node.attr)
            return UNKNOWN
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return self.config.env_value(key.value, UNKNOWN)
            return UNKNOWN
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.BoolOp):
            values = [self._value(v) for v in node.values]
            return _bool_op(isinstance(node.op, ast.And), values)
        if isinstance(node, ast.UnaryOp):
            operand = self._value(node.operand)
            if operand is UNKNOWN:
                return UNKNOWN
            if isinstance(node.op, ast.Not):
                return not operand
            if isinstance(node.op, ast.USub):
                return -operand
            return UNKNOWN
        if isinstance(node, ast.Compare):
            left = self._value(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self._value(comp)
                if left is UNKNOWN or right is UNKNOWN or type(op) not in _COMPARE:
                    return UNKNOWN
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self._value(node.left), self._value(node.right)
            if left is UNKNOWN or right is UNKNOWN:
                return UNKNOWN
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.IfExp):
            test = self._value(node.test)
            if test is UNKNOWN:
                return UNKNOWN
            return self._value(node.body if test else node.orelse)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [self._value(e) for e in node.elts]
            return UNKNOWN if any(v is UNKNOWN for v in values) else tuple(values)
        return UNKNOWN

    def _call(self, node: ast.Call) -> Any:
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        var = env_call_name(node, self.config.env_helpers)
        if var is not None:
            default: Any = None
            if len(node.args) > 1:
                default = self._value(node.args[1])
            for kw in node.keywords:
                if kw.arg in ("default", "d"):
                    default = self._value(kw.value)
            raw = self.config.env_value(var, UNKNOWN)
            value = default if raw is UNKNOWN else raw
            lowered = fname.lower()
            if value is UNKNOWN:
                return UNKNOWN
            if "bool" in lowered or "flag" in lowered:
                return _truthy_env(value)
            if "int" in lowered:
                return int(float(value))
            if "float" in lowered:
                return float(value)
            if raw is not UNKNOWN and fname not in ("get", "getenv"):
                return literal(str(raw))  # an env helper of unknown type: best guess from the text
            return value
        if isinstance(func, ast.Name) and fname in _CASTS and len(node.args) == 1:
            value = self._value(node.args[0])
            if value is UNKNOWN:
                return UNKNOWN
            if fname == "int" and isinstance(value, str):
                return int(float(value))
            return _CASTS[fname](value)
        if isinstance(func, ast.Name) and fname == "bool" and len(node.args) == 1:
            value = self._value(node.args[0])
            if value is UNKNOWN:
                return UNKNOWN
            return bool(value)
        if isinstance(func, ast.Attribute) and fname in ("lower", "upper", "strip") and not node.args:
            value = self._value(func.value)
            return getattr(value, fname)() if isinstance(value, str) else UNKNOWN
        if isinstance(func, ast.Name) and fname == "getattr" and len(node.args) >= 2:
            key = node.args[1]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if key.value in self.config.settings:
                    return self.config.attr_value(key.value)
                if len(node.args) > 2:
                    return self._value(node.args[2])
        return UNKNOWN


def _bool_op(is_and: bool, values: list[Any]) -> Any:
    # Short-circuit with unknowns: False and ? == False; True or ? == True.
    saw_unknown = False
    for value in values:
        if value is UNKNOWN:
            saw_unknown = True
            continue
        if is_and and not value:
            return value
        if not is_and and value:
            return value
    if saw_unknown:
        return UNKNOWN
    return values[-1]


def _target_names(target: ast.expr) -> list[tuple[str, ast.expr | None]]:
    if isinstance(target, ast.Name):
        return [(target.id, None)]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return [(target.attr, None)]
    return []


def _reads_env(node: ast.expr, helpers: frozenset[str] = frozenset()) -> str | None:
    for sub in walk(node):
        if isinstance(sub, ast.Call):
            var = env_call_name(sub, helpers)
            if var is not None:
                return var
        if isinstance(sub, ast.Subscript) and _is_environ(sub.value):
            if isinstance(sub.slice, ast.Constant) and isinstance(sub.slice.value, str):
                return sub.slice.value
    return None


def _add(config: Config, name: str, expr: ast.expr, line: int) -> None:
    env = _reads_env(expr, config.env_helpers)
    setting = Setting(attr=name, env=env, expr=expr, line=line)
    # The first definition wins for a name (Hyperparameters come before later reuse of names).
    config.settings.setdefault(name, setting)
    if env:
        config.env_settings.setdefault(env, setting)


def _is_config_class(node: ast.ClassDef, helpers: frozenset[str] = frozenset()) -> bool:
    """A class that holds settings, by what it is: one of its attributes reads the
    environment, or it is a dataclass of plain fields with no behaviour of its own."""
    for inner in node.body:
        value = getattr(inner, "value", None)
        if isinstance(inner, (ast.Assign, ast.AnnAssign)) and value is not None and _reads_env(value, helpers):
            return True
    decorated = any((getattr(d, "id", None) or getattr(d, "attr", None) or
                     getattr(getattr(d, "func", None), "id", None) or getattr(getattr(d, "func", None), "attr", None))
                    == "dataclass" for d in node.decorator_list)
    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
               and not (n.name.startswith("__") and n.name.endswith("__"))]
    return decorated and not methods


def build_config(tree: ast.Module, run: RunConfig, nodes=None, text: str | None = None,
                 helpers: frozenset[str] | None = None) -> Config:
    """Settings of a module. `nodes` (every node of its functions, from the index) and
    `text` spare a walk of the whole tree; without them the tree is walked. `helpers`: the
    env-reading functions of the whole submission (found in `tree` when not given)."""
    helpers = env_helpers(tree) if helpers is None else helpers
    config = Config(run=run, env_helpers=helpers)
    # Module-level constants and config classes first, then argparse anywhere.
    for stmt in tree.body:
        _collect_assign(config, stmt)
        if isinstance(stmt, ast.ClassDef):
            # Attributes of config classes are settings; those of other classes (a cache's
            # self.total_tokens = 0) are state, unless they read the environment.
            is_config = _is_config_class(stmt, helpers)
            for inner in stmt.body:
                if is_config or _reads_env(getattr(inner, "value", None) or ast.Constant(None), helpers):
                    _collect_assign(config, inner)
                if isinstance(inner, ast.FunctionDef) and inner.name in ("__init__", "__post_init__"):
                    for sub in walk(inner):
                        if is_config or (isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None
                                         and _reads_env(sub.value, helpers)):
                            _collect_assign(config, sub)
    lines = text.splitlines() if text is not None else None
    hint = re.compile("(?i)env" + "".join("|" + re.escape(h) for h in sorted(helpers)))
    for node in walk(tree) if nodes is None else nodes:
        kind = node.__class__  # (ast's classes have no subclasses)
        if kind is ast.Call:
            if isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                _collect_argparse(config, node)
        elif (kind is ast.Assign or kind is ast.AnnAssign) and node.value is not None:
            if lines is not None and not hint.search("".join(lines[node.lineno - 1:node.end_lineno])):
                continue
            if _reads_env(node.value, helpers):
                _collect_assign(config, node)  # env reads inside functions: x = int(os.environ.get(...))
    return config




def _collect_assign(config: Config, stmt: ast.stmt) -> None:
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            for name, _ in _target_names(target):
                _add(config, name, stmt.value, stmt.lineno)
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        for name, _ in _target_names(stmt.target):
            value = stmt.value
            # dataclasses: field(default=...)
            if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) == "field":
                for kw in value.keywords:
                    if kw.arg == "default":
                        value = kw.value
                    elif kw.arg == "default_factory" and isinstance(kw.value, ast.Lambda):
                        value = kw.value.body
            _add(config, name, value, stmt.lineno)


def _collect_argparse(config: Config, call: ast.Call) -> None:
    flags = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    long = [f for f in flags if f.startswith("--")] or flags
    if not long:
        return
    dest = long[0].lstrip("-").replace("-", "_")
    default: ast.expr = ast.Constant(None)
    for kw in call.keywords:
        if kw.arg == "dest" and isinstance(kw.value, ast.Constant):
            dest = kw.value.value
        elif kw.arg == "default":
            default = kw.value
        elif kw.arg == "action" and isinstance(kw.value, ast.Constant) and kw.value.value == "store_true":
            if not any(k.arg == "default" for k in call.keywords):
                default = ast.Constant(False)
    _add(config, dest, default, call.lineno)
