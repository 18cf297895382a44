"""Inspector: parity with PyTorch on real images, API, bad input, fuzzing, threads, memory."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from samspt.runtime import Inspector, InspectionResult
from samspt.runtime.errors import ConfigError, InputError, ModelFolderError, SamsptError
from samspt.runtime.prompts import mask_box
from samspt.runtime.samples import bundled_samples

from ..paths import MTD_DIR

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real exported tiny model (random weights made non-trivial) and its PyTorch original."""
    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model

    from ..conftest import randomize_spt_

    torch.manual_seed(0)
    model = randomize_spt_(build_model("tiny"), scale=0.3)
    out = tmp_path_factory.mktemp("models") / "tiny"
    export_model(model, out, "tiny", verify=False)
    return model, out


@pytest.fixture(scope="module")
def inspector(tiny_model):
    with Inspector(tiny_model[1], backend="onnxruntime") as ins:
        yield ins


def _mtd_images(count=6):
    """Real MTD images: one per class of the shared dataset, else the bundled samples."""
    if not MTD_DIR.is_dir():
        return [(s.name, np.repeat(s.image()[:, :, None], 3, axis=2), s.mask())
                for s in bundled_samples()][:count]
    out = []
    for folder in sorted(MTD_DIR.glob("MT_*")):
        for jpg in sorted((folder / "Imgs").glob("*.jpg"))[:1]:
            from PIL import Image

            image = np.asarray(Image.open(jpg).convert("RGB"))
            mask = np.asarray(Image.open(jpg.with_suffix(".png")).convert("L")) > 127
            out.append((jpg.name, image, mask))
    return out[:count]


def test_results_equal_pytorch_on_real_mtd_images(tiny_model, inspector):
    from samspt.training.predict import predict

    model, _ = tiny_model
    ious = []
    for name, image, mask in _mtd_images():
        h, w = mask.shape
        boxes = np.array([mask_box(mask) if mask.any() else [0, 0, w - 1, h - 1],
                          [w * 0.1, h * 0.2, w * 0.6, h * 0.7]], np.float32)
        ours = inspector.inspect(image, boxes=boxes)
        ref = predict(model, image, boxes=boxes)
        for a, b in ((ours.masks, ref.masks), (ours.draft_masks, ref.draft_masks)):
            for k in range(len(boxes)):
                union = (a[k] | b[k]).sum()
                ious.append((a[k] & b[k]).sum() / union if union else 1.0)
        np.testing.assert_allclose(ours.scores, ref.scores, atol=1e-4)
    assert np.mean(ious) >= 0.999 and len(ious) >= 20


def test_result_fields(inspector):
    sample = bundled_samples()[2]
    image = sample.image()
    result = inspector.inspect(image, boxes=[mask_box(sample.mask()), [0, 0, 50, 60]])
    assert isinstance(result, InspectionResult) and len(result) == 2
    assert result.masks.shape == result.draft_masks.shape == (2, *image.shape)
    assert result.masks.dtype == bool and result.scores.dtype == np.float32
    for k in range(2):
        assert result.area_px[k] == result.masks[k].sum()
        if result.pred_label[k]:
            x0, y0, x1, y1 = result.bbox[k]
            ys, xs = np.nonzero(result.masks[k])
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
        else:
            assert list(result.bbox[k]) == [-1, -1, -1, -1]
    assert set(result.timings_ms) == {"preprocess", "encoder", "decoder", "postprocess", "total"}
    json.dumps(result.to_dict())


def test_no_prompt_means_the_whole_image(inspector):
    image = bundled_samples()[0].image()
    h, w = image.shape
    a = inspector.inspect(image)
    b = inspector.inspect(image, boxes=[[0, 0, w - 1, h - 1]])
    assert np.array_equal(a.masks, b.masks)


def test_set_image_then_predict_equals_inspect(inspector):
    image = bundled_samples()[1].image()
    inspector.set_image(image)
    for boxes in ([[10, 20, 100, 200]], [[0, 0, 30, 30], [5, 5, 200, 100]]):
        assert np.array_equal(inspector.predict(boxes=boxes).masks,
                              inspector.inspect(image, boxes=boxes).masks)
    points = inspector.predict(points=[[50, 60], [10, 10]], point_labels=[1, 0])
    assert points.masks.shape[0] == 1
    assert points.timings_ms["encoder"] == 0.0


def test_predict_before_set_image_is_an_error(tiny_model):
    with Inspector(tiny_model[1], backend="onnxruntime", warmup=False) as ins:
        with pytest.raises(InputError, match="set_image"):
            ins.predict(boxes=[[0, 0, 5, 5]])


GOOD = np.full((60, 80, 3), 120, np.uint8)


@pytest.mark.parametrize("kwargs,match", [
    ({"image": [[1, 2], [3, 4]]}, "numpy array"),
    ({"image": "tile.png"}, "numpy array"),
    ({"image": GOOD.astype(np.float32)}, "uint8"),
    ({"image": GOOD[None]}, "HxW or HxWx3"),
    ({"image": np.zeros((60, 80, 4), np.uint8)}, "HxW"),
    ({"image": np.zeros((0, 80, 3), np.uint8)}, "at least"),
    ({"image": np.zeros((1, 1), np.uint8)}, "at least"),
    ({"boxes": [[10, 10, 5, 20]]}, "inverted"),
    ({"boxes": [[np.nan, 1, 2, 3]]}, "NaN"),
    ({"boxes": [[np.inf, 1, 2, 3]]}, "NaN or infinite"),
    ({"boxes": [[100, 100, 200, 200]]}, "outside"),
    ({"boxes": [[-50, -50, -10, -10]]}, "outside"),
    ({"boxes": [[1, 2, 3]]}, "Kx4"),
    ({"boxes": np.zeros((0, 4))}, "empty"),
    ({"boxes": [[0, 0, 5, 5]] * 65}, "more than the limit of 64"),
    ({"boxes": "0,0,5,5"}, "numbers"),
    ({"boxes": [["a", 0, 1, 1]]}, "numbers"),
    ({"points": [[5, 5]]}, "point_labels"),
    ({"points": [[5, 5]], "point_labels": [1, 1]}, "one label per point"),
    ({"points": [[5, 5]], "point_labels": [2]}, "boxes go in"),
    ({"points": [[500, 5]], "point_labels": [1]}, "outside"),
    ({"points": [[[5, 5]], [[6, 6]]], "point_labels": [[1], [1]], "boxes": [[0, 0, 9, 9]]},
     "2 point prompts"),
    ({"point_labels": [1]}, "without points"),
])
def test_bad_input_gets_a_typed_error_that_names_the_problem(inspector, kwargs, match):
    kwargs = dict(kwargs)
    image = kwargs.pop("image", GOOD)
    with pytest.raises(InputError, match=match):
        inspector.inspect(image, **kwargs)


def test_absurdly_large_image_is_refused_before_any_work(tiny_model):
    with Inspector(tiny_model[1], backend="onnxruntime", max_image_pixels=10_000,
                   warmup=False) as ins:
        with pytest.raises(InputError, match="more than the limit"):
            ins.inspect(np.zeros((200, 200), np.uint8))


def test_partially_outside_boxes_are_clipped(inspector):
    a = inspector.inspect(GOOD, boxes=[[-20, -20, 40, 30]])
    b = inspector.inspect(GOOD, boxes=[[0, 0, 40, 30]])
    assert np.array_equal(a.masks, b.masks)


def test_constructor_errors(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="backend"):
        Inspector(tiny_model[1], backend="openvino")
    with pytest.raises(ConfigError, match="precision"):
        Inspector(tiny_model[1], precision="int4")
    with pytest.raises(ModelFolderError, match="does not exist"):
        Inspector(tmp_path / "missing")


@pytest.mark.parametrize("damage,match", [
    ("truncate", "truncated or replaced"),
    ("edit", "does not match its sha256"),
    ("manifest", "no manifest.json"),
    ("schema", "schema_version 7"),
    ("json", "not valid JSON"),
    ("unlisted", "not listed under files"),
    ("elsewhere", "not a file name inside the model folder"),
])
def test_corrupt_or_tampered_model_folders_are_refused(tiny_model, tmp_path, damage, match):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model[1], folder)
    graph = folder / "encoder.fp32.onnx"
    manifest = folder / "manifest.json"
    if damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "edit":
        data = bytearray(graph.read_bytes())
        data[-100] ^= 0x01
        graph.write_bytes(bytes(data))
    elif damage == "manifest":
        manifest.unlink()
    elif damage == "schema":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 7}))
    elif damage in ("unlisted", "elsewhere"):
        # A graph the manifest names but does not hash (or one outside the folder) would be
        # opened unchecked: the folder is refused instead.
        data = json.loads(manifest.read_text())
        shutil.copy(graph, folder / "other.onnx")
        name = "other.onnx" if damage == "unlisted" else str(graph.resolve())
        data["graphs"]["encoder"]["fp32"]["file"] = name
        manifest.write_text(json.dumps(data))
    else:
        manifest.write_text("{ not json")
    with pytest.raises(ModelFolderError, match=match):
        Inspector(folder, backend="onnxruntime")


def test_tensorrt_backend_refusal_is_explicit(tiny_model):
    with pytest.raises(SamsptError):
        Inspector(tiny_model[1], backend="tensorrt")


def test_fuzz_a_thousand_malformed_calls_never_crash(inspector):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings, strategies as st

    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                       st.integers(-10_000, 10_000))
    shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)
    arrays = st.builds(lambda shape, fill: np.full(shape, fill, dtype=np.float64), shapes, floats)
    images = st.one_of(
        st.just(GOOD), st.just(GOOD[:, :, 0]),
        st.builds(lambda h, w, c, dt: np.zeros((h, w, c) if c else (h, w), dtype=dt),
                  st.integers(0, 40), st.integers(0, 40), st.sampled_from([0, 1, 2, 3, 4]),
                  st.sampled_from([np.uint8, np.float32, np.int16, bool])),
        st.none(), st.text(max_size=5), st.lists(st.integers(0, 255), max_size=4))
    prompts = st.one_of(st.none(), st.none(), st.just([[5.0, 5.0, 30.0, 40.0]]), arrays, st.lists(floats, max_size=6),
                        st.lists(st.lists(floats, min_size=4, max_size=4), max_size=3),
                        st.text(max_size=4))
    outcomes = {"ok": 0, "refused": 0}

    @settings(max_examples=1000, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(image=images, boxes=prompts, points=prompts, labels=prompts)
    def run(image, boxes, points, labels):
        try:
            result = inspector.inspect(image, boxes=boxes, points=points, point_labels=labels)
        except InputError as exc:
            assert str(exc)
            outcomes["refused"] += 1
            return
        assert result.masks.shape[1:] == np.asarray(image).shape[:2]
        outcomes["ok"] += 1

    run()
    assert outcomes["ok"] + outcomes["refused"] >= 1000
    assert outcomes["refused"] > 500 and outcomes["ok"] > 0


def test_concurrent_calls_equal_serial_results(inspector):
    samples = bundled_samples()
    jobs = [(s.image(), np.array([[5, 5, 60 + 10 * i, 80 + 5 * i]], np.float32))
            for i, s in enumerate(samples)] * 4
    serial = [inspector.inspect(img, boxes=b).masks for img, b in jobs]
    results = [None] * len(jobs)

    def work(start):
        for i in range(start, len(jobs), 8):
            results[i] = inspector.inspect(jobs[i][0], boxes=jobs[i][1]).masks

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(serial, results))


def test_set_image_is_per_thread(inspector):
    a, b = bundled_samples()[0].image(), bundled_samples()[3].image()
    inspector.set_image(a)
    other = {}

    def elsewhere():
        inspector.set_image(b)
        other["shape"] = inspector.predict().masks.shape

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert inspector.predict().masks.shape == (1, *a.shape)
    assert other["shape"] == (1, *b.shape)


@pytest.mark.slow
def test_ten_thousand_inspections_do_not_grow_memory(tiny_model):
    import resource

    def rss_mb():
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    image = bundled_samples()[2].image()
    with Inspector(tiny_model[1], backend="onnxruntime") as ins:
        for _ in range(500):
            ins.inspect(image, boxes=[[10, 10, 100, 200]])
        before = rss_mb()
        for i in range(10_000):
            ins.inspect(image, boxes=[[10, 10, 100 + i % 50, 200]])
        after = rss_mb()
    assert after <= before * 1.05, (before, after)


def test_threads_sleep_between_ops_unless_asked_to_spin(tiny_model, inspector):
    """By default ONNX Runtime's threads sleep instead of spin-waiting (faster where cores are
    shared: a service replica, several caller threads); ``spin=True`` restores ONNX Runtime's
    own default. The sessions say so, and the answers do not change."""
    image = np.repeat(bundled_samples()[0].image()[:, :, None], 3, axis=2)
    boxes = [[10, 20, 120, 140]]
    for session in (inspector.graphs.encoder, inspector.graphs.decoder):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with Inspector(tiny_model[1], backend="onnxruntime", spin=True) as spinning:
        options = spinning.graphs.encoder.get_session_options()
        with pytest.raises(RuntimeError, match="does not have configuration"):  # ORT's default
            options.get_session_config_entry("session.intra_op.allow_spinning")
        a, b = spinning.inspect(image, boxes=boxes), inspector.inspect(image, boxes=boxes)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
