"""Correctness tests run many tiny models: one intra-op thread is faster than several and, unlike
several, does not slow down 10-30x when other processes share the cores."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
