"""samspt-bench end to end on the tiny model (real export, ONNX Runtime, PyTorch, child
processes for memory), and its refusals of bad arguments."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from samspt.benchmarks.backends import STAGES
from samspt.benchmarks.family_encoders import BASIS as FAMILY_BASIS
from samspt.benchmarks.latency import main
from samspt.benchmarks.ratios import RATIO_KEYS

PROMPTS = (1, 16)
FAST = ["--model", "tiny", "--reps", "2", "--warmup", "1", "--relation-tokens", "256",
        "--threads", "1", "--device", "cpu", "--train-steps", "8", "--families", "none"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*FAST, "--prompts", ",".join(map(str, PROMPTS)),
                     "--out", str(out / "record.json"), "--plot", str(out / "latency.png")])
    return code, stdout.getvalue(), out


def test_run_writes_a_record_with_the_six_ratios(run):
    code, _, out = run
    assert code == 0
    record = json.loads((out / "record.json").read_text())
    assert set(record["ratios"]) == set(RATIO_KEYS)
    for key, value in record["ratios"].items():
        if key.startswith("postprocess_share_k64"):      # this run times 1 and 16 prompts
            assert value is None, key
            continue
        if key in FAMILY_BASIS:                          # --families none
            assert value is None, key
            continue
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert 0 < record["ratios"]["encoder_peak_share"] < 1
    for key in ("machine", "versions", "git", "settings", "results", "relation"):
        assert key in record
    assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
    assert {"python", "torch", "onnxruntime", "numpy", "samspt"} <= set(record["versions"])
    assert record["settings"]["model"] == "tiny"


def test_record_has_every_stage_for_every_backend_and_prompt_count(run):
    _, _, out = run
    record = json.loads((out / "record.json").read_text())
    backends = set(record["backends"]) | set(record["skipped"])
    assert backends == {"torch", "ort", "ort-fp16", "ort-int8", "ort-example"}
    assert {"torch", "ort", "ort-example"} <= set(record["backends"])
    for name, backend in record["backends"].items():
        assert backend["encoder_gflop"] > 0 and backend["encoder_tflops_achieved"] > 0, name
        assert backend["encoder_peak_share"] == pytest.approx(
            backend["encoder_tflops_achieved"] / backend["encoder_peak_tflops"]), name
    # the shipped example model's encoder is counted from its graph (the conv family)
    example = record["backends"]["ort-example"]
    assert "graph" in example["encoder_flops_counted_from"]
    assert example["encoder_gflop"] != record["backends"]["ort"]["encoder_gflop"]
    pairs = {(e["backend"], e["prompts"]) for e in record["results"]}
    assert pairs == {(b, k) for b in record["backends"] for k in PROMPTS}
    for entry in record["results"]:
        for stage in STAGES:
            figures = entry["stages"][stage]
            assert figures["n"] == 2
            assert 0 < figures["median_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
        assert entry["throughput"]["prompts_per_s"] == pytest.approx(
            entry["throughput"]["images_per_s"] * entry["prompts"])
        assert entry["memory"]["host_peak_mb"] > 0
    # An ONNX Runtime process never imports torch: its memory is what a deployment sees.
    assert record["backends"]["ort"]["memory"]["torch_imported"] is False


def test_record_holds_the_training_throughput_of_the_default_recipe(run):
    _, _, out = run
    record = json.loads((out / "record.json").read_text())
    assert record["train_views_per_s"] > 0
    assert 0 < record["train_compute_share"] <= 1
    training = record["training"]
    assert training["model"] == "cnn_small" and training["steps"] == 8
    assert training["steps_counted"] == 4                 # the warm-up window left out
    assert training["batch_views"] >= 1 and training["prompts_per_view"] >= 1
    # the shipped example model has a scan head: the 2048 px tile's scan is timed on it
    assert record["scan_vs_encoder_2k"] > 0 and "skipped" not in record["scan_cost"]
    assert record["scan_cost"]["gate"] is not None


def test_markdown_table_is_printed(run):
    _, text, _ = run
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| backend |"))
    columns = header.count("|")
    rows = [line for line in lines if line.startswith(("| torch |", "| ort |", "| ort-fp16 |"))]
    assert len(rows) >= 2 * len(PROMPTS)
    assert all(row.count("|") == columns for row in rows)
    for key in RATIO_KEYS:
        assert f"`{key}`" in text


def test_plot_is_a_png(run):
    _, _, out = run
    from PIL import Image

    data = (out / "latency.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out / "latency.png") as image:
        assert image.width > 400 and image.height > 200


@pytest.mark.parametrize("argv,message", [
    (["--prompts", "0"], ">= 1"),
    (["--prompts", "1,x"], "whole numbers"),
    (["--reps", "0"], ">= 1"),
    (["--warmup", "-1"], ">= 0"),
    (["--model", "vit_z"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
])
def test_bad_arguments_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--backends", "torch,nope"], "unknown backend"),
    (["--backends", "torch-fp16", "--device", "cpu"], "only on a CUDA device"),
    (["--plot", "latency.jpg"], "PNG"),
])
def test_bad_settings_are_clear_errors(argv, message, capsys):
    assert main([*FAST, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main([*FAST, "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_record_holds_the_onnx_runtime_choices_side_by_side(run):
    _, _, out = run
    choices = json.loads((out / "record.json").read_text())["ort_choices"]
    for model in ("run_model", "example_model"):
        medians = choices[model]["medians_ms"]
        assert {"fp32_all", "fp32_extended", "fp32_basic", "fp32_threads1", "fp32_sleep",
                "qdq_s8s8_channel",
                "qdq_u8s8_channel", "qdq_s8s8_tensor", "qop_u8s8_channel"} <= set(medians)
        assert all(ms > 0 for ms in medians.values())
        assert choices[model]["notes"]["qdq_s8s8_channel"]["quantized_nodes"] > 0
    assert "fp32_transformers_optimizer" in choices["run_model"]["medians_ms"] or \
        "failed" in str(choices["run_model"]["notes"]["transformers_fusions"])
    # the example model's INT8 ratios time the export's own parity-gated graphs
    example = choices["example_model"]
    assert {"export_int8", "export_int8_cpu"} <= set(example["medians_ms"])
    kept = example["notes"]["export"]["kept_float_for_parity"]
    assert set(kept) == {"export_int8", "export_int8_cpu"}
    for name, figures in example["notes"]["export"]["parity"].items():
        assert figures["mean_iou"] >= 0.97, name
    ratios = json.loads((out / "record.json").read_text())["ratios"]
    assert ratios["encoder_int8_vs_fp32_example"] == example["vs_fp32_all"]["export_int8_cpu"]
