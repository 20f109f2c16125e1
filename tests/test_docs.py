"""Every docstring example runs and prints what it says."""

import doctest
import importlib
import importlib.util
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import fastconv

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Every module of the package (public or private: a public name's docstring may live in either), found by walking
# it, so a new module's examples run without being listed here.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fastconv.__path__, "fastconv.")
    if not m.name.endswith("__main__") and (importlib.util.find_spec(m.name).origin or "").endswith(".py")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_docstring_examples_exist():
    """The walk finds the examples (one that found nothing would pass vacuously): the main entry points have them."""
    import fastconv.nn

    finder = doctest.DocTestFinder()
    for owner, names in ((fastconv, ("conv2d", "Conv2dPlan", "conv_transpose2d", "interpolate", "solve", "summary",
                                     "same_padding", "receptive_field", "show_config", "set_num_threads")),
                         (fastconv.nn, ("freeze", "fold_batch_norm", "save", "from_torch"))):  # fmt: skip
        for name in names:
            assert [t for t in finder.find(getattr(owner, name), name) if t.examples], f"{owner.__name__}.{name}"


GUIDE = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs" / "guide").glob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", GUIDE, ids=[p.stem for p in GUIDE])
def test_user_guide_code_runs(page, tmp_path):
    """README's and each guide page's Python blocks, run in order in one fresh interpreter (a page is one session), in a
    scratch folder."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    code = "\n".join(blocks)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


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
