"""What a full-size export of a SAM-family checkpoint must give, checked the same way for each
family (MobileSAM, SAM 2.1): the model type in the manifest, FP16 parity, every TensorRT graph
past the ONNX-TensorRT operator check, and the Inspector answering a box."""

from __future__ import annotations

from pathlib import Path


def assert_full_size_folder_works(out: Path, model_type: str) -> None:
    from samspt.export.trt_support import check_files
    from samspt.runtime import Inspector
    from samspt.runtime.manifest import read_manifest, tensorrt_graph_files
    from samspt.runtime.samples import bundled_verify_images

    manifest = read_manifest(out)
    assert manifest.model["name"] == model_type
    assert manifest.verification["fp16"]["mean_iou"] >= 0.99
    report = check_files([out / name for name in tensorrt_graph_files(manifest.graphs)])
    assert not any(report.values()), report
    _, image, boxes = bundled_verify_images()[0]
    with Inspector(out) as inspector:
        answer = inspector.inspect(image, boxes=boxes[:1])
    assert answer.masks.shape == (1, *image.shape[:2])
