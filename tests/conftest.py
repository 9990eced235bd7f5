"""Fixtures shared by every test folder."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (the command-line tests load real models; one thread
    keeps them quick on a machine whose other cores are busy), restoring the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
