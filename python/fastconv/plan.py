"""Prepared convolution layers: weights copied and transformed once, then run many times."""

from __future__ import annotations

import numpy as np

from . import _core
from ._args import as_array, as_bool, contiguous, float_dtype, positive_pair, require_ndim
from .functional import _conv_pads, _groups, explain_conv2d

__all__ = ["Conv2dPlan"]

_CLASSES = {np.dtype(np.float32): _core.ConvPlan_float32, np.dtype(np.float64): _core.ConvPlan_float64}


class Conv2dPlan:
    """A 2-D convolution layer prepared once and run many times: :func:`fastconv.conv2d` with its weights fixed.

    A plan copies the weights and bias when it is made; each algorithm's form of them (packed panels,
    Winograd's transformed points) is made on the first call that needs it and kept, and the layer's
    geometry is checked per input shape.  Calls then only compute: at batch 1 on small maps the
    per-call transforms of :func:`fastconv.conv2d` cost as much as the convolution itself (a 512 -> 512
    channel 3x3 layer at 7x7), which a plan, like an ONNX Runtime session, pays once.

    Parameters
    ----------
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
        float32 or float64: the plan computes in this dtype (float64 if ``bias`` is float64).
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (h, w), (left, right, top, bottom), 'valid' or 'same'
        As :func:`fastconv.conv2d`; ``'same'`` is resolved for each input size.
    groups : int

    Attributes
    ----------
    weight, bias : numpy.ndarray or None
        Read-only views of the plan's own copies.
    dtype : numpy.dtype
    stride, padding, dilation, groups
        As given (stride and dilation as pairs).
    prepared_bytes : int
        Bytes of the transformed weights made so far (at most about twice the weights' size per
        algorithm used; the copy of the weights is ``weight.nbytes`` more).

    Notes
    -----
    Later changes to the arrays the plan was made from do not change it: it holds copies.  A plan
    may be called from several Python threads at once (the GIL is released while it computes); a
    transformed form is made once, by the first call that needs it.  The algorithm for an input
    shape is chosen by the same rules as :func:`fastconv.conv2d`'s, which know that a plan's weights
    need no per-call packing.  Results equal :func:`fastconv.conv2d`'s to rounding.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    >>> plan = fastconv.Conv2dPlan(w, stride=2, padding="same")
    >>> x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    >>> y = plan(x)
    >>> y.shape
    (1, 8, 5, 5)
    >>> bool(np.allclose(y, fastconv.conv2d(x, w, stride=2, padding="same"), atol=1e-5))
    True
    >>> w[:] = 0  # the plan keeps its own copy
    >>> bool(np.allclose(plan(x), y))
    True
    >>> gx, gw, gb = plan.backward(np.ones_like(y), x)
    >>> gx.shape, gw.shape, gb
    ((1, 3, 9, 9), (8, 3, 3, 3), None)
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        w = as_array(weight, "weight")
        b = None if bias is None else as_array(bias, "bias")
        dtype = float_dtype(("weight", w), ("bias", b))
        require_ndim(w, "weight", (4,))
        if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[0]):
            raise ValueError(f"bias must have shape ({w.shape[0]},) to match weight, got {b.shape}")
        self.stride = positive_pair(stride, "stride")
        self.dilation = positive_pair(dilation, "dilation")
        self.groups = _groups(groups)
        _conv_pads(padding, (1, 1), w.shape[2:], self.stride, self.dilation)  # validates every form of padding
        self.padding = padding
        self.dtype = dtype
        self._pads_of = {}  # explicit padding by input size (H, W), filled by _input
        w, b = contiguous(w, dtype), contiguous(b, dtype)
        self._plan = _CLASSES[dtype](w, b, self.stride, self.dilation, self.groups)
        self._kernel = tuple(w.shape[2:])
        self._out_channels = w.shape[0]
        # Views of the plan's copies, not of the caller's arrays.
        self.weight = np.array(w, copy=True)
        self.weight.flags.writeable = False
        self.bias = None
        if b is not None:
            self.bias = np.array(b, copy=True)
            self.bias.flags.writeable = False

    def __reduce__(self):
        # Pickled (and deep-copied) as the arguments it was made from: the prepared forms are made again on use.
        return (type(self), (self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))

    @property
    def prepared_bytes(self) -> int:
        return int(self._plan.prepared_bytes)

    def explain(self, input_shape, *, mode="stdout"):
        """Which algorithm each pass runs for inputs of ``input_shape``, and why: :func:`fastconv.explain_conv2d`
        with this plan's geometry and its prepared weights.

        Examples
        --------
        >>> import numpy as np, fastconv
        >>> plan = fastconv.Conv2dPlan(np.zeros((64, 64, 3, 3), np.float32), padding=1)
        >>> plan.explain((8, 64, 56, 56), mode="dicts")["forward"]["algorithm"]
        'winograd'
        """
        return explain_conv2d(input_shape, self.weight.shape, self.stride, self.padding, self.dilation, self.groups,
                              dtype=self.dtype, prepared=True, mode=mode)  # fmt: skip

    def __repr__(self):
        cout, cin, kh, kw = self.weight.shape
        return (
            f"Conv2dPlan({cin * self.groups} -> {cout}, kernel_size=({kh}, {kw}), stride={self.stride}, "
            f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, dtype={self.dtype.name})"
        )

    def _input(self, input, name="input"):
        x = as_array(input, name)
        dt = float_dtype((name, x))
        require_ndim(x, name, (3, 4))
        if dt != self.dtype:
            raise TypeError(
                f"{name} must be {self.dtype.name} like the plan's weights, got dtype {x.dtype} (cast the input, or "
                f"make the plan from {dt.name} weights)"
            )
        unbatched = x.ndim == 3
        x = contiguous(x[None] if unbatched else x, self.dtype)
        pads = _conv_pads(self.padding, x.shape[2:], self._kernel, self.stride, self.dilation)
        if len(self._pads_of) < 64:
            self._pads_of[x.shape[2:]] = pads
        return x, unbatched, pads

    def __call__(self, input, *, residual=None, relu=False, relu_cap=None) -> np.ndarray:
        """The convolution of ``input`` (``(N, C_in, H, W)`` or ``(C_in, H, W)``).

        ``residual`` (an array of the output's shape) is added and ``relu`` applied as the output is
        written, as in :func:`fastconv.conv2d`; ``relu_cap`` (with ``relu``) also caps the output from
        above, ``min(max(y, 0), relu_cap)`` (ReLU6: ``relu_cap=6``), NaN kept.
        """
        # A frozen model's call, checked in a few comparisons (its layers run in microseconds at batch 1): C-contiguous
        # 4-D arrays of the plan's dtype, an input size met before, relu a bool, relu_cap a positive float.  Anything
        # else takes the full checks below; the residual's shape is checked in C++ either way.
        if (
            type(input) is np.ndarray
            and input.ndim == 4
            and input.dtype == self.dtype
            and input.flags.c_contiguous
            and (relu is True or relu is False)
            and (relu_cap is None or (relu and type(relu_cap) is float and relu_cap > 0))
            and (
                residual is None
                or (
                    type(residual) is np.ndarray
                    and residual.ndim == 4
                    and residual.dtype == self.dtype
                    and residual.flags.c_contiguous
                )
            )
        ):
            pads = self._pads_of.get(input.shape[2:])
            if pads is not None:
                return self._plan.forward(input, pads, residual, relu, relu_cap)
        x, unbatched, pads = self._input(input)
        relu = as_bool(relu, "relu")
        if relu_cap is not None:
            if not relu:
                raise ValueError("relu_cap needs relu=True")
            if isinstance(relu_cap, (bool, np.bool_)) or not isinstance(
                relu_cap, (int, float, np.floating, np.integer)
            ):
                raise TypeError(f"relu_cap must be a number, got {type(relu_cap).__name__} {relu_cap!r}")
            if not relu_cap > 0:
                raise ValueError(f"relu_cap must be positive, got {relu_cap!r}")
            relu_cap = float(relu_cap)
        r = None
        if residual is not None:
            r = as_array(residual, "residual")
            if float_dtype(("residual", r)) != self.dtype:
                raise TypeError(f"residual must be {self.dtype.name} like the plan's weights, got dtype {r.dtype}")
            require_ndim(r, "residual", (3,) if unbatched else (4,))
            r = contiguous(r[None] if unbatched else r, self.dtype)
        y = self._plan.forward(x, pads, r, relu, relu_cap)
        return y[0] if unbatched else y

    def backward(self, grad_output, input, output_mask=(True, True, True)):
        """Gradients with respect to input, weight and bias, as :func:`fastconv.conv2d_backward`.

        Parameters
        ----------
        grad_output : array_like
            The gradient of the loss with respect to this plan's output for ``input``.
        input : array_like
            What the plan was called on.
        output_mask : three bools, optional
            Which of (grad_input, grad_weight, grad_bias) to compute; ``grad_bias`` only when the plan has
            a bias.

        Returns
        -------
        (grad_input, grad_weight, grad_bias) : tuple of numpy.ndarray or None
        """
        x, unbatched, pads = self._input(input)
        gy = as_array(grad_output, "grad_output")
        if float_dtype(("grad_output", gy)) != self.dtype:
            raise TypeError(f"grad_output must be {self.dtype.name} like the plan's weights, got dtype {gy.dtype}")
        require_ndim(gy, "grad_output", (3,) if unbatched else (4,))
        gy = contiguous(gy[None] if unbatched else gy, self.dtype)
        if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
            raise ValueError(f"output_mask must be three bools, got {output_mask!r}")
        need_x, need_w, need_b = (as_bool(m, "output_mask") for m in output_mask)
        gx, gw, gb = self._plan.backward(gy, x, pads, need_x, need_w, need_b and self.bias is not None)
        if unbatched and gx is not None:
            gx = gx[0]
        return gx, gw, gb
