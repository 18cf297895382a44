"""The numpy scan head's arithmetic on its own (no model: random arrays of the head's shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime.errors import ModelFolderError
from samspt.runtime.scan_head import VIEWS_PER_PRODUCT, NumpyScanHead, sigmoid_

CHANNELS, HIDDEN, PACKED = 6, 5, 9       # the head reads the first 6 of 9 packed channels


def _head(seed: int = 0) -> NumpyScanHead:
    rng = np.random.default_rng(seed)
    return NumpyScanHead({"hidden_weight": rng.standard_normal((HIDDEN, CHANNELS)),
                          "hidden_bias": rng.standard_normal(HIDDEN),
                          "out_weight": rng.standard_normal((1, HIDDEN, 1, 1)),
                          "out_bias": rng.standard_normal(1)}, CHANNELS)


def _reference(head: NumpyScanHead, views: np.ndarray) -> np.ndarray:
    hidden = np.einsum("kc,vchw->vkhw", head.hidden_weight, views[:, :CHANNELS])
    hidden = np.maximum(hidden + head.hidden_bias[None, :, None, None], 0.0)
    return np.einsum("k,vkhw->vhw", head.out_weight, hidden) + head.out_bias


def test_logits_of_many_views_match_the_two_products_per_token():
    """More views than one product takes (two full chunks and a partial one), given as the
    encoder's batches of mixed sizes or as one view each: the same logits, view for view."""
    head = _head()
    count = 2 * VIEWS_PER_PRODUCT + 7
    views = np.random.default_rng(1).standard_normal((count, PACKED, 4, 3)).astype(np.float32)
    expected = _reference(head, views)
    batches = [views[:5], views[5:5 + VIEWS_PER_PRODUCT], views[5 + VIEWS_PER_PRODUCT:]]
    for given in (views, batches, [views[i:i + 1] for i in range(count)]):
        logits = head.logits(given)
        assert logits.shape == (count, 4, 3) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_the_packed_channels_after_the_heads_are_not_read():
    head = _head()
    views = np.random.default_rng(2).standard_normal((3, PACKED, 2, 2)).astype(np.float32)
    changed = views.copy()
    changed[:, CHANNELS:] = np.nan
    np.testing.assert_array_equal(head.logits(changed), head.logits(views))


def test_sigmoid_works_in_place_and_saturates_without_overflow():
    x = np.array([-1e4, -3.0, 0.0, 2.5, 1e4], np.float32)
    expected = 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -60, 60)))
    with np.errstate(over="raise"):
        out = sigmoid_(x)
    assert out is x and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out[0] > 0.0 and out[-1] == pytest.approx(1.0)


def test_arrays_of_the_wrong_shape_are_refused():
    arrays = {"hidden_weight": np.zeros((HIDDEN, CHANNELS + 1)), "hidden_bias": np.zeros(HIDDEN),
              "out_weight": np.zeros(HIDDEN), "out_bias": np.zeros(1)}
    with pytest.raises(ModelFolderError, match="do not fit 6 embedding channels"):
        NumpyScanHead(arrays, CHANNELS)
