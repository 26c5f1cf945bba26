"""Integer inference of an int8 .tflite model on a batch; dump every tensor.

    python -m golden.run MODEL.tflite --input X.npy --out-dir DIR

writes ``DIR/<tensor index>.npy`` for every tensor of subgraph 0 (constants, inputs,
intermediates and outputs), activations with the batch dimension first, so the files can
be compared one for one with an interpreter run with ``experimental_preserve_all_tensors``,
and ``DIR/index.json``, which names each file: tensor name, role (input, output,
intermediate, constant), shape, dtype and quantization.

The batch is streamed: inputs are memory-mapped, the network runs on chunks sized to a
memory budget (``--memory``) and each chunk is appended to the output files, so a batch
of any size runs in bounded memory. Outputs are checked before any work: an existing
output is kept unless ``--force``, and the disk must hold the result. A bad model, input
or argument is one line on stderr and exit status 2.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
from threadpoolctl import threadpool_limits

from .cli import (
    ArgumentParser,
    ProgressLine,
    available_memory,
    format_bytes,
    output_dir,
    positive_int,
)
from .tflite_io import load_tflite

__all__ = ["main", "INDEX"]

INDEX = "index.json"
_DEFAULT_MEMORY = 512 * 2**20
_PROG = "golden.run"


def _memory(text):
    """argparse type: a byte count with an optional K/M/G suffix (binary)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    t = text.strip().lower().removesuffix("b")
    scale = units.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if scale > 1 else t) * scale)
    except (ValueError, OverflowError):
        value = 0
    if value < 2**20:
        raise argparse.ArgumentTypeError(f"must be a size of at least 1M such as 512M or "
                                         f"2G, not {text!r}")
    return value


def _parser():
    p = ArgumentParser(
        prog="python -m golden.run",
        description="Run the golden integer-only model of an int8 .tflite file on a batch "
                    "and write every tensor as DIR/<tflite tensor index>.npy, with "
                    f"DIR/{INDEX} naming each file (tensor name, role, shape, dtype, "
                    "quantization). The batch is streamed in chunks, so memory stays "
                    "bounded whatever its size.",
        epilog="Only subgraph 0 and the operators CONV_2D, DEPTHWISE_CONV_2D, "
               "FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MAX_POOL_2D and RESHAPE are "
               "supported. Errors print one line on stderr and exit with status 2.",
    )
    p.add_argument("model", metavar="MODEL.tflite", help="int8 TFLite flatbuffer")
    p.add_argument("--input", metavar="X.npy", action="append", required=True,
                   help="int8 batch of shape (N, *input shape without batch), e.g. "
                        "(N, 8, 8, 1) for a [1, 8, 8, 1] input; repeat once per model "
                        "input, in the model's input order")
    p.add_argument("--out-dir", metavar="DIR", required=True, type=output_dir,
                   help="directory for the .npy files and the index (created if missing)")
    p.add_argument("--force", action="store_true",
                   help="overwrite output files that already exist in DIR")
    p.add_argument("--memory", type=_memory, default=_DEFAULT_MEMORY, metavar="SIZE",
                   help="memory budget of one chunk, e.g. 256M or 2G (default 512M)")
    p.add_argument("--chunk", type=positive_int, metavar="N",
                   help="samples per chunk (default: as many as fit --memory)")
    return p


def _load_input(path):
    try:
        # Memory-mapped: a chunk at a time is read, never the whole batch.
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read input {path}: {e}") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise ValueError(f"cannot read input {path}: an .npz archive, not one .npy array")
    return x


def _check_input(net, index, path, x):
    t = net.tensors[index]
    want = "(N, " + ", ".join(map(str, t.shape)) + ")"
    if x.dtype != np.int8 or x.ndim != len(t.shape) + 1 or x.shape[1:] != tuple(t.shape):
        raise ValueError(f"input {path} is {x.dtype} of shape {x.shape}; model input tensor "
                         f"{index} {t.name!r} needs int8 of shape {want}")
    if x.shape[0] == 0:
        raise ValueError(f"input {path} holds no samples (shape {x.shape}); the batch "
                         f"needs N >= 1")


def _role(net, index):
    if index in net.inputs:
        return "input"
    if index in net.outputs:
        return "output"
    return "constant" if net.tensors[index].data is not None else "intermediate"


def _index(net, model, batch):
    """The index file's content: one entry per tensor, in tensor order."""
    entries = []
    for i, t in enumerate(net.tensors):
        constant = t.data is not None
        shape = list(np.shape(t.data)) if constant else [batch, *t.shape]
        entry = dict(index=i, name=t.name, file=f"{i}.npy", role=_role(net, i),
                     dtype=str(np.dtype(t.dtype)), shape=shape)
        if t.quant is not None:
            entry["scale"] = [float(s) for s in np.float32(t.quant.scale)]
            entry["zero_point"] = [int(z) for z in t.quant.zero_point]
            if t.quant.per_channel:
                entry["quantized_dimension"] = int(t.quant.axis)
        entries.append(entry)
    return dict(model=os.path.abspath(model), batch=batch,
                inputs=[net.tensors[i].name for i in net.inputs],
                outputs=[net.tensors[i].name for i in net.outputs], tensors=entries)


def _index_text(index):
    """JSON with one line per tensor, so the file reads as a table."""
    head = {k: v for k, v in index.items() if k != "tensors"}
    rows = ",\n".join("  " + json.dumps(e) for e in index["tensors"])
    return json.dumps(head, indent=1)[:-2] + f',\n "tensors": [\n{rows}\n ]\n}}\n'


def _plan(net, feeds, args):
    """Samples per chunk and the bytes the outputs take; refuse what cannot fit."""
    batch = next(iter(feeds.values())).shape[0]
    per_sample = net.run_bytes_per_sample()
    if args.chunk is not None:
        chunk, option = min(args.chunk, batch), f"--chunk {args.chunk}"
    else:
        if per_sample > args.memory:
            raise ValueError(f"one sample needs about {format_bytes(per_sample)} of memory, "
                             f"more than --memory {format_bytes(args.memory)}")
        chunk, option = min(batch, args.memory // per_sample), \
            f"--memory {format_bytes(args.memory)}"
    free = available_memory()
    if free is not None and chunk * per_sample > free:
        raise ValueError(f"{option}: chunks of {chunk} samples need about "
                         f"{format_bytes(chunk * per_sample)} of memory "
                         f"({format_bytes(per_sample)} per sample); {format_bytes(free)} "
                         f"is available")
    activation = sum(int(np.prod(t.shape)) for t in net.tensors if t.data is None)
    constant = sum(np.asarray(t.data).nbytes for t in net.tensors if t.data is not None)
    return batch, chunk, batch * activation + constant


def _check_outputs(net, args, total):
    os.makedirs(args.out_dir, exist_ok=True)
    names = [INDEX] + [f"{i}.npy" for i in range(len(net.tensors))]
    existing = [n for n in names if os.path.lexists(os.path.join(args.out_dir, n))]
    for name in existing:
        for path in args.input:
            # The input is read chunk by chunk while the outputs are written.
            if os.path.samefile(path, os.path.join(args.out_dir, name)):
                raise ValueError(f"input {path} is also an output file of this run "
                                 f"({os.path.join(args.out_dir, name)}); choose another "
                                 f"--out-dir")
    if existing and not args.force:
        raise ValueError(f"{os.path.join(args.out_dir, existing[0])} exists "
                         f"({len(existing)} output file(s) in {args.out_dir}); pass "
                         f"--force to overwrite")
    free = shutil.disk_usage(args.out_dir).free
    if total > free:
        raise ValueError(f"the tensors take {format_bytes(total)}; {args.out_dir} has "
                         f"{format_bytes(free)} free")


def _start_file(path, dtype, shape):
    """Write the .npy header of an array that chunks are appended to."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, dict(descr=np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    fortran_order=False, shape=tuple(shape)))


def _stream(net, feeds, batch, chunk, out_dir):
    """Run the batch chunk by chunk, appending every activation to its file."""
    progress = ProgressLine(_PROG, "ran", batch, "samples")
    for start in range(0, batch, chunk):
        part = {i: np.ascontiguousarray(x[start:start + chunk]) for i, x in feeds.items()}
        values = net.run(part)
        for i, value in values.items():
            path = os.path.join(out_dir, f"{i}.npy")
            if net.tensors[i].data is not None:
                if start == 0:
                    np.save(path, value)
                continue
            if start == 0:
                _start_file(path, value.dtype, (batch, *value.shape[1:]))
            with open(path, "ab") as f:
                f.write(np.ascontiguousarray(value).data)
        progress.update(min(batch, start + chunk))
    progress.close()


def main(argv=None):
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
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
        batch, chunk, total = _plan(net, feeds, args)
        _check_outputs(net, args, total)
        # The layers feed BLAS cache-sized blocks, too small to gain from its threads;
        # on a busy machine the thread pool made a 20,000-sample run 4x slower.
        with threadpool_limits(limits=1, user_api="blas"):
            _stream(net, feeds, batch, chunk, args.out_dir)
        with open(os.path.join(args.out_dir, INDEX), "w", encoding="utf-8") as f:
            f.write(_index_text(_index(net, args.model, batch)))
    except (ValueError, OverflowError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return 2
    print(f"{_PROG}: wrote {len(net.tensors)} tensors (batch {batch}, chunks of {chunk}) "
          f"and {INDEX} to {args.out_dir}")
    for i in net.outputs:
        print(f"{_PROG}: output {net.tensors[i].name!r} -> "
              f"{os.path.join(args.out_dir, f'{i}.npy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
