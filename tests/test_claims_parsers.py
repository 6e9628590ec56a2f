"""The parsers on their own: submission.json shapes, README tables, log shapes."""

from __future__ import annotations

from pathlib import Path

from auditor.claims.logs import parse_log_text
from auditor.submission.numbers import agree, agree_mean, printed
from auditor.claims.readme_table import parse_readme_tables
from auditor.submission.claimed import parse_claims


def test_seed_results_as_list_and_strings():
    claims = parse_claims({"mean_val_bpb": "1.1000", "seed_results": [
        {"seed": 1, "val_bpb": 1.1001, "bytes_total": 15_000_000}, {"seed": "2", "bpb": "1.0999"}]})
    assert claims.seeds == [1, 2]
    assert claims.per_seed[1].artifact_bytes == 15_000_000
    assert claims.per_seed[2].val_bpb.text == "1.0999"
    assert claims.mean_val_bpb.value == 1.1


def test_flat_single_seed_record():
    claims = parse_claims({"val_bpb": 1.2243657, "val_loss": 2.07269931, "bytes_total": 15863489, "seed": 1337})
    assert claims.per_seed[1337].val_bpb.text == "1.2243657"


def test_unknown_shape_is_reported():
    assert parse_claims(["a", "b"]).unread == ["top level is a list, not per-seed results (objects with a seed)"]
    assert parse_claims("text").unread == ["top level is a str, not an object"]


def test_printed_precision():
    assert agree(printed("1.1151"), printed("1.11508120"))
    assert not agree(printed("1.1152"), printed("1.11508120"))
    assert agree_mean(printed("1.14276"), [printed("1.14271194"), printed("1.14298416"), printed("1.14260369")])


def test_readme_table_prefers_the_ttt_column_and_reads_the_mean():
    text = """
| Seed | Pre-quant BPB | Sliding BPB | **Post-TTT bpb** | Artifact |
|------|------|------|------|------|
| 1 | 1.20 | 1.1100 | **1.1000** | 15,000,000 |
| 2 | 1.21 | 1.1110 | ~1.1010 | 15,000,000 |
| **Mean** | | | **1.1005** | |
"""
    [table] = parse_readme_tables(text)
    assert table.bpb_header == "Post-TTT bpb"
    assert [r.seed for r in table.rows] == [1, 2]
    assert table.rows[0].val_bpb.text == "1.1000" and table.rows[1].val_bpb is None
    assert table.mean_bpb.text == "1.1005"


def test_log_with_two_runs_and_a_pasted_script():
    text = """def main():
    seed = int(os.environ.get("SEED", 1337))
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
0: seed:1
0: step:10/10 val_loss:2.0000 val_bpb:1.2000 train_time:599000ms step_avg:60.00ms
0: stopping_early: wallclock_cap train_time: 600010ms step: 10/10
0: Code size: 100 bytes
0: final_int8_zlib_roundtrip val_loss:2.0100 val_bpb:1.2100 eval_time:1000ms
0: final_int8_zlib_roundtrip_exact val_loss:2.01000000 val_bpb:1.21000000
[rank0]: seed:2
[rank0]: final_int8_zlib_roundtrip_exact val_loss:2.02000000 val_bpb:1.22000000
"""
    runs = parse_log_text(text, Path("train.log"))
    assert [r.seed for r in runs] == [1, 2]
    first = runs[0]
    assert first.train_time_s == 600.01 and first.stopped_early
    assert first.code_sizes == {"": 100}
    assert first.default_score().val_bpb.text == "1.21000000"
    assert first.eval_time_for(first.default_score()) == 1.0


def test_only_calibration_that_reads_data_counts_after_the_clock():
    head = "seed:1\nstopping_early: wallclock_cap train_time: 599000ms step: 10/10\n"
    weight_only = ["quantize:full_gptq=0 gptq_lite=66", "gptq:SKIPPED (SKIP_GPTQ=1) using naive int6",
                   "gptq:enabled per-layer optimal clip search", "pre_gptq_prune: zeroed bottom 2% of 100 values"]
    for line in weight_only:
        [run] = parse_log_text(head + line + "\n", Path("train.log"))
        assert run.calibration_after_stop == [], line
    [run] = parse_log_text(head + "gptq:collecting hessians batches=16 source=train\n", Path("train.log"))
    assert [c.text for c in run.calibration_after_stop] == ["gptq:collecting hessians batches=16 source=train"]
