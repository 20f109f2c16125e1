"""fastconv's version, in one place (the package, threadpoolctl's controller and bench records read it)."""

__version__ = "0.1.0"
