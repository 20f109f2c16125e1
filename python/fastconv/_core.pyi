# Stubs for the private C++ extension; the public API is in fastconv/__init__.py.
from collections.abc import Sequence

import numpy as np

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def _pool_selftest(rounds: int, max_workers: int, seed: int) -> int: ...
def blas_core_name() -> str: ...
def sgemm_seconds(n: int, threads: int, repeats: int) -> float: ...
def conv_out(n: int, kernel_size: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int: ...
def conv_dropped(n: int, kernel_size: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int: ...
def same_padding(n: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int, int]: ...
def pool_out(n: int, kernel_size: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int: ...
def conv_transpose_out(
    n: int, kernel_size: int, stride: int, padding: int, output_padding: int, dilation: int
) -> int: ...

class SolveProgress:
    def __init__(self) -> None: ...
    @property
    def done(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def phase(self) -> int: ...

def solve(
    input: tuple[int, int],
    output: tuple[int, int],
    layers: Sequence[tuple[str, int, int]],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pool_kernel: tuple[int, int],
    pool_stride: tuple[int, int],
    pool_padding: tuple[int, int],
    exact: bool,
    objective: str,
    top: int,
    progress: SolveProgress | None = None,
) -> tuple[int, list[tuple[int, list[tuple]]]]: ...

# Typed kernels, one per dtype suffix (float32, float64); Python picks by dtype.
def conv2d_forward_float32(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    pad: tuple[int, int, int, int],
    dil: tuple[int, int],
    groups: int,
) -> np.ndarray: ...
def conv2d_forward_float64(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    pad: tuple[int, int, int, int],
    dil: tuple[int, int],
    groups: int,
) -> np.ndarray: ...
def __getattr__(name: str): ...  # the remaining *_float32 / *_float64 kernels
