"""What every samspt command-line tool shares: the ``-v`` flag, logging to stderr, errors as
exit status 2 with one ``error:`` line, and timed stage lines.

Each runnable module keeps its own ``build_parser()`` and ``main(argv) -> int``; this module
holds only the scaffolding they would otherwise repeat. Library modules never import it.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, Union

from samspt.runtime.logs import configure_cli_logging

EXIT_ERROR = 2  # bad input, a refused file, a failed check: the message says which and why


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``-v``/``--verbose`` (repeatable): debug logging."""
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log lines (debug)")


def parse_args(parser: argparse.ArgumentParser,
               argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, then samspt's log records to stderr at the ``-v`` level."""
    args = parser.parse_args(argv)
    configure_cli_logging(getattr(args, "verbose", 0))
    return args


def error_exit(exc: Union[BaseException, str], context: Optional[str] = None) -> int:
    """Print ``exc`` (an exception or a message) as one ``error:`` line on stderr, after
    ``context`` where given (``"cannot write the model folder"``), and give the exit status.

    samspt's own errors say what was wrong and how to fix it; an ``OSError`` without a context
    is named as a file that cannot be read or written."""
    if context:
        text = f"{context}: {exc}"
    else:
        text = f"cannot read or write a file: {exc}" if isinstance(exc, OSError) else str(exc)
    print(f"error: {text}", file=sys.stderr, flush=True)
    return EXIT_ERROR


class StagePrinter:
    """``stage("text")`` prints ``[  12.3s] text`` on stderr: the seconds since it was made."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)
