"""From a float network to the golden integer ``Network``.

The quantized state of a network is a :class:`QuantModel`: the transformed float network
(batch norms folded, optionally equalized) that it approximates, an asymmetric int8
(scale, zero point) per activation tensor, symmetric ``bits``-bit weight codes with their
scales, and float biases that become int32 at scale ``s_in * s_w[c]``. AdaRound and bias
correction edit that state; :meth:`QuantModel.to_network` writes it out as a
:class:`golden.graph.Network` for the golden integer model, the TFLite exporter and the
compiler. :meth:`QuantModel.simulate` is the float "fake-quantization" view of the same
state, used to see the input and output a layer has inside the quantized network while
choosing its weights; the integer results always come from ``Network.run``.

Pooling and reshape outputs share their input's (scale, zero point), as TFLite's int8
kernels require; every other activation gets its own range from calibration.
"""

import sys
from dataclasses import dataclass

import numpy as np

from ..graph import Network, Op, QuantParams, Tensor
from ..nets import layers as L
from ..nets.model import INPUT
from ..quant import asymmetric_params, dequantize, quantize, quantize_bias
from . import calibrate as cal
from .progress import Progress
from .transforms import WEIGHTED, absorb_high_bias, equalize, fold_batch_norm, output_shapes
from .weights import (
    CHANNEL_AXIS,
    GRANULARITIES,
    RANGES,
    dequantize_weights,
    quantize_weights,
    weight_scale,
)

__all__ = [
    "BITS",
    "Config",
    "prepare",
    "range_owners",
    "calibrate",
    "QuantModel",
    "quantize_model",
    "accuracy",
    "layer_sqnr",
]

BITS = range(2, 9)
_OPS = {"conv": "CONV_2D", "dwconv": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED",
        "add": "ADD", "maxpool": "MAX_POOL_2D", "avgpool": "AVERAGE_POOL_2D",
        "reshape": "RESHAPE"}


@dataclass(frozen=True)
class Config:
    """One quantization recipe.

    Attributes
    ----------
    calib : str
        Activation range method, one of ``golden.ptq.calibrate.METHODS``.
    granularity : {"tensor", "channel"}
        Weight scales per tensor or per output channel.
    bits : int
        Weight width, 2..8 (codes in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``).
        Activations are always int8.
    weight_range : {"minmax", "mse"}
    cle : bool
        Cross-layer equalization followed by high-bias absorption.
    bias_correction : bool
        Empirical bias correction on the calibration data.
    adaround : bool
        AdaRound the weights instead of rounding to nearest.
    adaround_iterations : int
    """

    calib: str = "minmax"
    granularity: str = "channel"
    bits: int = 8
    weight_range: str = "minmax"
    cle: bool = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_iterations: int = 1000

    def __post_init__(self):
        if self.calib not in cal.METHODS:
            raise ValueError(f"calib must be one of {cal.METHODS}, not {self.calib!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, "
                             f"not {self.granularity!r}")
        if isinstance(self.bits, bool) or self.bits not in BITS:
            raise ValueError(f"bits must be an integer in 2..8, not {self.bits!r}")
        if self.weight_range not in RANGES:
            raise ValueError(f"weight_range must be one of {RANGES}, not {self.weight_range!r}")
        if int(self.adaround_iterations) < 1:
            raise ValueError(f"adaround_iterations must be >= 1, "
                             f"not {self.adaround_iterations!r}")


def prepare(net, cle=False):
    """The float network the integer one approximates: BN folded, optionally equalized
    (cross-layer equalization, then high-bias absorption)."""
    out = fold_batch_norm(net)
    if cle:
        out = absorb_high_bias(equalize(out))
    return out


def range_owners(net):
    """Tensors with their own activation range: the input, weighted layers and ADDs."""
    return [INPUT] + [n.name for n in net.nodes if n.kind in (*WEIGHTED, "add")]


def calibrate(net, x, method, batch_size=32, stream=sys.stderr):
    """Activation ranges of a prepared network on calibration samples.

    Parameters
    ----------
    net : FloatNet
        From :func:`prepare`.
    x : ndarray, shape (N, *net.input_shape)
    method : str
        One of ``golden.ptq.calibrate.METHODS``.
    batch_size : int
        Batches of the forward passes (and the EMA's steps).
    stream : file or None
        Where the progress bar goes.

    Returns
    -------
    dict of str -> (float, float)
        ``(lo, hi)`` per name from :func:`range_owners`.
    """
    if method not in cal.METHODS:
        raise ValueError(f"method must be one of {cal.METHODS}, not {method!r}")
    names = range_owners(net)
    batches = -(-len(x) // batch_size)
    with Progress(batches + len(names), f"calibrate {method}", stream) as bar:
        values = cal.collect(net, x, names, batch_size, bar)
        ranges = {}
        for n in names:
            ranges[n] = cal.estimate_range(method, values[n])
            bar.update()
    return ranges


def _fake_quant(x, params):
    s, z = params
    return dequantize(quantize(x, s, z), s, z)


class QuantModel:
    """The quantized state of a prepared float network.

    Parameters
    ----------
    net : FloatNet
        Prepared (BN folded); kept as the float reference and never modified.
    ranges : dict of str -> (lo, hi)
        From :func:`calibrate`.
    bits : int
        Weight width, 2..8.
    granularity : {"tensor", "channel"}
    weight_range : {"minmax", "mse"}

    Attributes
    ----------
    act : dict of str -> (float, int)
        (scale, zero point) of every activation tensor, by node name or ``INPUT``.
    scale : dict of str -> ndarray
        Weight scales per weighted layer, shape (1,) or (channels,).
    codes : dict of str -> ndarray of int8
        Weight codes in the layer's layout, within the ``bits``-bit range.
    bias : dict of str -> ndarray of float64
        Real biases; int32 codes are derived from them on demand.
    """

    def __init__(self, net, ranges, bits=8, granularity="channel", weight_range="minmax"):
        if any(n.kind == "bn" for n in net.nodes):
            raise ValueError("the network must have its batch norms folded (see prepare)")
        missing = set(range_owners(net)) - set(ranges)
        if missing:
            raise ValueError(f"ranges are missing for {sorted(missing)}")
        self.net, self.bits = net, bits
        self.granularity, self.weight_range = granularity, weight_range
        self.shapes = output_shapes(net)
        self.act = {}
        for name in [INPUT] + [n.name for n in net.nodes]:
            if name in ranges:
                s, z = asymmetric_params(*ranges[name])
                # Rounded to float32 as a .tflite file stores it, so the model that is
                # simulated and the one that is exported are the same.
                self.act[name] = (float(np.float32(s)), int(z))
            else:
                self.act[name] = self.act[net.node(name).inputs[0]]
        self.scale, self.codes, self.bias = {}, {}, {}
        for n in self.weighted():
            w = n.params["w"]
            self.scale[n.name] = weight_scale(w, CHANNEL_AXIS[n.kind], bits, granularity,
                                              weight_range)
            self.codes[n.name] = quantize_weights(w, self.scale[n.name], CHANNEL_AXIS[n.kind],
                                                  bits)
            self.bias[n.name] = n.params["b"].copy()

    @classmethod
    def from_state(cls, net, act, scale, codes, bias, bits):
        """A quantized state given outright (e.g. learned by quantization-aware training)
        instead of calibrated and rounded.

        Parameters
        ----------
        net : FloatNet
            Prepared (batch norms folded).
        act : dict of str -> (float, int)
            (scale, zero point) of the input, every weighted layer and ADD; pooling and
            reshape outputs take their input's.
        scale, codes, bias : dict of str -> ndarray
            Per weighted layer: per-channel weight scales, int8 codes within the
            ``bits``-bit range, real biases.
        bits : int
            Weight width.
        """
        missing = set(range_owners(net)) - set(act)
        if missing:
            raise ValueError(f"activation parameters are missing for {sorted(missing)}")
        self = cls.__new__(cls)
        self.net, self.bits, self.granularity, self.weight_range = net, bits, "channel", None
        self.shapes = output_shapes(net)
        self.act = {}
        for name in [INPUT] + [n.name for n in net.nodes]:
            self.act[name] = act[name] if name in act else self.act[net.node(name).inputs[0]]
        self.scale, self.codes, self.bias = dict(scale), dict(codes), dict(bias)
        return self

    def weighted(self):
        """The conv / depthwise / FC nodes, in order."""
        return [n for n in self.net.nodes if n.kind in WEIGHTED]

    def weight(self, name):
        """Real (dequantized) weights of layer ``name``."""
        return dequantize_weights(self.codes[name], self.scale[name],
                                  CHANNEL_AXIS[self.net.node(name).kind])

    def bias_scale(self, name):
        """``s_in * s_w[c]``, shape of the weight scales."""
        return self.act[self.net.node(name).inputs[0]][0] * self.scale[name]

    def bias_codes(self, name):
        """int32 bias codes of layer ``name``, shape (channels,)."""
        s = np.broadcast_to(self.bias_scale(name), self.bias[name].shape)
        return quantize_bias(self.bias[name], 1.0, s)

    def real_bias(self, name):
        """The bias the integer layer adds, in real units."""
        s = np.broadcast_to(self.bias_scale(name), self.bias[name].shape)
        return self.bias_codes(name).astype(np.float64) * s

    def layer(self, node, x, pre=False):
        """Layer ``node`` on real input ``x`` with its quantized weights and bias.

        Returns the pre-activation when ``pre``; otherwise the activation, not yet
        rounded to the output grid.
        """
        o, name = node.options, node.name
        w, b = self.weight(name), self.real_bias(name)
        if node.kind == "conv":
            y = L.conv2d(x, w, b, o["stride"], o["padding"])
        elif node.kind == "dwconv":
            y = L.depthwise_conv2d(x, w, b, o["stride"], o["padding"])
        else:
            y = L.fully_connected(x, w, b)
        return y if pre else L.activate(y, node.activation)

    def simulate(self, x, keep=False):
        """Fake-quantized forward pass: real values on each tensor's int8 grid.

        Parameters
        ----------
        x : ndarray, shape (B, *input_shape)
        keep : bool
            Also return every tensor's value.

        Returns
        -------
        y : ndarray, the output (B, ...)
        acts : dict of str -> ndarray, only with ``keep``
        """
        acts = {INPUT: _fake_quant(self.net.check_input(x), self.act[INPUT])}
        for n in self.net.nodes:
            xs = [acts[i] for i in n.inputs]
            if n.kind in WEIGHTED:
                y = _fake_quant(self.layer(n, xs[0]), self.act[n.name])
            elif n.kind == "add":
                y = _fake_quant(L.activate(xs[0] + xs[1], n.activation), self.act[n.name])
            elif n.kind == "maxpool":
                y = L.pool(xs[0], n.options["size"], "max")
            elif n.kind == "avgpool":
                y = _fake_quant(L.pool(xs[0], n.options["size"], "avg"), self.act[n.name])
            else:
                y = xs[0].reshape(len(xs[0]), -1)
            acts[n.name] = y
        out = acts[self.net.output]
        return (out, acts) if keep else out

    def to_network(self):
        """The golden integer :class:`~golden.graph.Network`.

        Tensor names: ``"input"``, every node's name for its output, ``"<node>/weights"``
        and ``"<node>/bias"`` for constants.
        """
        def act_tensor(name, shape):
            s, z = self.act[name]
            tensors.append(Tensor(name, tuple(shape), "int8", QuantParams(s, z)))
            index[name] = len(tensors) - 1
            return index[name]

        tensors, ops, index = [], [], {}
        act_tensor(INPUT, self.net.input_shape)
        for n in self.net.nodes:
            ins = [index[i] for i in n.inputs]
            opts = {}
            if n.kind in WEIGHTED:
                axis = CHANNEL_AXIS[n.kind]
                w = self.codes[n.name]
                tensors.append(Tensor(f"{n.name}/weights", w.shape, "int8",
                                      QuantParams(self.scale[n.name], 0, axis), w))
                tensors.append(Tensor(f"{n.name}/bias", (w.shape[axis],), "int32",
                                      QuantParams(self.bias_scale(n.name), 0, 0),
                                      self.bias_codes(n.name)))
                ins += [len(tensors) - 2, len(tensors) - 1]
                opts["activation"] = n.activation
                if n.kind != "fc":
                    opts.update(stride=tuple(n.options["stride"]), padding=n.options["padding"],
                                dilation=(1, 1))
                if n.kind == "dwconv":
                    opts["depth_multiplier"] = 1
            elif n.kind == "add":
                opts["activation"] = n.activation
            elif n.kind in ("maxpool", "avgpool"):
                size = tuple(n.options["size"])
                opts.update(filter=size, stride=size, padding="VALID")
            out = act_tensor(n.name, self.shapes[n.name])
            ops.append(Op(_OPS[n.kind], ins, [out], opts))
        net = Network(tensors, ops, [0], [index[self.net.output]], self.net.name)
        return net.validate()


def quantize_model(net, calib_x, config, *, ranges=None, stream=sys.stderr):
    """Quantize a trained float network by ``config``.

    Parameters
    ----------
    net : FloatNet
        Trained, with batch norms.
    calib_x : ndarray, shape (N, *input_shape)
        Calibration samples (never the evaluation set).
    config : Config
    ranges : dict, optional
        Precomputed :func:`calibrate` result for ``prepare(net, config.cle)`` and
        ``config.calib`` (the report reuses them across bit widths).
    stream : file or None
        Progress output.

    Returns
    -------
    QuantModel
    """
    from .adaround import adaround
    from .bias_correction import correct_bias

    prepared = prepare(net, config.cle)
    if ranges is None:
        ranges = calibrate(prepared, calib_x, config.calib, stream=stream)
    model = QuantModel(prepared, ranges, config.bits, config.granularity, config.weight_range)
    if config.adaround:
        adaround(model, calib_x, iterations=config.adaround_iterations, stream=stream)
    if config.bias_correction:
        correct_bias(model, calib_x, stream=stream)
    return model


def accuracy(network, x, labels, batch=512):
    """Top-1 accuracy (fraction) of the golden integer network on real samples ``x``."""
    hits = 0
    for i in range(0, len(x), batch):
        xq = network.quantize(network.inputs[0], x[i : i + batch])
        out = network.run(xq, preserve=False)[network.outputs[0]]
        hits += int((out.reshape(len(xq), -1).argmax(axis=1) == labels[i : i + batch]).sum())
    return hits / len(x)


def layer_sqnr(model, network, x):
    """Per-layer signal-to-quantization-noise ratio of the integer network, in dB.

    ``10 log10(sum f^2 / sum (f - q)^2)`` with ``f`` the prepared float network's output
    of a layer and ``q`` the dequantized output of the golden integer network fed the
    quantized samples, over all of ``x``.

    Returns
    -------
    dict of str -> float
        Per weighted layer and ADD, in network order.
    """
    _, ref = model.net.forward(x, keep=True)
    got = network.run(network.quantize(network.inputs[0], x))
    names = {t.name: i for i, t in enumerate(network.tensors)}
    out = {}
    for name in range_owners(model.net)[1:]:
        q = network.dequantize(names[name], got[names[name]])
        noise = float(np.sum((ref[name] - q) ** 2))
        signal = float(np.sum(ref[name] ** 2))
        out[name] = np.inf if noise == 0 else 10.0 * np.log10(signal / noise)
    return out
