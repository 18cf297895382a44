"""The encoder-family comparison: its FLOP counting, its ratios and its argument."""

from __future__ import annotations

import pytest
import torch

from samspt.benchmarks.family_encoders import FAMILIES, encoder_gflop, forward_gflop, parse_families
from samspt.benchmarks.flops import encoder_flops
from samspt.benchmarks.models import merged_model
from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import get_config


def test_the_flop_counter_agrees_with_the_vit_arithmetic_the_benchmarks_use():
    """PyTorch's counter on SAM's ViT encoder (tiny configuration) lands within 10 % of the
    configuration's own count (which adds what the counter leaves out: nothing but products)."""
    counted = encoder_gflop(merged_model("tiny"), 64) * 1e9
    assert counted == pytest.approx(encoder_flops(get_config("tiny")), rel=0.1)


def test_mobile_sams_encoder_is_a_small_fraction_of_vit_bs_arithmetic():
    """At 1024 px TinyViT does about 78 GFLOP (39 G multiply-adds) per view, against ViT-B's
    ~980 by the configuration's count: the advantage the exported graph must keep."""
    tinyvit = encoder_gflop(merged_model("mobile_sam_vit_t"), 1024)
    assert 60 < tinyvit < 100
    assert tinyvit < 0.1 * encoder_flops(get_config("vit_b")) / 1e9


def test_sam2s_hiera_t_is_a_fraction_of_vit_bs_arithmetic():
    """At 1024 px SAM 2.1's Hiera-T image path does about 292 GFLOP per view (trunk with its
    attention, FPN neck, high-res projections), about 0.30 of ViT-B's: the advantage the
    exported graph must keep. Its three global-attention blocks alone do 77 GFLOP."""
    hiera = encoder_gflop(merged_model("sam2.1_hiera_t"), 1024)
    assert 280 < hiera < 0.32 * encoder_flops(get_config("vit_b")) / 1e9


def test_the_counter_counts_attention_that_pytorch_fuses():
    """``F.scaled_dot_product_attention`` counts its two products (2 x 2 x B x H x S x L x D
    FLOPs), as explicit attention does: on the CPU its fused kernel counts as zero unless
    :func:`forward_gflop` runs it on the math backend."""
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q = torch.zeros(2, 3, 64, 16)
    k = v = torch.zeros(2, 3, 48, 16)
    expected = 2 * 2 * 2 * 3 * 64 * 48 * 16
    assert forward_gflop(Attention(), q, k, v) * 1e9 == pytest.approx(expected)


def test_families_are_named_and_checked():
    assert parse_families("all") == list(FAMILIES)
    assert parse_families("none") == []
    assert parse_families("tinyvit,hiera") == ["tinyvit", "hiera"]
    with pytest.raises(ConfigError, match="--families"):
        parse_families("hiera_x")


@pytest.mark.parametrize("model_type", ["mobile_sam_tiny", "sam2_hiera_tiny"])
def test_samspt_bench_runs_on_the_edge_families(tmp_path, model_type):
    """`samspt-bench --model mobile_sam_tiny` (and SAM 2.1's tiny Hiera): every stage timed, the
    encoder's FLOPs counted by PyTorch's counter where the graph's shapes do not resolve."""
    import json

    from samspt.benchmarks.latency import main

    out = tmp_path / "record.json"
    assert main(["--model", model_type, "--reps", "1", "--warmup", "0", "--prompts", "1",
                 "--train-steps", "0", "--families", "none", "--device", "cpu",
                 "--backends", "ort,torch", "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model"]["name"] == model_type
    for name in ("ort", "torch"):
        backend = record["backends"][name]
        assert backend["encoder_gflop"] > 0
        assert backend["encoder_flops_counted_from"] == \
            "PyTorch's FLOP counter on the merged encoder"
