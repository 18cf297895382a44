"""HTTP API v1 without the transport: request parsing, image decoding, RLE, the answer and the
Client's reading of it (real PIL, pycocotools and ONNX Runtime; no Ray)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from samspt.runtime.errors import InputError
from samspt.serve.client import encode_image, result_from_answer
from samspt.serve.http_api import (RequestError, answer_json, check_content_length,
                                   decode_image, model_identity, parse_inspect_request)
from samspt.serve.rle import decode_masks, encode_masks

pytest.importorskip("pycocotools")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _json(image_bytes: bytes, **prompts) -> bytes:
    return json.dumps({"image": base64.b64encode(image_bytes).decode(), **prompts}).encode()


def _multipart(fields, boundary="XyZ123"):
    lines = []
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        lines += [f"--{boundary}".encode(), f"Content-Disposition: {disposition}".encode(), b"",
                  data]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}"


RGB = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)


def test_rle_round_trip_is_what_pycocotools_writes():
    from pycocotools import mask as coco_mask

    masks = np.random.default_rng(0).random((3, 23, 17)) > 0.7
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [23, 17] for r in rles)
    reference = coco_mask.encode(np.asfortranarray(masks[1].astype(np.uint8)))
    assert rles[1]["counts"] == reference["counts"].decode()
    np.testing.assert_array_equal(decode_masks(rles, (23, 17)), masks)
    with pytest.raises(InputError, match="size"):
        decode_masks(rles, (17, 23))


def test_json_and_multipart_requests_carry_the_same_pixels_and_prompts():
    png = _png(RGB)
    boxes = [[1, 2, 20, 25], [0, 0, 39, 29]]
    parsed = parse_inspect_request(_json(png, boxes=boxes), "application/json", 64, 10_000)
    np.testing.assert_array_equal(parsed.image, RGB)
    assert parsed.boxes == boxes and parsed.points is None and parsed.prompt_count == 2
    body, content_type = _multipart({"image": ("tile.png", png),
                                     "boxes": (None, json.dumps(boxes).encode())})
    multi = parse_inspect_request(body, content_type, 64, 10_000)
    np.testing.assert_array_equal(multi.image, RGB)
    assert multi.boxes == boxes
    scan = parse_inspect_request(_json(png), "application/json; charset=utf-8", 64, 10_000)
    assert scan.boxes is None and scan.prompt_count == 0


def test_a_grey_file_stays_grey_and_a_data_url_is_accepted():
    grey = RGB[:, :, 0]
    body = json.dumps({"image": "data:image/png;base64," +
                       base64.b64encode(_png(grey)).decode()}).encode()
    parsed = parse_inspect_request(body, "application/json", 64, 10_000)
    assert parsed.image.shape == (30, 40)
    np.testing.assert_array_equal(parsed.image, grey)


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"", "application/json", 400, "empty"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 400, "must be an object"),
    (b'{"image": 5}', "application/json", 400, "base64"),
    (b'{"image": "%%%"}', "application/json", 400, "not valid base64"),
    (b'{"image": "aGVsbG8gd29ybGQ="}', "application/json", 400, "not a PNG or JPEG"),
    (b'{"image": "", "colour": 1}', "application/json", 400, "unknown field"),
    (b"abc", "text/plain", 415, "not accepted"),
    (b"abc", "multipart/form-data", 400, "boundary"),
    (b'{"image": "", "boxes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json",
     400, "nested too deeply"),
])
def test_malformed_bodies_are_refused_with_a_status_and_a_fix(body, content_type, status, words):
    with pytest.raises(RequestError, match=words) as caught:
        parse_inspect_request(body, content_type, 64, 10_000)
    assert caught.value.status == status


@pytest.mark.parametrize("prompts, words", [
    ({"boxes": "1,2,3,4"}, "JSON array"),
    ({"boxes": [[1, 2, "3", 4]]}, "only numbers"),
    ({"boxes": [[1, 2, True, 4]]}, "only numbers"),
    ({"boxes": [[1, 2, None, 4]]}, "only numbers"),
    ({"boxes": [[1, 2, 3, 4]] * 65}, "more than the limit of 64"),
    ({"points": {"x": 1}}, "JSON array"),
    ({"boxes": [[[[[1, 2, 3, 4]]]]]}, "nested deeper"),
])
def test_wrong_prompt_types_are_refused(prompts, words):
    with pytest.raises(RequestError, match=words):
        parse_inspect_request(_json(_png(RGB), **prompts), "application/json", 64, 10_000)


def test_nan_in_a_box_is_refused_before_the_model():
    body = b'{"image": "' + base64.b64encode(_png(RGB)) + b'", "boxes": [[1, NaN, 3, 4]]}'
    with pytest.raises(RequestError, match="finite"):
        parse_inspect_request(body, "application/json", 64, 10_000)


def test_truncated_oversized_and_foreign_images_are_refused():
    jpeg = io.BytesIO()
    Image.fromarray(RGB).save(jpeg, format="JPEG")
    data = jpeg.getvalue()
    assert decode_image(data, 10_000).shape == (30, 40, 3)
    with pytest.raises(RequestError, match="truncated"):
        decode_image(data[: len(data) // 2], 10_000)
    with pytest.raises(RequestError, match="truncated"):
        decode_image(_png(RGB)[:-40], 10_000)
    with pytest.raises(RequestError, match="over the limit of 1,000") as caught:
        decode_image(data, 1_000)
    assert caught.value.status == 413
    gif = io.BytesIO()
    Image.fromarray(RGB).save(gif, format="GIF")
    with pytest.raises(RequestError, match="GIF"):
        decode_image(gif.getvalue(), 10_000)


def test_declared_body_length_over_the_limit_is_413():
    check_content_length("100", 1000)
    check_content_length(None, 1000)
    with pytest.raises(RequestError, match="over the limit") as caught:
        check_content_length("5000", 1000)
    assert caught.value.status == 413
    with pytest.raises(RequestError, match="not a number"):
        check_content_length("lots", 1000)


def test_client_image_encoding_is_lossless():
    for image in (RGB, RGB[:, :, 0], RGB[:, :, :1]):
        decoded = decode_image(encode_image(image), 10_000)
        np.testing.assert_array_equal(decoded, image.reshape(decoded.shape))
    with pytest.raises(InputError, match="uint8"):
        encode_image(RGB.astype(np.float32))
    with pytest.raises(InputError, match="does not exist"):
        encode_image("/no/such/tile.png")


def test_answer_json_read_back_is_the_inspectors_result():
    from samspt.runtime import Inspector
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_verify_images

    _, image, boxes = bundled_verify_images(0)[1]
    with Inspector(EXAMPLE_MODEL_DIR) as inspector:
        local = inspector.inspect(image, boxes=boxes)
        scan = inspector.inspect(image)
    for result, count in ((local, len(boxes)), (scan, 1)):
        answer = json.loads(json.dumps(answer_json(result, image.shape[:2],
                                                   model_identity("m", "0" * 64, 128))))
        assert len(answer["prompts"]) == count and answer["image_size"] == list(image.shape[:2])
        back = result_from_answer(answer)
        np.testing.assert_array_equal(back.masks, result.masks)
        np.testing.assert_array_equal(back.draft_masks, result.draft_masks)
        np.testing.assert_array_equal(back.scores, result.scores)
        np.testing.assert_array_equal(back.bbox, result.bbox)
        np.testing.assert_array_equal(back.pred_label, result.pred_label)
        assert len(result.pred_score) == count
        np.testing.assert_array_equal(back.pred_score, result.pred_score)
        assert back.views == result.views
        for k, prompt in enumerate(answer["prompts"]):
            assert (prompt["bbox"] is None) == (not result.pred_label[k])


def test_a_scan_heads_anomaly_map_travels_as_an_8_bit_png():
    from samspt.runtime.result import InspectionResult

    rng = np.random.default_rng(0)
    probability = rng.uniform(0, 1, (40, 56)).astype(np.float32)
    masks = np.zeros((1, 40, 56), bool)
    result = InspectionResult(masks=masks, draft_masks=masks, scores=np.ones(1, np.float32),
                              area_px=np.zeros(1, np.int64), bbox=np.full((1, 4), -1),
                              pred_label=np.zeros(1, bool), anomaly_map=probability)
    answer = json.loads(json.dumps(answer_json(result, (40, 56), model_identity("m", "0" * 64,
                                                                                  128))))
    back = result_from_answer(answer).anomaly_map
    assert back.shape == (40, 56) and back.dtype == np.float32
    assert np.abs(back - probability).max() <= 0.5 / 255 + 1e-6
    no_map = answer_json(InspectionResult(masks=masks, draft_masks=masks,
                                          scores=np.ones(1, np.float32),
                                          area_px=np.zeros(1, np.int64),
                                          bbox=np.full((1, 4), -1),
                                          pred_label=np.zeros(1, bool)), (40, 56),
                         model_identity("m", "0" * 64, 128))
    assert "anomaly_map" not in no_map and result_from_answer(no_map).anomaly_map is None
