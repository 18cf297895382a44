"""``python -m samspt.benchmarks.serve`` against a running service: a record with throughput
and p50/p99 per level for both sides, and serve_vs_inprocess_c8."""

from __future__ import annotations

import json


def test_serving_benchmark_writes_its_record(main_service, tmp_path, capsys):
    from samspt.benchmarks.serve import main

    out = tmp_path / "serve.json"
    assert main(["--url", main_service.url, "--concurrency", "1,8", "--requests", "8",
                 "--warmup", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["benchmark"] == "serve" and record["machine"]["logical_cores"]
    for side in ("inprocess", "served"):
        for level in ("c1", "c8"):
            row = record["results"][side][level]
            assert row["requests"] == 8 and row["errors"] == 0
            assert row["throughput_rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    ratio = record["ratios"]["serve_vs_inprocess_c8"]
    assert ratio == record["results"]["served"]["c8"]["throughput_rps"] / \
        record["results"]["inprocess"]["c8"]["throughput_rps"]
    assert record["model"]["served"]["sha256"] and "serve_vs_inprocess_c8" in capsys.readouterr().out
