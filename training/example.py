"""Where the bundled example model's training side lives: its weights and model card (the
exported folder that commands run is :data:`samspt.runtime.samples.EXAMPLE_MODEL_DIR`)."""

from pathlib import Path

EXAMPLE_WEIGHTS_DIR = Path(__file__).resolve().parent / "assets" / "example_model"
#: Full-mode weights (fp16 safetensors) of the ``cnn_small`` configuration trained on MTD views.
EXAMPLE_MODEL = EXAMPLE_WEIGHTS_DIR / "model.safetensors"
EXAMPLE_MODEL_NAME = "example_cnn"
