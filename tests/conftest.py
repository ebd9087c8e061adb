"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models under test are tiny: a second intra-op thread only adds synchronisation, which on a
    busy 2-core machine made them up to 30× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
