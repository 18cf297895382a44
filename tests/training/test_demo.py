"""The quick-start demo runs end to end on the bundled samples."""

from samspt.training.demo import main


def test_demo_runs_on_the_bundled_samples(capsys):
    assert main(["--model-type", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "crack_exp1_num_249594" in out and "merged=unmerged" in out
    assert " NO" not in out
