"""The quantization-aware training graph of a float network, and its export.

A :class:`QATModel` holds a float network's trainable parameters (weights, biases, batch
norm's gamma and beta) and the parameters of its quantizers, runs the fake-quantized
forward pass and its backward pass, and writes the integer network. The graph is the
integer network's: every weighted layer with the batch norm that follows it folded in
(Jacob et al. 2018, section 3.2 and appendix C), its fused activation, and a quantizer on
its weights and on its output.

The forward pass computes the exported integer network exactly: weights, inputs and the
int32 bias (at scale ``s_in * s_w``) sit on their grids, so a layer's pre-activation is
an integer accumulator times ``s_in * s_w``, and its output codes come from TFLite's
requantization (MultiplyByQuantizedMultiplier with double rounding, zero point, clamp),
ADD and AVERAGE_POOL_2D from the golden integer kernels. The fake-quantized forward pass
and ``export().to_network().run`` agree bit for bit on every tensor (tested), so the
training loss is the integer network's. Gradients flow straight through the rounding.

Batch norm during training: the layer first runs with its float weights to get the batch
mean and variance (which also update the running averages), then with the folded weights
``w * gamma / sigma`` fake-quantized and the folded bias ``beta + (b - mu) * gamma /
sigma``. After the warm-up (:meth:`QATModel.freeze_batch_norm`) ``mu`` and ``sigma`` are the
frozen running statistics, exactly what the exported layer folds in; the batch statistics
of the warm-up are treated as constants in the backward pass.

What is quantized at which width:

- weights: per output channel, symmetric, ``weight_bits`` (codes in
  ``[-(2^(b-1) - 1), 2^(b-1) - 1]``);
- every activation a fused ReLU or ReLU6 bounds below: ``act_bits``, as int8 codes
  ``[128 - 2^b, 127]`` with zero point ``128 - 2^b`` (real 0), so that the integer
  network's own ReLU clamp and int8 saturation keep every code on the ``b``-bit grid;
- tensors with no lower bound (the network input, a layer without activation such as the
  residual branch before an ADD, the logits): 8 bits, asymmetric, because an int8 network
  has no operator that would clamp them to fewer codes;
- pooling and reshape outputs share their input's grid (TFLite's int8 kernels require it).

Methods (``method``):

``ste``
    Weights: scale ``max |w| / qmax`` per channel, recomputed every step. Activations:
    ranges tracked by an exponential moving average of the batch min / max (momentum
    0.99), started from the calibration range. Gradients by the straight-through
    estimator.
``lsq``
    Learned scales for weights (per channel) and activations (per tensor), LSQ's
    gradient and gradient scale, started at ``2 mean |v| / sqrt(Q_P)`` (Esser et al.
    2020); zero points of the 8-bit tensors stay at their calibration value.
``lsq+``
    As ``lsq`` with LSQ+'s initialisation (weights: ``max(|mu - 3 sigma|, |mu + 3 sigma|) /
    2^(b-1)`` per channel; activations: the least-squared-error range on the calibration
    data) and a learned offset (zero point) on the 8-bit asymmetric tensors (Bhalgat et
    al. 2020). On ReLU outputs the offset stays at real 0, the ReLU's own clamp.
``pact``
    A learned clip ``alpha`` per ReLU output, ``s = alpha / (2^b - 1)``, with PACT's
    gradient and an L2 penalty on ``alpha`` (Choi et al. 2018); weights and the 8-bit
    tensors as ``ste``.
"""

import numpy as np

from .. import ops
from ..nets import layers as L
from ..nets.model import INPUT, FloatNet, Node
from ..ptq import calibrate as cal
from ..ptq.quantizer import QuantModel
from ..ptq.transforms import WEIGHTED, fold_batch_norm
from ..ptq.weights import CHANNEL_AXIS
from ..quant import asymmetric_params, qrange, round_half_away
from ..requant import activation_range, requantize
from .quantizers import (
    as_float32,
    fake_quant,
    lsq_backward,
    lsq_grad_scale,
    pact_backward,
    ste_backward,
)

__all__ = ["METHODS", "EMA_MOMENTUM", "PACT_L2", "QATModel"]

METHODS = ("ste", "lsq", "lsq+", "pact")
EMA_MOMENTUM = 0.99
PACT_L2 = 1e-4
_RELU = ("RELU", "RELU6")


class _Layer:
    """One node of the training graph: a weighted layer (with its batch norm folded in),
    an ADD, a pooling or a reshape."""

    def __init__(self, node, inputs, bn=None):
        self.name, self.kind, self.inputs = node.name, node.kind, inputs
        self.options = dict(node.options)
        self.bn = bn  # the batch-norm Node folded into this layer, or None
        self.activation = bn.activation if bn is not None else node.activation


def _merge(net):
    """The training graph of ``net``: each batch norm joins the weighted layer before it."""
    folded = fold_batch_norm(net)  # checks that every batch norm can be folded
    layers, rename = [], {}
    for n in net.nodes:
        inputs = [rename.get(i, i) for i in n.inputs]
        if n.kind == "bn":
            src = next(la for la in layers if la.name == inputs[0])
            src.bn, src.activation = n, n.activation
            rename[n.name] = src.name
            continue
        layers.append(_Layer(n, inputs))
    return layers, folded


def _channels_first(w, kind):
    return np.moveaxis(w, CHANNEL_AXIS[kind], 0).reshape(w.shape[CHANNEL_AXIS[kind]], -1)


def _from_channels_first(m, kind, shape):
    axis = CHANNEL_AXIS[kind]
    moved = list(shape)
    moved.insert(0, moved.pop(axis))
    return np.moveaxis(m.reshape(moved), 0, axis)


def _channel_shape(kind, ndim):
    shape = [1] * ndim
    shape[CHANNEL_AXIS[kind]] = -1
    return shape


class QATModel:
    """A float network prepared for quantization-aware training.

    Parameters
    ----------
    net : FloatNet
        Trained float network (batch norms allowed after conv / depthwise / FC layers);
        copied, never modified.
    method : {"ste", "lsq", "lsq+", "pact"}
    weight_bits, act_bits : int
        2..8.
    calib_x : ndarray, shape (N, *input_shape)
        Samples (from the training data) that set the initial ranges and scales.
    init : golden.ptq.quantizer.QuantModel, optional
        A PTQ result to start from instead: its (folded) weights, biases, weight scales
        and activation ranges (ReLU outputs below 8 bits: the least-squared-error range
        at ``act_bits`` on ``calib_x``, as PTQ ranges are set for 8 bits).

    Attributes
    ----------
    params : dict of (str, str) -> ndarray
        Everything the optimiser updates: ``(layer, "w" | "b" | "gamma" | "beta")`` and the
        quantizers' ``(layer, "ws")`` weight scales, ``(tensor, "s")`` activation scales,
        ``(tensor, "z")`` LSQ+ offsets, ``(tensor, "alpha")`` PACT clips.
    """

    def __init__(self, net, method, weight_bits, act_bits, calib_x, init=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        qrange(weight_bits)
        qrange(act_bits)
        self.method, self.weight_bits, self.act_bits = method, weight_bits, act_bits
        self.wmax = qrange(weight_bits, narrow=True)[1]
        source = init.net if init is not None else net.copy()
        self.name, self.input_shape = source.name, source.input_shape
        self.layers, folded = _merge(source)
        self.frozen = not any(la.bn is not None for la in self.layers)
        self.params, self.stats = {}, {}
        for la in self.layers:
            if la.kind not in WEIGHTED:
                continue
            p = la.bn.params if la.bn is not None else None
            w = init.weight(la.name) if init is not None else \
                next(n for n in source.nodes if n.name == la.name).params["w"]
            b = init.bias[la.name] if init is not None else \
                next(n for n in source.nodes if n.name == la.name).params["b"]
            self.params[la.name, "w"] = np.array(w, dtype=np.float64)
            self.params[la.name, "b"] = np.array(b, dtype=np.float64)
            if p is not None:
                self.params[la.name, "gamma"] = p["gamma"].copy()
                self.params[la.name, "beta"] = p["beta"].copy()
                self.stats[la.name] = {"mean": p["mean"].copy(), "var": p["var"].copy()}
        self._init_quantizers(folded, calib_x, init)

    # -- quantizers --------------------------------------------------------------------

    def owners(self):
        """Tensors with their own quantizer: the input, weighted layers and ADDs."""
        return [INPUT] + [la.name for la in self.layers if la.kind in (*WEIGHTED, "add")]

    def _grid(self, name):
        """(qmin, qmax, bounded) of tensor ``name``: ReLU outputs at ``act_bits``."""
        la = next((x for x in self.layers if x.name == name), None)
        if la is not None and la.activation in _RELU:
            return 128 - 2**self.act_bits, 127, True
        return -128, 127, False

    def _init_quantizers(self, folded, calib_x, init):
        names = self.owners()
        values = cal.collect(folded, calib_x, names, batch_size=256)
        self.act = {}  # name -> dict(qmin, qmax, bounded, [lo, hi] for EMA, z for fixed)
        for name in names:
            qmin, qmax, bounded = self._grid(name)
            q = {"qmin": qmin, "qmax": qmax, "bounded": bounded}
            v = np.concatenate([np.ravel(b) for b in values[name]])
            n = v.size // len(calib_x)
            if init is not None:
                s8, z8 = init.act[name]
                lo, hi = s8 * (-128 - z8), s8 * (127 - z8)
                if bounded and self.act_bits < 8:
                    # PTQ ranges are set for 8 bits; at fewer, clipping pays off more.
                    hi = cal.mse_range([v], self.act_bits)[1]
            else:
                lo, hi = cal.minmax_range([v])
            levels = qmax - qmin
            ema = self.method in ("ste", "pact") and not (bounded and self.method == "pact")
            if name == INPUT or ema:
                q["range"] = [lo, hi]
            elif bounded:
                if self.method == "pact":
                    self.params[name, "alpha"] = np.array(max(hi, 1e-8))
                else:
                    if init is not None:
                        s = hi / levels
                    elif self.method == "lsq":
                        s = 2.0 * np.mean(np.abs(v)) / np.sqrt(levels)
                    else:
                        s = cal.mse_range([v], self.act_bits)[1] / levels
                    self.params[name, "s"] = np.array(max(s, 1e-8))
                q["z"] = float(qmin)
            else:
                s, z = asymmetric_params(lo, hi)
                self.params[name, "s"] = np.array(float(s))
                q["z"] = float(z)
                if self.method == "lsq+":
                    self.params[name, "z"] = np.array(float(z))
            q["grad_scale"] = lsq_grad_scale(n, levels)
            self.act[name] = q
        for la in self.layers:
            if la.kind not in WEIGHTED or self.method not in ("lsq", "lsq+"):
                continue
            rows = _channels_first(self._folded_weights(la), la.kind)
            if init is not None:
                s = np.broadcast_to(init.scale[la.name], (rows.shape[0],)).copy()
            elif self.method == "lsq":
                s = 2.0 * np.abs(rows).mean(axis=1) / np.sqrt(self.wmax)
            else:
                mu, sd = rows.mean(axis=1), rows.std(axis=1)
                s = np.maximum(np.abs(mu - 3 * sd), np.abs(mu + 3 * sd)) / \
                    2 ** (self.weight_bits - 1)
            self.params[la.name, "ws"] = np.maximum(s, 1e-8)

    def act_params(self, name):
        """(scale, zero point) of quantized tensor ``name`` now; scale rounded to float32."""
        q = self.act[name]
        if "range" in q:
            lo, hi = q["range"]
            if q["bounded"]:
                return float(as_float32(max(hi, 1e-8) / (q["qmax"] - q["qmin"]))), q["qmin"]
            s, z = asymmetric_params(lo, hi)
            return float(as_float32(s)), int(z)
        if (name, "alpha") in self.params:
            s = self.params[name, "alpha"] / (q["qmax"] - q["qmin"])
            return float(as_float32(s)), q["qmin"]
        z = self.params[name, "z"] if (name, "z") in self.params else q["z"]
        return float(as_float32(self.params[name, "s"])), int(np.clip(
            np.sign(z) * np.floor(np.abs(z) + 0.5), q["qmin"], q["qmax"]))

    def _track_range(self, name, a):
        """Moving-average range update of an ``ste`` tensor on a training batch."""
        q = self.act[name]
        if "range" in q and name != INPUT:
            m = EMA_MOMENTUM
            q["range"][0] = m * q["range"][0] + (1 - m) * min(float(a.min()), 0.0)
            q["range"][1] = m * q["range"][1] + (1 - m) * max(float(a.max()), 0.0)

    def _quantize_act(self, name, a, codes=None):
        """``a`` on the grid of tensor ``name``; ``codes`` are the integer kernel's codes
        when it computes them otherwise than by rounding ``a`` (requantization)."""
        q = self.act[name]
        s, z = self.act_params(name)
        if (name, "z") in self.params:
            z = float(np.clip(self.params[name, "z"], q["qmin"], q["qmax"]))
        out, cache = fake_quant(a, s, z, q["qmin"], q["qmax"])
        if codes is not None:
            u, _, s32, zr, qmin, qmax = cache
            cache = (u, codes.astype(np.float64), s32, zr, qmin, qmax)
            out = s32 * (cache[1] - zr)
        return out, (a, cache)

    def _codes(self, name, x):
        """Integer codes of ``x``, which lies on the grid of tensor ``name``."""
        s, z = self.act_params(self._grid_owner(name))
        return np.clip(round_half_away(x / s) + z, -128, 127).astype(np.int8)

    def _act_limits(self, name, activation):
        """The integer kernel's output clamp of tensor ``name``."""
        s, z = self.act_params(name)
        lo, hi = activation_range(activation, s, z)
        return max(lo, self.act[name]["qmin"]), min(hi, self.act[name]["qmax"])

    def _quantize_act_backward(self, name, dout, saved, grads):
        a, cache = saved
        q = self.act[name]
        if (name, "alpha") in self.params:
            dx, dalpha = pact_backward(dout, a, self.params[name, "alpha"])
            grads[name, "alpha"] = np.array(dalpha + PACT_L2 * self.params[name, "alpha"])
            return dx
        if (name, "s") not in self.params:
            return ste_backward(dout, cache)
        g = q["grad_scale"]
        if (name, "z") in self.params:
            dx, ds, dz = lsq_backward(dout, cache, g, offset=True)
            grads[name, "z"] = np.array(dz)
        else:
            dx, ds = lsq_backward(dout, cache, g)
        grads[name, "s"] = np.array(ds)
        return dx

    # -- weighted layers ---------------------------------------------------------------

    def _folded_weights(self, la):
        """Folded weights with the running statistics (the exported ones)."""
        return self._fold(la, None, False)[0]

    def _fold(self, la, x, batch_stats):
        w, b = self.params[la.name, "w"], self.params[la.name, "b"]
        if la.bn is None:
            return w, b, None
        gamma, beta = self.params[la.name, "gamma"], self.params[la.name, "beta"]
        st, o = self.stats[la.name], la.bn.options
        if batch_stats:
            z = _op(la, x, w, np.zeros_like(b))
            axes = tuple(range(z.ndim - 1))
            mu_b, var_b = z.mean(axis=axes), z.var(axis=axes)
            st["mean"] = o["momentum"] * st["mean"] + (1 - o["momentum"]) * (mu_b + b)
            st["var"] = o["momentum"] * st["var"] + (1 - o["momentum"]) * var_b
            mu, var = mu_b + b, var_b
        else:
            mu, var = st["mean"], st["var"]
        sigma = np.sqrt(var + o["eps"])
        g = gamma / sigma
        w_f = w * g.reshape(_channel_shape(la.kind, w.ndim))
        b_f = beta + (b - mu) * g
        return w_f, b_f, (g, sigma, mu, batch_stats)

    def _fold_backward(self, la, dw_f, db_f, saved, grads):
        if saved is None:
            grads[la.name, "w"], grads[la.name, "b"] = dw_f, db_f
            return
        g, sigma, mu, batch_stats = saved
        w, b = self.params[la.name, "w"], self.params[la.name, "b"]
        shape = _channel_shape(la.kind, w.ndim)
        axes = tuple(i for i in range(w.ndim) if shape[i] == 1)
        dg = (dw_f * w).sum(axis=axes) + db_f * (b - mu)
        grads[la.name, "w"] = dw_f * g.reshape(shape)
        # With batch statistics the bias cancels against the batch mean.
        grads[la.name, "b"] = np.zeros_like(b) if batch_stats else db_f * g
        grads[la.name, "gamma"] = dg / sigma
        grads[la.name, "beta"] = db_f

    def _weight_scale(self, la, rows):
        if (la.name, "ws") in self.params:
            return self.params[la.name, "ws"]
        amax = np.abs(rows).max(axis=1)
        return np.where(amax > 0, amax / self.wmax, 1.0)

    def _quantize_weights(self, la, w_f):
        rows = _channels_first(w_f, la.kind)
        s = self._weight_scale(la, rows)
        out, cache = fake_quant(rows, s[:, None], 0.0, -self.wmax, self.wmax)
        return _from_channels_first(out, la.kind, w_f.shape), cache

    def _quantize_weights_backward(self, la, dwq, cache, grads):
        rows = _channels_first(dwq, la.kind)
        if (la.name, "ws") in self.params:
            g = lsq_grad_scale(rows.shape[1], self.wmax)
            dx, ds = lsq_backward(rows, cache, g, axes=(1,))
            grads[la.name, "ws"] = ds[:, 0]
        else:
            dx = ste_backward(rows, cache)
        return _from_channels_first(dx, la.kind, dwq.shape)

    # -- forward / backward ------------------------------------------------------------

    def freeze_batch_norm(self):
        """End the warm-up: fold the running statistics from now on (and in the export)."""
        self.frozen = True

    def forward(self, x, train=False, keep=False):
        """Fake-quantized forward pass.

        Parameters
        ----------
        x : ndarray, shape (B, *input_shape)
        train : bool
            Update moving ranges and, before :meth:`freeze_batch_norm`, use and record
            batch statistics; keep what :meth:`backward` needs.
        keep : bool
            Also return every tensor's value.

        Returns
        -------
        y : ndarray, the (fake-quantized) output, e.g. (B, 10) logits
        acts : dict of str -> ndarray, only with ``keep``
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name}: input must have shape (B, {self.input_shape}), "
                             f"not {x.shape}")
        acts = {}
        acts[INPUT], _ = self._quantize_act(INPUT, x)
        saved = {}
        for la in self.layers:
            xs = [acts[i] for i in la.inputs]
            if la.kind in WEIGHTED:
                w_f, b_f, fold = self._fold(la, xs[0], train and not self.frozen)
                wq, wcache = self._quantize_weights(la, w_f)
                # The integer layer adds an int32 bias at scale s_in * s_w: at low bit
                # widths that step is a sizeable part of an output step, so training sees
                # it (straight through for the gradient).
                s_in = self.act_params(self._grid_owner(la.inputs[0]))[0]
                s_w = wcache[2][:, 0]
                s_b = s_in * s_w
                y = _op(la, xs[0], wq, s_b * round_half_away(b_f / s_b))
                a = L.activate(y, la.activation)
                if train:
                    self._track_range(la.name, a)
                acts[la.name], qs = self._quantize_act(
                    la.name, a, self._requantize(la, y, s_in, s_w))
                saved[la.name] = (wq, wcache, fold, a, qs)
            elif la.kind == "add":
                a = L.activate(xs[0] + xs[1], la.activation)
                if train:
                    self._track_range(la.name, a)
                (s1, z1), (s2, z2), (so, zo) = (
                    self.act_params(self._grid_owner(i)) for i in (*la.inputs, la.name))
                codes = ops.add(self._codes(la.inputs[0], xs[0]),
                                self._codes(la.inputs[1], xs[1]),
                                ops.add_params(s1, z1, s2, z2, so, zo),
                                *self._act_limits(la.name, la.activation))
                acts[la.name], qs = self._quantize_act(la.name, a, codes)
                saved[la.name] = (a, qs)
            elif la.kind == "maxpool":
                acts[la.name] = L.pool(xs[0], la.options["size"], "max")
            elif la.kind == "avgpool":
                # The integer kernel rounds the mean onto the input's grid.
                owner = self._grid_owner(la.inputs[0])
                s, z = self.act_params(owner)
                size = la.options["size"]
                codes = ops.average_pool2d(self._codes(owner, xs[0]), size, size)
                acts[la.name] = s * (codes.astype(np.float64) - z)
            else:
                acts[la.name] = xs[0].reshape(len(xs[0]), -1)
        if train:
            self._saved = (acts, saved)
        out = acts[self.layers[-1].name]
        return (out, acts) if keep else out

    def _requantize(self, la, y, s_in, s_w):
        """Output codes of weighted layer ``la`` as the integer kernel computes them from
        its pre-activation ``y``, which lies on the accumulator grid ``s_in * s_w``:
        MultiplyByQuantizedMultiplier with TFLite's double rounding, zero point, clamp."""
        s_out, z_out = self.act_params(la.name)
        acc = round_half_away(y / (s_in * s_w)).reshape(-1, len(s_w)).astype(np.int64)
        m0, shift = ops.output_multipliers(s_in, s_w, s_out)
        codes = requantize(acc, 0, m0, shift, z_out, *self._act_limits(la.name, la.activation))
        return codes.reshape(y.shape)

    def _grid_owner(self, name):
        """The quantized tensor whose grid ``name`` shares (through pooling / reshape)."""
        while name != INPUT:
            la = next(x for x in self.layers if x.name == name)
            if la.kind in (*WEIGHTED, "add"):
                return name
            name = la.inputs[0]
        return INPUT

    def backward(self, dout):
        """Gradients of every parameter for the gradient ``dout`` of the loss with respect
        to the output of the last ``forward(x, train=True)``.

        Returns
        -------
        dict of (str, str) -> ndarray, keys of :attr:`params`
        """
        acts, saved = self._saved
        grads = {}
        dacts = {self.layers[-1].name: dout}
        for la in reversed(self.layers):
            d = dacts.pop(la.name, None)
            if d is None:
                continue
            xs = [acts[i] for i in la.inputs]
            if la.kind in WEIGHTED:
                wq, wcache, fold, a, qs = saved[la.name]
                da = self._quantize_act_backward(la.name, d, qs, grads)
                dy = L.activate_backward(da, a, la.activation)
                dx, dwq, db_f = _op_backward(la, dy, xs[0], wq)
                dw_f = self._quantize_weights_backward(la, dwq, wcache, grads)
                self._fold_backward(la, dw_f, db_f, fold, grads)
                dxs = [dx]
            elif la.kind == "add":
                a, qs = saved[la.name]
                da = self._quantize_act_backward(la.name, d, qs, grads)
                dy = L.activate_backward(da, a, la.activation)
                dxs = [dy, dy]
            elif la.kind in ("maxpool", "avgpool"):
                dxs = [L.pool_backward(d, xs[0], la.options["size"], la.kind[:3])]
            else:
                dxs = [d.reshape(xs[0].shape)]
            for i, dx in zip(la.inputs, dxs, strict=True):
                if i != INPUT:
                    dacts[i] = dacts[i] + dx if i in dacts else dx
        return grads

    # -- export ------------------------------------------------------------------------

    def folded_net(self):
        """The float network the integer one approximates: batch norms folded with the
        running statistics, activations fused."""
        nodes = []
        for la in self.layers:
            params = {}
            if la.kind in WEIGHTED:
                w_f, b_f, _ = self._fold(la, None, False)
                params = {"w": w_f, "b": b_f}
            nodes.append(Node(la.name, la.kind, list(la.inputs), params,
                              {**la.options, "activation": la.activation}))
        return FloatNet(self.name, self.input_shape, nodes)

    def export(self):
        """The trained model as a :class:`~golden.ptq.quantizer.QuantModel` (its
        ``to_network()`` is the golden integer network)."""
        net = self.folded_net()
        act = {name: self.act_params(name) for name in self.owners()}
        scale, codes, bias = {}, {}, {}
        for la, n in zip(self.layers, net.nodes, strict=True):
            if la.kind not in WEIGHTED:
                continue
            rows = _channels_first(n.params["w"], la.kind)
            s = as_float32(self._weight_scale(la, rows))
            _, cache = fake_quant(rows, s[:, None], 0.0, -self.wmax, self.wmax)
            codes[la.name] = _from_channels_first(cache[1], la.kind,
                                                  n.params["w"].shape).astype(np.int8)
            scale[la.name], bias[la.name] = s, n.params["b"].copy()
        return QuantModel.from_state(net, act, scale, codes, bias, self.weight_bits)


def _op(la, x, w, b):
    o = la.options
    if la.kind == "conv":
        return L.conv2d(x, w, b, o["stride"], o["padding"])
    if la.kind == "dwconv":
        return L.depthwise_conv2d(x, w, b, o["stride"], o["padding"])
    return L.fully_connected(x, w, b)


def _op_backward(la, dy, x, w):
    o = la.options
    if la.kind == "conv":
        return L.conv2d_backward(dy, x, w, o["stride"], o["padding"])
    if la.kind == "dwconv":
        return L.depthwise_conv2d_backward(dy, x, w, o["stride"], o["padding"])
    return L.fully_connected_backward(dy, x, w)
