"""The relation adapter as built equals its naive, materialised form (which the benchmark times)."""

from __future__ import annotations

import pytest
import torch

from samspt.benchmarks.relation_compare import (built_relation_apply, materialized_relation_apply,
                                                relation_inputs, time_relation)


def _definition(embedding: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """R[i, j] = softmax over j != i of cosine similarity, per prompt, in float64."""
    tokens = embedding[0].flatten(1).t().double()
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    sim = unit @ unit.t()
    sim = sim.masked_fill(torch.eye(sim.shape[0], dtype=torch.bool), float("-inf"))
    return torch.stack([torch.softmax(sim, dim=-1) @ k.double() for k in keys])


@pytest.mark.parametrize("tokens,channels,prompts", [(16, 8, 1), (64, 32, 3), (100, 16, 5)])
def test_built_equals_materialized(tokens, channels, prompts):
    embedding, keys = relation_inputs(tokens, channels, prompts, "cpu", seed=tokens)
    embedding = embedding * 3
    built = built_relation_apply(embedding, keys)
    materialized = materialized_relation_apply(embedding, keys)
    assert built.shape == materialized.shape == (prompts, tokens, channels)
    torch.testing.assert_close(built, materialized, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(materialized.double(), _definition(embedding, keys),
                               atol=1e-5, rtol=1e-4)


def test_time_relation_reports_both_forms():
    timing = time_relation(tokens=32, channels=8, prompts=1, device="cpu", reps=2, warmup=0)
    assert set(timing) == {"built", "materialized"}
    assert all(t["n"] == 2 and t["median_ms"] > 0 for t in timing.values())


def test_onnx_graphs_of_both_forms_compute_the_same_numbers_on_onnx_runtime(tmp_path):
    """The graphs whose memory the benchmark compares on ONNX Runtime: same numbers, several
    row blocks in the built one (tokens > ROW_BLOCK)."""
    from samspt.benchmarks.memory import run_probe
    from samspt.benchmarks.relation_compare import export_relation_graphs
    from samspt.training.modeling.relation import ROW_BLOCK

    tokens = ROW_BLOCK + 100
    paths = export_relation_graphs(tmp_path, tokens, 8, 2)
    # As the benchmark measures: a fresh process with glibc's exact-malloc settings (in this
    # one, earlier tests' freed heap would hold the matrix without the resident set growing).
    figures = run_probe({"probe": "relation_ort", "paths": paths, "tokens": tokens,
                         "channels": 8, "prompts": 2}, exact_malloc=True, timeout_s=300)
    assert "error" not in figures, figures
    assert figures["max_abs_difference"] < 1e-4
    assert figures["built_mb"] >= 0 and figures["materialized_mb"] > 0


def test_a_training_step_holds_a_fraction_of_the_token_by_token_matrix():
    """Forward with gradients and backward (what training does): each row block of E is
    recomputed in backward rather than kept, so the step's peak stays well under the naive
    form's (which keeps the TxT similarities and softmax for backward). Measured as the
    benchmark measures: a fresh child with exact-malloc settings."""
    from samspt.benchmarks.memory import run_probe

    figures = run_probe({"probe": "relation", "tokens": 4096, "channels": 32, "prompts": 1,
                         "device": "cpu", "train": True}, exact_malloc=True, timeout_s=300)
    assert "error" not in figures, figures
    assert figures["materialized_mb"] >= 2 * figures["txt_matrix_mb"]  # it holds TxT twice+
    assert figures["built_mb"] <= 0.25 * figures["materialized_mb"], figures
