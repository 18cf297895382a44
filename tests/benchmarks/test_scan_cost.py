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
    # Timed as a scan that answers the defect: its region went through the decoders, at the
    # model's own gate where that flags it, else just under the defect's own peak.
    assert cost["stages_ms"]["decoder"] > 0
    assert cost["flagged_at_own_gate"] and not cost["gate_lowered"]
    assert cost["gate"] == cost["own_gate"]


def test_a_gate_that_misses_the_defect_is_lowered_to_it_for_the_timing(tmp_path):
    import dataclasses

    from samspt.runtime.manifest import read_manifest, write_manifest

    from ..conftest import exported_cnn_tiny

    exported_cnn_tiny(tmp_path / "head", scan_head=True, scan_side=128)
    manifest = read_manifest(tmp_path / "head")
    never = dataclasses.replace(manifest.views, scan_min_score=1.0)    # no map reaches 1
    write_manifest(tmp_path / "head", dataclasses.replace(manifest, views=never))
    cost = measure_scan_cost(tmp_path / "head", threads=1, reps=1, warmup=0,
                             side=512)["scan_cost"]
    assert not cost["flagged_at_own_gate"] and cost["gate_lowered"]
    assert cost["own_gate"] == 1.0 and cost["gate"] == pytest.approx(0.999 * cost["defect_peak"])
    assert cost["stages_ms"]["decoder"] > 0      # the defect's region was answered
