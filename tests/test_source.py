"""Reading and unpacking submission source."""

from __future__ import annotations

import ast

import pytest

from auditor.source import blank_fstrings, parse_python, read_source


def test_blank_fstrings_keeps_lines_and_other_strings():
    text = (
        'x = f"a {d["k"]} b {y!r:>{w}}" + \'c#\'  # comment "q"\n'
        "z = f'''multi\n{d['a']}\n'''\n"
        'w = "plain {x}"\n'
    )
    blanked = blank_fstrings(text)
    assert len(blanked.splitlines()) == len(text.splitlines())
    tree = ast.parse(blanked)
    assert ast.unparse(tree.body[-1]) == "w = 'plain {x}'"
    assert "c#" in blanked


def test_python_312_fstrings_parse_with_their_line_numbers():
    text = 'import os\nname = f"{os.environ["USER"]}"\ndef main():\n    return 1\n'
    tree = parse_python(text)
    assert [type(s).__name__ for s in tree.body] == ["Import", "Assign", "FunctionDef"]
    assert tree.body[2].lineno == 3


PAYLOAD = "def main():\n    return 42\n"


def _b85_lzma(text: str) -> str:
    import base64
    import lzma

    return base64.b85encode(lzma.compress(text.encode())).decode()


@pytest.mark.parametrize("stub", [
    # a blob split over lines, joined back
    'import lzma as L, base64 as B\n_DATA = (\n    "{a}"\n    "{b}"\n)\nexec(L.decompress(B.b85decode("".join(_DATA))))\n',
    # newlines stripped out of a bytes literal
    'import lzma, base64\n_b = b"""{a}\n{b}"""\nexec(lzma.decompress(base64.b85decode(_b.replace(b"\\n", b""))).decode("utf-8"))\n',
    # the same name reassigned, then compiled
    'import lzma as L, base64 as B\nS = L.decompress(B.b85decode("{a}{b}"))\nS = S.decode()\nexec(compile(S, "x", "exec"))\n',
])
def test_packer_stub_shapes_are_unpacked(tmp_path, stub):
    blob = _b85_lzma(PAYLOAD)
    half = len(blob) // 2
    path = tmp_path / "train_gpt.py"
    path.write_text(stub.replace("{a}", blob[:half]).replace("{b}", blob[half:]))
    source = read_source(path)
    assert source.packing and source.text == PAYLOAD


def test_brotli_stub_is_unpacked(tmp_path):
    import base64

    brotli = pytest.importorskip("brotli")
    blob = base64.b85encode(brotli.compress(PAYLOAD.encode())).decode()
    path = tmp_path / "train_gpt.py"
    path.write_text(f'import brotli as B, base64 as b\nexec(B.decompress(b.b85decode("{blob}")))\n')
    assert read_source(path).packing == "brotli+b85"
