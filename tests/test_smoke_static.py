"""`auditor smoke`, static parts: f-string rewriting, model discovery, configuration."""

import ast
import subprocess
import sys
import textwrap

from auditor.smoke.discover import discover_model, strip_entry_calls
from auditor.smoke.fstrings import rewrite_nested_fstrings
from auditor.smoke.sandbox import is_secret_name, scrubbed_environment


def test_pep701_fstrings_are_rewritten_for_this_python():
    source = 'cats = {"a": [1]}\nfor c in cats: print(f"  {c}: {", ".join(map(str, cats[c]))} {cats["a"]!r}")\n'
    rewritten = rewrite_nested_fstrings(source)
    compile(rewritten, "x", "exec")
    assert rewritten.count("\n") == source.count("\n")


def test_valid_source_is_left_alone():
    source = 'x = f"{1:>{2}}" + f"""{"a"}""" + rf"\\d{{3}}" + "#" # f"{"\n'
    assert rewrite_nested_fstrings(source) == source


def test_discovery_finds_the_model_and_its_config_binding():
    tree = ast.parse(textwrap.dedent("""
        import torch.nn as nn
        class Hyperparameters:
            vocab_size = 64
        class Block(nn.Module):
            pass
        class GPT(nn.Module):
            def __init__(self, vocab_size):
                self.blocks = nn.ModuleList([Block() for _ in range(2)])
        def train_model(h, device):
            helper = Block()
            base_model = GPT(vocab_size=h.vocab_size).to(device)
        def main():
            h = Hyperparameters()
            train_model(h, "cuda")
        if __name__ == "__main__":
            main()
    """))
    best = discover_model(tree).candidates[0]
    assert best.class_name == "GPT"
    assert best.call == "GPT(vocab_size=h.vocab_size)"
    assert best.bindings == ["h = Hyperparameters()"]
    assert best.attr_uses == {"h": ["vocab_size"]}


def test_unguarded_entry_calls_are_stripped_keeping_line_numbers():
    text = "def main():\n    pass\nmain(\n)\nx = 1\n"
    discovery = discover_model(ast.parse(text))
    stripped = strip_entry_calls(text, discovery.entry_calls)
    assert stripped == "def main():\n    pass\npass\n\nx = 1\n"


def test_environment_is_scrubbed():
    base = {"HF_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k", "https_proxy": "p", "DB_PASSWORD": "x",
            "GCP_CREDENTIALS": "c", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"}
    env = scrubbed_environment(base, {"NUM_LAYERS": "11"})
    assert env["PATH"] == "/bin" and env["NUM_LAYERS"] == "11"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert not [k for k in env if is_secret_name(k)]


def test_importing_the_package_does_not_import_torch():
    code = "import sys, auditor.smoke, auditor.smoke.command; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
