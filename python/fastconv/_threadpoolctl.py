"""fastconv's thread pool as a threadpoolctl library, so ``threadpool_info()`` lists it and
``threadpool_limits(n)`` (what joblib's workers and scikit-learn do) limits it.  Registered at import when
threadpoolctl (3.0 or later) is importable; threadpoolctl is not a dependency."""

from __future__ import annotations


def register() -> bool:
    """Register the controller with threadpoolctl; False when threadpoolctl is absent or too old."""
    try:
        import threadpoolctl
    except ImportError:
        return False
    if not hasattr(threadpoolctl, "register") or not hasattr(threadpoolctl, "LibController"):
        return False

    from ._version import __version__

    class FastconvController(threadpoolctl.LibController):
        """fastconv's own pool (its vendored OpenBLAS is listed apart, as ``openblas``, and runs one thread
        inside each of fastconv's workers)."""

        user_api = "fastconv"
        internal_api = "fastconv"
        # The extension's file name (``_core.cpython-...so``); the symbols tell it from other ``_core`` modules.
        filename_prefixes = ("_core",)
        check_symbols = ("fastconv_get_num_threads", "fastconv_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fastconv_get_num_threads()

        def set_num_threads(self, num_threads):
            from ._resources import SOURCES

            self.dynlib.fastconv_set_num_threads(int(num_threads))
            SOURCES["threads"] = "threadpoolctl"

        def get_version(self):
            return __version__

    threadpoolctl.register(FastconvController)
    return True
