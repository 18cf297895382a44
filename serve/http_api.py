"""HTTP API v1, without the transport: a request body -> (image, prompts); an
:class:`~samspt.runtime.result.InspectionResult` -> the answer's JSON. No Ray, no web framework,
so every rule here is tested on its own and the Client reads what this writes.

Request (``POST /v1/inspect``), either

- ``application/json``: ``{"image": "<base64 of a PNG or JPEG file>", "boxes": [[x0, y0, x1,
  y1], ...], "points": [[[x, y], ...], ...], "point_labels": [[1, ...], ...]}`` (prompts
  optional; none: the prompt-free scan), or
- ``multipart/form-data``: an ``image`` file part and optional ``boxes``, ``points``,
  ``point_labels`` fields, each holding JSON.

Answer (``200``)::

    {"prompts": [{"mask": RLE, "draft_mask": RLE, "score": float, "area_px": int,
                  "bbox": [x0, y0, x1, y1] | null, "pred_label": bool,
                  "pred_score": float}, ...],           # pred_score: 0.5 at the operating point
     "image_size": [H, W], "views": [[x0, y0, side], ...],
     "timings_ms": {...}, "model": {"name": ..., "sha256": ..., "input_size": S},
     "anomaly_map": {"png": base64, "scale": 255}}   # a scan by a model with a scan head only:
                                                     # its HxW defect probability, 8-bit PNG

RLE: :mod:`samspt.serve.rle`. Every refused request is a :class:`RequestError` with its HTTP
status and a message that says what was wrong and how to fix it (``{"error": "..."}``).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from samspt.runtime.errors import InputError
from samspt.runtime.result import InspectionResult
from samspt.serve.rle import encode_masks

PROMPT_FIELDS = ("boxes", "points", "point_labels")
IMAGE_FORMATS = ("PNG", "JPEG")


class RequestError(InputError):
    """A request the service refuses: ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InspectRequest:
    """A parsed request: ``image`` HxWx3 uint8 RGB (or HxW uint8 grey, as the file holds it) and
    the prompts as the Inspector takes them (lists of numbers, or None)."""

    image: np.ndarray
    boxes: Optional[Any] = None
    points: Optional[Any] = None
    point_labels: Optional[Any] = None

    @property
    def prompt_count(self) -> int:
        source = self.boxes if self.boxes is not None else self.points
        return len(source) if isinstance(source, list) else 0


# ----------------------------------------------------------------------------- request
def check_content_length(header: Optional[str], max_body_bytes: int) -> None:
    """Refuse a declared body over the limit before reading it (413), or a malformed length."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise RequestError(f"Content-Length {header!r} is not a number of bytes") from None
    if declared > max_body_bytes:
        raise body_too_large(max_body_bytes, declared)


def body_too_large(max_body_bytes: int, size: Optional[int] = None) -> RequestError:
    what = f"{size:,} bytes" if size is not None else "more bytes"
    return RequestError(f"request body is {what}, over the limit of {max_body_bytes:,} bytes; "
                        "send a smaller (JPEG) file or start samspt-serve with a larger "
                        "--max-body-mb", status=413)


def parse_inspect_request(body: bytes, content_type: Optional[str], max_prompts: int,
                          max_image_pixels: int) -> InspectRequest:
    """The body of ``POST /v1/inspect`` -> :class:`InspectRequest`; :class:`RequestError`
    (400, 415) for anything malformed. Prompt geometry (NaN, inverted, outside the image) is
    the Inspector's own check and raises its :class:`InputError`."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in ("application/json", ""):
        fields, image_bytes = _json_fields(body)
    elif kind == "multipart/form-data":
        fields, image_bytes = _multipart_fields(body, content_type or "")
    else:
        raise RequestError(f"Content-Type {kind!r} is not accepted; send application/json "
                           "({\"image\": base64, \"boxes\": [...]}) or multipart/form-data "
                           "(an 'image' file part, a 'boxes' JSON field)", status=415)
    prompts = {name: _prompt_field(name, fields.get(name)) for name in PROMPT_FIELDS}
    for name, value in prompts.items():
        if value is not None and name != "point_labels" and len(value) > max_prompts:
            raise RequestError(f"{len(value)} {name} in one request, more than the limit of "
                               f"{max_prompts}; split them over several requests")
    image = decode_image(image_bytes, max_image_pixels)
    return InspectRequest(image, **prompts)


def _json_fields(body: bytes) -> Tuple[Dict[str, Any], bytes]:
    if not body:
        raise RequestError("empty request body; send JSON {\"image\": \"<base64 of a PNG or "
                           "JPEG file>\", \"boxes\": [[x0, y0, x1, y1], ...]}")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON ({exc}); send {{\"image\": "
                           "\"<base64>\", \"boxes\": [...]}") from None
    except RecursionError:
        raise RequestError("request JSON is nested too deeply; boxes are [[x0, y0, x1, y1], "
                           "...]") from None
    if not isinstance(data, dict):
        raise RequestError(f"request JSON must be an object, got {type(data).__name__}; send "
                           "{\"image\": \"<base64>\", \"boxes\": [...]}")
    unknown = sorted(set(data) - {"image", *PROMPT_FIELDS})
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; known: image, boxes, points, "
                           "point_labels")
    encoded = data.get("image")
    if not isinstance(encoded, str):
        raise RequestError("'image' must be a string holding the base64 of a PNG or JPEG file, "
                           f"got {type(encoded).__name__}")
    if encoded.startswith("data:") and "," in encoded:   # a data URL, as a browser makes one
        encoded = encoded.split(",", 1)[1]
    try:
        image_bytes = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'image' is not valid base64; encode the file's bytes with "
                           "base64 (e.g. base64.b64encode(open(path, 'rb').read()))") from None
    return data, image_bytes


def _multipart_fields(body: bytes, content_type: str) -> Tuple[Dict[str, Any], bytes]:
    if "boundary=" not in content_type:
        raise RequestError("multipart/form-data without a boundary; let your HTTP client build "
                           "the body (curl -F image=@tile.jpg -F boxes='[[...]]')")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestError("multipart body could not be read; check the boundary")
    fields: Dict[str, Any] = {}
    image_bytes: Optional[bytes] = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "image":
            image_bytes = payload
        elif name in PROMPT_FIELDS:
            try:
                fields[name] = json.loads(payload.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RequestError(f"form field {name!r} must hold JSON, e.g. "
                                   "boxes='[[10, 20, 60, 80]]'") from None
        else:
            raise RequestError(f"unknown form field {name!r}; known: image, boxes, points, "
                               "point_labels")
    if image_bytes is None:
        raise RequestError("multipart request without an 'image' file part; send "
                           "-F image=@tile.jpg")
    return fields, image_bytes


def _prompt_field(name: str, value: Any) -> Optional[list]:
    """A prompt field as nested lists of finite numbers (JSON types checked here; shapes and
    geometry by the Inspector)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError(f"'{name}' must be a JSON array, got {type(value).__name__}; e.g. "
                           '"boxes": [[x0, y0, x1, y1]]')

    def check(item: Any, depth: int = 0) -> None:
        if depth > 3:
            raise RequestError(f"'{name}' is nested deeper than a prompt array can be "
                               '(boxes: [[x0, y0, x1, y1]]; points: [[[x, y]]])')
        if isinstance(item, list):
            for sub in item:
                check(sub, depth + 1)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise RequestError(f"'{name}' must hold only numbers, found {item!r:.40}")
        elif not math.isfinite(item):
            raise RequestError(f"'{name}' holds {item}, not a finite number")

    check(value)
    return value


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG or JPEG file bytes -> HxWx3 uint8 RGB (HxW uint8 for a grey file). The size is
    checked from the header before any pixel is decoded; a truncated file is refused."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError("'image' is empty; send the bytes of a PNG or JPEG file")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        if data.startswith((b"\xff\xd8", b"\x89PNG")):
            raise RequestError(f"'image' starts as a JPEG/PNG file but its header cannot be "
                               f"read ({len(data)} bytes): the file is truncated or damaged; "
                               "send the whole file") from None
        raise RequestError(f"'image' is not a PNG or JPEG file ({len(data)} bytes starting "
                           f"{data[:8]!r}); send the file's bytes, base64-encoded") from None
    with img:
        if img.format not in IMAGE_FORMATS:
            raise RequestError(f"'image' is a {img.format} file; send PNG or JPEG")
        width, height = img.size
        if width * height > max_pixels:
            raise RequestError(f"image is {width}x{height} = {width * height:,} pixels, over the "
                               f"limit of {max_pixels:,}; downscale it, or start samspt-serve "
                               "with a larger --max-image-pixels", status=413)
        try:
            img.load()
            mode = "L" if img.mode in ("L", "1") else "RGB"
            return np.asarray(img.convert(mode))
        except (OSError, ValueError, SyntaxError) as exc:
            raise RequestError(f"'image' could not be decoded ({exc}): the file is truncated or "
                               "damaged; send the whole file") from None


# ------------------------------------------------------------------------------ answer
def model_identity(name: str, sha256: str, input_size: int) -> Dict[str, Any]:
    return {"name": name, "sha256": sha256, "input_size": int(input_size)}


def answer_json(result: InspectionResult, image_hw: Tuple[int, int],
                model: Dict[str, Any]) -> Dict[str, Any]:
    """The ``200`` answer of ``POST /v1/inspect`` (see the module doc)."""
    masks = encode_masks(result.masks)
    drafts = encode_masks(result.draft_masks)
    prompts: List[Dict[str, Any]] = []
    for k in range(len(result)):
        bbox = [int(v) for v in result.bbox[k]]
        prompts.append({"mask": masks[k], "draft_mask": drafts[k],
                        "score": float(result.scores[k]), "area_px": int(result.area_px[k]),
                        "bbox": bbox if bbox[0] >= 0 else None,
                        "pred_label": bool(result.pred_label[k]),
                        **({"pred_score": float(result.pred_score[k])}
                           if len(result.pred_score) == len(result) else {})})
    answer = {"prompts": prompts, "image_size": [int(image_hw[0]), int(image_hw[1])],
              "views": [[int(v.x0), int(v.y0), int(v.side)] for v in result.views],
              "timings_ms": {key: round(float(value), 3) for key, value in
                             result.timings_ms.items()},
              "model": model}
    if result.anomaly_map is not None:
        answer["anomaly_map"] = encode_anomaly_map(result.anomaly_map)
    return answer


def encode_anomaly_map(probability: np.ndarray) -> Dict[str, Any]:
    """An HxW [0, 1] map -> ``{"png": base64 of an 8-bit grey PNG, "scale": 255}`` (value /
    scale is the probability, to 1/255)."""
    from PIL import Image

    levels = np.clip(np.rint(np.asarray(probability, np.float32) * 255.0), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(levels.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return {"png": base64.b64encode(buffer.getvalue()).decode("ascii"), "scale": 255}


def decode_anomaly_map(entry: Dict[str, Any]) -> np.ndarray:
    """The inverse of :func:`encode_anomaly_map`: HxW float32."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(entry["png"]))) as img:
        return np.asarray(img, np.float32) / float(entry["scale"])
