"""The one logging setup of every entry point: the CLI, the API and the scripts."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log each HTTP request or migration at INFO; their warnings still show.
CHATTY_LIBRARIES = ("alembic", "mlflow", "urllib3", "httpx", "botocore")


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, not as it was at setup: a live progress
    bar (rich) swaps `sys.stderr` for a proxy that prints lines above the bar."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """One line per record on stderr, INFO and above (DEBUG when `verbose`).

    Like `logging.basicConfig`, it leaves a root logger that already has handlers alone (an
    embedding process such as Airflow's task runner or pytest owns the output then).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=FORMAT,
        handlers=[CurrentStderrHandler()],
    )
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
