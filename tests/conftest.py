"""Suite-wide hygiene: NNI attaches logging handlers to the stream pytest captured for an
earlier test; once pytest closes that stream, any later log call prints a "Logging error"
traceback to stderr and breaks the one-line-error checks. Drop such dead handlers first."""
from __future__ import annotations

import logging

import pytest


def _stream_closed(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return bool(stream is not None and getattr(stream, "closed", False))


@pytest.fixture(autouse=True)
def _drop_dead_log_handlers():
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()
                                       if isinstance(l, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if _stream_closed(handler):
                logger.removeHandler(handler)
    yield
