"""fastconv: fast convolutions for NumPy, a size-DP solver and a shape toolkit.

>>> import numpy as np, fastconv
>>> fastconv.conv2d(np.ones((1, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2, padding="same").shape
(1, 4, 4, 4)
"""

from ._blas import load_core

_core = load_core()  # before anything else imports the extension

from . import _resources  # noqa: E402

_resources.apply(_core)  # the thread count and memory budget that fit this process's CPUs and cgroup

from . import (  # noqa: E402
    _threadpoolctl,  # noqa: E402
    layers,
    shapes,
)
from ._config import show_config  # noqa: E402
from ._memory import empty_cache  # noqa: E402
from ._resample import interpolate, interpolate_backward  # noqa: E402
from ._summary import DroppedPixelsWarning, GriddingWarning, summary  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402
from ._version import __version__  # noqa: E402
from .functional import (  # noqa: E402
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    explain_conv2d,
    fold,
    max_pool2d,
    max_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
    unfold,
)
from .plan import Conv2dPlan  # noqa: E402
from .shapes import (  # noqa: E402
    conv_output_size,
    conv_transpose_output_size,
    pool_output_size,
    receptive_field,
    same_padding,
)
from .solver import SolveResult, solve  # noqa: E402

_threadpoolctl.register()

__all__ = [
    "conv2d",
    "conv2d_backward",
    "Conv2dPlan",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "unfold",
    "fold",
    "max_pool2d",
    "max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "interpolate",
    "interpolate_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "set_num_threads",
    "get_num_threads",
    "show_config",
    "explain_conv2d",
    "empty_cache",
    "conv_output_size",
    "pool_output_size",
    "conv_transpose_output_size",
    "same_padding",
    "receptive_field",
    "summary",
    "DroppedPixelsWarning",
    "GriddingWarning",
    "solve",
    "SolveResult",
    "layers",
    "shapes",
    "__version__",
]
