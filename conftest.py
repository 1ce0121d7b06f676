"""Shared by every test directory."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread_on_cpu():
    """Tests run many tiny models on the CPU: one intra-op thread is faster than several and, unlike
    several, does not slow down 10-30x when other processes share the cores."""
    if torch.cuda.is_available():
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
