"""Markdown tables of a benchmark record (what ``samspt-bench`` prints and README quotes)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from samspt.benchmarks.ratios import RATIO_KEYS


def fmt_ms(value: Optional[float]) -> str:
    """Milliseconds with about three significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_number(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(cells: List[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def hardware_line(record: Dict[str, Any]) -> str:
    machine = record.get("machine", {})
    gpu = machine.get("gpu")
    text = f"{machine.get('cpu', '?')}, {machine.get('logical_cores', '?')} logical cores"
    if gpu:
        text += f"; {gpu['name']} ({gpu['memory_gb']} GB)"
    load = machine.get("load_average_1min_at_start")
    if load is not None:
        text += f"; load average {load} at start"
    return text


def stage_table(record: Dict[str, Any]) -> str:
    """One row per backend and prompt count: median ms per stage, end-to-end median / p90 /
    p99, throughput and peak memory."""
    header = ["backend", "device", "prompts", "preprocess", "encoder", "decoder", "postprocess",
              "end-to-end (median / p90 / p99)", "images/s", "prompts/s", "host peak MiB",
              "device MiB"]
    lines = [_row(header), _row(["---"] * 3 + ["---:"] * (len(header) - 3))]
    backends = record.get("backends", {})
    for entry in record.get("results", []):
        stages = entry["stages"]
        e2e = stages["end_to_end"]
        memory = entry.get("memory", {})
        lines.append(_row([
            entry["backend"], backends.get(entry["backend"], {}).get("device", "?"),
            str(entry["prompts"]),
            *(fmt_ms(stages[s]["median_ms"]) for s in ("preprocess", "encoder", "decoder",
                                                         "postprocess")),
            f"{fmt_ms(e2e['median_ms'])} / {fmt_ms(e2e['p90_ms'])} / {fmt_ms(e2e['p99_ms'])}",
            fmt_number(entry["throughput"]["images_per_s"], 2),
            fmt_number(entry["throughput"]["prompts_per_s"], 1),
            fmt_number(memory.get("host_peak_mb"), 0), fmt_number(memory.get("device_mb"), 0)]))
    return "\n".join(lines)


def ratio_table(record: Dict[str, Any]) -> str:
    basis = record.get("ratio_details", {}).get("basis", {})
    lines = [_row(["ratio", "value", "measured as"]), _row(["---", "---:", "---"])]
    for key in RATIO_KEYS:
        value = record.get("ratios", {}).get(key)
        lines.append(_row([f"`{key}`", fmt_number(value, 2), basis.get(key, "")]))
    return "\n".join(lines)


def encoder_table(record: Dict[str, Any]) -> str:
    """Per backend: encoder GFLOP per view, median ms, achieved TFLOP/s and share of the peak."""
    lines = [_row(["backend", "encoder GFLOP/view", "median ms", "TFLOP/s", "peak TFLOP/s",
                   "`encoder_peak_share`", "peak basis"]),
             _row(["---"] + ["---:"] * 5 + ["---"])]
    for name, backend in record.get("backends", {}).items():
        lines.append(_row([f"`{name}`", fmt_number(backend.get("encoder_gflop"), 3),
                           fmt_ms(backend.get("encoder_median_ms")),
                           fmt_number(backend.get("encoder_tflops_achieved"), 3),
                           fmt_number(backend.get("encoder_peak_tflops"), 2),
                           fmt_number(backend.get("encoder_peak_share"), 3),
                           backend.get("encoder_peak_basis", "")]))
    return "\n".join(lines)


def choices_table(record: Dict[str, Any]) -> str:
    """ONNX Runtime session choices and INT8 variants of the encoder, ms and / FP32 (all)."""
    choices = record.get("ort_choices", {})
    names = list(dict.fromkeys(n for c in choices.values() for n in c.get("medians_ms", {})))
    if not names:
        return ""
    lines = [_row(["encoder choice"] + [f"{label} ms (/ fp32_all)" for label in choices]),
             _row(["---"] + ["---:"] * len(choices))]
    for name in names:
        cells = []
        for choice in choices.values():
            ms = choice.get("medians_ms", {}).get(name)
            ratio = choice.get("vs_fp32_all", {}).get(name)
            cells.append("-" if ms is None else f"{fmt_ms(ms)} ({fmt_number(ratio, 2)})")
        lines.append(_row([f"`{name}`"] + cells))
    return "\n".join(lines)


def format_report(record: Dict[str, Any]) -> str:
    """The stage table, the ratio table and notes (skipped backends), as markdown."""
    settings = record.get("settings", {})
    model = record.get("model", {})
    encoder = model.get("encoder", {})
    parts = [
        f"### samspt-bench: {settings.get('model')} ({model.get('image_size')} px, "
        f"{model.get('tokens')} tokens) on {settings.get('device')}",
        "",
        f"Hardware: {hardware_line(record)}. {settings.get('reps')} timed reps after "
        f"{settings.get('warmup')} warm-up, backends interleaved; milliseconds, medians unless "
        f"marked. Encoder {encoder.get('gflop', 0):.3g} GFLOP per image.",
        "",
        stage_table(record),
        "",
        ratio_table(record),
        "",
        encoder_table(record),
        "",
        choices_table(record),
    ]
    for name, reason in record.get("skipped", {}).items():
        parts.append(f"\nskipped {name}: {reason}")
    return "\n".join(parts)
