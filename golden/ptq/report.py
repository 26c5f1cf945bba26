"""The PTQ results table: every recipe on both reference networks, as markdown.

``python -m golden.ptq --report`` writes ``docs/ptq-results.md``. Everything in it is
determined by the committed weights and fixed seeds (calibration subset, AdaRound row
draws) and is computed with one BLAS thread, so a regeneration reproduces the file byte
for byte; there are no timings in it.
"""

import sys

from threadpoolctl import threadpool_limits

from ..nets import load
from ..nets.data import digits
from ..nets.train import accuracy as float_accuracy
from . import calibrate as cal
from .quantizer import Config, accuracy, calibrate, layer_sqnr, prepare, quantize_model

__all__ = ["GRID_BITS", "LOW_BITS", "RECIPES", "CALIB_SAMPLES", "dataset", "generate"]

GRID_BITS = (8, 6, 5, 4, 3)
LOW_BITS = (4, 3)
CALIB_SAMPLES = 512
# Transform recipes at low bits, each on top of min-max activation ranges.
RECIPES = (
    ("nearest", {}),
    ("MSE weights", {"weight_range": "mse"}),
    ("CLE", {"cle": True}),
    ("BC", {"bias_correction": True}),
    ("CLE+BC", {"cle": True, "bias_correction": True}),
    ("AdaRound", {"adaround": True}),
    ("CLE+AdaRound+BC", {"cle": True, "adaround": True, "bias_correction": True}),
)
_GRAN = {"tensor": "per-tensor", "channel": "per-channel"}


def dataset(model, calib_samples=CALIB_SAMPLES):
    """(calibration samples, held-out samples, held-out labels) for ``model``.

    Calibration samples come from the training split only (see
    :func:`golden.ptq.calibrate.calibration_set`).
    """
    d = digits("image" if model == "cnn" else "flat")
    return cal.calibration_set(d["x_train"], calib_samples), d["x_test"], d["y_test"]


def _pct(a):
    return f"{100 * a:.2f}"


def _describe(cfg):
    parts = [f"{cfg.calib} activations", f"{_GRAN[cfg.granularity]} W{cfg.bits}"]
    if cfg.weight_range == "mse":
        parts.append("MSE weights")
    parts += [name for flag, name in ((cfg.cle, "CLE"), (cfg.adaround, "AdaRound"),
                                      (cfg.bias_correction, "BC")) if flag]
    return ", ".join(parts)


def _model_section(name, stream):
    net = load(name)
    calib_x, x, y = dataset(name)
    lines = [f"## {name}", ""]
    acc_float = float_accuracy(net, x, y)
    lines += [f"Float top-1: **{_pct(acc_float)} %** (batch norm folded: "
              f"{_pct(float_accuracy(prepare(net), x, y))} %).", ""]
    rows = []  # (accuracy, order, config, model, network) for the SQNR pick

    def run(cfg, ranges):
        model = quantize_model(net, calib_x, cfg, ranges=ranges, stream=stream)
        network = model.to_network()
        a = accuracy(network, x, y)
        rows.append((a, len(rows), cfg, model, network))
        return a

    lines += ["### Activation calibration x weight granularity x weight bits", "",
              "| activations | weights | " + " | ".join(f"W{b}" for b in GRID_BITS) + " |",
              "|---|---|" + "---:|" * len(GRID_BITS)]
    plain = prepare(net)
    ranges, w8_channel = {}, []
    for method in cal.METHODS:
        ranges[method] = calibrate(plain, calib_x, method, stream=stream)
        for gran in ("tensor", "channel"):
            accs = [run(Config(method, gran, b), ranges[method]) for b in GRID_BITS]
            lines.append(f"| {method} | {_GRAN[gran]} | " + " | ".join(map(_pct, accs)) + " |")
            if gran == "channel":
                w8_channel.append(accs[GRID_BITS.index(8)])
    lines += ["", f"W8 per-channel, every calibrator: {_pct(min(w8_channel))} to "
              f"{_pct(max(w8_channel))} % (float {_pct(acc_float)} %).", ""]

    cle_ranges = calibrate(prepare(net, cle=True), calib_x, "minmax", stream=stream)
    lines += ["### Transforms at low weight bits (min-max activation ranges)", "",
              "| weights | bits | " + " | ".join(r for r, _ in RECIPES) + " |",
              "|---|---|" + "---:|" * len(RECIPES)]
    low = {}
    for gran in ("tensor", "channel"):
        for b in LOW_BITS:
            accs = []
            for _, extra in RECIPES:
                cfg = Config("minmax", gran, b, **extra)
                accs.append(run(cfg, cle_ranges if cfg.cle else ranges["minmax"]))
            low[gran, b] = accs
            lines.append(f"| {_GRAN[gran]} | {b} | " + " | ".join(map(_pct, accs)) + " |")
    lines.append("")
    for b in LOW_BITS:
        best_pc = max(low["channel", b][1:])
        lines.append(f"W{b}: naive min-max per-tensor {_pct(low['tensor', b][0])} %, "
                     f"per-channel with the best transform {_pct(best_pc)} % "
                     f"({100 * (best_pc - low['tensor', b][0]):+.2f} points).")
    lines.append("")

    best = max(rows, key=lambda r: (r[0], -r[1]))
    worst = min(rows, key=lambda r: (r[0], r[1]))
    sqnr = [layer_sqnr(r[3], r[4], x) for r in (best, worst)]
    lines += ["### Per-layer SQNR (dB) of the best and the worst row", "",
              f"Best: {_describe(best[2])} ({_pct(best[0])} %). "
              f"Worst: {_describe(worst[2])} ({_pct(worst[0])} %). "
              "SQNR of each layer's int8 output (golden integer network) against the "
              "prepared float network, over the held-out set.", "",
              "| layer | best | worst |", "|---|---:|---:|"]
    for layer in sqnr[0]:
        lines.append(f"| {layer} | {sqnr[0][layer]:.1f} | {sqnr[1][layer]:.1f} |")
    lines.append("")
    return lines


HEADER = """# PTQ results

Generated by `python -m golden.ptq --report` from the committed weights in
`golden/data/`; do not edit by hand. A regeneration reproduces this file exactly
(fixed seeds, one BLAS thread, no timings).

What is quantized at what width:

- **Weights**: symmetric, zero point 0, at `W<b>` bits: codes in
  `[-(2^(b-1)-1), 2^(b-1)-1]` (`[-127, 127]` at 8, `[-7, 7]` at 4, `[-3, 3]` at 3),
  stored as int8, so every row is an ordinary int8 TFLite network. Scales per tensor or
  per output channel, from the weights' min-max unless "MSE weights".
- **Activations**: always int8, asymmetric, one scale and zero point per tensor, range
  from the calibration method named (the accelerator is int8).
- **Biases**: int32 at scale `s_in * s_w[c]`.

Top-1 is the golden integer network's (`Network.run`, bit-exact to TFLite's reference
kernels) on the {held} held-out digits; calibration, bias correction and AdaRound
({iters} Adam steps per layer) use {calib} training samples only. Transforms: CLE =
cross-layer equalization + high-bias absorption, BC = empirical bias correction,
AdaRound = learned rounding; "nearest" is plain round-to-nearest.

"""


def generate(stream=sys.stderr):
    """The full report as markdown text (progress goes to ``stream``)."""
    with threadpool_limits(1, "blas"):
        held = len(dataset("mlp")[2])
        text = HEADER.format(held=held, calib=CALIB_SAMPLES,
                             iters=Config().adaround_iterations)
        lines = []
        for name in ("cnn", "mlp"):
            lines += _model_section(name, stream)
    return text + "\n".join(lines)
