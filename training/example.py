"""Where the bundled example model lives (the embedded default of every command)."""

from pathlib import Path

EXAMPLE_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "example_model"
#: Full-mode weights (fp16 safetensors) of the ``cnn_small`` configuration trained on MTD views.
EXAMPLE_MODEL = EXAMPLE_MODEL_DIR / "model.safetensors"
EXAMPLE_MODEL_NAME = "example_cnn"
