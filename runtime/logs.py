"""Logging set-up for command-line tools. Library modules only call ``logging.getLogger``."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_cli_logging(verbosity: int = 0) -> None:
    """Send samspt's log records to stderr; ``verbosity`` 0 = warnings+info, 1+ = debug."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger("samspt")
    root.setLevel(level)
    if not any(getattr(h, "_samspt_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._samspt_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def progress_enabled() -> bool:
    """Progress bars only when stderr is a terminal (off in CI logs and pipes)."""
    return sys.stderr.isatty()
