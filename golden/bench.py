"""Time golden integer inference against LiteRT's reference interpreter on a digits CNN.

    python -m golden.bench [--batch 1000] [--repeat 5] [--write-docs [PATH]]

The model is a digits-sized int8 CNN (8x8x1 input; conv 3x3 -> depthwise 3x3 -> conv 3x3
-> average pool -> fully connected, random weights and scales) exported with
:mod:`golden.tflite_io`, so both sides run the same bytes. Golden runs the whole batch
at once (``Network.run(x, preserve=False)``, BLAS limited to one thread). LiteRT
(``BUILTIN_REF`` kernels, no preserved tensors) is timed two ways: the input resized to
the whole batch and one ``invoke``, and a loop of ``set_tensor`` + ``invoke`` per sample
at batch 1; the ratio is taken against the faster of the two. Each time is the best of
``--repeat`` runs after a warm-up run. The numbers are printed, and written between the
bench markers of ``docs/golden.md`` (or PATH) only with ``--write-docs``; that file is
checked before the measurement starts, and so is the memory the batch needs.
"""

import os
import platform
import re
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from threadpoolctl import threadpool_limits

from .cli import (
    ArgumentParser,
    ProgressLine,
    available_memory,
    format_bytes,
    nonnegative_int,
    positive_int,
)
from .graph import Network, Op, QuantParams, Tensor
from .ops import conv_geometry
from .tflite_io import to_tflite_bytes

__all__ = ["digits_cnn", "main"]

_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"
# The checkout's own page (bench.py is golden/bench.py), wherever the command runs from.
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "golden.md")


class _CNN:
    """Appends random int8 layers whose multipliers keep activations in range."""

    def __init__(self, rng):
        self.rng = rng
        self.tensors = [Tensor("input", (8, 8, 1), "int8", QuantParams(1 / 255, -128))]

    def _add(self, tensor):
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def _weighted(self, x, w_shape, axis, out_shape, zp_out):
        rng, xq = self.rng, self.tensors[x].quant
        n = w_shape[axis]
        k = int(np.prod(w_shape)) // n
        w = rng.integers(-127, 128, w_shape).astype(np.int8)
        s_w = rng.uniform(0.5, 2.0, n) / 127
        # Random int8 products sum to about sqrt(K) * 73 * 74 in magnitude; a multiplier
        # mapping three times that onto 127 codes keeps most outputs unsaturated.
        mult = 127 / (3 * np.sqrt(k) * 73 * 74)
        s_out = float(xq.scale[0] * np.median(s_w) / mult)
        bias = rng.integers(-(2**12), 2**12, n).astype(np.int32)
        wi = self._add(Tensor(f"w{len(self.tensors)}", w_shape, "int8",
                              QuantParams(s_w, 0, axis), w))
        bi = self._add(Tensor(f"b{len(self.tensors)}", (n,), "int32",
                              QuantParams(xq.scale[0] * s_w, 0), bias))
        yi = self._add(Tensor(f"act{len(self.tensors)}", out_shape, "int8",
                              QuantParams(s_out, zp_out)))
        return wi, bi, yi

    def conv(self, x, n, kernel, kind="CONV_2D", activation="RELU"):
        h, w, c = self.tensors[x].shape
        oh, ow = conv_geometry(h, kernel, 1, "SAME")[0], conv_geometry(w, kernel, 1, "SAME")[0]
        if kind == "CONV_2D":
            wi, bi, yi = self._weighted(x, (n, kernel, kernel, c), 0, (oh, ow, n), -128)
            options = {}
        else:
            wi, bi, yi = self._weighted(x, (1, kernel, kernel, n), 3, (oh, ow, n), -128)
            options = {"depth_multiplier": n // c}
        return yi, Op(kind, [x, wi, bi], [yi], dict(stride=(1, 1), padding="SAME",
                                                    dilation=(1, 1), activation=activation,
                                                    **options))


def digits_cnn(seed=0):
    """The benchmark network: random int8 weights, per-channel scales.

    input 8x8x1 -> CONV_2D 3x3 x16 ReLU -> DEPTHWISE_CONV_2D 3x3 ReLU6 -> CONV_2D 3x3 x32 ReLU
    -> AVERAGE_POOL_2D 2x2 -> RESHAPE 512 -> FULLY_CONNECTED 10.
    """
    b = _CNN(np.random.default_rng(seed))
    ops = []
    h, op = b.conv(0, 16, 3)
    ops.append(op)
    h, op = b.conv(h, 16, 3, "DEPTHWISE_CONV_2D", "RELU6")
    ops.append(op)
    h, op = b.conv(h, 32, 3)
    ops.append(op)
    q = b.tensors[h].quant
    p = b._add(Tensor("pool", (4, 4, 32), "int8", QuantParams(q.scale.copy(), q.zero_point)))
    ops.append(Op("AVERAGE_POOL_2D", [h], [p], dict(filter=(2, 2), stride=(2, 2),
                                                   padding="VALID")))
    r = b._add(Tensor("flat", (512,), "int8", QuantParams(q.scale.copy(), q.zero_point)))
    ops.append(Op("RESHAPE", [p], [r]))
    wi, bi, y = b._weighted(r, (10, 512), 0, (10,), 0)
    ops.append(Op("FULLY_CONNECTED", [r, wi, bi], [y], dict(activation="NONE")))
    return Network(b.tensors, ops, [0], [y], "digits_cnn").validate()


def _best(fn, repeat, what):
    progress = ProgressLine("golden.bench", what, repeat + 1, "runs")
    fn()
    times = []
    for i in range(repeat):
        progress.update(i + 1)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    progress.close()
    return min(times)


def batch_bytes(batch, seed=0):
    """Memory :func:`measure` needs for ``batch`` samples, an upper estimate in bytes.

    Golden's whole-batch run (:meth:`golden.graph.Network.run_bytes_per_sample`), LiteRT's
    arena resized to the batch (every activation once) and the input and output copies.
    """
    net = digits_cnn(seed)
    activations = sum(int(np.prod(t.shape)) for t in net.tensors if t.data is None)
    return batch * (net.run_bytes_per_sample() + 2 * activations)


def _interpreter(model):
    return Interpreter(model_content=model,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_REF)


def measure(batch=1000, repeat=5, seed=0):
    """Times in seconds: golden, LiteRT batched, LiteRT per sample; and the output check."""
    net = digits_cnn(seed)
    model = to_tflite_bytes(net)
    x = np.random.default_rng(seed + 1).integers(-128, 128, (batch, 8, 8, 1)).astype(np.int8)
    out = net.outputs[0]

    golden = {}
    # LiteRT's reference kernels run on one thread; so does golden's BLAS here. (A BLAS
    # thread pool also gains nothing on these small matrices and loses badly on a busy
    # machine.)
    with threadpool_limits(limits=1, user_api="blas"):
        t_golden = _best(lambda: golden.update(net.run(x, preserve=False)), repeat,
                         "timing golden:")

    batched = _interpreter(model)
    batched.resize_tensor_input(0, [batch, 8, 8, 1])
    batched.allocate_tensors()

    def run_batched():
        batched.set_tensor(0, x)
        batched.invoke()

    t_batched = _best(run_batched, repeat, "timing LiteRT batched:")
    ref = batched.get_tensor(out)

    single = _interpreter(model)
    single.allocate_tensors()
    ref_single = np.empty_like(ref)

    def run_single():
        for i in range(batch):
            single.set_tensor(0, x[i:i + 1])
            single.invoke()
            ref_single[i] = single.get_tensor(out)[0]

    t_single = _best(run_single, repeat, "timing LiteRT per sample:")
    diff = np.abs(golden[out].astype(np.int64) - ref)
    return dict(batch=batch, golden=t_golden, litert_batched=t_batched,
                litert_single=t_single, max_diff=int(diff.max()),
                diff_fraction=float(np.mean(diff != 0)),
                single_equals_batched=bool(np.array_equal(ref, ref_single)))


def report(r, repeat):
    best = min(r["litert_batched"], r["litert_single"])
    n = r["batch"]
    return "\n".join([
        f"Command: `python -m golden.bench --batch {n} --repeat {repeat}` "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, load average {os.getloadavg()[0]:.1f}); best of {repeat} "
        f"after a warm-up; both sides on one thread.",
        "",
        f"| digits CNN, int8, batch {n} | time | per sample |",
        "|---|---:|---:|",
        f"| golden `Network.run` (whole batch) | {r['golden'] * 1e3:.1f} ms | "
        f"{r['golden'] / n * 1e6:.1f} us |",
        f"| LiteRT BUILTIN_REF, resized to batch {n}, one invoke | "
        f"{r['litert_batched'] * 1e3:.1f} ms | {r['litert_batched'] / n * 1e6:.1f} us |",
        f"| LiteRT BUILTIN_REF, batch 1, {n} invokes | {r['litert_single'] * 1e3:.1f} ms | "
        f"{r['litert_single'] / n * 1e6:.1f} us |",
        "",
        f"Golden is **{best / r['golden']:.1f}x** faster than the faster LiteRT mode. "
        f"Outputs: max |golden - LiteRT| = {r['max_diff']} code on "
        f"{100 * r['diff_fraction']:.2f}% of the FULLY_CONNECTED outputs (LiteRT's float "
        f"rescaling, see above); LiteRT batched == per sample: "
        f"{r['single_equals_batched']}.",
    ])


def update_doc(path, text):
    """Replace the text between the bench markers of ``path`` (appending them if absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = f.read()
    except FileNotFoundError:
        doc = ""
    block = f"{_BEGIN}\n{text}\n{_END}"
    pattern = re.compile(re.escape(_BEGIN) + ".*?" + re.escape(_END), re.S)
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else \
        doc.rstrip("\n") + ("\n\n" if doc else "") + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)


def main(argv=None):
    """Entry point; returns the exit status."""
    p = ArgumentParser(prog="python -m golden.bench",
                       description="Time golden integer inference against LiteRT's "
                                   "BUILTIN_REF interpreter on a digits-sized int8 CNN and "
                                   "print the numbers (recorded in the docs only when asked).")
    p.add_argument("--batch", type=positive_int, default=1000, help="samples (default 1000)")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed runs per mode, best kept (default 5)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="weights and input seed (default 0)")
    p.add_argument("--write-docs", nargs="?", const=DOC, metavar="PATH",
                   help="also rewrite the bench section of PATH (default: this checkout's "
                        "docs/golden.md); nothing is written without this option")
    args = p.parse_args(argv)
    if args.write_docs is not None:
        p.check_output_file(args.write_docs, "--write-docs")
    need, free = batch_bytes(args.batch, args.seed), available_memory()
    if free is not None and need > free:
        p.error(f"argument --batch: {args.batch} samples need about {format_bytes(need)} of "
                f"memory; {format_bytes(free)} is available")
    text = report(measure(args.batch, args.repeat, args.seed), args.repeat)
    print(text)
    if args.write_docs is not None:
        try:
            update_doc(args.write_docs, text)
        except OSError as e:
            print(f"golden.bench: error: cannot write {args.write_docs}: {e.strerror or e}",
                  file=sys.stderr)
            return 2
        print(f"golden.bench: wrote {args.write_docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
