"""The scan head fitted again on the frozen encoder's tokens of the training images' scan views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samspt.runtime.errors import ConfigError
from samspt.runtime.scan_head import NumpyScanHead
from samspt.training.checkpoints import build_model, load_spt_model, save_spt_weights
from samspt.training.modeling.config import get_config
from samspt.training.data.readers import read_dataset
from samspt.training.scan_refit import (DEFECT_SHARE, HIDDEN, estimate_s, fit_head, plan_refit,
                                        refit_scan_head, scan_tokens)
from samspt.runtime.views import scan_views

from .test_training_run import make_folder_dataset


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return read_dataset(make_folder_dataset(tmp_path_factory.mktemp("refit") / "data",
                                            n_defect=8, n_free=4))


def _model():
    torch.manual_seed(0)
    return build_model(dataclasses.replace(get_config("cnn_tiny"), scan_head=True), None).eval()


def test_the_fitted_arrays_compute_the_standardised_network_on_raw_tokens():
    """The input standardisation is folded into the first layer: the numpy head on raw tokens
    equals what was fitted, so it separates the classes it was fitted on."""
    rng = np.random.default_rng(0)
    scale = np.logspace(-2, 2, 16)                  # channels of very different ranges
    tokens = (rng.normal(0.0, 1.0, (4000, 16)) * scale + 50 * scale).astype(np.float32)
    shares = (tokens[:, 3] > 51 * scale[3]).astype(np.float32)     # one small channel high
    arrays, loss = fit_head(tokens, shares, hidden=8, steps=300)
    logits = NumpyScanHead(arrays, 16).logits(tokens.T.reshape(1, 16, 40, 100)).reshape(-1)
    hot = shares > DEFECT_SHARE
    auroc = (logits[hot][:, None] > logits[~hot][None, :]).mean()
    assert np.isfinite(loss) and auroc > 0.97


def test_tokens_are_labelled_by_the_defect_in_their_cell(records):
    model = _model()
    tokens, shares, images = scan_tokens(model, records)
    assert images == len({r.image_path for r in records})
    assert tokens.shape == (len(shares), model.config.prompt_embed_dim)
    assert 0 < (shares > DEFECT_SHARE).sum() < len(shares)
    assert shares.min() >= 0 and shares.max() <= 1
    free = [r for r in records if r.is_defect_free]
    _, free_shares, _ = scan_tokens(model, free)
    assert not free_shares.any()


def test_the_refit_head_replaces_the_trained_one_and_survives_its_weights_file(records,
                                                                              tmp_path):
    model = _model()
    figures = refit_scan_head(model, records, steps=300)
    assert model.config.scan_head_hidden == HIDDEN == figures.hidden
    assert model.scan_head.hidden.out_channels == HIDDEN
    assert figures.defect_tokens > 0 and figures.tokens > figures.defect_tokens
    # it scores the defect tokens it was fitted on above the clean ones
    tokens, shares, _ = scan_tokens(model, records)
    logits = NumpyScanHead(model.scan_head.arrays(), tokens.shape[1]).logits(
        tokens.T[None, :, :, None]).reshape(-1)
    hot = shares > DEFECT_SHARE
    assert logits[hot].mean() > logits[~hot].mean()
    path = save_spt_weights(model, tmp_path / "finished.safetensors", mode="full")
    again = load_spt_model(path)
    assert again.config.scan_head_hidden == HIDDEN
    for name, value in model.scan_head.state_dict().items():
        torch.testing.assert_close(again.scan_head.state_dict()[name], value)


def test_a_model_without_a_scan_head_or_a_split_without_defects_is_refused(records):
    plain = build_model(get_config("cnn_tiny"), None)
    with pytest.raises(ConfigError, match="no scan head to refit"):
        refit_scan_head(plain, records)
    with pytest.raises(ConfigError, match="needs defect and defect-free tokens"):
        refit_scan_head(_model(), [r for r in records if r.is_defect_free], steps=10)


def test_scan_head_hidden_must_be_a_whole_number():
    with pytest.raises(ConfigError, match="scan_head_hidden"):
        dataclasses.replace(get_config("cnn_tiny"), scan_head=True, scan_head_hidden=-1)


def test_the_refit_reads_a_balanced_subset_where_all_images_would_not_fit(records):
    config = _model().config
    everything = plan_refit(records, config)
    images = {r.image_path for r in records}
    assert everything.images == everything.all_images == len(images)
    assert sorted(map(id, everything.records)) == sorted(map(id, records))
    from PIL import Image
    views = 0
    for path in images:
        with Image.open(path) as handle:
            views += len(scan_views(handle.size[::-1], config.image_size, config.view_settings))
    assert everything.views == everything.all_views == views
    tokens = config.embedding_size ** 2
    assert everything.seconds == pytest.approx(estimate_s(views, tokens))

    # A time that holds about half the views: a seeded subset whose estimate fits, with both
    # defect-free and defective images, and every record of each chosen image.
    seconds = estimate_s(views // 2, tokens)
    half = plan_refit(records, config, seconds)
    assert 0 < half.images < everything.images and half.seconds <= seconds
    assert half.all_views == views and half.views < views
    free = {r.image_path for r in half.records if r.is_defect_free}
    assert 0 < len(free) < half.images
    chosen = {r.image_path for r in half.records}
    assert [r for r in records if r.image_path in chosen] == half.records
    assert plan_refit(records, config, seconds) == half                  # reproducible
    assert plan_refit(records, config, 0.0).images == 0
