import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a test dependency: pip install ".[test]"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tols(dtype):
    return dict(rtol=2e-4, atol=1e-3) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-10)
