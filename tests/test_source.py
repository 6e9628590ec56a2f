"""Reading and unpacking submission source."""

from __future__ import annotations

import ast

from auditor.source import blank_fstrings, parse_python


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
