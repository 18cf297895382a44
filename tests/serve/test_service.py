"""The service on a real Ray Serve (localhost): routes, answers equal to the in-process
Inspector's, multipart, refusals, Prometheus metrics."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.serve.conftest import MAIN_BODY_LIMIT, assert_same_result

requests = pytest.importorskip("requests")


def test_exact_app_answers_bit_for_bit_what_the_inspector_answers(exact_service, inspector,
                                                                  samples):
    from samspt.serve import Client

    client = Client(exact_service.url)
    for name, image, _, tight, boxes in samples:
        assert_same_result(client.inspect(image, boxes=boxes), inspector.inspect(image, boxes=boxes))
        assert_same_result(client.inspect(image), inspector.inspect(image))   # the scan
        if tight is not None:
            center = [[(tight[0] + tight[2]) / 2, (tight[1] + tight[3]) / 2], [0.0, 0.0]]
            served = client.inspect(image, points=[center], point_labels=[[1, 0]])
            assert_same_result(served, inspector.inspect(image, points=[center],
                                                         point_labels=[[1, 0]]))


def test_client_answers_the_inspectors_result_type(main_service, inspector, samples):
    from samspt.runtime import InspectionResult
    from samspt.serve import Client

    name, image, jpeg, tight, _ = samples[2]
    client = Client(main_service.url)
    served = client.inspect(jpeg, boxes=tight[None])       # the file's own bytes
    assert isinstance(served, InspectionResult)
    assert served.masks.shape == (1,) + image.shape and served.masks.dtype == bool
    assert {"encoder", "decoder", "total", "request_decode"} <= set(served.timings_ms)
    assert_same_result(served, inspector.inspect(image, boxes=tight[None]), exact=False)
    assert served.pred_label[0], f"{name}: the ground-truth box should find its defect"


def test_multipart_with_curl_style_fields_answers_the_same(main_service, samples, inspector):
    from samspt.serve.client import result_from_answer

    _, image, jpeg, tight, _ = samples[0]
    answer = requests.post(f"{main_service.url}/v1/inspect",
                           files={"image": ("tile.jpg", jpeg, "image/jpeg")},
                           data={"boxes": json.dumps([tight.tolist()])}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {"prompts", "image_size", "timings_ms", "model"}
    assert set(body["prompts"][0]) == {"mask", "draft_mask", "score", "area_px", "bbox",
                                       "pred_label", "pred_score"}
    assert 0.0 <= body["prompts"][0]["pred_score"] <= 1.0
    assert set(body["prompts"][0]["mask"]) == {"size", "counts"}
    assert isinstance(body["prompts"][0]["mask"]["counts"], str)
    assert_same_result(result_from_answer(body), inspector.inspect(image, boxes=tight[None]),
                       exact=False)


def test_model_health_samples_and_page_routes(main_service, inspector):
    url = main_service.url
    model = requests.get(f"{url}/v1/model", timeout=10).json()
    assert model["name"] == inspector.manifest.name
    assert model["backend"].startswith("onnxruntime") and model["precision"] == "fp32"
    assert model["input"]["image_size"] == inspector.image_size
    assert len(model["sha256"]) == 64
    assert model["limits"]["max_body_bytes"] == MAIN_BODY_LIMIT
    assert model["batching"]["across_requests"] is True
    health = requests.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    listed = requests.get(f"{url}/v1/samples", timeout=10).json()
    assert len(listed) == 6
    picture = requests.get(f"{url}/{listed[0]['url']}", timeout=10)
    assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"
    missing = requests.get(f"{url}/v1/samples/nothing", timeout=10)
    assert missing.status_code == 404 and "v1/samples" in missing.json()["error"]
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text   # nothing external
    assert requests.get(f"{url}/nope", timeout=10).status_code == 404
    wrong = requests.get(f"{url}/v1/inspect", timeout=10)
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]


def test_refusals_come_back_as_typed_client_errors(main_service, samples):
    from samspt.runtime.errors import InputError
    from samspt.serve import Client

    _, image, _, _, _ = samples[0]
    client = Client(main_service.url)
    with pytest.raises(InputError, match="inverted"):
        client.inspect(image, boxes=[[50, 50, 10, 10]])
    with pytest.raises(InputError, match="outside"):
        client.inspect(image, boxes=[[5000, 5000, 5100, 5100]])
    with pytest.raises(InputError, match="finite|NaN"):
        client.inspect(image, boxes=[[1, float("nan"), 3, 4]])
    with pytest.raises(InputError, match="limit of 64"):
        client.inspect(image, boxes=[[1, 1, 20, 20]] * 65)
    big = np.zeros((1200, 1200), np.uint8)      # 1.4 MB as base64 PNG: fine; as raw bytes...
    too_big = requests.post(f"{main_service.url}/v1/inspect",
                            data=b"x" * (MAIN_BODY_LIMIT + 1),
                            headers={"Content-Type": "application/json"}, timeout=60)
    assert too_big.status_code == 413 and "--max-body-mb" in too_big.json()["error"]
    assert client.inspect(big).masks.shape == (1, 1200, 1200)


def test_unreachable_service_is_a_service_error_not_a_hang():
    from samspt.serve import Client, ServiceError

    start = time.monotonic()
    with pytest.raises(ServiceError, match="did not answer"):
        Client("http://127.0.0.1:9", timeout_s=5).health()
    assert time.monotonic() - start < 10


def test_prometheus_metrics_count_requests_errors_and_latency(main_service):
    assert main_service.metrics_url
    for _ in range(3):
        requests.get(f"{main_service.url}/healthz", timeout=10)
        requests.post(f"{main_service.url}/v1/inspect", data=b"{", timeout=10)
    wanted = ("ray_samspt_serve_requests_total", "ray_samspt_serve_errors_total",
              "ray_samspt_serve_request_latency_ms_bucket", "ray_serve_num_http_requests")

    def bad_json_errors(text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ray_samspt_serve_errors_total{")
                   and 'route="/v1/inspect"' in line and 'status="400"' in line)

    deadline, text = time.monotonic() + 60, ""     # Ray exports metrics every few seconds
    while time.monotonic() < deadline:
        text = requests.get(main_service.metrics_url, timeout=10).text
        if all(name in text for name in wanted) and bad_json_errors(text) >= 3:
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"metrics missing from {main_service.metrics_url}: {missing}"
    assert bad_json_errors(text) >= 3
