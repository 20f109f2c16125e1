import pytest

import fastconv


@pytest.fixture(autouse=True)
def two_threads():
    """Both libraries at 2 threads, as the targets are stated."""
    old = fastconv.get_num_threads()
    fastconv.set_num_threads(2)
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    yield
    fastconv.set_num_threads(old)
