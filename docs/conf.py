"""Sphinx configuration: ``pip install ".[docs]"``, then
``sphinx-build -W --keep-going -n -b html docs docs/_build/html``."""

import fastconv

project = "fastconv"
author = "the fastconv developers"
release = version = fastconv.__version__
copyright = "2026, the fastconv developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]  # in-page anchors of moved README text, resolved as plain text

templates_path = ["_templates"]
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Types named in docstrings that are not documented here (NumPy's, Python's, docstring idioms).
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|dask|zarr)\..*"),
    (r"py:.*", r"(array_like|array-like|optional|default.*|int|float|bool|str|tuple|list|dict|callable|None)"),
]

html_theme = "pydata_sphinx_theme"
html_title = f"fastconv {release}"
html_theme_options = {"navigation_with_keys": False}
