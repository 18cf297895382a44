"""One real Ray Serve on localhost for the whole tests/serve package (started on first use,
stopped after the package's last test), and the in-process Inspector the answers must equal.

Applications on it: ``main`` at ``/`` (the defaults: encoder views batched across requests; a
4 MiB body limit so over-limit bodies stay cheap to send) and ``exact`` at ``/exact``
(``--max-batch 1``: no batching across requests, bit-identical to the Inspector).
"""

from __future__ import annotations

import socket
from typing import Dict

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="samspt[serve] is not installed")

MAIN_BODY_LIMIT = 4 * 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeCluster:
    """The package's Ray and Serve: ``start_app`` adds an application, ``stop_app`` removes it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.services: Dict[str, object] = {}

    def start_app(self, name: str, route_prefix: str, **settings):
        from samspt.serve.service import start_service
        from samspt.serve.settings import ServeSettings

        service = start_service(ServeSettings(**{"cpus_per_replica": 0.5, **settings}),
                                port=self.port, route_prefix=route_prefix, name=name,
                                num_cpus=4)
        self.services[name] = service
        return service

    def stop_app(self, name: str) -> None:
        from samspt.serve.service import stop_service

        service = self.services.pop(name)
        stop_service(service)

    def shutdown(self) -> None:
        import ray
        from ray import serve

        self.services.clear()
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="package")
def cluster():
    cluster = ServeCluster()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="package")
def main_service(cluster):
    """The default application (encoder views batched across requests)."""
    return cluster.start_app("main", "/", max_body_bytes=MAIN_BODY_LIMIT)


@pytest.fixture(scope="package")
def exact_service(cluster, main_service):
    """No batching across requests: answers bit-identical to the in-process Inspector."""
    return cluster.start_app("exact", "/exact", max_batch=1)


@pytest.fixture(scope="package")
def inspector():
    from samspt.runtime import Inspector
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR

    with Inspector(EXAMPLE_MODEL_DIR) as ins:
        yield ins


@pytest.fixture(scope="package")
def samples():
    """(name, HxW uint8 grey image as its JPEG decodes, JPEG bytes, tight ground-truth box or
    None, 4 boxes) per bundled sample."""
    from samspt.runtime.prompts import mask_box
    from samspt.runtime.samples import bundled_samples, prompt_boxes

    rng = np.random.default_rng(0)
    out = []
    for sample in bundled_samples():
        mask = sample.mask()
        tight = mask_box(mask).astype(np.float32) if mask.any() else None
        out.append((sample.name, sample.image(), sample.image_path.read_bytes(), tight,
                    prompt_boxes(mask, rng)))
    return out


def mask_differences(served, local) -> int:
    return int(np.count_nonzero(served.masks != local.masks) +
               np.count_nonzero(served.draft_masks != local.draft_masks))


def assert_same_result(served, local, exact: bool = True) -> None:
    """``served`` (from the service) answers what ``local`` (in-process) answers.

    ``exact``: bit for bit. Otherwise the encoder may have run a view in a larger batch than
    the Inspector did (views of other requests beside it), which ONNX Runtime computes through
    another kernel path (embeddings differ by ~1e-6): scores agree to 1e-4 and at most a few
    mask pixels whose logits sit at the threshold may differ.
    """
    assert len(served) == len(local)
    assert [(v.x0, v.y0, v.side) for v in served.views] == \
        [(v.x0, v.y0, v.side) for v in local.views]
    assert served.masks.shape == local.masks.shape
    if exact:
        np.testing.assert_array_equal(served.masks, local.masks)
        np.testing.assert_array_equal(served.draft_masks, local.draft_masks)
        np.testing.assert_array_equal(served.scores, local.scores)
        np.testing.assert_array_equal(served.area_px, local.area_px)
        np.testing.assert_array_equal(served.bbox, local.bbox)
        np.testing.assert_array_equal(served.pred_label, local.pred_label)
        return
    np.testing.assert_allclose(served.scores, local.scores, atol=1e-4, rtol=0)
    union = int(np.count_nonzero(served.masks | local.masks)) + \
        int(np.count_nonzero(served.draft_masks | local.draft_masks))
    assert mask_differences(served, local) <= max(2, union // 200)
    np.testing.assert_array_equal(served.pred_label, local.pred_label)


SERVICE_FIXTURES = {"cluster", "main_service", "exact_service"}


def pytest_collection_modifyitems(config, items):
    """Tests that start real Ray Serve applications carry the ``service`` marker (a quick run
    leaves them out with ``-m 'not service'``)."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.service)
