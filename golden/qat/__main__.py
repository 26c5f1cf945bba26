"""Command line: quantization-aware training to an exact int8 .tflite, or the report.

    python -m golden.qat --model cnn --method lsq --weight-bits 4 --act-bits 4 --out cnn_w4a4.tflite
    python -m golden.qat --model my_float.tflite --method pact --weight-bits 4 --act-bits 4 \\
        --init calib=mse,adaround,bias-correction --out my_w4a4.tflite
    python -m golden.qat --report

Every option is checked before any training; a bad one is one line on stderr and exit
status 2.
"""

import argparse
import sys
import time

from threadpoolctl import threadpool_limits

from ..cli import ArgumentParser, int_in, nonnegative_int, positive_int
from ..nets import MODELS
from ..nets.source import labelled_data, model_argument, open_model
from ..nets.train import accuracy as float_accuracy
from ..ptq import calibrate as cal
from ..ptq.__main__ import _save_input
from ..ptq.quantizer import BITS, Config, accuracy, quantize_model
from ..tflite_io import save_tflite
from .model import METHODS, QATModel
from .train import LR, default_epochs, train

__all__ = ["main", "parse_init"]

REPORT_PATH = "docs/qat-results.md"
_FLAGS = {"cle": "cle", "bias-correction": "bias_correction", "adaround": "adaround"}
_VALUES = {"calib": "calib", "weight-range": "weight_range",
           "adaround-iterations": "adaround_iterations"}


def parse_init(text, weight_bits):
    """A PTQ recipe from ``--init``: comma-separated ``calib=METHOD``,
    ``weight-range=minmax|mse``, ``adaround-iterations=N`` and the flags ``cle``,
    ``bias-correction``, ``adaround``; weights per channel at ``weight_bits``.

    Raises
    ------
    ValueError
        An unknown or malformed item, or a value :class:`~golden.ptq.Config` refuses.
    """
    fields = {"granularity": "channel", "bits": weight_bits}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq and key in _FLAGS:
            fields[_FLAGS[key]] = True
        elif eq and key in _VALUES:
            if key == "adaround-iterations":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"adaround-iterations must be an integer, not "
                                     f"{value!r}") from None
            fields[_VALUES[key]] = value
        else:
            known = ", ".join([*_FLAGS, *(f"{k}=..." for k in _VALUES)])
            raise ValueError(f"unknown item {item!r} (known: {known})")
    return Config(**fields)


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), not {text!r}")
    return value


def _parser():
    p = ArgumentParser(
        prog="python -m golden.qat",
        description="Quantization-aware training of a float network (a shipped one or your "
                    "float32 .tflite) into an exact int8 .tflite: fake quantization whose "
                    "forward pass is the integer network bit for bit, batch norm folded with "
                    "statistics frozen after a warm-up, and STE, LSQ, LSQ+ or PACT. Prints "
                    "the float top-1 and the top-1 of the exported integer network (the "
                    f"golden model) on held-out data. Or, with --report, write {REPORT_PATH}.",
        epilog="Weights are per-channel symmetric at --weight-bits; activations behind a "
               "ReLU / ReLU6 at --act-bits; the input, the logits and other tensors without "
               "a lower bound at 8 bits. Everything is stored as int8. Errors are one line "
               "on stderr and exit status 2.")
    p.add_argument("--model", type=model_argument, default="cnn", metavar="MODEL",
                   help=f"{' or '.join(MODELS)} or a float32 .tflite file (default: cnn)")
    p.add_argument("--method", choices=METHODS, default="lsq",
                   help="quantizer training method (default: lsq)")
    p.add_argument("--weight-bits", type=int_in(BITS), default=8, metavar="N",
                   help=f"weight bits, {BITS.start}..{BITS.stop - 1} (default: 8)")
    p.add_argument("--act-bits", type=int_in(BITS), default=8, metavar="N",
                   help=f"activation bits, {BITS.start}..{BITS.stop - 1} (default: 8)")
    p.add_argument("--epochs", type=positive_int, metavar="N",
                   help="training epochs (default: 10; 20 at 3-bit and 30 at 2-bit weights)")
    p.add_argument("--lr", type=_rate, metavar="LR",
                   help=f"peak learning rate (default: {LR})")
    p.add_argument("--batch", type=positive_int, default=32, metavar="N",
                   help="batch size (default: %(default)s)")
    p.add_argument("--freeze-bn", type=nonnegative_int, metavar="N",
                   help="epochs of batch-norm warm-up on batch statistics before the "
                        "running statistics freeze (default: 0)")
    p.add_argument("--init", metavar="PTQ_OPTIONS",
                   help="start from a PTQ result, e.g. calib=mse,weight-range=mse,cle,"
                        "bias-correction,adaround (default: the float weights)")
    p.add_argument("--data", metavar="X.npy",
                   help="labelled samples (N, *input shape), split 75/25 into training and "
                        "held-out data (default: the digits)")
    p.add_argument("--labels", metavar="Y.npy", help="integer labels of --data")
    p.add_argument("--calib-samples", type=positive_int, default=512, metavar="N",
                   help="training samples that set initial ranges (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="shuffle seed (default: 0)")
    p.add_argument("--out", metavar="OUT.tflite", help="write the int8 network here")
    p.add_argument("--save-input", metavar="X.npy",
                   help="also write held-out samples quantized as the exported network's "
                        "int8 input (for golden.run / sim.run)")
    p.add_argument("--save-input-samples", type=positive_int, default=16, metavar="N",
                   help="samples in --save-input (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out / --save-input files that already exist")
    p.add_argument("--report", action="store_true",
                   help=f"train every method at every bit width on both shipped networks "
                        f"and write {REPORT_PATH} with plots (other options ignored)")
    p.add_argument("--report-path", default=REPORT_PATH, metavar="PATH",
                   help="where --report writes (PNG plots go beside it; default: %(default)s)")
    return p


def _train(args, parser):
    try:
        init = parse_init(args.init, args.weight_bits) if args.init is not None else None
    except ValueError as e:
        parser.error(f"argument --init: {e}")
    for option, path in (("--out", args.out), ("--save-input", args.save_input)):
        if path is not None:
            parser.check_output_file(path, option, force=args.force)
    if args.out is not None and args.out == args.save_input:
        parser.error("argument --save-input: must differ from --out")
    net = open_model(args.model)
    data = labelled_data(net, args.data, args.labels)
    epochs = args.epochs or default_epochs(args.weight_bits)
    lr = args.lr or LR
    calib = cal.calibration_set(data["x_train"], args.calib_samples)
    x, y = data["x_test"], data["y_test"]
    start = time.perf_counter()
    ptq = quantize_model(net, calib, init) if init is not None else None
    model = QATModel(net, args.method, args.weight_bits, args.act_bits, calib, init=ptq)
    train(model, data["x_train"], data["y_train"], epochs=epochs, batch=args.batch, lr=lr,
          freeze_bn=args.freeze_bn or 0, seed=args.seed)
    network = model.export().to_network()
    seconds = time.perf_counter() - start
    print(f"{net.name}: float top-1 {100 * float_accuracy(net, x, y):.2f}%  "
          f"int top-1 {100 * accuracy(network, x, y):.2f}%  "
          f"({args.method} W{args.weight_bits}A{args.act_bits}, {epochs} epochs, "
          f"{seconds:.0f} s, {len(x)} held-out samples, exported integer network)")
    if args.out is not None:
        save_tflite(network, args.out)
        print(f"{net.name}: wrote {args.out}")
    if args.save_input is not None:
        _save_input(network, x[:args.save_input_samples], args.save_input)
        print(f"{net.name}: wrote {args.save_input}")


def main(argv=None):
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with threadpool_limits(1, "blas"):
            if args.report:
                from .report import write_report

                parser.check_output_file(args.report_path, "--report-path")
                write_report(args.report_path)
            else:
                _train(args, parser)
    except (ValueError, OSError) as e:
        print(f"golden.qat: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
