"""Integer inference of an int8 .tflite model on a batch; dump every tensor.

    python -m golden.run MODEL.tflite --input X.npy --out-dir DIR

writes ``DIR/<tensor index>.npy`` for every tensor of subgraph 0 (constants, inputs,
intermediates and outputs), activations with the batch dimension first, so the files can
be compared one for one with an interpreter run with ``experimental_preserve_all_tensors``.
A bad model or input is one line on stderr and exit status 2.
"""

import os
import sys

import numpy as np

from .cli import ArgumentParser
from .tflite_io import load_tflite

__all__ = ["main"]



def _parser():
    p = ArgumentParser(
        prog="python -m golden.run",
        description="Run the golden integer-only model of an int8 .tflite file on a batch "
                    "and write every tensor as DIR/<tflite tensor index>.npy.",
        epilog="Only subgraph 0 and the operators CONV_2D, DEPTHWISE_CONV_2D, "
               "FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MAX_POOL_2D and RESHAPE are "
               "supported. Errors print one line on stderr and exit with status 2.",
    )
    p.add_argument("model", metavar="MODEL.tflite", help="int8 TFLite flatbuffer")
    p.add_argument("--input", metavar="X.npy", action="append", required=True,
                   help="int8 batch of shape (N, *input shape without batch), e.g. "
                        "(N, 8, 8, 1) for a [1, 8, 8, 1] input; repeat once per model "
                        "input, in the model's input order")
    p.add_argument("--out-dir", metavar="DIR", required=True,
                   help="directory for the .npy files (created if missing)")
    return p


def _load_input(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read input {path}: {e}") from None


def _check_input(net, index, path, x):
    t = net.tensors[index]
    want = "(N, " + ", ".join(map(str, t.shape)) + ")"
    if x.dtype != np.int8 or x.ndim != len(t.shape) + 1 or x.shape[1:] != tuple(t.shape):
        raise ValueError(f"input {path} is {x.dtype} of shape {x.shape}; model input tensor "
                         f"{index} {t.name!r} needs int8 of shape {want}")


def main(argv=None):
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    prog = "golden.run"
    try:
        try:
            net = load_tflite(args.model)
        except OSError as e:
            raise ValueError(f"cannot read model {args.model}: {e.strerror or e}") from None
        if len(args.input) != len(net.inputs):
            raise ValueError(f"the model has {len(net.inputs)} input(s), "
                             f"got {len(args.input)} --input")
        feeds = {}
        for index, path in zip(net.inputs, args.input, strict=True):
            x = _load_input(path)
            _check_input(net, index, path, x)
            feeds[index] = x
        if len({x.shape[0] for x in feeds.values()}) != 1:
            raise ValueError("all inputs must have the same batch size N")
        values = net.run(feeds)
        os.makedirs(args.out_dir, exist_ok=True)
        for index, value in values.items():
            np.save(os.path.join(args.out_dir, f"{index}.npy"), value)
    except (ValueError, OverflowError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    batch = next(iter(feeds.values())).shape[0]
    print(f"{prog}: wrote {len(values)} tensors (batch {batch}) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
