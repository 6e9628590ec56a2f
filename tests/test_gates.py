"""Same-position gates (auditor/analysis/gates.py): an expert that hints at a position only
when the realized token there passes a test, judged by what the loop does, under the run
configuration (a frequency threshold above 1 switches the expert off)."""

from __future__ import annotations

from auditor.analysis import analyze_text
from auditor.classify import run_rules
from auditor.submission import RunConfig

RULE = "ngram-unnormalized"

# Two modules' worth of an online expert in one file: the expert walks the targets and
# hints at a position only when the token there opens a word; the caller gates its
# confidence by a threshold from the environment.
EXPERT = '''
import os
import numpy as np

THRESHOLD = float(os.environ.get("HINT_MIN", "{default}"))

class Follower:
    def __init__(self, opens):
        self.opens = opens
        self.counts = {{}}
        self.last = 0

    def walk(self, seq):
        guess = np.zeros(len(seq), dtype=np.int64)
        conf = np.zeros(len(seq), dtype=np.float32)
{loop}
        return guess, conf

def combine(seq, opens, level):
    follower = Follower(opens)
    guess, conf = follower.walk(seq)
    gate = conf >= np.float32(level)
    return np.where(gate, conf, 0.0)

def run(logp, stream, opens):
    later = stream.astype(np.int64)[1:]
    bonus = combine(later, opens, level=THRESHOLD)
    return float(-(logp + bonus).sum())

if __name__ == "__main__":
    stream = np.fromfile("fineweb_val_000000.bin", dtype=np.uint16)
    print(f"val_bpb:{{run(np.zeros(len(stream) - 1), stream, np.ones(1024)):.4f}}")
'''

# the loop body, at the indentation of a loop inside the method
BODY = '''\
            t = int(t)
            if self.opens[t] and self.last in self.counts:
                guess[i] = self.counts[self.last][0]
                conf[i] = self.counts[self.last][1] / (self.counts[self.last][1] + 1)
            self.counts[self.last] = (t, self.counts.get(self.last, (0, 0))[1] + 1)
            self.last = t'''

FOR_LOOP = "        for i, t in enumerate(seq):\n" + BODY

# the same loop as a for -> while rewrite makes it (iter/next over enumerate)
WHILE_LOOP = '''\
        it = iter(enumerate(seq))
        while True:
            try:
                item = next(it)
            except StopIteration:
                break
            i, t = item
''' + BODY

# skipping the positions whose token closes a word is a gate as well
CONTINUE_LOOP = '''\
        for i in range(len(seq)):
            t = int(seq[i])
            if not self.opens[t]:
                self.last = t
                continue
            guess[i] = self.counts.get(self.last, (0, 0))[0]
            conf[i] = self.counts.get(self.last, (0, 0))[1] / (self.counts.get(self.last, (0, 0))[1] + 1)
            self.counts[self.last] = (t, self.counts.get(self.last, (0, 0))[1] + 1)
            self.last = t'''

# causal: the hint at i comes from the tokens before i, whatever the token at i is
CAUSAL_LOOP = '''\
        for i, t in enumerate(seq):
            t = int(t)
            guess[i] = self.counts.get(self.last, (0, 0))[0]
            conf[i] = self.counts.get(self.last, (0, 0))[1] / (self.counts.get(self.last, (0, 0))[1] + 1)
            self.counts[self.last] = (t, self.counts.get(self.last, (0, 0))[1] + 1)
            self.last = t'''


def _findings(loop: str, default: str = "0.5", env: dict | None = None):
    text = EXPERT.format(loop=loop, default=default)
    return [f for f in run_rules(analyze_text(text, run=RunConfig(env=env or {}))) if f.rule == RULE]


def test_an_expert_gated_on_the_token_it_hints_at_is_flagged():
    findings = _findings(FOR_LOOP)
    assert [f.severity for f in findings] == ["violation"]
    assert "Follower.walk" in findings[0].message
    assert "self.opens[t]" in findings[0].message


def test_the_gate_is_found_in_a_while_rewrite_and_behind_a_continue():
    assert [f.severity for f in _findings(WHILE_LOOP)] == ["violation"]
    assert [f.severity for f in _findings(CONTINUE_LOOP)] == ["violation"]


def test_a_causal_expert_is_not_flagged():
    assert _findings(CAUSAL_LOOP) == []


def test_a_threshold_above_one_switches_the_expert_off():
    findings = _findings(FOR_LOOP, default="99.0")
    assert [f.severity for f in findings] == ["info"]
    assert "never opens" in findings[0].message


def test_the_run_configuration_can_open_the_gate_again():
    findings = _findings(FOR_LOOP, default="99.0", env={"HINT_MIN": "0.65"})
    assert [f.severity for f in findings] == ["violation"]
