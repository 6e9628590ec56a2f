"""Reading submission files safely, and unpacking code that a script `exec`s.

Nothing here runs submission code: packed scripts are decoded by evaluating only
string literals through a fixed set of decoders (base64/b85/a85/hex, lzma/zlib/gzip/bz2).

Every read is bounded: a file is stat'ed before it is opened (regular files only, no
FIFOs or devices, no link that leads out of its folder, a size limit), and decompression
stops at an output limit per layer and in total. A `FileReader` made active for a
command run (`with reader.active():`) makes every read of a file after the first come
from memory, so each submission file is read once per run.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import contextlib
import contextvars
import errno
import lzma
import os
import re
import stat
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 5_000_000
# A decoded layer is source code: no record's script is near this (the largest are ~150 KB).
MAX_UNPACKED_BYTES = MAX_FILE_BYTES
# All layers of one script together (a bomb nested in layers stops here).
MAX_UNPACKED_TOTAL = 2 * MAX_FILE_BYTES
MAX_PACK_DEPTH = 8
# Deeper bracket nesting than this is refused before libcst sees it (libcst segfaults
# on a few thousand nested parentheses; CPython's own parser stops at 200).
MAX_NESTING = 150


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


# --- bounded reading ------------------------------------------------------------------


def _open_regular(path: Path, limit: int, root: Path | None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, checked before it is opened."""
    try:
        info = os.lstat(path)
        target = path
        if stat.S_ISLNK(info.st_mode):
            target = path.resolve()
            base = (root or path.parent).resolve()
            if base not in target.parents and target != base:
                raise SourceError(f"{path.name} is a link that leads out of its folder")
            info = os.stat(target)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path} is not a regular file")
    if info.st_size > limit:
        raise _TooLarge(f"file is {info.st_size:,} bytes, over the {limit:,}-byte limit")
    try:
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the open.
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError(f"{path.name} is a link that leads out of its folder") from None
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{path} is not a regular file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _TooLarge(f"file is over the {limit:,}-byte limit")
        return b"".join(chunks)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


class _TooLarge(SourceError):
    pass


class FileReader:
    """Reads each file once per command run; later reads of it come from memory.

    `root` bounds where links may lead. `opens` counts the files actually opened.
    """

    def __init__(self, root: Path | None = None):
        self.root = root
        self.opens = 0
        self._read: dict[Path, tuple[int, bytes | SourceError]] = {}

    def read(self, path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
        key = Path(os.path.abspath(path))
        known = self._read.get(key)
        # Read again only when an earlier, smaller limit refused the file.
        if known is None or (isinstance(known[1], _TooLarge) and limit > known[0]):
            self.opens += 1
            try:
                known = (limit, _open_regular(key, limit, self.root))
            except SourceError as exc:
                known = (limit, exc)
            self._read[key] = known
        found = known[1]
        if isinstance(found, SourceError):
            raise type(found)(str(found))
        if len(found) > limit:
            raise _TooLarge(f"file is {len(found):,} bytes, over the {limit:,}-byte limit")
        return found

    @contextlib.contextmanager
    def active(self):
        token = _ACTIVE_READER.set(self)
        try:
            yield self
        finally:
            _ACTIVE_READER.reset(token)


_ACTIVE_READER: contextvars.ContextVar[FileReader | None] = contextvars.ContextVar("auditor_reader", default=None)


def read_bytes_checked(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes, bounded (see the module docstring); raises SourceError with a reason."""
    reader = _ACTIVE_READER.get()
    if reader is not None:
        return reader.read(Path(path), limit)
    return _open_regular(Path(path), limit, None)


def is_regular_file(path: Path) -> bool:
    """A regular file (a link to one counts), never a FIFO or a device."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


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
        error = exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"{what} cannot be parsed as Python: {type(exc).__name__}") from None
    tree = _parse_newer_fstrings(text, what)
    if tree is None:
        raise SourceError(f"{what} is not valid Python: {error.msg} at line {error.lineno}")
    return tree


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of `text` (brackets inside strings count too: an upper bound)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


_BRACKET = re.compile(r"[()\[\]{}]")


def _parse_newer_fstrings(text: str, what: str = "file") -> ast.Module | None:
    """Python 3.12 f-strings (quotes reused inside braces) break 3.11's ast; libcst reads them.

    Each f-string is replaced by a plain string with the same number of newlines, so the
    ast keeps every line number; f-string contents (log messages) carry nothing we analyze.
    libcst is only given text whose nesting is shallow: it crashes the process on deep code.
    """
    if sys.version_info < (3, 12):
        try:
            return ast.parse(blank_fstrings(text))  # fast path: a scanner, no libcst parse
        except SyntaxError:
            pass
        except (ValueError, RecursionError, MemoryError):
            raise SourceError(f"{what} is nested too deeply to analyze") from None
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise SourceError(f"{what} is nested too deeply to analyze ({depth} levels of brackets, "
                          f"the limit is {MAX_NESTING})")
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

    Static analysis reads nothing inside f-strings, so they are blanked; smoke runs the
    code, so `requote_nested_fstrings` re-quotes them instead, keeping what they do."""
    out: list[str] = []
    last = 0
    for start, end, prefix, _quote, _inner in _literals(text):
        if "f" in prefix.lower():
            newlines = text.count("\n", start, end)
            out += [text[last:start], '"""' + "\n" * newlines + '"""' if newlines else '""']
            last = end
    return "".join(out) + text[last:]


def requote_nested_fstrings(text: str) -> str:
    """`text` with each literal inside an f-string's braces that reuses the f-string's quote
    re-quoted with the other one: Python 3.12 (PEP 701) reads `f"{", ".join(xs)}"`, 3.11
    needs `f"{', '.join(xs)}"`. Best effort; nothing else changes (line numbers stay)."""
    swaps: list[int] = []  # offsets of quote characters to swap

    def visit(quote: str, inner: list) -> None:
        for start, end, nested_quote, nested_inner in inner:
            closed = end - start >= 2 * len(nested_quote) and text.startswith(nested_quote, end - len(nested_quote))
            if len(quote) == 1 and nested_quote[0] == quote and closed:
                swaps.extend(range(start, start + len(nested_quote)))
                swaps.extend(range(end - len(nested_quote), end))
            visit(nested_quote, nested_inner)

    for _start, _end, prefix, quote, inner in _literals(text):
        if "f" in prefix.lower():
            visit(quote, inner)
    if not swaps:
        return text
    chars = list(text)
    for offset in swaps:
        chars[offset] = "'" if chars[offset] == '"' else '"'
    return "".join(chars)


def _literals(text: str):
    """The string literals of `text`, outside comments: (start, end, prefix, quote, inner),
    `inner` the literals inside an f-string's braces as (start of the quote, end, quote,
    their inner). The one scanner of Python string syntax here: a scanner, not a parser; it
    skips comments and reads nested strings inside braces whatever their quotes (what 3.12
    allows and 3.11 cannot tokenize)."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        match = _STRING_START.match(text, i) if ch in "\"'rRbBuUfF" else None
        if match is None:
            i += 1
            continue
        prefix, quote = match.group(1), match.group(2)
        inner: list = []
        end = _string_end(text, match.end(), quote, "f" in prefix.lower(), inner)
        yield i, end, prefix, quote, inner
        i = end


def _string_end(text: str, i: int, quote: str, formatted: bool, inner: list | None = None) -> int:
    """Index just past the closing quote of a string whose body starts at i; the literals
    inside its braces are appended to `inner`."""
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
            nested_inner: list = []
            end = _string_end(text, i + len(nested), nested, text[i - 1:i].lower() == "f", nested_inner)
            if inner is not None:
                inner.append((i, end, nested, nested_inner))
            i = end
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
    source = Source(path=path, text=text, raw_bytes=raw)
    text, tree, layers, source.exec_line = unpack(text, parse_python(text), path.parent)
    if layers:
        source.text = text
        source.packing = " > ".join(layers)
    source.tree = tree
    return source


class LayerError(SourceError):
    """A decoded layer that is not valid Python; `payload` is its text."""

    def __init__(self, message: str, payload: str):
        super().__init__(message)
        self.payload = payload


def _parse_kept(text: str, what: str) -> tuple[str, ast.Module]:
    return text, parse_python(text, what)


def unpack(text: str, tree: ast.Module, folder: Path, parse=_parse_kept, extra_layer=None
           ) -> tuple[str, ast.Module, list[str], int]:
    """Follow a script's exec'd layers down to the code that runs: (text, tree, how each layer
    was packed, line of the first exec). The one unpacking loop, for classify and smoke.

    parse(text, what) -> (text, tree) reads a decoded layer (smoke rewrites 3.12 f-strings
    where classify keeps the text); extra_layer(text, tree) -> (payload, how) | None finds a
    layer that find_exec_payload does not (smoke: a tiny stub that runs a sibling file).
    Raises LayerError for a layer that does not parse, SourceError for packing deeper than
    MAX_PACK_DEPTH or a stub whose payload cannot be read.
    """
    budget = UnpackBudget()
    layers: list[str] = []
    exec_line = 0
    while True:
        found = find_exec_payload(tree, folder, budget)
        if found is not None and found[0] == text:
            found = None  # `exec(open(__file__).read())`: the script reads itself
        if found is None and extra_layer is not None:
            extra = extra_layer(text, tree)
            found = (extra[0], extra[1], 0) if extra is not None else None
        if found is None:
            return text, tree, layers, exec_line
        if len(layers) == MAX_PACK_DEPTH:
            raise SourceError(f"the script is packed more than {MAX_PACK_DEPTH} layers deep "
                              f"({' > '.join(layers)} > ...): refused rather than judged unread")
        payload, how, line = found
        exec_line = exec_line or line
        layers.append(how)
        try:
            text, tree = parse(payload, f"decoded source ({how})")
        except LayerError:
            raise
        except SourceError as exc:
            raise LayerError(str(exc), payload) from None


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


@dataclass
class UnpackBudget:
    """Decompressed bytes still allowed for one script, all layers together."""

    remaining: int = MAX_UNPACKED_TOTAL

    def limit(self) -> int:
        return min(MAX_UNPACKED_BYTES, self.remaining)

    def spend(self, data: bytes) -> bytes:
        if len(data) > self.limit():
            raise _Unknown(f"decompressed payload over the {self.limit():,}-byte limit")
        self.remaining -= len(data)
        return data


_LZMA_MEMLIMIT = 256 << 20


def _decompress(module: str, data: bytes, kwargs: dict, budget: UnpackBudget) -> bytes:
    """Decompress with an output bound: a bomb stops at the limit, never at memory's end."""
    cap = budget.limit() + 1
    if module == "lzma":
        options = {k: v for k, v in kwargs.items() if k in ("format", "filters")}
        if options.get("format", lzma.FORMAT_AUTO) in (lzma.FORMAT_AUTO, lzma.FORMAT_XZ, lzma.FORMAT_ALONE):
            options["memlimit"] = _LZMA_MEMLIMIT
        out = lzma.LZMADecompressor(**options).decompress(data, max_length=cap)
    elif module in ("zlib", "gzip"):
        wbits = 16 + zlib.MAX_WBITS if module == "gzip" else kwargs.get("wbits", zlib.MAX_WBITS)
        out = zlib.decompressobj(wbits).decompress(data, cap)
    elif module == "bz2":
        out = bz2.BZ2Decompressor().decompress(data, max_length=cap)
    elif module == "brotli":
        try:
            import brotli  # optional: not in the standard library
        except ImportError:
            raise _Unknown("brotli-compressed payload; install the brotli package to unpack it") from None
        decompressor = brotli.Decompressor()
        try:  # brotli 1.2 can cap its output, so a bomb stops early
            out = decompressor.process(data, output_buffer_limit=cap)
        except TypeError:
            if len(data) * 64 > cap:  # an old brotli cannot cap: refuse what could be a bomb
                raise _Unknown("brotli payload too large for this brotli version to unpack safely") from None
            out = decompressor.process(data)
    else:
        raise _Unknown(module)
    return budget.spend(out)


def _bounded(value):
    """A literal built by concatenation stays under the file limit (`S = S + S` doubles)."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_UNPACKED_TOTAL:
        raise _Unknown("a literal built from parts grows over the size limit")
    return value


class _Evaluator:
    """Evaluates the tiny expression language of packer stubs over literals."""

    def __init__(self, aliases: dict[str, str], names: dict[str, list[tuple[int, ast.expr]]], folder: Path,
                 line: int, budget: UnpackBudget):
        self.budget = budget
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
            return _bounded(self.value(node.left) + self.value(node.right))
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
                    return _bounded(value.replace(old, new))
                raise _Unknown("replace")
            if name == "join" and len(args) == 1:
                separator, parts = self.value(owner), self.value(args[0])
                if isinstance(parts, type(separator)) and isinstance(separator, (str, bytes)):
                    return separator.join([parts])  # "".join(("a" "b")) is one implicit concatenation
                if isinstance(separator, (str, bytes)) and isinstance(parts, list) and all(
                        type(p) is type(separator) for p in parts):
                    return _bounded(separator.join(parts))
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
                    out = _decompress(candidate, data, kwargs, self.budget)
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


def _import_aliases(tree: ast.Module, nodes: list[ast.AST] | None = None) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in nodes if nodes is not None else ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[(alias.asname or alias.name) + ".__from__"] = node.module.split(".")[0]
    return aliases


_EXEC_BUILTINS = ("exec", "eval")
_BUILTINS_MODULES = ("builtins", "__builtin__", "__builtins__")


def _exec_names(nodes: list[ast.AST], aliases: dict[str, str]) -> set[str]:
    """Names that stand for exec/eval: the builtins and their aliases (`run = exec`,
    `from builtins import exec as run`, `go = builtins.exec`)."""
    names = set(_EXEC_BUILTINS)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module in _BUILTINS_MODULES:
            names.update(a.asname or a.name for a in node.names if a.name in _EXEC_BUILTINS)
    assigns = [n for n in nodes if isinstance(n, ast.Assign)]
    grown = True
    while grown:  # run = exec; go = run
        grown = False
        for node in assigns:
            if not _is_exec_ref(node.value, names, aliases):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id not in names:
                    names.add(target.id)
                    grown = True
    return names


def _is_exec_ref(node: ast.expr, names: set[str], aliases: dict[str, str]) -> bool:
    """`exec`, an alias of it, `builtins.exec`, `__builtins__["exec"]`, `getattr(builtins, "exec")`."""
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = aliases.get(node.value.id, node.value.id)
        return node.attr in _EXEC_BUILTINS and module in _BUILTINS_MODULES
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value in _EXEC_BUILTINS
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
        return node.args[1].value in _EXEC_BUILTINS
    return False


def _module_scope_nodes(tree: ast.Module) -> list[ast.AST]:
    """The nodes of module scope: everything but the insides of functions, lambdas and classes."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return nodes


def _is_stub(tree: ast.Module) -> bool:
    """A packer stub: a few statements beside its imports (a real script has hundreds)."""
    body = tree.body[1:] if tree.body and _is_docstring(tree.body[0]) else tree.body
    return len([s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]) <= 5


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def find_exec_payload(tree: ast.Module, folder: Path, budget: UnpackBudget | None = None
                      ) -> tuple[str, str, int] | None:
    """Return (decoded source, how it was packed, line of the exec) for a packer stub.

    Any call of exec/eval counts, however it is spelled (aliases, `builtins.exec`, inside
    an `if` or a function). A stub (a few statements) whose payload cannot be decoded, or
    decodes to something that is not text, raises SourceError: judging the stub alone
    would call it clean.
    """
    budget = budget or UnpackBudget()
    stub = _is_stub(tree)
    # One walk, every pass below filters its list. In a real script only a module-level
    # exec replaces the code we judge, and names it uses are bound at module scope: the
    # walk skips function and class bodies (most of a 3,000-line script).
    nodes = list(ast.walk(tree)) if stub else _module_scope_nodes(tree)
    aliases = _import_aliases(tree, nodes)
    callers = _exec_names(nodes, aliases)
    calls = sorted((node for node in nodes if isinstance(node, ast.Call) and node.args
                    and _is_exec_ref(node.func, callers, aliases)), key=lambda call: call.lineno)
    if not stub:
        top = {id(s.value) for s in tree.body if isinstance(s, ast.Expr)}
        calls = [call for call in calls if id(call) in top]
    if not calls:
        return None
    names: dict[str, list[tuple[int, ast.expr]]] = {}
    for node in sorted((n for n in nodes if isinstance(n, ast.Assign)), key=lambda n: n.lineno):
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names.setdefault(node.targets[0].id, []).append((node.lineno, node.value))
    failure = ""
    for call in calls:
        evaluator = _Evaluator(aliases, names, folder, call.lineno, budget)
        try:
            payload = evaluator.value(call.args[0])
        except (_Unknown, ValueError, TypeError, KeyError, IndexError, LookupError, lzma.LZMAError, zlib.error,
                OSError, MemoryError) as exc:
            failure = f"line {call.lineno}: {exc or type(exc).__name__}"
            continue
        except SourceError as exc:
            failure = f"line {call.lineno}: {exc}"
            continue
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                failure = f"line {call.lineno}: the decoded payload is not UTF-8 text"
                continue
        if not isinstance(payload, str):
            failure = f"line {call.lineno}: the exec'd value is a {type(payload).__name__}, not code"
            continue
        if not evaluator.steps:
            if not stub:
                continue  # a script that execs a literal line of its own: nothing hidden
            evaluator.steps.append("literal")
        how = "+".join(reversed(evaluator.steps))
        return payload, how, call.lineno
    if failure and stub:
        raise SourceError(f"the script execs code that cannot be unpacked statically ({failure})")
    return None
