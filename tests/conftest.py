"""Shared test set-up."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Run the in-process tests on one torch thread.

    Their models are tiny and gain nothing from more threads, and on a shared 2-core machine
    two threads per process made some files several times slower. The end-to-end tests run
    fedsign in subprocesses, which this does not affect.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
