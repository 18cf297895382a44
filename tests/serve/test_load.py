"""Held under load (localhost, bounded): 8 clients x 25 requests all equal to the in-process
Inspector's answers; >= 200 malformed requests each refused with a 4xx and a message, and the
service healthy afterwards."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import MAIN_BODY_LIMIT, assert_same_result, mask_differences

requests = pytest.importorskip("requests")

CLIENTS, REQUESTS_PER_CLIENT = 8, 25
REQUEST_TIMEOUT_S = 60


def test_eight_clients_times_25_requests_equal_the_inprocess_answers(main_service, inspector,
                                                                     samples):
    from samspt.serve import Client

    cases = []          # (image, boxes or None): one box, four boxes, the scan, per sample
    for _, image, _, tight, boxes in samples:
        cases += [(image, boxes[:1]), (image, boxes), (image, None)]
        if tight is not None:
            cases.append((image, tight[None]))
    expected = [inspector.inspect(image, boxes=boxes) for image, boxes in cases]
    client = Client(main_service.url, timeout_s=REQUEST_TIMEOUT_S)

    def run(worker: int):
        outcomes = []
        for i in range(REQUESTS_PER_CLIENT):
            index = (worker * 7 + i * 3) % len(cases)
            image, boxes = cases[index]
            outcomes.append((index, client.inspect(image, boxes=boxes)))
        return outcomes

    start = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [pair for outcome in pool.map(run, range(CLIENTS)) for pair in outcome]
    elapsed = time.monotonic() - start
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    differing = 0
    for index, served in answers:
        assert_same_result(served, expected[index], exact=False)
        differing += (mask_differences(served, expected[index]) > 0 or
                      not np.array_equal(served.scores, expected[index].scores))
    print(f"{len(answers)} requests from {CLIENTS} clients in {elapsed:.1f} s; "
          f"{len(answers) - differing} bit-identical to the in-process answer")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _malformed_requests(samples):
    """(what, kwargs for requests.request) of every kind of bad request the issue lists."""
    _, image, jpeg, _, _ = samples[0]
    good = base64.b64encode(jpeg).decode()
    huge = base64.b64encode(_png(np.zeros((5000, 8100), np.uint8))).decode()  # 40.5 MP
    gif = io.BytesIO()
    Image.fromarray(image).save(gif, format="GIF")
    h, w = image.shape

    def post_json(body, **extra):
        text = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return {"method": "POST", "data": text,
                "headers": {"Content-Type": "application/json", **extra}}

    def multipart(files, data=None):
        return {"method": "POST", "files": files, "data": data or {}}

    kinds = [
        ("empty body", post_json(b"")),
        ("not JSON", post_json(b"{image: tile}")),
        ("JSON array", post_json([1, 2, 3])),
        ("image is a number", post_json({"image": 17})),
        ("image not base64", post_json({"image": "not base64 !!"})),
        ("not an image", post_json({"image": base64.b64encode(b"hello world" * 20).decode()})),
        ("truncated JPEG", post_json({"image": base64.b64encode(jpeg[: len(jpeg) // 2]).decode()})),
        ("truncated JPEG header", post_json({"image": base64.b64encode(jpeg[:100]).decode()})),
        ("truncated PNG", post_json({"image": base64.b64encode(_png(image)[:-200]).decode()})),
        ("GIF", post_json({"image": base64.b64encode(gif.getvalue()).decode()})),
        ("over the pixel limit", post_json({"image": huge})),
        ("NaN box", post_json('{"image": "%s", "boxes": [[1, NaN, 20, 20]]}' % good)),
        ("infinite box", post_json('{"image": "%s", "boxes": [[1, 2, Infinity, 20]]}' % good)),
        ("inverted box", post_json({"image": good, "boxes": [[40, 40, 10, 10]]})),
        ("box outside the image", post_json({"image": good, "boxes": [[w + 5, 0, w + 50, 20]]})),
        ("box of 3 numbers", post_json({"image": good, "boxes": [[1, 2, 3]]})),
        ("boxes a string", post_json({"image": good, "boxes": "1,2,3,4"})),
        ("box of strings", post_json({"image": good, "boxes": [["1", "2", "3", "4"]]})),
        ("box of booleans", post_json({"image": good, "boxes": [[True, False, True, True]]})),
        ("boxes an object", post_json({"image": good, "boxes": {"x0": 1}})),
        ("too many prompts", post_json({"image": good, "boxes": [[1, 1, 30, 30]] * 65})),
        ("points without labels", post_json({"image": good, "points": [[[5, 5]]]})),
        ("bad point label", post_json({"image": good, "points": [[[5, 5]]],
                                        "point_labels": [[7]]})),
        ("unknown field", post_json({"image": good, "colour": "red"})),
        ("wrong content type", {"method": "POST", "data": b"abc",
                                "headers": {"Content-Type": "text/plain"}}),
        ("multipart without image", multipart({"boxes": (None, "[[1,2,3,4]]")})),
        ("multipart boxes not JSON", multipart({"image": ("t.jpg", jpeg)}, {"boxes": "[[1,2"})),
        ("body over the size limit", post_json(b"x" * (MAIN_BODY_LIMIT + 10))),
        ("body over the limit, no length",
         {"method": "POST", "data": iter([b"x" * 2**20] * 5),
          "headers": {"Content-Type": "application/json"}}),
        ("GET on inspect", {"method": "GET"}),
    ]
    return kinds


def test_two_hundred_malformed_requests_each_get_a_4xx_and_the_service_stays_up(
        main_service, samples, inspector):
    from samspt.serve import Client

    kinds = _malformed_requests(samples)
    url = f"{main_service.url}/v1/inspect"
    rounds = -(-200 // len(kinds))

    def send(item):
        what, kwargs = item
        kwargs = dict(kwargs)
        if what == "body over the limit, no length":
            kwargs["data"] = iter([b"x" * 2**20] * 5)       # a fresh generator every time
        start = time.monotonic()
        answer = requests.request(url=url, timeout=REQUEST_TIMEOUT_S, **kwargs)
        try:
            message = answer.json().get("error")
        except ValueError:
            message = None
        return what, answer.status_code, message, time.monotonic() - start

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, kinds * rounds))
    assert len(outcomes) >= 200
    wrong = [(what, status, message) for what, status, message, _ in outcomes
             if not (400 <= status < 500 and isinstance(message, str) and len(message) > 15)]
    assert not wrong, wrong[:5]
    statuses = {what: status for what, status, _, _ in outcomes}
    assert statuses["over the pixel limit"] == 413
    assert statuses["body over the size limit"] == 413
    assert statuses["body over the limit, no length"] == 413
    assert statuses["wrong content type"] == 415
    assert statuses["GET on inspect"] == 405
    health = requests.get(f"{main_service.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    _, image, _, tight, _ = samples[0]
    assert_same_result(Client(main_service.url).inspect(image, boxes=tight[None]),
                       inspector.inspect(image, boxes=tight[None]), exact=False)
