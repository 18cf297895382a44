"""The markdown report and the JSON record's file handling, on a hand-made record."""

from __future__ import annotations

import datetime as dt
import json

from samspt.benchmarks.backends import STAGES
from samspt.benchmarks.ratios import RATIO_KEYS
from samspt.benchmarks.record import build_record, default_record_path, write_record
from samspt.benchmarks.report import fmt_ms, format_report, stage_table


def _figures():
    stage = {"median_ms": 10.0, "p90_ms": 12.0, "p99_ms": 15.0}
    return {
        "settings": {"model": "small", "device": "cpu", "reps": 5, "warmup": 1},
        "model": {"image_size": 512, "tokens": 1024, "encoder": {"gflop": 12.95}},
        "backends": {"ort": {"device": "cpu"}},
        "skipped": {"ort-fp16": "cannot load"},
        "results": [{"backend": "ort", "prompts": k, "stages": {s: stage for s in STAGES},
                     "throughput": {"images_per_s": 100.0, "prompts_per_s": 100.0 * k},
                     "memory": {"host_peak_mb": 80.0, "device_mb": None}} for k in (1, 4)],
        "ratios": {key: 0.5 for key in RATIO_KEYS[:-1]} | {RATIO_KEYS[-1]: float("nan")},
        "ratio_details": {"basis": {}},
    }


def test_fmt_ms():
    assert (fmt_ms(None), fmt_ms(1.234), fmt_ms(12.34), fmt_ms(123.4)) == ("-", "1.23", "12.3",
                                                                            "123")


def test_stage_table_rows_and_columns():
    lines = stage_table(_figures()).splitlines()
    assert len(lines) == 2 + 2
    assert len({line.count("|") for line in lines}) == 1
    assert "| ort | cpu | 1 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 / 12.0 / 15.0 |" in lines[2]


def test_report_names_ratios_and_skips():
    text = format_report(_figures())
    assert all(f"`{key}`" in text for key in RATIO_KEYS)
    assert "skipped ort-fp16: cannot load" in text


def test_record_path_and_atomic_json(tmp_path):
    record = build_record(_figures(), now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    path = default_record_path(record)
    assert path.parent.name == "results"
    assert path.name.startswith("20260102T030405Z-small-") and path.name.endswith("-cpu.json")
    written = write_record(record, tmp_path / "r.json")
    data = json.loads(written.read_text())
    assert data["ratios"][RATIO_KEYS[-1]] is None  # NaN has no JSON spelling
    assert data["created"] == "2026-01-02T03:04:05Z"
    assert list(tmp_path.iterdir()) == [written]
