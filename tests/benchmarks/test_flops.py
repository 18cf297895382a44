"""The encoder's arithmetic, counted from the configuration."""

from __future__ import annotations

import pytest

from samspt.benchmarks.flops import encoder_figures, encoder_flops, encoder_macs, floor_ms
from samspt.training.config import get_config


def test_vit_b_is_about_0_97_tflop_counting_a_multiply_add_as_two():
    config = get_config("vit_b")
    assert encoder_macs(config) == pytest.approx(487e9, rel=0.02)
    assert encoder_flops(config) == 2 * encoder_macs(config)
    assert encoder_flops(config) == pytest.approx(0.97e12, rel=0.02)


def test_sizes_grow_and_the_floor_is_flops_over_peak():
    flops = [encoder_flops(get_config(n)) for n in ("tiny", "small", "vit_b", "vit_l", "vit_h")]
    assert flops == sorted(flops)
    assert encoder_flops(get_config("vit_h")) == pytest.approx(5.96e12, rel=0.03)
    vit_b = get_config("vit_b")
    assert floor_ms(vit_b, 100.0) == pytest.approx(encoder_flops(vit_b) / 100e12 * 1e3)
    assert encoder_figures(vit_b)["gflop"] == pytest.approx(encoder_flops(vit_b) / 1e9)
