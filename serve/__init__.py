"""samspt.serve: the Inspector behind HTTP on Ray Serve, with a review page in the browser.

    samspt-serve                              # the shipped example model on http://127.0.0.1:8000/
    samspt-serve models/mine --replicas 2 --gpus-per-replica 1 --address auto

    from samspt.serve import Client
    result = Client("http://127.0.0.1:8000").inspect(image, boxes=[[120, 200, 140, 240]])
    result.masks, result.pred_label             # the same InspectionResult the Inspector returns

It adds transport (HTTP, batching of the encoder's views across requests, replicas), never
inspection logic: a request answers what the in-process :class:`samspt.runtime.Inspector`
answers. It imports ``samspt.runtime``, Ray Serve and pycocotools; never torch, training or
export. ``Client`` needs neither Ray nor a GPU (requests, pycocotools).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "RequestError", "ServeSettings", "ServiceError", "build_app"]


def __getattr__(name: str) -> Any:
    # Lazy: a line PC that only runs the Client never imports Ray.
    if name in ("Client", "ServiceError"):
        from samspt.serve import client

        return getattr(client, name)
    if name == "RequestError":
        from samspt.serve.http_api import RequestError

        return RequestError
    if name == "ServeSettings":
        from samspt.serve.settings import ServeSettings

        return ServeSettings
    if name == "build_app":
        from samspt.serve.deployment import build_app

        return build_app
    raise AttributeError(f"module 'samspt.serve' has no attribute {name!r}")
