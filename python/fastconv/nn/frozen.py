"""Inference copies of models: batch norms folded, activations fused, convolutions prepared."""

from __future__ import annotations

import numpy as np

from .. import layers as L
from ..functional import _kernel
from .activation import Identity, ReLU, ReLU6
from .containers import Concat, Residual, Sequential
from .conv import Conv2d
from .graph import GraphModule
from .linear import Dropout, Dropout2d
from .module import Module, Parameter, check_input
from .normalization import BatchNorm2d

__all__ = ["fold_batch_norm", "freeze", "FrozenConv2d", "FrozenBatchNorm2d", "FrozenModel", "FrozenGraph"]


def _folded(conv, bn):
    """The weight and bias of ``conv`` followed by ``bn`` in eval mode, in one convolution (computed in float64)."""
    w = conv.weight.data.astype(np.float64)
    scale = 1.0 / np.sqrt(bn._buffers["running_var"].astype(np.float64) + bn.eps)
    mean = bn._buffers["running_mean"].astype(np.float64)
    if bn.affine:
        scale = scale * bn.weight.data
        beta = bn.bias_param.data.astype(np.float64)
    else:
        beta = 0.0
    b = conv.bias_param.data.astype(np.float64) if conv.bias_param is not None else 0.0
    dt = conv.weight.data.dtype
    return (w * scale[:, None, None, None]).astype(dt), ((b - mean) * scale + beta).astype(dt)


def fold_batch_norm(model: Module) -> Module:
    """An inference copy of ``model`` with every BatchNorm2d that directly follows a Conv2d folded into it.

    In eval mode a norm is ``y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta``, an affine
    map per channel, so the convolution before it can absorb it: ``w' = w * s`` and ``b' = (b - mean) * s +
    beta`` with ``s = gamma / sqrt(running_var + eps)``.  One pass over the activations less per pair.

    Parameters
    ----------
    model : Module
        Any fastconv.nn model; Sequential, Residual and Concat containers are searched, and a
        :class:`GraphModule` (from ``from_torch``) along its edges (a norm that alone reads a convolution's
        output, the convolution called once).  Norms without
        running statistics (``track_running_stats=False``) normalise with batch statistics even in eval
        mode and are kept.

    Returns
    -------
    Module
        A new model in eval mode (the original is not changed); its outputs equal ``model.eval()``'s up
        to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> m[1]._buffers["running_var"][:] = 4.0
    >>> f = nn.fold_batch_norm(m)
    >>> [type(layer).__name__ for layer in f.layers]
    ['Conv2d', 'ReLU']
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), m(x), atol=1e-5))
    True
    """
    import copy

    def fold(conv, bn):
        out = copy.deepcopy(conv)
        w, b = _folded(conv, bn)
        out.weight = Parameter(w)
        out._parameters["weight"] = out.weight
        out.bias_param = Parameter(b)
        out._parameters["bias"] = out.bias_param
        return out

    def walk(m):
        if isinstance(m, Sequential):
            layers, i = [], 0
            while i < len(m.layers):
                cur = m.layers[i]
                nxt = m.layers[i + 1] if i + 1 < len(m.layers) else None
                if isinstance(cur, Conv2d) and type(nxt) is BatchNorm2d and nxt.track_running_stats:
                    layers.append(fold(cur, nxt))
                    i += 2
                    continue
                layers.append(walk(cur))
                i += 1
            return Sequential(*layers)
        if isinstance(m, Residual):
            return Residual(walk(m.body), None if m.shortcut is None else walk(m.shortcut))
        if isinstance(m, Concat):
            return Concat(walk(m.body))
        return copy.deepcopy(m)

    if isinstance(model, GraphModule):
        return _freeze_graph(model, lambda c, bn, act: copy.deepcopy(c) if bn is None else fold(c, bn), fuse=False)
    return walk(model).eval()


def _inference_only(module) -> TypeError:
    return TypeError(
        f"{type(module).__name__} is an inference-only model made by fastconv.nn.freeze: it has no backward and no "
        "training mode; train the model it was frozen from, then freeze it again"
    )


class FrozenConv2d(L.Conv2d, Module):
    """A convolution of a frozen model: a :class:`fastconv.Conv2dPlan` with its batch norm folded in and its
    ReLU or ReLU6 applied as it writes its output.  Made by :func:`freeze`; inference only.

    Its ``weight`` and ``bias`` are parameters like a :class:`Conv2d`'s (``state_dict`` and ``load_state_dict``
    see them); the plan is made again on the first call after they change.
    """

    def __init__(self, conv: L.Conv2d, weight, bias, activation=None):
        L.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, True)  # fmt: skip
        self._init_module()
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"FrozenConv2d: activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.activation = activation
        self.weight = Parameter(np.array(weight, copy=True))
        self.bias_param = Parameter(np.array(bias, copy=True))
        self._parameters["weight"] = self.weight
        self._parameters["bias"] = self.bias_param
        self._plan = None
        self._plan_of = (None, None)
        self.training = False

    @property
    def fuses_residual(self) -> bool:
        """A residual's sum and ReLU can be fused only into a layer without an activation of its own."""
        return self.activation is None

    def plan(self):
        """The layer's :class:`fastconv.Conv2dPlan` (made again if ``weight`` or ``bias`` were replaced)."""
        from ..plan import Conv2dPlan

        if self._plan_of[0] is not self.weight.data or self._plan_of[1] is not self.bias_param.data:
            self._plan = Conv2dPlan(self.weight.data, self.bias_param.data, self.stride, self.padding, self.dilation,
                                    self.groups)  # fmt: skip
            self._plan_of = (self.weight.data, self.bias_param.data)
        return self._plan

    def forward(self, x, relu=False, residual=None):
        """The convolution and its fused activation; ``residual`` and ``relu`` (a :class:`Residual` block's sum
        and ReLU) only on a layer without an activation of its own."""
        plan = self._plan
        if plan is None or self._plan_of[0] is not self.weight.data or self._plan_of[1] is not self.bias_param.data:
            plan = self.plan()
        if self.activation is None:
            return plan(x, residual=residual, relu=relu)
        if relu or residual is not None:
            raise ValueError(f"FrozenConv2d with activation {self.activation!r}: no residual or ReLU can follow it")
        return plan(x, relu=True, relu_cap=6.0 if self.activation == "relu6" else None)

    def backward(self, grad_output, input_grad=True):
        raise _inference_only(self)

    def _args(self):
        return super()._args() + f", activation={self.activation!r}"


class FrozenBatchNorm2d(L.BatchNorm2d, Module):
    """A batch norm of a frozen model that no convolution could take (one before its convolution, as in
    pre-activation blocks): ``y = x * scale + shift`` per channel, from the running statistics, made once (buffers
    ``scale`` and ``shift``, float64), with a following ReLU applied in the same pass when ``relu``.  Made by
    :func:`freeze`; inference only."""

    def __init__(self, num_features: int, scale, shift, relu: bool = False):
        L.BatchNorm2d.__init__(self, num_features, affine=False)  # the layer description: shapes, no parameters
        self._init_module()
        self.relu = bool(relu)
        self._buffers["scale"] = np.array(scale, np.float64).reshape(self.num_features)
        self._buffers["shift"] = np.array(shift, np.float64).reshape(self.num_features)
        self._cast = (None, None, None, None)  # (dtype, scale buffer, shift buffer) the casts were made of, casts
        self.training = False

    @classmethod
    def of(cls, bn: BatchNorm2d, relu: bool = False) -> FrozenBatchNorm2d:
        b = bn._buffers
        inv_std = 1.0 / np.sqrt(np.asarray(b["running_var"], np.float64) + bn.eps)
        gamma = bn.weight.data.astype(np.float64) if bn.affine else np.ones(bn.num_features)
        beta = bn.bias_param.data.astype(np.float64) if bn.affine else np.zeros(bn.num_features)
        mean = np.asarray(b["running_mean"], np.float64)
        return cls(bn.num_features, gamma * inv_std, beta - mean * gamma * inv_std, relu)

    def forward(self, x):
        x = check_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"FrozenBatchNorm2d: expected input (N, {self.num_features}, H, W), got shape {x.shape}")
        scale, shift = self._buffers["scale"], self._buffers["shift"]
        dt, s0, t0, casts = self._cast
        if dt != x.dtype or s0 is not scale or t0 is not shift:  # made again after load_state_dict
            casts = (np.asarray(scale, x.dtype), np.asarray(shift, x.dtype))
            self._cast = (x.dtype, scale, shift, casts)
        return _kernel(x.dtype, "channel_affine")(np.ascontiguousarray(x), casts[0], casts[1], self.relu)

    def backward(self, grad_output, input_grad=True):
        raise _inference_only(self)

    def _args(self):
        return f"{self.num_features}, relu={self.relu}"


class _InferenceOnly:
    """What FrozenModel and FrozenGraph share: eval mode only, no backward.  Not a Module: its backward is no layer's
    pass (a Module's would be wrapped, and asked for a forward first)."""

    def train(self, mode: bool = True):
        if mode:
            raise _inference_only(self)
        return super().train(False)

    def backward(self, grad_output, input_grad=True):
        raise _inference_only(self)


class FrozenModel(_InferenceOnly, Sequential):
    """An inference-only model made by :func:`freeze`: a :class:`Sequential` of frozen layers, always in eval mode."""

    def __init__(self, *layers):
        super().__init__(*layers)
        self.train(False)


def freeze(model) -> FrozenModel:
    """An inference-only copy of a model that runs as fast as fastconv can: batch norms folded into the
    convolutions before them, each ReLU or ReLU6 after a convolution applied as it writes its output, a
    residual block's sum and ReLU in its last convolution's pass, every convolution a
    :class:`fastconv.Conv2dPlan` (weights packed once), dropout removed.

    Parameters
    ----------
    model : Module
        Any :mod:`fastconv.nn` model (its ``Sequential``, ``Residual`` and ``Concat`` containers are searched; a
        single layer is wrapped).  It is not changed, and later changes to it do not reach the frozen copy.

    Returns
    -------
    FrozenModel
        Outputs equal ``model.eval()``'s to float32 rounding.  ``train()`` and ``backward`` raise
        ``TypeError``.  Inputs must have the weights' dtype (as in torch: a float32 model refuses float64 input).

    Notes
    -----
    Use a frozen model to run a trained model many times (inference on a stream of images, a tiled large image);
    keep the model itself, in ``eval()`` mode, where gradients are needed (saliency maps, fine-tuning): an eval-mode
    model that is not frozen computes exactly what it did before, packs its weights on every call and has a backward.
    Batch norms without running statistics (``track_running_stats=False``) normalise by their batch even in eval
    mode and are kept as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU(),
    ...                   nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, rng=1), nn.BatchNorm2d(8))),
    ...                   nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2, rng=2)).eval()
    >>> f = nn.freeze(m)
    >>> [type(layer).__name__ for layer in f.layers]
    ['FrozenConv2d', 'Residual', 'ReLU', 'AdaptiveAvgPool2d', 'Flatten', 'Linear']
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), m(x), atol=1e-5))
    True
    """
    import copy

    if not isinstance(model, Module):
        raise TypeError(f"freeze: model must be a fastconv.nn Module, got {type(model).__name__}")

    def conv(c, bn=None, activation=None):
        if bn is not None:
            w, b = _folded(c, bn)
        else:
            w = c.weight.data
            b = c.bias_param.data if c.bias_param is not None else np.zeros(c.out_channels, w.dtype)
        return FrozenConv2d(c, w, b, activation)

    def walk_layers(layers):
        out, i = [], 0
        while i < len(layers):
            cur = layers[i]
            if type(cur) is BatchNorm2d and cur.track_running_stats:  # not after a convolution (pre-activation)
                relu = i + 1 < len(layers) and type(layers[i + 1]) is ReLU
                out.append(FrozenBatchNorm2d.of(cur, relu))
                i += 2 if relu else 1
                continue
            if type(cur) is Conv2d:
                j, bn, act = i + 1, None, None
                if j < len(layers) and type(layers[j]) is BatchNorm2d and layers[j].track_running_stats:
                    bn, j = layers[j], j + 1
                if j < len(layers) and type(layers[j]) in (ReLU, ReLU6):
                    act, j = ("relu" if type(layers[j]) is ReLU else "relu6"), j + 1
                out.append(conv(cur, bn, act))
                i = j
                continue
            if type(cur) in (Dropout, Dropout2d, Identity):  # the identity in eval mode
                i += 1
                continue
            out.append(walk(cur))
            i += 1
        return out

    def walk(m):
        if isinstance(m, Sequential):
            return Sequential(*walk_layers(m.layers))
        if isinstance(m, Residual):
            return Residual(walk(m.body), None if m.shortcut is None else walk(m.shortcut))
        if isinstance(m, Concat):
            return Concat(walk(m.body))
        if type(m) is Conv2d:
            return conv(m)
        if type(m) is BatchNorm2d and m.track_running_stats:
            return FrozenBatchNorm2d.of(m)
        out = copy.deepcopy(m)
        out.eval()
        return out

    if isinstance(model, GraphModule):
        return _freeze_graph(model, conv)
    layers = model.layers if isinstance(model, Sequential) else [model]
    return FrozenModel(*walk_layers(list(layers)))


def _freeze_graph(gm, conv, fuse=True):
    """freeze() of a GraphModule: the same folds and fusions, found along the graph's edges (a convolution whose
    output only a batch norm reads, a ReLU that only reads that, a sum whose only reader is a ReLU).  With
    ``fuse=False`` only batch norms are folded (fold_batch_norm) and a trainable GraphModule is returned."""
    import copy
    from dataclasses import replace

    from .graph import Ref, _leaves

    def users_of(nodes):
        users = {n.name: [] for n in nodes}
        for n in nodes:
            for leaf in _leaves((n.args, n.kwargs)):
                if isinstance(leaf, Ref):
                    users[leaf.name].append(n.name)
        return users

    def module_of(n):
        return gm.get_submodule(n.target) if n.op == "module" else None

    def relu_kind(n):
        """'relu' or 'relu6' for a node that is one, else None."""
        m = module_of(n)
        if type(m) is ReLU or (n.op == "call" and n.target == "relu"):
            return "relu"
        if type(m) is ReLU6 or (n.op == "call" and n.target == "relu6"):
            return "relu6"
        return None

    def first_ref(n):
        return next(leaf for leaf in _leaves((n.args, n.kwargs)) if isinstance(leaf, Ref))

    rename: dict[str, str] = {}  # a removed node -> the node whose value it was

    def fix(obj):
        if isinstance(obj, Ref):
            name = obj.name
            while name in rename:
                name = rename[name]
            return Ref(name)
        if isinstance(obj, (tuple, list)):
            return type(obj)(fix(v) for v in obj)
        if isinstance(obj, dict):
            return {k: fix(v) for k, v in obj.items()}
        return obj

    nodes = list(gm.nodes)
    by_name = {n.name: n for n in nodes}
    users = users_of(nodes)
    calls: dict[str, int] = {}
    for n in nodes:
        if n.op == "module":
            calls[n.target] = calls.get(n.target, 0) + 1

    def sole_user(n):
        return by_name[users[n.name][0]] if len(users[n.name]) == 1 else None

    # Identities in eval mode go; a convolution (called at one node) takes the batch norm only it feeds, and the ReLU
    # only that feeds.
    modules: dict[str, object] = {}
    for n in nodes:
        m = module_of(n)
        if type(m) in (Dropout, Dropout2d, Identity) or (n.op == "call" and n.target in ("dropout", "dropout2d")):
            rename[n.name] = first_ref(n).name
            continue
        if type(m) is not Conv2d or calls[n.target] != 1:
            continue
        last, bn, act = n, None, None  # (batch norms no convolution takes are frozen below)
        u = sole_user(last)
        if u is not None and type(module_of(u)) is BatchNorm2d and calls[u.target] == 1:
            if module_of(u).track_running_stats:
                bn, last = module_of(u), u
                rename[u.name] = n.name
        u = sole_user(last)
        if fuse and u is not None and relu_kind(u):
            act = relu_kind(u)
            rename[u.name] = n.name
        modules[n.target] = conv(m, bn, act)
    # A batch norm no convolution took (a pre-activation block's, after a concatenation) with its running
    # statistics: its scale and shift made once, and the ReLU only it feeds applied in the same pass.
    for n in nodes if fuse else ():
        m = module_of(n)
        if n.name in rename or type(m) is not BatchNorm2d or not m.track_running_stats or calls[n.target] != 1:
            continue
        u = sole_user(n)
        relu = u is not None and relu_kind(u) == "relu"
        if relu:
            rename[u.name] = n.name
        modules[n.target] = FrozenBatchNorm2d.of(m, relu)
    nodes = [replace(n, args=fix(n.args), kwargs=fix(n.kwargs)) for n in nodes if n.name not in rename]
    by_name = {n.name: n for n in nodes}
    users = users_of(nodes)
    # A sum of a frozen convolution without an activation (read only by the sum) and a shortcut, with the ReLU only
    # the sum feeds: the convolution adds the shortcut (and rectifies) as it writes, moved to where the sum was.
    order = [n.name for n in nodes]
    for n in nodes if fuse else ():
        if n.op != "call" or n.target != "add" or len(n.args) != 2 or n.kwargs:
            continue
        refs = [a for a in n.args if isinstance(a, Ref)]
        if len(refs) != 2 or refs[0].name == refs[1].name:
            continue
        for ci in (0, 1):
            c = by_name[refs[ci].name]
            fc = modules.get(c.target) if c.op == "module" else None
            if not isinstance(fc, FrozenConv2d) or fc.activation is not None or users[c.name] != [n.name]:
                continue
            r = sole_user(n)
            relu = r is not None and relu_kind(r) == "relu"
            by_name[c.name] = replace(c, kwargs={**c.kwargs, "residual": refs[1 - ci], "relu": relu})
            order.remove(c.name)
            order[order.index(n.name)] = c.name
            rename[n.name] = c.name
            if relu:
                order.remove(r.name)
                rename[r.name] = c.name
            break
    nodes = [replace(by_name[name], args=fix(by_name[name].args), kwargs=fix(by_name[name].kwargs)) for name in order]
    for n in nodes:
        if n.op == "module" and n.target not in modules:
            mod = copy.deepcopy(gm.get_submodule(n.target))
            mod.eval()
            modules[n.target] = mod
    attrs = {path: (kind, holder._parameters[name].data if kind == "parameter" else holder._buffers[name])
             for path, (kind, holder, name) in gm.attrs.items()}  # fmt: skip
    return FrozenGraph(nodes, modules, attrs) if fuse else GraphModule(nodes, modules, attrs).eval()


class FrozenGraph(_InferenceOnly, GraphModule):
    """An inference-only graph made by :func:`freeze` from a :class:`GraphModule`: always in eval mode."""

    _keeps_values = False  # no backward: values go after their last reader

    def __init__(self, nodes, modules=None, attrs=None):
        super().__init__(nodes, modules, attrs)
        self.train(False)
