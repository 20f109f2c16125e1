"""Every docstring example runs and prints what it says."""

import doctest
import importlib

import pytest

MODULES = [
    "fastconv",
    "fastconv.functional",
    "fastconv.shapes",
    "fastconv.layers",
    "fastconv._summary",
    "fastconv.solver",
    "fastconv.nn",
    "fastconv._memory",
    "fastconv._threads",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_api_is_exported():
    import fastconv

    for name in fastconv.__all__:
        assert hasattr(fastconv, name), name


def test_blas_is_vendored_beside_the_extension():
    import os

    import fastconv

    here = os.path.dirname(fastconv._core.__file__)
    assert "libscipy_openblas.so" in os.listdir(here)
    assert fastconv._core.blas_core_name()
