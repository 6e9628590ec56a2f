"""The metamorphic transforms of bench/_transforms.py keep behaviour: small programs (classes,
closures, keyword arguments, dataclasses, helper modules, a torch module) run before and
after each transform in a subprocess and must print the same thing, while the names and
shapes the transform promises to change did change."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._transforms import TRANSFORMS, TransformError, rename, transform_folder  # noqa: E402

PLAIN = {
    "train_gpt.py": textwrap.dedent('''
        import math
        from dataclasses import dataclass, field


        @dataclass
        class Settings:
            width: int = 4
            scale: float = 0.5
            labels: list = field(default_factory=lambda: ["a", "b"])


        class Counter:
            def __init__(self, start, step_size=1):
                self.tally = start
                self.step_size = step_size
                self.weight = 2  # a name library objects have: kept

            def bump(self, times=1):
                for _ in range(times):
                    self.tally += self.step_size
                return self.tally

            @property
            def doubled(self):
                return self.tally * self.weight


        class Fancy(Counter):
            def __init__(self, start):
                super().__init__(start, step_size=3)


        def make_adder(offset):
            def add(value, extra=0):
                return value + offset + extra
            return add


        def accumulate(items, *, factor=1.0, **options):
            result = 0.0
            seen = []
            for index, item in enumerate(items):
                if index % 2 == 0:
                    continue
                result += item * factor
                seen.append(index)
            squares = [k * k for k in items if k > 1]
            table = {k: v for k, v in zip(items, squares)}
            return result, squares, table, sorted(options), seen


        def countdown(limit, stride):
            total = 0
            for tick in range(limit, 0, -stride):
                total += tick
            for tick in range(0, limit, stride):
                if tick > 7:
                    break
                total -= tick
            else:
                total += 1000
            for first, second in [(1, 2), (3, 4)]:
                total += first * second
            for c in "xyz":
                pass
            else:
                total += 1
            return total, tick, c


        def nested(rows):
            best = None
            out = []
            for row in rows:
                peak = max(row)
                if best is None or peak > best:
                    best = peak
                for cell in row:
                    if cell < 0:
                        break
                    out.append(cell)
            return best, out, peak


        def main():
            cfg = Settings(width=3, scale=0.25)
            counter = Counter(10, step_size=cfg.width)
            counter.bump(times=2)
            adder = make_adder(offset=5)
            print(counter.tally, counter.doubled, adder(1, extra=2), Fancy(1).bump())
            print(accumulate([1, 2, 3, 4], factor=cfg.scale, verbose=True))
            print(getattr(cfg, "width"), math.sqrt(16), cfg.labels)
            print(countdown(10, 2), countdown(5, 1), nested([[1, 5, -1, 7], [9, 2]]))
            step = 0
            while step < 3:
                step += 1
            print(step, [x * step for x in range(3)])


        if __name__ == "__main__":
            main()
    '''),
}

HELPER = {
    "helper.py": textwrap.dedent('''
        SCALE = 3


        def combine(left, right, weight_factor=2):
            return left * weight_factor + right


        class Store:
            def __init__(self):
                self.items = {}

            def put(self, key, amount):
                self.items[key] = self.items.get(key, 0) + amount
                return self.items[key]
    '''),
    "train_gpt.py": textwrap.dedent('''
        import helper
        from helper import Store, combine as mix


        def run(values):
            store = Store()
            acc = 0
            for position, value in enumerate(values):
                acc = mix(acc, value, weight_factor=helper.SCALE)
                store.put(position % 2, value)
            return acc, store.items, helper.combine(1, 2)


        print(run([1, 2, 3]))
    '''),
}

TORCH = {
    "train_gpt.py": textwrap.dedent('''
        import os
        import torch
        import torch.nn as nn
        import torch.nn.functional as F


        class Hyperparameters:
            ttt_epochs = int(os.environ.get("TTT_EPOCHS", 2))
            hidden_size = 8


        class Block(nn.Module):
            def __init__(self, dim, bias=False):
                super().__init__()
                self.proj = nn.Linear(dim, dim, bias=bias)
                self.attn_scale = nn.Parameter(torch.ones(dim))

            def forward(self, inputs, gate=None):
                out = self.proj(inputs) * self.attn_scale
                return out if gate is None else out * gate


        def train(model, data, epochs):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for epoch in range(epochs):
                pred = model(data, gate=torch.ones_like(data))
                err = F.mse_loss(pred, data)
                opt.zero_grad()
                err.backward()
                opt.step()
            return err.item()


        torch.manual_seed(0)
        args = Hyperparameters()
        model = Block(args.hidden_size)
        names = [n for n, p in model.named_parameters() if "attn_scale" in n]
        print(names, round(train(model, torch.randn(4, args.hidden_size), args.ttt_epochs), 5))
    '''),
}


def run_program(files: dict[str, str], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    out = subprocess.run([sys.executable, "train_gpt.py"], cwd=folder, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("program", ["plain", "helper"])
def test_transform_keeps_output(tmp_path, transform, program):
    files = {"plain": PLAIN, "helper": HELPER}[program]
    before = run_program(files, tmp_path / "before")
    changed = TRANSFORMS[transform](files)
    assert changed != files
    after = run_program(changed, tmp_path / "after")
    assert after == before
    assert before.strip()


RUN_ALL = """
import contextlib, io, json, os, runpy, sys
outputs = {}
for folder in sys.argv[1:]:
    os.chdir(folder)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        runpy.run_path("train_gpt.py", run_name="__main__")
    outputs[folder] = buffer.getvalue()
print(json.dumps(outputs))
"""


def test_all_transforms_keep_a_torch_module(tmp_path):
    """One interpreter runs the original and every twin (torch is imported once)."""
    folders = {"original": TORCH} | {name: apply(TORCH) for name, apply in sorted(TRANSFORMS.items())}
    for name, files in folders.items():
        assert name == "original" or files != TORCH, name
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    out = subprocess.run([sys.executable, "-c", RUN_ALL, *[str(tmp_path / n) for n in folders]],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    outputs = json.loads(out.stdout)
    before = outputs[str(tmp_path / "original")]
    assert "attn_scale" in before
    for name in folders:
        assert outputs[str(tmp_path / name)] == before, name


def test_rename_changes_defined_names_and_keeps_library_ones():
    text = rename(PLAIN)["train_gpt.py"]
    for defined in ("Settings", "Counter", "make_adder", "accumulate", "offset", "result", "squares",
                    "step_size", "tally", "index", "item", "bump", "factor", "extra"):
        assert not re.search(rf"\b{defined}\b", text), defined
    assert "width: int" in text  # getattr(cfg, "width") spells it
    for kept in ("self.weight", "math.sqrt", "enumerate", "super().__init__", "__name__", '"width"', "verbose=True",
                 "field(default_factory="):
        assert kept in text, kept


def test_rename_is_consistent_across_a_helper_module():
    renamed = rename(HELPER)
    assert "combine" not in renamed["helper.py"] and "Store" not in renamed["helper.py"]
    assert "weight_factor" not in renamed["train_gpt.py"]
    assert "import helper" in renamed["train_gpt.py"]  # module names stay: files are not renamed
    assert renamed == rename(HELPER)  # deterministic
    assert renamed != rename(HELPER, seed=1)


def test_rename_keeps_library_attributes_patterns_and_configured_fields():
    text = rename(TORCH, keep={"ttt_epochs"})["train_gpt.py"]
    for kept in ("def forward", "self.attn_scale", ".ttt_epochs)", "bias=", "lr=0.1", '"TTT_EPOCHS"'):
        assert kept in text, kept
    for gone in ("Hyperparameters", "hidden_size", "Block", "gate", "(epochs)"):
        assert gone not in text, gone
    assert "ttt_epochs" not in rename(TORCH)["train_gpt.py"].replace("TTT_EPOCHS", "")
    # a log that prints `epochs: 2` or `err: 0.3` names no setting: locals are still renamed
    logged = rename(TORCH, keep={"ttt_epochs", "epochs", "err", "hidden_size"})["train_gpt.py"]
    assert "(epochs)" not in logged and "err" not in logged and "hidden_size = 8" in logged
    # a module-level value that is not a setting (loaded data) is renamed even when a log prints it
    script = {"train_gpt.py": "import os\nLIMIT = int(os.environ.get('LIMIT', 3))\nval_tokens = list(range(LIMIT))\n"
                              "print(len(val_tokens))\n"}
    both = rename(script, keep={"val_tokens", "limit"})["train_gpt.py"]
    assert "LIMIT = int(" in both and "val_tokens" not in both.replace("TTT_EPOCHS", "")


def test_structural_transforms_change_the_shape():
    assert "while " in TRANSFORMS["while"](PLAIN)["train_gpt.py"].split("def countdown")[1].split("def nested")[0]
    assert "StopIteration" in TRANSFORMS["while"](PLAIN)["train_gpt.py"]
    wrapped = TRANSFORMS["wrap"](HELPER)
    assert "@staticmethod" in wrapped["helper.py"] and "\ndef " not in wrapped["helper.py"]
    extracted = TRANSFORMS["extract"](PLAIN)["train_gpt.py"]
    assert extracted.count("def ") > PLAIN["train_gpt.py"].count("def ")


def test_transform_folder_reads_config_names_and_reports_bad_code(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    (record / "train_gpt.py").write_text(TORCH["train_gpt.py"])
    (record / "README.md").write_text("```bash\nTTT_EPOCHS=3 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    twin = transform_folder(record, "rename", tmp_path / "twin")
    assert ".ttt_epochs)" in (twin / "train_gpt.py").read_text()
    assert (twin / "README.md").read_text() == (record / "README.md").read_text()
    (record / "train_gpt.py").write_text("def broken(:\n")
    with pytest.raises(TransformError):
        transform_folder(record, "rename", tmp_path / "twin2")


def test_rename_keeps_functions_the_module_reads_through_sys_modules(tmp_path):
    files = {"train_gpt.py": textwrap.dedent('''
        import sys

        def calibrate(values):
            return sum(v * v for v in values)

        me = sys.modules[__name__]
        print(me.calibrate([1, 2, 3]))
    ''')}
    before = run_program(files, tmp_path / "before")
    changed = TRANSFORMS["rename"](files)
    assert "me = sys.modules" not in changed["train_gpt.py"]  # the alias itself is renamed
    assert "def calibrate(" in changed["train_gpt.py"]  # what is read through it keeps its spelling
    assert run_program(changed, tmp_path / "after") == before == "14\n"


SHADOWS = {
    "train_gpt.py": textwrap.dedent('''
        def _(value):
            return value * 10


        def count(n):
            total = 0
            for _ in range(n):  # a loop variable that shares a function's name
                total += 1
            from helper import scale  # a sibling's function imported inside a function
            return scale(total)


        print(count(3), _(2))
    '''),
    "helper.py": textwrap.dedent('''
        def scale(x):
            return x + 100
    '''),
}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_transforms_respect_local_bindings_and_local_imports(tmp_path, transform):
    before = run_program(SHADOWS, tmp_path / "before")
    after = run_program(TRANSFORMS[transform](SHADOWS), tmp_path / "after")
    assert after == before == "103 20\n"
