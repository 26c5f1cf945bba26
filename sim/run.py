"""Run a whole int8 .tflite model with its CONV_2D and FULLY_CONNECTED layers on the RTL.

::

    python -m sim.run MODEL.tflite --input X.npy [--pe RxC] [--host-width W]
                      [--rounding double|single] [--limit N] [--batch B] [--chain]

The golden model (``golden.graph.Network.run``) runs the model first. Every CONV_2D and
FULLY_CONNECTED layer -- the layers the MAC array executes -- is lowered by ``hw.driver``
(im2col + GEMM + requantize, input zero point folded into the bias, per-channel M0/shift
from ``golden.ops.output_multipliers``, K beyond a bank split into partial COMPUTEs) and
run on the accelerator RTL under Verilator. Every other operator (DEPTHWISE_CONV_2D, ADD,
AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE) runs on the host, as the golden model runs it.

Per layer (default): every RTL layer is fed the golden model's own input tensor of that
layer, so a mismatch points at one layer; its output is compared with the golden tensor
bit for bit. Chained (``--chain``): the model runs as deployed, every op consuming the
outputs the ops before it actually produced (RTL or host), and every op's output is
compared with the golden tensor.

Samples go through in chunks of ``--batch`` (the input file is memory-mapped, so only one
chunk is in memory); sizes are checked before anything is allocated.

Exit status: 0 when everything compared matches, 1 on any mismatch (or a failed
simulation: the message names the folder that keeps its log), 2 on bad input (missing or
unsupported model, wrong input, a layer the driver refuses, a batch too big for memory, a
bad option), with one line on stderr.
"""

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from golden.cli import ArgumentParser, positive_int
from golden.ops import output_multipliers
from golden.requant import activation_range
from hw import driver as drv
from hw.config import HOST_WIDTHS, AcceleratorConfig, pe_argument
from sim.bench import Utilization

__all__ = ["RTL_OPS", "Layer", "LayerResult", "compile_layers", "run_layers", "run_chain",
           "merge_rows", "run_model", "format_table", "main"]

RTL_OPS = ("CONV_2D", "FULLY_CONNECTED")


@dataclass
class Layer:
    """One RTL layer of a network: op index, the program, and the golden output."""

    index: int
    kind: str
    program: drv.Program
    want: np.ndarray


@dataclass
class LayerResult(Utilization):
    """One operator of the run. For host operators (``rtl`` False) only ``index`` and
    ``kind`` are meaningful. ``computes``, ``compute``: the layer's COMPUTEs and their busy
    cycles (STATUS); ``ideal``: ``ceil(M/R) * ceil(N/C) * K``; ``k_chunks``: pieces K was
    split into; ``total``: cycles of the whole program, first input beat to last response
    beat; ``error``: what the accelerator reported."""

    index: int
    kind: str
    rtl: bool
    m: int = 0
    k: int = 0
    n: int = 0
    computes: int = 0
    compute: int = 0
    total: int = 0
    ideal: int = 0
    k_chunks: int = 1
    mismatches: int = 0
    error: str = ""

    @property
    def exact(self):
        return self.rtl and not self.error and self.mismatches == 0


def _layer_program(net, k, op, values, config, strategy):
    """The driver program of RTL op ``k``, fed the golden tensors in ``values``."""
    t = net.tensors
    x = values[op.inputs[0]]
    w = np.asarray(t[op.inputs[1]].data)
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    bias = np.asarray(t[b].data) if b >= 0 else None
    xq, wq, yq = t[op.inputs[0]].quant, t[op.inputs[1]].quant, t[op.outputs[0]].quant
    m0, shift = output_multipliers(xq.scale[0], wq.scale, yq.scale[0],
                                   rounding=config.rounding)
    # A per-tensor weight scale gives one multiplier; the driver takes a scalar or N.
    m0, shift = (np.broadcast_to(v, (w.shape[0],)) for v in (m0, shift))
    act_min, act_max = activation_range(op.options.get("activation", "NONE"),
                                        float(np.float32(yq.scale[0])), int(yq.zero_point[0]))
    common = dict(z_in=int(xq.zero_point[0]), z_out=int(yq.zero_point[0]), act_min=act_min,
                  act_max=act_max, strategy=strategy)
    if op.kind == "FULLY_CONNECTED":
        return drv.compile_fully_connected(config, x.reshape(-1, w.shape[1]), w, bias, m0,
                                           shift, **common)
    opt = op.options
    return drv.compile_conv2d(config, x, w, bias, m0, shift, stride=opt.get("stride", (1, 1)),
                              padding=opt.get("padding", "VALID"),
                              dilation=opt.get("dilation", (1, 1)), **common)


def _check_input(net, x):
    """The batch ``x`` against the network's one input: ValueError with one line."""
    net.validate()
    if len(net.inputs) != 1:
        raise ValueError(f"the model has {len(net.inputs)} inputs; sim.run supports one")
    shape = tuple(net.tensors[net.inputs[0]].shape)
    if x.dtype != np.int8 or x.ndim != len(shape) + 1 or x.shape[1:] != shape or not len(x):
        raise ValueError(f"input is {x.dtype} of shape {x.shape}; the model needs int8 of "
                         f"shape (N, {', '.join(map(str, shape))}) with N >= 1")
    if not any(op.kind in RTL_OPS for op in net.ops):
        raise ValueError("the model has no CONV_2D or FULLY_CONNECTED layer to run on the RTL")


def _check_sizes(net, batch):
    """Refuse, before any allocation, a batch whose layers could not fit in memory."""
    from sim.bench import check_size

    for k, op in enumerate(net.ops):
        if op.kind not in RTL_OPS:
            continue
        w = net.tensors[op.inputs[1]].shape
        y = net.tensors[op.outputs[0]].shape
        rows = batch * int(np.prod(y[:-1], dtype=np.int64))
        try:
            check_size(rows, int(np.prod(w[1:], dtype=np.int64)), int(w[0]))
        except ValueError as e:
            raise ValueError(f"op {k} {op.kind} on {batch} sample(s): {e}; lower --batch") \
                from None


def compile_layers(net, x, config, *, limit=1, strategy="overlap", values=None):
    """Golden run of the first ``limit`` samples of ``x``, and a program per RTL layer.

    Parameters
    ----------
    net : golden.graph.Network
        With one input.
    x : ndarray of int8, shape (B, *input shape)
    config : AcceleratorConfig
    limit : int
        Samples of ``x`` to run; all of them go into one program per layer (M counts
        the output pixels of every sample).
    strategy : {"overlap", "fewest"}
        The driver's chunking (``hw.driver.plan_gemm``).
    values : dict, optional
        The golden run of those samples (``Network.run``), if already done.

    Returns
    -------
    list of Layer
        One per CONV_2D / FULLY_CONNECTED op, in op order.

    Raises
    ------
    ValueError
        On a bad network or input, or if the driver refuses a layer (e.g. the accumulator
        could overflow, or the output bank cannot hold a tile); the message names the op.
    """
    x = np.asarray(x)
    _check_input(net, x)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    if values is None:
        values = net.run(x[:limit], rounding=config.rounding)
    layers = []
    for k, op in enumerate(net.ops):
        if op.kind in RTL_OPS:
            layers.append(Layer(k, op.kind, _compile(net, k, op, values, config, strategy),
                                values[op.outputs[0]]))
    return layers


def _compile(net, k, op, values, config, strategy):
    try:
        return _layer_program(net, k, op, values, config, strategy)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"op {k} {op.kind}: {e}") from None


def _rtl_row(index, kind, program, result, want):
    """The LayerResult of one RTL program and its decoded output (None on an error)."""
    p = program
    row = LayerResult(index, kind, True, p.plan.m, p.plan.k, p.plan.n, len(p.plan.steps),
                      total=result.cycles, ideal=p.plan.ideal_cycles, k_chunks=p.plan.k_chunks)
    try:
        row.compute, row.computes = p.usage(result.resp)
        got = p.decode(result.resp).reshape(want.shape)
    except drv.AcceleratorError as e:
        row.error = str(e)
        row.mismatches = int(want.size)
        return row, None
    row.mismatches = int(np.count_nonzero(got != want))
    return row, got


def run_layers(net, layers, config, *, build_dir=None):
    """Run compiled ``layers`` back to back on one simulation of ``config``.

    Returns
    -------
    list of LayerResult
        One per operator of ``net``, in op order.

    Raises
    ------
    sim.harness.SimulationFailed
        If the simulation itself failed (e.g. a timeout).
    """
    from sim import bench

    results = bench.run_rtl(config, [bench.Run.of(layer.program) for layer in layers],
                            build_dir=build_dir)
    by_index = {layer.index: _rtl_row(layer.index, layer.kind, layer.program, result,
                                      layer.want)[0]
                for layer, result in zip(layers, results, strict=True)}
    return [by_index.get(k, LayerResult(k, op.kind, False)) for k, op in enumerate(net.ops)]


def run_chain(net, x, config, *, strategy="overlap", build_dir=None, progress=None):
    """The model as deployed: every op consumes the outputs the ops before it actually
    produced (CONV_2D and FULLY_CONNECTED on the RTL, the others on the host), and every
    op's output is compared with the golden model's tensor.

    Each RTL layer is one simulation (its input exists only after the layer before it
    ran). If a layer's run reports an error, the ops after it are not run (``error`` says
    so). ``progress(text)`` is called before each simulation.

    Returns
    -------
    list of LayerResult
        One per operator, host operators (``rtl`` False) with their mismatches too.

    Raises
    ------
    ValueError
        As :func:`compile_layers`.
    sim.harness.SimulationFailed
        If a simulation failed.
    """
    from sim import bench

    x = np.asarray(x)
    _check_input(net, x)
    golden = net.run(x, rounding=config.rounding)
    actual = {net.inputs[0]: x}
    rows, broken = [], None
    for k, op in enumerate(net.ops):
        out = op.outputs[0]
        if broken is not None:
            rows.append(LayerResult(k, op.kind, op.kind in RTL_OPS,
                                    mismatches=int(golden[out].size),
                                    error=f"not run: op {broken} failed"))
            continue
        if op.kind in RTL_OPS:
            program = _compile(net, k, op, actual, config, strategy)
            if progress is not None:
                progress(f"simulating op {k} {op.kind} (M={program.plan.m} K={program.plan.k} "
                         f"N={program.plan.n})")
            [result] = bench.run_rtl(config, [bench.Run.of(program)], build_dir=build_dir)
            row, got = _rtl_row(k, op.kind, program, result, golden[out])
            if got is None:
                broken = k
            else:
                actual[out] = got
        else:
            # The host runs the op as the golden model does, on the actual tensors.
            actual[out] = net._run_int(op, actual, config.rounding)
            row = LayerResult(k, op.kind, False,
                              mismatches=int(np.count_nonzero(actual[out] != golden[out])))
        rows.append(row)
    return rows


def merge_rows(total, rows):
    """Add the rows of one more chunk of samples to ``total`` (None: the first chunk)."""
    if total is None:
        return rows
    for a, b in zip(total, rows, strict=True):
        a.m += b.m
        a.computes += b.computes
        a.compute += b.compute
        a.total += b.total
        a.ideal += b.ideal
        a.mismatches += b.mismatches
        a.error = a.error or b.error
    return total


def run_model(net, x, config, *, limit=1, batch=None, chain=False, strategy="overlap",
              build_dir=None, progress=None):
    """The first ``limit`` samples of ``x`` through ``net``, CONV_2D and FULLY_CONNECTED on
    the RTL, in chunks of ``batch`` samples (default: all at once), per layer on the golden
    inputs (:func:`compile_layers`, :func:`run_layers`) or chained (:func:`run_chain`).

    Only one chunk is in memory at a time (``x`` may be memory-mapped); the rows add up
    the chunks (M, cycles, COMPUTEs, mismatches). ``build_dir``: a Verilator build of
    ``config`` (default ``sim.bench.build(config)``, cached). ``progress(text)`` is called
    before each simulation.
    """
    x = np.asarray(x)
    _check_input(net, x)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    samples = min(int(limit), len(x))
    batch = samples if batch is None else min(int(batch), samples)
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    _check_sizes(net, batch)
    if build_dir is None:
        from sim import bench

        build_dir = bench.build(config)      # elaborated once, not once per simulation
    total = None
    for start in range(0, samples, batch):
        chunk = np.array(x[start:min(start + batch, samples)])
        where = f"samples {start + 1}-{start + len(chunk)} of {samples}"
        if chain:
            def chained(text, where=where):
                if progress is not None:
                    progress(f"{where}: {text}")

            rows = run_chain(net, chunk, config, strategy=strategy, build_dir=build_dir,
                             progress=chained)
        else:
            layers = compile_layers(net, chunk, config, limit=len(chunk), strategy=strategy)
            if progress is not None:
                progress(f"{where}: simulating {len(layers)} RTL layers")
            rows = run_layers(net, layers, config, build_dir=build_dir)
        total = merge_rows(total, rows)
    return total


def _percent(v):
    return f"{100 * v:5.1f}%" if v is not None else "   n/a"


def format_table(config, rows, *, chain=False):
    """The result table: one line per operator, RTL layers with cycles and exactness.
    ``util`` = ideal / busy cycles of the layer's COMPUTEs, ``run`` = ideal / cycles of
    its whole program (loads and stores included); ``chain``: host operators have
    mismatches too."""
    head = (f"{'op':>3}  {'kind':<18} {'M':>6} {'K':>5} {'N':>5} {'COMPUTEs':>8} "
            f"{'compute':>9} {'util':>6} {'total':>9} {'run':>6}  {'exact':>5} "
            f"{'mismatches':>10}")
    lines = [f"accelerator {config.rows}x{config.cols}, host {config.host_width} bit, "
             f"acc {config.acc_width} bit, {config.rounding} rounding", head, "-" * len(head)]
    for r in rows:
        if not r.rtl:
            line = f"{r.index:>3}  {r.kind:<18} {'on the host':>46}"
            if chain:
                line += f"  {'yes' if not r.mismatches and not r.error else 'NO':>5} " \
                        f"{r.mismatches:>10}"
            lines.append(line + (f"  ({r.error})" if r.error else ""))
            continue
        line = (f"{r.index:>3}  {r.kind:<18} {r.m:>6} {r.k:>5} {r.n:>5} {r.computes:>8} "
                f"{r.compute:>9} {_percent(r.utilization)} {r.total:>9} "
                f"{_percent(r.run_utilization)}  {'yes' if r.exact else 'NO':>5} "
                f"{r.mismatches:>10}")
        lines.append(line + (f"  ({r.error})" if r.error else ""))
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------


def _parser():
    defaults = AcceleratorConfig()
    p = ArgumentParser(prog="python -m sim.run", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="\n\n".join(__doc__.split("\n\n")[3:]) +
                "\n\nBuilds are cached in sim_build/ (a 16x16 build takes about a minute).")
    p.add_argument("model", metavar="MODEL.tflite", help="int8 TFLite flatbuffer, one input")
    p.add_argument("--input", metavar="X.npy", required=True,
                   help="int8 batch of shape (N, *input shape without batch)")
    p.add_argument("--limit", type=positive_int, default=1, metavar="N",
                   help="run the first N samples of X (default 1)")
    p.add_argument("--batch", type=positive_int, default=16, metavar="B",
                   help="samples per program and simulation (default 16): bounds memory")
    p.add_argument("--chain", action="store_true",
                   help="run the model as deployed: every layer consumes the outputs the "
                        "layers before it actually produced; compare every tensor")
    p.add_argument("--pe", type=pe_argument, default=(defaults.rows, defaults.cols), metavar="RxC",
                   help="PE array, e.g. 16x16 (default)")
    p.add_argument("--host-width", type=int, default=defaults.host_width, choices=HOST_WIDTHS,
                   help=f"host stream bits per beat (default {defaults.host_width})")
    p.add_argument("--rounding", choices=("double", "single"), default=defaults.rounding,
                   help="requantizer rounding of the build, and of the golden model")
    p.add_argument("--acc-width", type=int, default=defaults.acc_width,
                   help=f"accumulator bits (default {defaults.acc_width})")
    for name in ("act", "wgt", "par", "out"):
        d = getattr(defaults, f"{name}_depth")
        p.add_argument(f"--{name}-depth", type=positive_int, default=d, metavar="WORDS",
                       help=f"{name} bank depth (default {d})")
    p.add_argument("--strategy", choices=drv.STRATEGIES, default="overlap",
                   help="driver chunking: overlap (default, loads and stores hidden behind "
                        "COMPUTEs) or fewest (as few COMPUTEs as fit)")
    return p


def _one_line(e):
    return " ".join(str(e).split())


def main(argv=None):
    """Entry point; returns the exit status."""
    from golden.tflite_io import load_tflite
    from sim import bench
    from sim.harness import SimulationFailed

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = AcceleratorConfig(
            rows=args.pe[0], cols=args.pe[1], acc_width=args.acc_width,
            rounding=args.rounding, host_width=args.host_width, act_depth=args.act_depth,
            wgt_depth=args.wgt_depth, par_depth=args.par_depth, out_depth=args.out_depth)
        try:
            net = load_tflite(args.model)
        except OSError as e:
            raise ValueError(f"cannot read model {args.model}: {e.strerror or e}") from None
        try:
            # Memory-mapped: only the chunk being run is read.
            x = np.load(args.input, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"cannot read input {args.input}: {_one_line(e)}") from None
        samples = min(args.limit, len(x)) if x.ndim else 0
        # Everything the driver could refuse, refused before the build: the first sample.
        _check_input(net, x)
        _check_sizes(net, min(args.batch, samples))
        compile_layers(net, np.array(x[:1]), config, strategy=args.strategy)

        def progress(text):
            print(f"{parser.prog}: {text}", file=sys.stderr, flush=True)

        progress(f"building the {config.rows}x{config.cols} accelerator (Verilator)")
        started = time.perf_counter()
        build_dir = bench.build(config)
        built = time.perf_counter() - started
        rows = run_model(net, x, config, limit=args.limit, batch=args.batch, chain=args.chain,
                         strategy=args.strategy, build_dir=build_dir, progress=progress)
    except (ValueError, OverflowError) as e:
        parser.error(_one_line(e))
    except SimulationFailed as e:
        print(f"{parser.prog}: simulation failed: {_one_line(str(e).splitlines()[0])}",
              file=sys.stderr)
        return 1
    simulated = time.perf_counter() - started - built
    mode = ("chained: every op consumes the outputs actually produced before it" if args.chain
            else "per layer: every RTL layer gets the golden model's input tensor")
    print(f"{args.model}: {samples} sample(s); CONV_2D and FULLY_CONNECTED on the RTL, "
          f"the other operators on the host; {mode}")
    print(format_table(config, rows, chain=args.chain))
    rtl = [r for r in rows if r.rtl]
    bad = [r for r in rows if (r.rtl or args.chain) and (r.mismatches or r.error)]
    checked = rows if args.chain else rtl
    print(f"\n{len(rtl)} RTL layers; {len(checked) - len(bad)} of {len(checked)} "
          f"{'tensors' if args.chain else 'RTL layers'} exact; "
          f"{sum(r.total for r in rtl)} simulated cycles; elaboration + Verilator build "
          f"{built:.1f} s, simulation {simulated:.1f} s")
    if bad:
        print(f"MISMATCH against the golden model in op(s) "
              f"{', '.join(str(r.index) for r in bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
