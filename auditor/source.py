"""Reading submission files safely, and unpacking code that a script `exec`s.

Nothing here runs submission code: packed scripts are decoded by evaluating only
string literals through a fixed set of decoders (base64/b85/a85/hex, lzma/zlib/gzip/bz2).
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import gzip
import lzma
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 5_000_000
MAX_UNPACKED_BYTES = 20_000_000
MAX_PACK_DEPTH = 4


class SourceError(Exception):
    """A file that cannot be analyzed; the message says why, for the user."""


@dataclass
class Source:
    path: Path
    text: str
    raw_bytes: bytes
    # How the analyzed text was obtained from the file: "" for plain source,
    # else e.g. "lzma+b85" when an exec'd blob was decoded.
    packing: str = ""
    # Line of the exec() call in the file on disk, when packed.
    exec_line: int = 0
    tree: ast.Module | None = None  # the parsed (decoded) text

    @property
    def packed(self) -> bool:
        return bool(self.packing)


def read_bytes_checked(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise SourceError(f"{path} is not a regular file")
    if size > limit:
        raise SourceError(f"file is {size:,} bytes, over the {limit:,}-byte limit")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def decode_text(data: bytes, what: str = "file") -> str:
    if not data.strip():
        raise SourceError(f"{what} is empty")
    if b"\x00" in data[:8192]:
        raise SourceError(f"{what} is binary (contains NUL bytes), not Python source")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{what} is not UTF-8 text (bad byte at offset {exc.start})") from None


def parse_python(text: str, what: str = "file") -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        tree = _parse_newer_fstrings(text)
        if tree is None:
            raise SourceError(f"{what} is not valid Python: {exc.msg} at line {exc.lineno}") from None
        return tree
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"{what} cannot be parsed as Python: {type(exc).__name__}") from None


def _parse_newer_fstrings(text: str) -> ast.Module | None:
    """Python 3.12 f-strings (quotes reused inside braces) break 3.11's ast; libcst reads them.

    Each f-string is replaced by a plain string with the same number of newlines, so the
    ast keeps every line number; f-string contents (log messages) carry nothing we analyze.
    """
    if sys.version_info < (3, 12):
        try:
            return ast.parse(blank_fstrings(text))  # fast path: a scanner, no libcst parse
        except SyntaxError:
            pass
    import libcst as cst

    class _Blank(cst.CSTTransformer):
        def leave_FormattedString(self, original, updated):
            newlines = cst.Module(body=[]).code_for_node(original).count("\n")
            return cst.SimpleString('"""' + "\n" * newlines + '"""' if newlines else '""')

    try:
        module = cst.parse_module(text)
        return ast.parse(module.visit(_Blank()).code)
    except Exception:
        return None


_STRING_START = re.compile(r"""(?i)(?<![\w.])([rbuf]{0,2})('''|""" + '"""' + r"""|'|")""")


def blank_fstrings(text: str) -> str:
    """Replace every f-string by an empty string of the same line count.

    A scanner, not a parser: it skips comments and plain strings, and inside an f-string's
    braces it skips nested strings whatever their quotes (what 3.12 allows and 3.11 cannot
    tokenize)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(text[i:end])
            i = end
            continue
        match = _STRING_START.match(text, i) if ch in "\"'rRbBuUfF" else None
        if match is None:
            out.append(ch)
            i += 1
            continue
        prefix, quote = match.group(1), match.group(2)
        end = _string_end(text, match.end(), quote, "f" in prefix.lower())
        if "f" in prefix.lower():
            newlines = text.count("\n", i, end)
            out.append('"""' + "\n" * newlines + '"""' if newlines else '""')
        else:
            out.append(text[i:end])
        i = end
    return "".join(out)


def _string_end(text: str, i: int, quote: str, formatted: bool) -> int:
    """Index just past the closing quote of a string whose body starts at i."""
    n, depth = len(text), 0
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if formatted and ch == "{":
            if depth == 0 and text.startswith("{{", i):
                i += 2
                continue
            depth += 1
        elif formatted and ch == "}" and depth:
            depth -= 1
        elif depth and ch in "\"'":
            nested = '"""' if text.startswith('"""', i) else "'''" if text.startswith("'''", i) else ch
            i = _string_end(text, i + len(nested), nested, text[i - 1:i].lower() == "f")
            continue
        elif not depth and text.startswith(quote, i):
            return i + len(quote)
        elif not depth and ch == "\n" and len(quote) == 1:
            return i  # unterminated: stop at the line end
        i += 1
    return n


def read_source(path: Path) -> Source:
    """Read a Python file, unpacking an exec'd blob if the file is a packer stub."""
    raw = read_bytes_checked(path)
    text = decode_text(raw)
    tree = parse_python(text)
    source = Source(path=path, text=text, raw_bytes=raw)
    layers: list[str] = []
    for _ in range(MAX_PACK_DEPTH):
        found = find_exec_payload(tree, path.parent)
        if found is None:
            break
        payload, how, line = found
        if not source.exec_line:
            source.exec_line = line
        layers.append(how)
        text = payload
        tree = parse_python(text, what=f"decoded source ({how})")
    if layers:
        source.text = text
        source.packing = " > ".join(layers)
    source.tree = tree
    return source


# --- static unpacking ---------------------------------------------------------

_B2B = {
    "b85decode": base64.b85decode,
    "b64decode": base64.b64decode,
    "standard_b64decode": base64.standard_b64decode,
    "urlsafe_b64decode": base64.urlsafe_b64decode,
    "decodebytes": base64.decodebytes,
    "a85decode": base64.a85decode,
    "b32decode": base64.b32decode,
    "b16decode": base64.b16decode,
    "unhexlify": binascii.unhexlify,
    "a2b_base64": binascii.a2b_base64,
}
_ENCODING_TAG = {
    "b85decode": "b85", "a85decode": "a85", "b32decode": "b32", "b16decode": "hex", "unhexlify": "hex",
}
_DECOMPRESSORS = ("lzma", "zlib", "gzip", "bz2", "brotli")


class _Unknown(Exception):
    pass


def _bounded_lzma(data: bytes, kwargs: dict) -> bytes:
    dec = lzma.LZMADecompressor(**kwargs)
    out = dec.decompress(data, max_length=MAX_UNPACKED_BYTES + 1)
    if len(out) > MAX_UNPACKED_BYTES:
        raise _Unknown("decompressed payload too large")
    return out


def _bounded_zlib(data: bytes, wbits: int) -> bytes:
    dec = zlib.decompressobj(wbits)
    out = dec.decompress(data, MAX_UNPACKED_BYTES + 1)
    if len(out) > MAX_UNPACKED_BYTES:
        raise _Unknown("decompressed payload too large")
    return out


def _decompress(module: str, data: bytes, kwargs: dict) -> bytes:
    if module == "lzma":
        return _bounded_lzma(data, {k: v for k, v in kwargs.items() if k in ("format", "filters", "memlimit")})
    if module == "zlib":
        return _bounded_zlib(data, kwargs.get("wbits", zlib.MAX_WBITS))
    if module == "gzip":
        return _bounded_zlib(data, 16 + zlib.MAX_WBITS)
    if module == "brotli":
        try:
            import brotli  # optional: not in the standard library
        except ImportError:
            raise _Unknown("brotli-compressed payload; install the brotli package to unpack it") from None
        decompressor = brotli.Decompressor()
        try:  # brotli 1.2 can cap its output, so a bomb stops early
            out = decompressor.process(data, output_buffer_limit=MAX_UNPACKED_BYTES + 1)
        except TypeError:
            out = decompressor.process(data)
        if len(out) > MAX_UNPACKED_BYTES:
            raise _Unknown("decompressed payload too large")
        return out
    if module == "bz2":
        dec = bz2.BZ2Decompressor()
        out = dec.decompress(data, max_length=MAX_UNPACKED_BYTES + 1)
        if len(out) > MAX_UNPACKED_BYTES:
            raise _Unknown("decompressed payload too large")
        return out
    raise _Unknown(module)


class _Evaluator:
    """Evaluates the tiny expression language of packer stubs over literals."""

    def __init__(self, aliases: dict[str, str], names: dict[str, list[tuple[int, ast.expr]]], folder: Path,
                 line: int):
        self.aliases = aliases  # local name -> module name (import lzma as L)
        self.names = names  # module-level NAME = <expr> assignments, in order, with their lines
        self.folder = folder
        self.steps: list[str] = []
        self.depth = 0
        self.line = line  # a name means its latest assignment above this line (S = S.decode())

    def value(self, node: ast.expr):
        self.depth += 1
        if self.depth > 200:
            raise _Unknown("expression too deep")
        try:
            return self._value(node)
        finally:
            self.depth -= 1

    def _value(self, node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            earlier = [(line, expr) for line, expr in self.names.get(node.id, ()) if line < self.line]
            if not earlier:
                raise _Unknown(node.id)
            line, expr = earlier[-1]
            outer, self.line = self.line, line
            try:
                return self.value(expr)
            finally:
                self.line = outer
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = self.aliases.get(node.value.id, node.value.id)
            if module == "lzma" and hasattr(lzma, node.attr):
                return getattr(lzma, node.attr)
            if module == "zlib" and hasattr(zlib, node.attr):
                return getattr(zlib, node.attr)
            raise _Unknown(f"{module}.{node.attr}")
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {self.value(k): self.value(v) for k, v in zip(node.keys, node.values) if k is not None}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.value(node.left) + self.value(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # lzma preset flags
            left, right = self.value(node.left), self.value(node.right)
            if isinstance(left, int) and isinstance(right, int):
                return left | right
            raise _Unknown("BinOp")
        if isinstance(node, ast.Call):
            return self._call(node)
        raise _Unknown(type(node).__name__)

    def _call(self, node: ast.Call):
        func = node.func
        kwargs = {kw.arg: self.value(kw.value) for kw in node.keywords if kw.arg}
        if isinstance(func, ast.Attribute):
            name = func.attr
            owner = func.value
            module = self.aliases.get(owner.id, owner.id) if isinstance(owner, ast.Name) else ""
        elif isinstance(func, ast.Name):
            name = func.id
            module = self.aliases.get(name + ".__from__", "")
            owner = None
        else:
            raise _Unknown("call")
        args = node.args
        # methods on a value: x.decode(), x.encode(), open(...).read(), Path(...).read_text()
        if isinstance(func, ast.Attribute) and module not in self.aliases.values() and module not in (
            *_DECOMPRESSORS, "base64", "binascii", "codecs", "bytes"
        ):
            if name in ("read", "read_text", "read_bytes"):
                return self._read_file(owner)
            if name == "decode":
                value = self.value(owner)
                return value.decode(*(self.value(a) for a in args), **kwargs) if isinstance(value, bytes) else value
            if name == "encode":
                value = self.value(owner)
                return value.encode() if isinstance(value, str) else value
            if name == "replace" and len(args) == 2:
                value = self.value(owner)
                old, new = self.value(args[0]), self.value(args[1])
                if isinstance(value, (str, bytes)) and type(old) is type(value) and type(new) is type(value):
                    return value.replace(old, new)
                raise _Unknown("replace")
            if name == "join" and len(args) == 1:
                separator, parts = self.value(owner), self.value(args[0])
                if isinstance(parts, type(separator)) and isinstance(separator, (str, bytes)):
                    return separator.join([parts])  # "".join(("a" "b")) is one implicit concatenation
                if isinstance(separator, (str, bytes)) and isinstance(parts, list) and all(
                        type(p) is type(separator) for p in parts):
                    return separator.join(parts)
                raise _Unknown("join")
        if name in _B2B:
            data = self.value(args[0])
            if isinstance(data, str):
                data = data.encode("ascii")
            self.steps.append(_ENCODING_TAG.get(name, "b64"))
            return _B2B[name](data)
        if name == "fromhex":
            self.steps.append("hex")
            return bytes.fromhex(self.value(args[0]))
        if name == "decompress":
            data = self.value(args[0])
            candidates = [module] if module in _DECOMPRESSORS else list(_DECOMPRESSORS)
            for candidate in candidates:
                try:
                    out = _decompress(candidate, data, kwargs)
                except _Unknown:
                    raise
                except Exception:
                    continue
                self.steps.append(candidate)
                return out
            raise _Unknown("decompress failed")
        if name == "compile" and args:
            return self.value(args[0])
        if name == "decode" and module == "codecs" and args:
            return self.value(args[0])
        if name in ("str", "bytes") and args:
            value = self.value(args[0])
            if name == "str" and isinstance(value, bytes) and len(args) > 1:
                return value.decode(self.value(args[1]))
            return value
        raise _Unknown(name)

    def _read_file(self, owner: ast.expr | None) -> str:
        # open("x.py") / Path("x.py") / Path(__file__).with_name("x.py") / Path(__file__).parent / "x.py"
        target = None
        replaced: set[int] = set()  # literals that name the file being replaced, not the one read
        for sub in ast.walk(owner) if owner is not None else ():
            # __file__.replace("train_gpt.py", "train_gpt_decode.py") names the second file.
            if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "replace"
                    and len(sub.args) == 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                   for a in sub.args)):
                new = sub.args[1].value
                if new.endswith(".py"):
                    target = new
                    break
                replaced.add(id(sub.args[0]))
        for sub in ast.walk(owner) if owner is not None and target is None else ():
            if (isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.endswith(".py")
                    and id(sub) not in replaced):
                target = sub.value
                break
        if target is None:
            raise _Unknown("read of unknown file")
        path = (self.folder / Path(target).name)
        if not path.is_file():
            raise _Unknown(f"missing sibling {target}")
        self.steps.append(f"file:{path.name}")
        return decode_text(read_bytes_checked(path), what=path.name)


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[(alias.asname or alias.name) + ".__from__"] = node.module.split(".")[0]
    return aliases


def find_exec_payload(tree: ast.Module, folder: Path) -> tuple[str, str, int] | None:
    """Return (decoded source, how it was packed, line of the exec) for a packer stub.

    Only module-level exec() calls count: a packer stub is a few lines that exec one blob.
    """
    if not any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and getattr(s.value.func, "id", "") == "exec"
               for s in tree.body):
        return None
    names: dict[str, list[tuple[int, ast.expr]]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            names.setdefault(stmt.targets[0].id, []).append((stmt.lineno, stmt.value))
    aliases = _import_aliases(tree)
    failure = ""
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "exec" and call.args):
            continue
        evaluator = _Evaluator(aliases, names, folder, stmt.lineno)
        try:
            payload = evaluator.value(call.args[0])
        except (_Unknown, ValueError, TypeError, KeyError, IndexError, LookupError, lzma.LZMAError, zlib.error, OSError) as exc:
            failure = f"line {stmt.lineno}: {exc or type(exc).__name__}"
            continue
        except SourceError as exc:
            failure = f"line {stmt.lineno}: {exc}"
            continue
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                continue
        if not isinstance(payload, str) or not evaluator.steps:
            continue
        how = "+".join(reversed(evaluator.steps))
        return payload, how, stmt.lineno
    code_statements = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    if failure and len(code_statements) <= 5:
        # A packer stub whose payload we cannot read: judging the stub would call it clean.
        raise SourceError(f"the script execs code that cannot be unpacked statically ({failure})")
    return None
