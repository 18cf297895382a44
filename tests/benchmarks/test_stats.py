"""Latency statistics on known inputs, and the interleaved run order."""

from __future__ import annotations

import math

import pytest

from samspt.benchmarks import stats
from samspt.runtime.errors import ConfigError


def test_percentiles_of_one_to_hundred():
    samples = list(range(1, 101))
    assert stats.percentile(samples, 50) == pytest.approx(50.5)
    assert stats.percentile(samples, 90) == pytest.approx(90.1)
    assert stats.percentile(samples, 99) == pytest.approx(99.01)


def test_summarize_known_samples():
    summary = stats.summarize([4.0, 1.0, 3.0, 2.0, 10.0])
    assert summary["median_ms"] == 3.0
    assert summary["p90_ms"] == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert summary["p99_ms"] == pytest.approx(9.76)
    assert summary["mean_ms"] == 4.0
    assert (summary["min_ms"], summary["max_ms"], summary["n"]) == (1.0, 10.0, 5)


def test_one_sample_is_its_own_percentiles():
    summary = stats.summarize([7.5])
    assert summary["median_ms"] == summary["p90_ms"] == summary["p99_ms"] == 7.5


def test_empty_samples_and_bad_percentiles_are_refused():
    with pytest.raises(ConfigError, match="at least one sample"):
        stats.summarize([])
    with pytest.raises(ConfigError, match="0..100"):
        stats.percentile([1.0], 101)


def test_ratio_and_throughput():
    assert stats.ratio(1.0, 4.0) == 0.25
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(math.nan, 1.0) is None
    assert stats.throughput(50.0, 16) == {"images_per_s": 20.0, "prompts_per_s": 320.0}


def test_schedule_interleaves_and_alternates_direction():
    order = list(stats.schedule(["a", "b", "c"], reps=2, warmup=1))
    assert order == [(None, "a"), (None, "b"), (None, "c"),
                     (0, "c"), (0, "b"), (0, "a"),
                     (1, "a"), (1, "b"), (1, "c")]
    with pytest.raises(ConfigError):
        list(stats.schedule(["a"], reps=0, warmup=0))


def test_interleaved_times_every_call_reps_times():
    calls = []
    samples = stats.interleaved({"x": lambda: calls.append("x"), "y": lambda: calls.append("y")},
                                reps=3, warmup=2)
    assert calls == ["x", "y", "y", "x"] * 2 + ["x", "y"]
    assert {k: len(v) for k, v in samples.items()} == {"x": 3, "y": 3}
    assert all(ms >= 0 for v in samples.values() for ms in v)
