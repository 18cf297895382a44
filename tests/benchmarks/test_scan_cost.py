"""scan_vs_encoder_2k's measurement on a real exported model with a scan head."""

from __future__ import annotations


import pytest

from samspt.benchmarks.scan_cost import measure_scan_cost

torch = pytest.importorskip("torch")


def test_the_scan_is_timed_beside_its_encoder_runs(tmp_path):
    from ..conftest import exported_cnn_tiny

    exported_cnn_tiny(tmp_path / "head", scan_head=True, scan_side=128)
    figures = measure_scan_cost(tmp_path / "head", threads=1, reps=2, warmup=1, side=512)
    cost = figures["scan_cost"]
    assert cost["views"] > 1 and cost["image_hw"] == [512, 512]
    assert figures["scan_vs_encoder_2k"] == pytest.approx(cost["scan_ms"] / cost["encoder_ms"])
    assert cost["stages_ms"]["encoder"] > 0
