"""Where the tests find data beside the checkout: the shared MTD dataset is ``../shared`` relative
to the repository (CI lays it there), or ``$SAMSPT_MTD_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MTD_DIR = Path(os.environ.get("SAMSPT_MTD_DIR") or ROOT.parent / "shared" / "datasets" / "mtd")
