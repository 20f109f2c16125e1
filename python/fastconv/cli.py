"""The ``fastconv`` command line: solve, shape, summary, bench, demo."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _solve(args, parser) -> int:
    from .solver import _range, _size, layer_plan, solve

    try:
        sizes = dict(input=_size(args.input, "--input"), output=_size(args.output, "--output"))
        layer_plan(args.channels, args.block)
    except ValueError as exc:
        msg = str(exc)
        if "block" in msg:
            msg = "--block: " + msg
        elif "channels" in msg:
            msg = "--channels: " + msg
        parser.error(msg)
    ranges = {}
    for name, minimum in [
        ("kernel", 1),
        ("stride", 1),
        ("padding", 0),
        ("dilation", 1),
        ("pool_kernel", 1),
        ("pool_stride", 1),
        ("pool_padding", 0),
    ]:
        option = "--" + name.replace("_", "-")
        try:
            ranges[name] = _range(getattr(args, name), option, minimum)
        except ValueError as exc:
            parser.error(str(exc))
    if args.top < 0:
        parser.error(f"--top must be non-negative, got {args.top}")
    if args.plot is not None and args.pareto is None:
        parser.error("--plot draws a Pareto front: give --pareto too (e.g. --pareto params,macs)")
    _check_output(args.plot, "--plot", parser, plot=True)
    try:
        result = solve(
            sizes["input"],
            sizes["output"],
            args.channels,
            block=args.block,
            exact=args.exact,
            lossless=args.lossless,
            objective=args.objective,
            top=args.top,
            min_rf=args.min_rf,
            max_rf=args.max_rf,
            pareto=args.pareto,
            **ranges,
        )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args.plot is not None and result.count:
        result.plot_front(args.plot)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    if result.count == 0:
        print(
            f"No design maps {args.input} to {args.output} in this search space (count 0). "
            "Widen the ranges (padding, stride, kernel) or change the blocks."
        )
        return 0
    if args.torch:
        print(result.to_torch(), end="")
        return 0
    if result.pareto:
        _print_front(result, args)
        return 0
    print(
        f"{result.count:,} designs map {args.input} to {args.output}; "
        f"best {len(result.solutions)} by {args.objective}"
        f"{' (exact mode)' if args.exact else ''}{' (lossless mode)' if args.lossless else ''}"
        f"{_rf_bounds(args)}:"
    )
    for rank, sol in enumerate(result.solutions, 1):
        print(f"\n#{rank}  cost {sol.cost:,}   {sol.chain()}   receptive field {sol.receptive_field}")
        head = ("layer", "kind", "k", "s", "p", "d", "in", "out", "channels")
        rows = [
            (
                str(i),
                layer.kind,
                str(layer.kernel),
                str(layer.stride),
                str(layer.padding),
                str(layer.dilation),
                _fmt(layer.in_size),
                _fmt(layer.out_size),
                f"{layer.in_channels}->{layer.out_channels}",
            )
            for i, layer in enumerate(sol.layers)
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return 0


def _print_front(result, args) -> None:
    names = result.pareto
    modes = f"{' (exact mode)' if args.exact else ''}{' (lossless mode)' if args.lossless else ''}{_rf_bounds(args)}"
    print(
        f"{result.count:,} designs map {args.input} to {args.output}{modes}; "
        f"{len(result.front)} on the Pareto front of {', '.join(names)}:"
    )
    head = (*names, *(o for o in ("params", "macs", "kernel", "depth") if o not in names), "rf", "sizes", "k/s/p/d")
    rows = [
        (
            *(f"{s.costs[o]:,}" for o in head[:4]),
            str(s.receptive_field),
            s.chain(),
            " ".join(f"{x.kernel}/{x.stride}/{x.padding}/{x.dilation}" for x in s.layers),
        )
        for s in result.front
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        cells = (c.rjust(w) if j < 5 else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
        print(("  " + "  ".join(cells)).rstrip())
    if args.plot is not None:
        print(f"front drawn to {args.plot}")


def _rf_bounds(args) -> str:
    if args.min_rf is None and args.max_rf is None:
        return ""
    return f" with a receptive field in [{args.min_rf or 1}, {args.max_rf if args.max_rf else 'inf'}]"


def _fmt(size) -> str:
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _shape(args, parser) -> int:
    from . import shapes

    def geom(value):
        try:
            parts = [int(v) for v in str(value).lower().split("x")]
        except ValueError:
            raise ValueError(f"expected an int or HxW, got {value!r}") from None
        return parts[0] if len(parts) == 1 else tuple(parts)

    if args.what == "gridding":
        return _gridding(args, parser)
    if args.what == "valid-inputs":
        return _valid_inputs(args, parser)
    if args.input is None or args.kernel is None:
        parser.error(f"{args.what} needs --input and --kernel")
    try:
        n, k = geom(args.input), geom(args.kernel)
        # No --stride: 1 for convolutions, the kernel for pools.  An explicit 0 stays
        # 0 and is refused by the size rule (it used to turn into 1).
        s, d = geom(args.stride) if args.stride is not None else None, geom(args.dilation)
        conv_s = 1 if s is None else s
        if args.what == "same":
            pads = shapes.same_padding(n, k, conv_s, d)
            out = shapes.conv_output_size(n, k, conv_s, "same", d)
            print(f"same padding (before, after): {pads}; output {out}")
            return 0
        if args.what == "conv":
            p = args.padding if args.padding in ("same", "valid") else geom(args.padding)
            out = shapes.conv_output_size(n, k, conv_s, p, d)
            dropped = shapes.dropped_pixels(n, k, conv_s, p, d)
        elif args.what == "pool":
            p = geom(args.padding)
            out = shapes.pool_output_size(n, k, s, p, d, args.ceil_mode)
            dropped = 0 if args.ceil_mode else shapes.dropped_pixels(n, k, k if s is None else s, p, d)
        else:
            out = shapes.conv_transpose_output_size(n, k, conv_s, geom(args.padding), geom(args.output_padding), d)
            dropped = 0
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(f"output size: {_fmt(out) if not isinstance(out, int) else out}")
    if dropped and dropped != (0, 0):
        print(f"warning: {dropped} input row(s)/column(s) are never read (trailing, or between windows)")
    return 0


def _gridding(args, parser) -> int:
    """`fastconv shape gridding --layers k:s:p:d,...`: which part of one output's receptive field reaches it."""
    from . import shapes

    if not args.layers:
        parser.error("gridding needs --layers k:s:p:d,... (kernel, stride, padding, dilation per layer)")
    layers = []
    for item in args.layers.split(","):
        parts = item.split(":")
        try:
            values = [int(v) for v in parts]
        except ValueError:
            parser.error(f"--layers: each layer is k[:s[:p[:d]]] with integers, got {item!r}")
        if not 1 <= len(values) <= 4:
            parser.error(f"--layers: each layer is k[:s[:p[:d]]] with integers, got {item!r}")
        k, s, p, d = values + [1, 0, 1][len(values) - 1 :]
        layers.append((k, s, p, d))
    try:
        g = shapes.gridding(layers)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    box = "x".join(str(v) for v in g.box)
    print(f"receptive field {box}; {g.fraction:.1%} of it reaches one output through the taps")
    if g.fraction < 1:
        print(f"gridding: holes caused by layer(s) {', '.join(g.culprits)} (0-based)")
    return 0


def _summary(args, parser) -> int:

    from ._summary import summary

    spec = args.model
    try:
        model = _load_model(spec, parser)
        result = summary(model, args.input)
    except RecursionError:
        parser.error(f"MODEL {spec}: nested too deeply (more than {sys.getrecursionlimit()} levels)")
    except (ValueError, TypeError, OSError, AttributeError) as exc:
        parser.error(f"MODEL {spec}: {exc}")
    print(json.dumps(result.to_dict()) if args.json else result)
    return 0


def _load_model(spec, parser):
    """A model from ``model.json`` (a layer list) or ``module.py:attribute`` (called if it is a factory)."""
    import importlib.util
    import os

    if ":" in spec and not spec.endswith(".json"):
        path, attr = spec.rsplit(":", 1)
        mod_spec = importlib.util.spec_from_file_location("fastconv_user_model", os.path.abspath(path))
        if mod_spec is None:
            parser.error(f"MODEL: cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except OSError:
            raise
        except Exception as exc:  # the user's file is broken: a message, not its traceback
            raise ValueError(f"cannot import {path}: {type(exc).__name__}: {exc}") from None
        model = getattr(module, attr)
        return (
            model()
            if callable(model) and not hasattr(model, "output_shape") and not hasattr(model, "named_children")
            else model
        )
    with open(spec) as fh:
        return model_from_json(json.load(fh))


def _valid_inputs(args, parser) -> int:
    from .shapes import valid_inputs

    if args.model is None or args.size_range is None:
        parser.error("valid-inputs needs --model and --range LO:HI")
    try:
        lo_text, hi_text = args.size_range.split(":")
        lo, hi = (tuple(int(v) for v in t.lower().split("x")) for t in (lo_text, hi_text))
        lo, hi = (v[0] if len(v) == 1 else v for v in (lo, hi))
    except ValueError:
        parser.error(f"--range must be LO:HI or HxW:HxW, got {args.size_range!r}")
    try:
        model = _load_model(args.model, parser)
        result = valid_inputs(model, lo, hi, channels=args.channels)
    except RecursionError:
        parser.error(f"MODEL {args.model}: nested too deeply")
    except (ValueError, TypeError, OSError, AttributeError) as exc:
        parser.error(f"MODEL {args.model}: {exc}")
    print(result)
    for size, shape in list(result.valid.items())[:50]:
        print(f"  {size[0]}x{size[1]} -> {'x'.join(map(str, shape))}")
    if not result.valid and result.invalid:
        first = next(iter(result.invalid.items()))
        print(f"  e.g. {first[0][0]}x{first[0][1]}: {first[1]}")
    return 0


def model_from_json(obj):
    """``[{"type": "Conv2d", ...torch kwargs}, ...]`` -> fastconv.layers; containers nest via "layers"/"body"."""
    from . import layers as L

    if isinstance(obj, list):
        return L.Sequential(*(model_from_json(o) for o in obj))
    if not isinstance(obj, dict) or "type" not in obj:
        raise ValueError(f"each layer must be an object with a 'type', got {obj!r}")
    kwargs = dict(obj)
    kind = kwargs.pop("type")
    cls = getattr(L, kind, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, L.Layer) or kind == "Layer":
        raise ValueError(f"unknown layer type {kind!r}")
    if kind == "Sequential":
        layers = kwargs.get("layers", [])
        if not isinstance(layers, list):
            raise ValueError(f"Sequential: 'layers' must be a list, got {layers!r}")
        return L.Sequential(*(model_from_json(o) for o in layers))
    if kind in ("Residual", "Concat"):
        if "body" not in kwargs:
            raise ValueError(f"{kind} needs a 'body' (a layer or a list of layers), got keys {sorted(kwargs)}")
        return cls(model_from_json(kwargs["body"]))
    return cls(**kwargs)


def _check_output(path, option, parser, plot=False):
    """A file to write, checked before the work: its folder exists and, for a plot, matplotlib is there."""
    import os

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"{option}: folder {folder!r} does not exist")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error(f"{option} needs matplotlib: pip install matplotlib")


def _bench_outputs(args, parser):
    """--json / --plot / --from-json checked before anything runs: writable folders, matplotlib present."""
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        _check_output(path, option, parser, plot=option == "--plot")
    if args.from_json is not None and args.plot is None:
        parser.error("--from-json only goes with --plot FILE")
    if (args.json or args.plot) and (args.network or args.models):
        parser.error("--json and --plot record the shape table; not with --network or --models")


def _bench(args, parser) -> int:
    import json

    from ._threads import MAX_THREADS
    from .bench import SHAPES_BY_NAME, plot_record, run_table

    _bench_outputs(args, parser)
    if args.from_json is not None:
        try:
            with open(args.from_json, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as exc:
            parser.error(f"--from-json: cannot read {args.from_json!r}: {exc}")
        if not isinstance(record, dict) or record.get("format") != "fastconv.bench":
            parser.error(f"--from-json: {args.from_json!r} is not a fastconv bench --json file")
        plot_record(record, args.plot)
        print(f"wrote {args.plot}")
        return 0

    if not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be in [1, {MAX_THREADS}], got {args.threads}")
    if args.repeats <= 0:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    if args.rounds <= 0:
        parser.error(f"--rounds must be positive, got {args.rounds}")

    unknown = [n.strip() for n in (args.shapes or "").split(",") if n.strip() and n.strip() not in SHAPES_BY_NAME]
    if unknown:
        parser.error(f"--shapes: unknown shape(s) {unknown}; known: {', '.join(SHAPES_BY_NAME)}")
    batches = None
    if args.batch is not None:
        try:
            batches = [int(b) for b in args.batch.split(",")]
        except ValueError:
            parser.error(f"--batch must be a comma-separated list of ints, got {args.batch!r}")
        if any(not 1 <= b <= 4096 for b in batches):
            parser.error(f"--batch values must be in [1, 4096], got {args.batch!r}")
    if args.network:
        from .bench import run_network
        from .models import NETWORKS

        names = [n.strip() for n in args.network.split(",") if n.strip()]
        unknown = [n for n in names if n not in NETWORKS]
        if unknown or not names:
            parser.error(f"--network: unknown network(s) {unknown or [args.network]}; known: {', '.join(NETWORKS)}")
        run_network(
            names,
            batches or [1, 8],
            repeats=args.repeats,
            threads=args.threads,
            rounds=args.rounds,
            backward=not args.forward_only,
            cap_ort=not args.ort_uncapped,
        )
        return 0
    if args.models:
        from .bench import run_models

        if batches is not None and len(batches) != 1:
            parser.error(f"--models takes one --batch (the training step's), got {args.batch!r}")
        return run_models(
            repeats=args.repeats,
            threads=args.threads,
            batch=batches[0] if batches else 64,
            rounds=args.rounds,
            cap_ort=not args.ort_uncapped,
        )
    record = {} if (args.json or args.plot) else None
    status = run_table(
        shapes=args.shapes,
        repeats=args.repeats,
        threads=args.threads,
        dtype=args.dtype,
        backward=not args.forward_only,
        numpy=not args.no_numpy,
        memory=not args.no_memory,
        upsampling=not args.no_upsampling,
        rounds=args.rounds,
        cap_ort=not args.ort_uncapped,
        record=record,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot_record(record, args.plot)
        print(f"wrote {args.plot}")
    return status


def _keras2torch(args, parser) -> int:
    import os

    import numpy as np

    from .keras import convert_weights, to_torch_code

    try:
        with open(args.model) as fh:
            model_json = fh.read()
        weights_file = None
        if args.weights:
            arrays = _load_npz(args.weights)
            weights_file = args.state_out or os.path.splitext(args.weights)[0] + "_torch.npz"
            np.savez(weights_file, **convert_weights(model_json, arrays))
            print(f"wrote torch weights to {weights_file}", file=sys.stderr)
        print(to_torch_code(model_json, weights_file), end="")
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"{args.model}: {exc}")
    return 0


def _load_npz(path: str) -> list:
    """The arrays of an ``np.savez`` file in saving order; ValueError for anything else."""
    import zipfile

    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"--weights {path}: not a readable .npz file ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"--weights {path}: expected the .npz of np.savez(path, *model.get_weights()), got one array")
    try:
        with data:
            return [data[k] for k in sorted(data.files, key=_npz_order)]
    except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"--weights {path}: corrupt .npz file ({exc})") from None


def _npz_order(key: str) -> tuple:
    """np.savez(path, *model.get_weights()) names arrays arr_0, arr_1, ...: numeric order first, then by name."""
    index = key[4:]
    return (0, int(index), "") if key.startswith("arr_") and index.isdigit() else (1, 0, key)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="find conv/pool designs mapping an input size to a target size")
    p.add_argument("--input", required=True, help="input size, e.g. 28 or 32x24")
    p.add_argument("--output", required=True, help="target size")
    p.add_argument("--channels", required=True, help="channels c0,c1,...,cB")
    p.add_argument("--block", default="conv,pool", help="layer kinds per block (default conv,pool)")
    for name, default in [
        ("kernel", "2:10"),
        ("stride", "1:5"),
        ("padding", "0:0"),
        ("dilation", "1:1"),
        ("pool-kernel", "2:10"),
        ("pool-stride", "1:5"),
        ("pool-padding", "0:0"),
    ]:
        p.add_argument(f"--{name}", default=default, help=f"inclusive range lo:hi (default {default})")
    p.add_argument("--exact", action="store_true", help="no layer may drop trailing input rows/columns")
    p.add_argument(
        "--lossless",
        action="store_true",
        help="every input pixel reaches the output: no row or column unread by any layer, no receptive-field holes",
    )
    p.add_argument("--objective", default="params", choices=["params", "macs", "kernel", "depth"],
                   help="what the top designs minimise (default params)")  # fmt: skip
    p.add_argument("--pareto", default=None, metavar="A,B[,C]",
                   help="also the exact Pareto front over two to four of params, macs, kernel, depth")  # fmt: skip
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="draw the Pareto front to FILE (png, svg, pdf; needs matplotlib and --pareto)")  # fmt: skip
    p.add_argument("--min-rf", type=int, default=None, help="smallest receptive field of one output, in input pixels")
    p.add_argument("--max-rf", type=int, default=None, help="largest receptive field of one output, in input pixels")
    p.add_argument("--top", type=int, default=1, help="how many designs to show")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON")
    out.add_argument("--torch", action="store_true", help="print PyTorch code for the best design")
    p.set_defaults(func=_solve, parser=p)

    p = sub.add_parser(
        "shape", help="output size of one conv, pool or transposed conv; TF same padding; gridding of a stack"
    )
    p.add_argument("what", choices=["conv", "pool", "transpose", "same", "gridding", "valid-inputs"])
    p.add_argument("--model", help="valid-inputs: model.json or module.py:attribute (as fastconv summary takes)")
    p.add_argument("--range", dest="size_range", default=None,
                   help="valid-inputs: sizes LO:HI (square) or LOxLO:HIxHI, e.g. 1:4096 or 32x32:64x96")  # fmt: skip
    p.add_argument("--channels", type=int, default=None, help="valid-inputs: input channels (default: the model's)")
    p.add_argument("--input", help="input size, e.g. 224 or 224x160")
    p.add_argument("--kernel")
    p.add_argument("--layers", help="gridding: k:s:p:d per layer, comma-separated, e.g. 3:1:2:2,3:1:2:2")
    p.add_argument("--stride", default=None)
    p.add_argument("--padding", default="0", help="int, HxW, 'same' or 'valid' (conv)")
    p.add_argument("--dilation", default="1")
    p.add_argument("--output-padding", default="0")
    p.add_argument("--ceil-mode", action="store_true")
    p.set_defaults(func=_shape, parser=p)

    p = sub.add_parser("summary", help="Keras-like summary of a JSON layer list or module.py:attribute")
    p.add_argument("model", help="model.json or module.py:attribute")
    p.add_argument("--input", required=True, help="input shape CxHxW, e.g. 3x224x224")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_summary, parser=p)

    p = sub.add_parser("bench", help="fastconv vs torch vs NumPy on the benchmark shapes")
    p.add_argument("--shapes", default=None, help="comma-separated shape names (default: all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds in which the libraries take turns (each keeps its best)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--no-numpy", action="store_true", help="skip the slow NumPy idiom")
    p.add_argument("--no-memory", action="store_true", help="skip the workspace-memory measurement")
    p.add_argument("--no-upsampling", action="store_true", help="skip the interpolate/unpool table")
    p.add_argument(
        "--ort-uncapped",
        action="store_true",
        help="with FASTCONV_CPU=avx2 on an AVX-512 CPU: let ONNX Runtime run its AVX-512 kernels (default: it is "
        "started on a CPU reporting no AVX-512, as fastconv and torch are capped)",
    )
    p.add_argument(
        "--models",
        action="store_true",
        help="instead: training steps and inference of VGG-, ResNet-8- and DenseNet-style models vs torch",
    )
    p.add_argument(
        "--network",
        default=None,
        help="instead: every distinct conv layer of these networks (comma-separated: resnet18, resnet50, mobilenet_v2, "
        "vgg_cifar, unet) vs torch and ONNX Runtime",
    )
    p.add_argument(
        "--batch",
        default=None,
        help="--network: comma-separated batch sizes (default 1,8); --models: images per step (default 64)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write every figure of the run (and the CPU, level, "
                   "library versions) to FILE as JSON")  # fmt: skip
    p.add_argument("--plot", default=None, metavar="FILE", help="draw per-shape ratio bars against torch and ONNX "
                   "Runtime to FILE (png, svg, pdf; needs matplotlib)")  # fmt: skip
    p.add_argument("--from-json", default=None, metavar="FILE", help="with --plot: draw a recorded run's FILE "
                   "instead of running the benchmark")  # fmt: skip
    p.set_defaults(func=_bench, parser=p)

    p = sub.add_parser("keras2torch", help="PyTorch source for a Keras model.json (model.to_json())")
    p.add_argument("model", help="Keras model JSON")
    p.add_argument("--weights", help="np.savez(path, *model.get_weights()) file; the code then loads them")
    p.add_argument("--state-out", help="where to write the torch-layout weights (default: WEIGHTS_torch.npz)")
    p.set_defaults(func=_keras2torch, parser=p)

    sub.add_parser("demo", help="train a CNN on scikit-learn's digits with fastconv only (fastconv demo --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "demo":  # the demo parses its own options, --help included
        from .demo import main as demo_main

        return _guarded(lambda: demo_main(argv[1:]), "fastconv demo")
    parser = build_parser()
    args = parser.parse_args(argv)
    return _guarded(lambda: args.func(args, args.parser), f"fastconv {args.command}")


def _guarded(run, prog: str) -> int:
    """Runs a subcommand; an error no option check foresaw becomes one line and exit 1, not a traceback.

    ``FASTCONV_DEBUG=1`` shows the traceback instead.
    """
    import os

    if os.environ.get("FASTCONV_DEBUG"):
        return run()
    try:
        return run()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fastconv solve ... | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        return 141
    except RecursionError:
        print(f"{prog}: error: input nested too deeply", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the point of this function
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
