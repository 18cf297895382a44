"""samspt-inspect: the shipped model by default, overlays and results.json, --box parsing, and
exit code 2 with a message on bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from samspt.runtime.inspect_images import build_parser, main
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples


def _sample(name):
    return next(s for s in bundled_samples() if s.name.startswith(name))


def test_boxes_on_the_shipped_model_write_overlays_and_results(tmp_path, capsys):
    crack, free = _sample("crack"), _sample("free")
    out = tmp_path / "out"
    argv = [str(crack.image_path), str(free.image_path), "--box", "60,10,90,200",
            "--box", "5,5,20,20", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "crack_exp1_num_249594.jpg" in printed and str(out / "results.json") in printed
    records = json.loads((out / "results.json").read_text())
    assert [r["image"] for r in records] == [str(crack.image_path), str(free.image_path)]
    for record in records:
        assert record["boxes"] == [[60.0, 10.0, 90.0, 200.0], [5.0, 5.0, 20.0, 20.0]]
        assert len(record["prompts"]) == 2 and len(record["views"]) == 2
        with Image.open(record["overlay"]) as overlay:      # the tile, then its enlarged views
            assert overlay.width > record["size"][0]
        for prompt in record["prompts"]:
            assert prompt["defect"] == (prompt["area_px"] >= 1)
            assert (prompt["bbox"] == [-1, -1, -1, -1]) == (prompt["area_px"] == 0)


def test_no_box_scans_and_an_explicit_model_folder_is_taken(tmp_path):
    image = _sample("blowhole").image_path
    assert main([str(EXAMPLE_MODEL_DIR), str(image), "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "results.json").read_text())[0]
    assert record["boxes"] == [] and len(record["prompts"]) == 1 and len(record["views"]) > 1
    # A gate no view's score reaches: the scan answers no defect.
    assert main([str(image), "--out", str(tmp_path / "gated"), "--scan-min-score", "2"]) == 0
    gated = json.loads((tmp_path / "gated" / "results.json").read_text())[0]
    assert record["prompts"][0]["defect"] and not gated["prompts"][0]["defect"]


@pytest.mark.parametrize("argv, words", [
    (["--box", "1,2,3"], "x0,y0,x1,y1 (4 numbers)"),
    (["--box", "a,b,c,d"], "numbers"),
])
def test_malformed_boxes_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["tile.jpg", *argv])
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("make, words", [
    ("not_an_image", "cannot read image"),
    ("box_outside", "lies outside"),
    ("no_image", "no image given"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, make, words):
    image = _sample("crack").image_path
    if make == "not_an_image":
        bad = tmp_path / "tile.jpg"
        bad.write_bytes(b"this is not a JPEG")
        argv = [str(bad)]
    elif make == "box_outside":
        argv = [str(image), "--box", "5000,5000,5100,5100"]
    else:
        argv = [str(EXAMPLE_MODEL_DIR)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and words in last
    assert not (tmp_path / "out" / "results.json").exists()
