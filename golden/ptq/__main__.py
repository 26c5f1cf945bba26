"""Command line: quantize a reference network to an int8 .tflite, or write the report.

    python -m golden.ptq --model cnn --calib kl --weights channel --bits 8 --out cnn.tflite \\
        --save-input X.npy
    python -m golden.ptq --model cnn --calib minmax --weights channel --bits 4 \\
        --cle --bias-correction --adaround --out cnn_w4.tflite
    python -m golden.ptq --model my_float.tflite --calib-data calib.npy --out my_int8.tflite
    python -m golden.ptq --report

Output paths are checked before any work, and an existing file is only overwritten with
``--force``. Bad options are one line on stderr and exit status 2.
"""

import sys

import numpy as np
from threadpoolctl import threadpool_limits

from ..cli import ArgumentParser, int_in, positive_int
from ..nets import MODELS
from ..nets.source import labelled_data, load_samples, model_argument, open_model
from ..nets.train import accuracy as float_accuracy
from ..tflite_io import save_tflite
from . import calibrate as cal
from .quantizer import BITS, Config, accuracy, quantize_model
from .report import generate
from .weights import GRANULARITIES, RANGES

__all__ = ["main"]

REPORT_PATH = "docs/ptq-results.md"


def _parser():
    p = ArgumentParser(
        prog="python -m golden.ptq",
        description="Post-training quantization of the digits reference networks into "
                    "golden int8 networks: calibrate activation ranges, quantize weights "
                    "(optionally with cross-layer equalization, bias correction and "
                    "AdaRound), print float and integer top-1 on the held-out split and "
                    "export a .tflite file. Or, with --report, run every recipe and write "
                    f"{REPORT_PATH}.",
        epilog="Activations are always int8 (asymmetric); --bits sets the weight width, "
               f"{BITS.start}..{BITS.stop - 1}, with codes stored as int8. Errors are one "
               "line on stderr and exit status 2.")
    p.add_argument("--model", type=model_argument, default="cnn", metavar="MODEL",
                   help=f"{' or '.join(MODELS)} (a shipped network) or a float32 .tflite "
                        "file (default: cnn)")
    p.add_argument("--calib-data", metavar="X.npy",
                   help="calibration samples (N, *input shape); default: training digits")
    p.add_argument("--calib", choices=cal.METHODS, default="minmax",
                   help="activation range method (default: minmax)")
    p.add_argument("--weights", choices=GRANULARITIES, default="channel",
                   help="weight scale granularity (default: channel)")
    p.add_argument("--bits", type=int_in(BITS), default=8, metavar="N",
                   help=f"weight bits, {BITS.start}..{BITS.stop - 1} (default: 8)")
    p.add_argument("--weight-range", choices=RANGES, default="minmax",
                   help="weight scale from the largest magnitude or the least squared "
                        "error clip (default: minmax)")
    p.add_argument("--cle", action="store_true",
                   help="cross-layer equalization and high-bias absorption")
    p.add_argument("--bias-correction", action="store_true",
                   help="empirical bias correction on the calibration data")
    p.add_argument("--adaround", action="store_true", help="AdaRound the weights")
    p.add_argument("--adaround-iterations", type=positive_int, default=Config().adaround_iterations,
                   metavar="N", help="Adam steps per layer (default: %(default)s)")
    p.add_argument("--calib-samples", type=positive_int, default=512, metavar="N",
                   help="training samples used for calibration (default: %(default)s)")
    p.add_argument("--out", metavar="MODEL.tflite", help="write the int8 network here")
    p.add_argument("--save-input", metavar="X.npy",
                   help="also write a sample input for the exported model: int8 codes of "
                        "shape (N, *input shape), ready for golden.run and sim.run "
                        "(held-out digits, or the first --calib-data samples)")
    p.add_argument("--save-input-samples", type=positive_int, default=16, metavar="N",
                   help="samples in --save-input (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out / --save-input files that already exist")
    p.add_argument("--report", action="store_true",
                   help=f"run the full grid and write {REPORT_PATH} (other options ignored)")
    p.add_argument("--report-path", default=REPORT_PATH, metavar="PATH",
                   help="where --report writes (default: %(default)s)")
    return p


def _quantize(args):
    cfg = Config(args.calib, args.weights, args.bits, args.weight_range, args.cle,
                 args.bias_correction, args.adaround, args.adaround_iterations)
    net = open_model(args.model)
    data = labelled_data(net) if int(np.prod(net.input_shape)) == 64 else None
    if args.calib_data:
        calib_x = load_samples(args.calib_data, net, "calibration data")
    elif data is not None:
        calib_x = cal.calibration_set(data["x_train"], args.calib_samples)
    else:
        raise ValueError(f"{net.name} takes input {net.input_shape}, not the 64 pixels of the "
                         f"digits: give --calib-data")
    model = quantize_model(net, calib_x, cfg)
    network = model.to_network()
    what = f"(W{cfg.bits} {cfg.granularity}, A8 {cfg.calib}"
    if data is not None:
        x, y = data["x_test"], data["y_test"]
        print(f"{net.name}: float top-1 {100 * float_accuracy(net, x, y):.2f}%  "
              f"int top-1 {100 * accuracy(network, x, y):.2f}%  "
              f"{what}, {len(x)} held-out digits)")
    else:
        print(f"{net.name}: quantized {what}, {len(calib_x)} calibration samples)")
    if args.out is not None:
        save_tflite(network, args.out)
        print(f"{net.name}: wrote {args.out}")
    if args.save_input is not None:
        samples = data["x_test"] if data is not None else calib_x
        _save_input(network, samples[:args.save_input_samples], args.save_input)
        print(f"{net.name}: wrote {args.save_input}")


def _save_input(network, x, path):
    """Quantize real samples with the network's input parameters and save the int8 batch."""
    index = network.inputs[0]
    shape = tuple(network.tensors[index].shape)
    xq = network.quantize(index, np.reshape(x, (len(x), *shape)))
    np.save(path, np.ascontiguousarray(xq, dtype=np.int8))


def main(argv=None):
    """Entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.report:
        parser.check_output_file(args.report_path, "--report-path")
    else:
        for option, path in (("--out", args.out), ("--save-input", args.save_input)):
            if path is not None:
                parser.check_output_file(path, option, force=args.force)
        if args.out is not None and args.out == args.save_input:
            parser.error("argument --save-input: must differ from --out")
    try:
        with threadpool_limits(1, "blas"):
            if args.report:
                text = generate()
                with open(args.report_path, "w", encoding="utf-8") as f:
                    f.write(text)
                print(f"wrote {args.report_path}")
            else:
                _quantize(args)
    except (ValueError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"golden.ptq: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
