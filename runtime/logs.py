"""Logging set-up for command-line tools. Library modules only call ``logging.getLogger``."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is when the record comes (not as it was when
    the handler was made): a tool's ``main`` called twice in one process, with stderr replaced in
    between, never writes to a stream that is gone."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_cli_logging(verbosity: int = 0) -> None:
    """Send samspt's log records to stderr; ``verbosity`` 0 = warnings+info, 1+ = debug."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger("samspt")
    root.setLevel(level)
    if not any(getattr(h, "_samspt_cli", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._samspt_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def progress_enabled() -> bool:
    """Progress bars only when stderr is a terminal (off in CI logs and pipes)."""
    return sys.stderr.isatty()
