"""The numpy pre/post-processing contract equals segment-anything's torch implementation."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime.postprocess import resize_bilinear, upscale_logits
from samspt.runtime.preprocess import as_rgb_uint8, preprocess_image
from samspt.runtime.prompts import mask_box, pack_prompts, scale_coords
from samspt.runtime.errors import InputError
from samspt.runtime.samples import bundled_samples

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("src,dst", [((7, 9), (32, 20)), ((64, 64), (17, 23)), ((5, 300), (5, 41))])
def test_resize_bilinear_matches_torch_interpolate(src, dst):
    x = np.random.default_rng(0).normal(size=(2, *src)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], dst, mode="bilinear",
                                          align_corners=False)[0].numpy()
    # torch computes the source coordinate in float32: equal to ~1e-5 relative.
    np.testing.assert_allclose(resize_bilinear(x, dst), ref, atol=1e-4)


def test_preprocess_image_equals_segment_anything():
    from segment_anything.utils.transforms import ResizeLongestSide

    from samspt.training.modeling.model import build_sam
    from samspt.training.modeling.config import get_config

    sam = build_sam(get_config("small"))
    for sample in bundled_samples()[:3]:
        rgb = as_rgb_uint8(sample.image())
        ours, resized = preprocess_image(rgb, 512)
        resized_img = ResizeLongestSide(512).apply_image(rgb)
        ref = sam.preprocess(torch.from_numpy(resized_img).permute(2, 0, 1).float())
        assert resized == resized_img.shape[:2]
        np.testing.assert_allclose(ours[0], ref.numpy(), atol=1e-5)


def test_upscale_logits_equals_sam_postprocess():
    from samspt.training.modeling.model import build_sam
    from samspt.training.modeling.config import get_config

    sam = build_sam(get_config("tiny"))
    low = np.random.default_rng(1).normal(size=(3, 1, 16, 16)).astype(np.float32)
    ref = sam.postprocess_masks(torch.from_numpy(low), (64, 43), (301, 202))[:, 0].numpy()
    np.testing.assert_allclose(upscale_logits(low, (64, 43), (301, 202), 64), ref, atol=1e-4)


def test_scale_coords():
    coords = scale_coords(np.array([[248.0, 373.0]]), (373, 248), (1024, 681))
    np.testing.assert_allclose(coords, [[681.0, 1024.0]], rtol=1e-6)


def test_pack_prompts_boxes_points_and_padding():
    coords, labels = pack_prompts(boxes=np.array([[1, 2, 3, 4], [5, 6, 7, 8]]))
    assert coords.shape == (2, 2, 2) and labels.tolist() == [[2, 3], [2, 3]]
    coords, labels = pack_prompts(points=np.ones((2, 3, 2)), point_labels=np.ones((2, 3)))
    assert coords.shape == (2, 4, 2) and labels[:, -1].tolist() == [-1, -1]
    coords, labels = pack_prompts(boxes=np.array([[1, 2, 3, 4]]), points=np.ones((1, 1, 2)),
                                     point_labels=np.zeros((1, 1)))
    assert labels.tolist() == [[0, 2, 3]] and coords[0, 1].tolist() == [1, 2]
    with pytest.raises(InputError, match="no prompt"):
        pack_prompts()
    with pytest.raises(InputError, match="2 boxes but 1 point sets"):
        pack_prompts(boxes=np.zeros((2, 4)), points=np.ones((1, 1, 2)),
                        point_labels=np.ones((1, 1)))


def test_grey_images_become_rgb_and_bad_images_are_refused():
    grey = np.zeros((5, 7), np.uint8)
    assert as_rgb_uint8(grey).shape == (5, 7, 3)
    with pytest.raises(InputError, match="uint8"):
        as_rgb_uint8(np.zeros((5, 7), np.float32))
    with pytest.raises(InputError, match="HxW"):
        as_rgb_uint8(np.zeros((5, 7, 4), np.uint8))
    with pytest.raises(InputError, match="numpy array"):
        as_rgb_uint8([[1, 2]])


def test_bundled_samples_have_masks_and_boxes():
    samples = bundled_samples()
    assert {s.defect_class for s in samples} == {"blowhole", "break", "crack", "fray", "uneven",
                                                 "free"}
    for sample in samples:
        assert sample.image().shape == sample.mask().shape
        if sample.defect_class != "free":
            x0, y0, x1, y1 = mask_box(sample.mask())
            assert x0 <= x1 and y0 <= y1
        else:
            assert not sample.mask().any()
