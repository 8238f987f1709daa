"""Logging set-up: fedsign's console output, Flower's console level and per-run log files."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

# Loggers whose records go to a run's log file.
RUN_LOGGERS = ("fedsign", "strategies", "clients", "flwr")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.Handler):
    """Write log records to standard error through ``tqdm.write``, so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


class _QuietFlowerConsole(logging.Filter):
    """Keep two kinds of Flower records off the console; the run's log file still gets them.

    Flower's deprecation notice for ``run_simulation`` is dropped, because fedsign calls it
    on purpose and ``fedsign.engine`` is the one place to change when Flower removes it.
    Each failed client's Ray traceback is dropped too, because fedsign reports the
    client's own error message in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "run_simulation" in message and "deprecated" in message.lower():
            return False
        return "ClientAppException" not in message


def configure_console(verbose: bool = False) -> None:
    """Show fedsign's INFO lines on the console and Flower's only from WARNING (all with ``verbose``)."""
    from flwr.common.logger import console_handler, update_console_handler

    level = logging.DEBUG if verbose else logging.INFO
    for name in ("fedsign", "strategies", "clients"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(handler, TqdmHandler) for handler in logger.handlers):
            handler = TqdmHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            logger.addHandler(handler)
    update_console_handler(level=logging.INFO if verbose else logging.WARNING, timestamps=False, colored=True)
    if not verbose and not any(isinstance(f, _QuietFlowerConsole) for f in console_handler.filters):
        console_handler.addFilter(_QuietFlowerConsole())


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Copy INFO and higher records of fedsign, its apps and Flower into ``path``."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
