"""Suite-wide hygiene.

* NNI attaches logging handlers to the stream pytest captured for an earlier test; once
  pytest closes that stream, any later log call prints a "Logging error" traceback to
  stderr and breaks the one-line-error checks. Drop such dead handlers first.
* ``one_thread`` / ``one_thread_module``: one intra-op thread for tests of tiny tensors on
  the shared 2-core machine (two threads fighting are slower); modules opt in with
  ``pytestmark = pytest.mark.usefixtures(...)``.
* ``digits_8px``: 160 training images of the embedded digits at 8x8, through the
  project's own loader (``osep_nas.data.load_digits_tensors``)."""
from __future__ import annotations

import logging

import pytest
import torch


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


def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One intra-op thread for this test."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """One intra-op thread for the whole module."""
    yield from _single_thread()


@pytest.fixture(scope="session")
def digits_8px():
    """(x, y): the first 160 training digits as 3x8x8 float images in [0, 1] and labels."""
    from osep_nas.data import load_digits_tensors

    x, y = load_digits_tensors(image_size=8)[:2]
    return x[:160], y[:160]
