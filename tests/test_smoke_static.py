"""`auditor smoke`, static parts: f-string rewriting, model discovery, configuration."""

import ast
import subprocess
import sys
import textwrap

from auditor.smoke.discover import discover_model, strip_entry_calls
from auditor.smoke.sandbox import is_secret_name, scrubbed_environment
from auditor.source import requote_nested_fstrings


def test_pep701_fstrings_are_rewritten_for_this_python():
    source = 'cats = {"a": [1]}\nfor c in cats: print(f"  {c}: {", ".join(map(str, cats[c]))} {cats["a"]!r}")\n'
    rewritten = requote_nested_fstrings(source)
    compile(rewritten, "x", "exec")
    assert rewritten.count("\n") == source.count("\n")


def test_nested_fstrings_are_requoted_against_their_own_quote():
    # Inside a triple-quoted f-string, a nested f"..." holding "a": "a" takes the other quote.
    triple = 'x = f"""{f"{"a" + ' + "'b'" + '}"}"""\n'
    assert requote_nested_fstrings(triple) == 'x = f"""{f"{' + "'a' + 'b'" + '}"}"""\n'
    single = "y = f'{\"c\"}{d['k']}'\n"
    assert requote_nested_fstrings(single) == "y = f'{\"c\"}{d[\"k\"]}'\n"


def test_valid_source_is_left_alone():
    source = 'x = f"{1:>{2}}" + f"""{"a"}""" + rf"\\d{{3}}" + "#" # f"{"\n'
    assert requote_nested_fstrings(source) == source


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


# --- run configuration (auditor.submission) -----------------------------------------

from pathlib import Path  # noqa: E402

from auditor.source import find_exec_payload  # noqa: E402
from auditor.submission import log_values, read_run_config, readme_env  # noqa: E402


def test_readme_env_reads_the_command_of_the_script_that_runs():
    readme = textwrap.dedent("""
        ```bash pip install zstandard```

        ```bash
        # main run
        NUM_LAYERS=12 \\
        MLP_MULT=3 \\
        torchrun --standalone --nproc_per_node=8 train_gpt.py

        # baseline for comparison
        NUM_LAYERS=9 torchrun --standalone --nproc_per_node=8 train_gpt.py
        ```

        ```bash
        NUM_KV_HEADS=2 torchrun --nproc_per_node=8 other/train_other.py
        ```
    """)
    assert readme_env(readme, "train_gpt.py") == {"NUM_LAYERS": "12", "MLP_MULT": "3"}
    assert readme_env(readme, "train_other.py") == {"NUM_KV_HEADS": "2"}


def test_log_values_skip_echoed_source_and_keep_lists():
    source = "\n".join(['"""A script."""', "import os", "class Hyperparameters:"]
                       + [f'    x{i} = int(os.environ.get("X{i}", {i}))' for i in range(30)]
                       + ["    vocab_size: int", '    log0(f"model_params:{n}")', 'print(f"WORLD_SIZE={h.world_size}")'])
    log = source + "\n" + "=" * 100 + textwrap.dedent("""
        model_params:123
        ve_layers: 9,10 xsa_layers:[2, 3, 4] tie_embeddings:True
        mixed_quant: 32 int6, 35 int5
        WORLD_SIZE={h.world_size}
    """)
    values, env = log_values(log)
    assert values["model_params"] == "123"
    assert values["ve_layers"] == "9,10" and values["xsa_layers"] == "2,3,4"
    assert "vocab_size" not in values and "x0" not in values and "mixed_quant" not in values
    assert "WORLD_SIZE" not in env


def test_log_values_win_over_the_readme(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("matrix_lr:0.02 num_layers:9 parallel_residual:converged\nmlp_hidden:1536\n")
    readme = "```bash\nMATRIX_LR=0.06 NUM_LAYERS=9 PARALLEL_RESIDUAL=1 MLP_HIDDEN=992 EXTRA=5 torchrun train_gpt.py\n```\n"
    config = read_run_config(readme, [log], tmp_path / "train_gpt.py")
    assert config.env["MATRIX_LR"] == "0.02" and config.env["MLP_HIDDEN"] == "1536"
    assert config.env["PARALLEL_RESIDUAL"] == "1"  # a status word does not replace a flag
    assert config.env["EXTRA"] == "5" and config.sources == ["readme", "log"]


def test_exec_of_file_replace_reads_the_replacement(tmp_path):
    stub = 'exec(open(__file__.replace("train_gpt.py", "train_gpt_decode.py")).read())\n'
    (tmp_path / "train_gpt.py").write_text(stub)
    (tmp_path / "train_gpt_decode.py").write_text("x = 1\n")
    payload, how, _ = find_exec_payload(ast.parse(stub), tmp_path)
    assert payload == "x = 1\n" and how == "file:train_gpt_decode.py"


def test_discovery_sees_through_method_chains():
    tree = ast.parse(textwrap.dedent("""
        import torch.nn as nn
        class GPT(nn.Module):
            pass
        def main():
            eval_model = GPT(1).to("cpu").bfloat16()
            base_model = GPT(2).to("cpu").bfloat16()
        if __name__ == "__main__":
            main()
    """))
    assert discover_model(tree).candidates[0].call == "GPT(2)"
