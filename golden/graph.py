"""A quantized network: a small graph of golden integer ops, with a float reference beside it.

Data model shared by the TFLite importer/exporter, the PTQ toolkit and the hardware
compiler. Tensors are indexed by position in ``Network.tensors``; for an imported model
that index is the TFLite tensor index. Layout is NHWC; convolution weights are
OHWI (TFLite's CONV_2D), depthwise weights 1HW(I*M) (TFLite's DEPTHWISE_CONV_2D),
fully-connected weights (N, K) (TFLite's FULLY_CONNECTED).
"""

from dataclasses import dataclass, field

import numpy as np

from . import ops
from .arith import AccumulatorOverflowError
from .quant import dequantize, quantize
from .requant import ACTIVATIONS, activation_range

__all__ = ["QuantParams", "Tensor", "Op", "Network", "NetworkError", "OPS"]

OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "RESHAPE",
)


@dataclass
class QuantParams:
    """real = scale * (q - zero_point); per-channel along ``axis`` when ``scale`` has size > 1."""

    scale: np.ndarray  # float64, shape (1,) or (C,)
    zero_point: np.ndarray  # int64, same shape as scale
    axis: int = 0  # TFLite quantized_dimension; meaningful only per-channel

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float64))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.zero_point.shape != self.scale.shape:
            self.zero_point = np.broadcast_to(self.zero_point, self.scale.shape).copy()
        if np.any(self.scale <= 0) or not np.all(np.isfinite(self.scale)):
            raise ValueError(f"scales must be finite and positive, not {self.scale!r}")

    @property
    def per_channel(self):
        return self.scale.size > 1


@dataclass
class Tensor:
    """One tensor: shape without the batch dimension for activations (batch is free)."""

    name: str
    shape: tuple
    dtype: str  # "int8" | "int32" (biases)
    quant: QuantParams | None = None
    data: np.ndarray | None = None  # constant (weights, biases); None for activations


@dataclass
class Op:
    """One operator. ``options`` holds TFLite-style fields, e.g. for CONV_2D
    ``stride=(sh, sw), padding="SAME"|"VALID", dilation=(dh, dw), activation="RELU"``."""

    kind: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)


class NetworkError(ValueError):
    """A network the golden model cannot run: unsupported operator, bad shape or parameter."""


_CONV_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_POOL_KINDS = ("AVERAGE_POOL_2D", "MAX_POOL_2D")
_FLOAT_ACTIVATIONS = {
    "NONE": (-np.inf, np.inf),
    "RELU": (0.0, np.inf),
    "RELU6": (0.0, 6.0),
    "RELU_N1_TO_1": (-1.0, 1.0),
}


def _pair_option(options, key, default):
    value = options.get(key, default)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{key} must be a pair of positive ints, not {value!r}")
    return pair


@dataclass
class Network:
    """Tensors and operators in execution order; ``inputs``/``outputs`` are tensor indices.

    Activation shapes exclude the batch dimension: :meth:`run` takes a batch ``(B, *shape)``
    of every input and returns ``(B, *shape)`` for every activation. Constant tensors keep
    their full shape.
    """

    tensors: list
    ops: list
    inputs: list
    outputs: list
    name: str = "network"

    # -- validation --------------------------------------------------------------------

    def validate(self):
        """Check that every operator is supported and every shape and parameter is consistent.

        Raises
        ------
        NetworkError
            One message naming the operator (kind and index) or tensor at fault.
        """
        n = len(self.tensors)
        for i, t in enumerate(self.tensors):
            self._check_tensor(i, t)
        for role, idx in (("input", self.inputs), ("output", self.outputs)):
            for i in idx:
                if not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                    raise NetworkError(f"network {role} {i!r} is not a tensor index")
                if self.tensors[i].data is not None:
                    raise NetworkError(f"network {role} {i} is a constant tensor")
        if not self.inputs:
            raise NetworkError("network has no inputs")
        available = set(self.inputs)
        for k, op in enumerate(self.ops):
            where = f"op {k} {op.kind}"
            if op.kind not in OPS:
                raise NetworkError(f"unsupported operator {op.kind} (op {k})")
            for i in list(op.inputs) + list(op.outputs):
                if not isinstance(i, (int, np.integer)) or not -1 <= i < n:
                    raise NetworkError(f"{where}: {i!r} is not a tensor index")
            for i in op.inputs:
                if i >= 0 and self.tensors[i].data is None and i not in available:
                    raise NetworkError(f"{where}: input tensor {i} is not computed before "
                                       f"it is used (ops must be in execution order)")
            if len(op.outputs) != 1 or op.outputs[0] < 0:
                raise NetworkError(f"{where}: must have exactly one output tensor, not "
                                   f"{op.outputs!r}")
            out = op.outputs[0]
            if self.tensors[out].data is not None or out in available:
                raise NetworkError(f"{where}: output tensor {out} is a constant or is "
                                   f"written twice")
            try:
                self._check_op(op)
            except ValueError as e:
                raise NetworkError(f"{where}: {e}") from None
            available.add(out)
        for i in self.outputs:
            if i not in available:
                raise NetworkError(f"network output {i} is never computed")
        return self

    def _check_tensor(self, i, t):
        where = f"tensor {i} {t.name!r}"
        if t.dtype not in ("int8", "int32"):
            raise NetworkError(f"{where}: dtype must be 'int8' or 'int32', not {t.dtype!r}")
        if any(not isinstance(d, (int, np.integer)) or d < 1 for d in t.shape):
            raise NetworkError(f"{where}: shape must be positive ints, not {t.shape!r}")
        if t.data is not None:
            data = np.asarray(t.data)
            if data.dtype != np.dtype(t.dtype) or data.shape != tuple(t.shape):
                raise NetworkError(f"{where}: data must be {t.dtype} of shape "
                                   f"{tuple(t.shape)}, not {data.dtype} {data.shape}")
        elif t.dtype != "int8":
            raise NetworkError(f"{where}: activations must be int8, not {t.dtype}")
        if t.dtype == "int8":
            if t.quant is None:
                raise NetworkError(f"{where}: int8 tensor has no quantization parameters")
            if t.quant.per_channel:
                if t.data is None:
                    raise NetworkError(f"{where}: activations must be quantized per tensor")
                if not 0 <= t.quant.axis < len(t.shape) or \
                        t.shape[t.quant.axis] != t.quant.scale.size:
                    raise NetworkError(f"{where}: {t.quant.scale.size} scales do not match "
                                       f"axis {t.quant.axis} of shape {tuple(t.shape)}")
            if np.any((t.quant.zero_point < -128) | (t.quant.zero_point > 127)):
                raise NetworkError(f"{where}: zero points must be in [-128, 127], not "
                                   f"{t.quant.zero_point!r}")

    def _check_op(self, op):
        kind, opt, t = op.kind, op.options, self.tensors
        act = opt.get("activation", "NONE")
        if act not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {act!r}")
        weighted = kind in _CONV_KINDS or kind == "FULLY_CONNECTED"
        counts, required = {"ADD": ((2,), 2), "RESHAPE": ((1, 2), 1)}.get(
            kind, ((2, 3), 2) if weighted else ((1,), 1))
        if len(op.inputs) not in counts:
            raise ValueError(f"must have {' or '.join(map(str, counts))} inputs, not "
                             f"{len(op.inputs)}")
        if any(i < 0 for i in op.inputs[:required]):
            raise ValueError(f"required input missing: {op.inputs!r}")
        x, y = t[op.inputs[0]], t[op.outputs[0]]
        for role, tt in (("input", x), ("output", y)):
            if tt.dtype != "int8":
                raise ValueError(f"{role} must be int8, not {tt.dtype}")
        if x.data is not None and kind != "ADD":
            raise ValueError("first input must be an activation, not a constant")
        if weighted:
            self._check_weighted(op, x, y)
        elif kind in _POOL_KINDS:
            if len(x.shape) != 3:
                raise ValueError(f"input must be (H, W, C), not {tuple(x.shape)}")
            fh, fw = _pair_option(opt, "filter", None)
            sh, sw = _pair_option(opt, "stride", (1, 1))
            pad = opt.get("padding", "VALID")
            oh = ops.conv_geometry(x.shape[0], fh, sh, pad)[0]
            ow = ops.conv_geometry(x.shape[1], fw, sw, pad)[0]
            self._check_shape(y, (oh, ow, x.shape[2]))
            if not (np.allclose(x.quant.scale, y.quant.scale, rtol=1e-6, atol=0)
                    and x.quant.zero_point[0] == y.quant.zero_point[0]):
                raise ValueError("input and output must share scale and zero point")
        elif kind == "ADD":
            a, b = t[op.inputs[0]], t[op.inputs[1]]
            if b.dtype != "int8":
                raise ValueError(f"inputs must be int8, not {b.dtype}")
            if a.data is not None and b.data is not None:
                raise ValueError("at least one input must be an activation")
            if a.quant.per_channel or b.quant.per_channel:
                raise ValueError("inputs must be quantized per tensor")
            try:
                shape = np.broadcast_shapes(self._sample_shape(a), self._sample_shape(b))
            except ValueError:
                raise ValueError(f"input shapes {tuple(a.shape)} and {tuple(b.shape)} do "
                                 f"not broadcast") from None
            if shape != (1,) + tuple(y.shape):
                raise ValueError(f"inputs broadcast to {shape[1:]} per sample, not the "
                                 f"output shape {tuple(y.shape)}")
            self._add_params(op)
        elif int(np.prod(x.shape)) != int(np.prod(y.shape)):
            raise ValueError(f"cannot reshape {tuple(x.shape)} to {tuple(y.shape)}")

    def _sample_shape(self, tensor):
        return tuple(tensor.shape) if tensor.data is not None else (1,) + tuple(tensor.shape)

    @staticmethod
    def _check_shape(tensor, shape):
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"output shape must be {tuple(shape)}, not {tuple(tensor.shape)}")

    def _check_weighted(self, op, x, y):
        t, kind, opt = self.tensors, op.kind, op.options
        w = t[op.inputs[1]]
        b = t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if w.data is None or w.dtype != "int8":
            raise ValueError("weights must be a constant int8 tensor")
        if np.any(w.quant.zero_point != 0):
            raise ValueError("weights must be symmetric (zero point 0)")
        if x.quant.per_channel or y.quant.per_channel:
            raise ValueError("input and output must be quantized per tensor")
        if kind == "FULLY_CONNECTED":
            if len(w.shape) != 2:
                raise ValueError(f"weights must be (N, K), not {tuple(w.shape)}")
            n, k = w.shape
            size = int(np.prod(x.shape))
            if size % k:
                raise ValueError(f"input of {size} elements is not a multiple of K = {k}")
            if int(np.prod(y.shape)) != size // k * n:
                raise ValueError(f"output shape {tuple(y.shape)} does not hold "
                                 f"{size // k} rows of {n}")
            axis = 0
        else:
            if len(x.shape) != 3 or len(w.shape) != 4:
                raise ValueError(f"input must be (H, W, C) and weights 4-D, not "
                                 f"{tuple(x.shape)} and {tuple(w.shape)}")
            c = x.shape[2]
            if kind == "CONV_2D":
                n, kh, kw, wc = w.shape
                if wc != c:
                    raise ValueError(f"weights must have {c} input channels, not {wc}")
                axis = 0
            else:
                one, kh, kw, n = w.shape
                dm = opt.get("depth_multiplier", n // c)
                if one != 1 or n != c * dm:
                    raise ValueError(f"weights must be (1, KH, KW, {c} * {dm}), not "
                                     f"{tuple(w.shape)}")
                axis = 3
            sh, sw = _pair_option(opt, "stride", (1, 1))
            dh, dw = _pair_option(opt, "dilation", (1, 1))
            pad = opt.get("padding", "VALID")
            oh = ops.conv_geometry(x.shape[0], kh, sh, pad, dh)[0]
            ow = ops.conv_geometry(x.shape[1], kw, sw, pad, dw)[0]
            self._check_shape(y, (oh, ow, n))
        if w.quant.per_channel and (w.quant.axis != axis or w.quant.scale.size != n):
            raise ValueError(f"weights must have one scale or {n} scales along axis {axis}, "
                             f"not {w.quant.scale.size} along axis {w.quant.axis}")
        if b is not None:
            if b.data is None or b.dtype != "int32" or tuple(b.shape) != (n,):
                raise ValueError(f"bias must be a constant int32 tensor of shape ({n},)")

    # -- execution ---------------------------------------------------------------------

    def run_bytes_per_sample(self):
        """Peak memory of :meth:`run` per sample of the batch, an upper estimate in bytes.

        :meth:`run` keeps every activation, and each operator adds its own temporaries
        for the whole batch: the padded input and the int8 im2col rows of a convolution,
        int32 and int64 sums of an average pool, about twelve int64 arrays of an ADD
        (factors measured with tracemalloc, with some margin). Constants and
        cache-sized blocks are not per sample. Callers size batches with it
        (``golden.run`` streams in chunks that fit a memory budget).
        """
        self.validate()
        t = self.tensors

        def size(i):
            return int(np.prod(t[i].shape))

        kept = sum(size(i) for i in self.inputs) + sum(size(op.outputs[0]) for op in self.ops)
        peak = 0
        for op in self.ops:
            x, y = op.inputs[0], op.outputs[0]
            if op.kind in _CONV_KINDS:
                (h, w, c), (oh, ow) = t[x].shape, t[y].shape[:2]
                kh, kw = t[op.inputs[1]].shape[1:3]
                geo = self._geometry(op, dilation=True)
                (sh, sw), (dh, dw) = geo["stride"], geo["dilation"]
                padded = max(h, (oh - 1) * sh + (kh - 1) * dh + 1) * \
                    max(w, (ow - 1) * sw + (kw - 1) * dw + 1) * c
                temp = padded + oh * ow * kh * kw * c + 2 * size(y)
            elif op.kind == "ADD":
                temp = 96 * size(y)
            elif op.kind == "AVERAGE_POOL_2D":
                temp = 40 * max(size(x), size(y))
            elif op.kind == "MAX_POOL_2D":
                temp = 2 * size(x)
            else:
                temp = 0
            peak = max(peak, temp)
        return kept + peak

    def _batch(self, x, kind):
        if isinstance(x, dict):
            feeds = dict(x)
        elif isinstance(x, (list, tuple)):
            feeds = dict(zip(self.inputs, x, strict=True))
        else:
            if len(self.inputs) != 1:
                raise ValueError(f"network has {len(self.inputs)} inputs; pass a list or a "
                                 f"dict of arrays, not one array")
            feeds = {self.inputs[0]: x}
        if set(feeds) != set(self.inputs):
            raise ValueError(f"inputs must be tensors {self.inputs}, not {sorted(feeds)}")
        batch = None
        for i, v in feeds.items():
            v = np.asarray(v)
            shape = tuple(self.tensors[i].shape)
            if kind == "int8" and v.dtype != np.int8:
                raise ValueError(f"input {i} must be int8, not {v.dtype}")
            if kind == "float" and v.dtype.kind not in "fiu":
                raise ValueError(f"input {i} must be real numbers, not {v.dtype}")
            if v.ndim != len(shape) + 1 or v.shape[1:] != shape or \
                    (batch is not None and v.shape[0] != batch):
                raise ValueError(f"input {i} must have shape (N, {', '.join(map(str, shape))})"
                                 f" with one N for all inputs, not {v.shape}")
            if v.shape[0] == 0:
                raise ValueError(f"input {i} holds no samples (shape {v.shape}); the batch "
                                 f"needs N >= 1")
            batch = v.shape[0]
            feeds[i] = v if kind == "int8" else v.astype(np.float64)
        return feeds

    def run(self, x, preserve=True, *, rounding="double"):
        """Integer-only inference on a batch, bit-exact to TFLite's reference kernels.

        Parameters
        ----------
        x : ndarray of int8, shape (B, *input shape); or a list / dict (tensor index ->
            array) for several inputs
        preserve : bool
            Return every tensor (constants, inputs and intermediates, like the
            interpreter's ``experimental_preserve_all_tensors``); otherwise only the
            network outputs.
        rounding : {"double", "single"}
            MultiplyByQuantizedMultiplier variant of CONV_2D, DEPTHWISE_CONV_2D and
            FULLY_CONNECTED.

        Returns
        -------
        dict of int -> ndarray
            Tensor index -> int8 ``(B, *shape)`` for activations, the stored data for
            constants.

        Raises
        ------
        golden.arith.AccumulatorOverflowError
            When a layer's weights and bias could overflow int32 on some input
            (:func:`golden.arith.check_accumulator`), naming the op, its output tensor and
            the channel.

        Notes
        -----
        Scales are rounded to float32 before multipliers are derived, because that is
        what a .tflite file stores and the interpreter sees.
        """
        self.validate()
        values = self._batch(x, "int8")
        for k, op in enumerate(self.ops):
            try:
                values[op.outputs[0]] = self._run_int(op, values, rounding)
            except AccumulatorOverflowError as e:
                name = self.tensors[op.outputs[0]].name
                raise AccumulatorOverflowError(f"op {k} ({name!r}): {e}") from None
        return self._collect(values, preserve, lambda t: np.asarray(t.data))

    def run_float(self, x, preserve=True):
        """Float64 reference: the same graph on dequantized weights and biases.

        What the quantized network approximates: padding is real 0, activations are
        clamps at 0 / 6 / +-1, pooling and ADD are exact real arithmetic.

        Parameters
        ----------
        x : array_like of float, shape (B, *input shape); or a list / dict as :meth:`run`

        Returns
        -------
        dict of int -> ndarray of float64
            Activations ``(B, *shape)``; constants dequantized (int32 shape operands of
            RESHAPE unchanged).
        """
        self.validate()
        values = self._batch(x, "float")
        for op in self.ops:
            values[op.outputs[0]] = self._run_float(op, values)
        return self._collect(values, preserve, self._real_constant)

    def _collect(self, values, preserve, constant):
        if not preserve:
            return {i: values[i] for i in self.outputs}
        out = {i: constant(t) for i, t in enumerate(self.tensors) if t.data is not None}
        out.update(values)
        return dict(sorted(out.items()))

    def quantize(self, index, x):
        """Real values -> int8 codes of tensor ``index`` (e.g. a batch for an input)."""
        q = self.tensors[index].quant
        return quantize(x, q.scale[0], q.zero_point[0]) if not q.per_channel else \
            quantize(x, q.scale, q.zero_point, axis=q.axis)

    def dequantize(self, index, q):
        """int8 / int32 codes -> real values of tensor ``index`` (per-channel aware)."""
        p = self.tensors[index].quant
        if p is None:
            raise ValueError(f"tensor {index} has no quantization parameters")
        if not p.per_channel:
            return dequantize(q, p.scale[0], p.zero_point[0])
        q = np.asarray(q)
        return dequantize(q, p.scale, p.zero_point, axis=p.axis % q.ndim)

    def _real_constant(self, t):
        if t.quant is None:
            return np.asarray(t.data)
        p = t.quant
        if p.per_channel:
            return dequantize(t.data, p.scale, p.zero_point, axis=p.axis)
        return dequantize(t.data, p.scale[0], p.zero_point[0])

    def _act_range(self, op):
        y = self.tensors[op.outputs[0]].quant
        return activation_range(op.options.get("activation", "NONE"),
                                float(np.float32(y.scale[0])), int(y.zero_point[0]))

    def _geometry(self, op, dilation=False):
        opt = op.options
        geo = dict(stride=_pair_option(opt, "stride", (1, 1)), padding=opt.get("padding", "VALID"))
        if dilation:
            geo["dilation"] = _pair_option(opt, "dilation", (1, 1))
        return geo

    def _operands(self, op, values, constant):
        """Input arrays of ``op``: batches for activations, ``constant(t)`` otherwise."""
        out = []
        for i in op.inputs:
            if i < 0:
                out.append(None)
            elif self.tensors[i].data is None:
                out.append(values[i])
            else:
                out.append(constant(self.tensors[i]))
        return out

    def _add_params(self, op):
        a, b, y = (self.tensors[i].quant for i in (*op.inputs, op.outputs[0]))
        return ops.add_params(a.scale[0], int(a.zero_point[0]), b.scale[0],
                              int(b.zero_point[0]), y.scale[0], int(y.zero_point[0]))

    def _run_int(self, op, values, rounding):
        t, kind = self.tensors, op.kind
        ins = self._operands(op, values, lambda tensor: np.asarray(tensor.data))
        y = t[op.outputs[0]]
        lo, hi = self._act_range(op)
        if kind in _CONV_KINDS or kind == "FULLY_CONNECTED":
            x, w = ins[0], ins[1]
            b = ins[2] if len(ins) > 2 else None
            xq, wq = t[op.inputs[0]].quant, t[op.inputs[1]].quant
            m0, shift = ops.output_multipliers(xq.scale[0], wq.scale, y.quant.scale[0],
                                               rounding=rounding)
            common = dict(z_in=int(xq.zero_point[0]), z_out=int(y.quant.zero_point[0]),
                          act_min=lo, act_max=hi, rounding=rounding)
            if kind == "FULLY_CONNECTED":
                out = ops.fully_connected(x.reshape(-1, w.shape[1]), w, b, m0, shift, **common)
                return out.reshape((x.shape[0],) + tuple(y.shape))
            geo = self._geometry(op, dilation=True)
            if kind == "CONV_2D":
                return ops.conv2d(x, w, b, m0, shift, **geo, **common)
            return ops.depthwise_conv2d(x, w, b, m0, shift,
                                        depth_multiplier=w.shape[3] // x.shape[3],
                                        **geo, **common)
        if kind in _POOL_KINDS:
            pool = ops.average_pool2d if kind == "AVERAGE_POOL_2D" else ops.max_pool2d
            return pool(ins[0], _pair_option(op.options, "filter", None), **self._geometry(op),
                        act_min=lo, act_max=hi)
        if kind == "ADD":
            return ops.add(ins[0], ins[1], self._add_params(op), lo, hi)
        return ops.reshape(ins[0], y.shape)

    def _run_float(self, op, values):
        t, kind = self.tensors, op.kind
        ins = self._operands(op, values, self._real_constant)
        y = t[op.outputs[0]]
        lo, hi = _FLOAT_ACTIVATIONS[op.options.get("activation", "NONE")]
        if kind in _CONV_KINDS or kind == "FULLY_CONNECTED":
            x, w = ins[0], ins[1]
            b = ins[2] if len(ins) > 2 and ins[2] is not None else 0.0
            if kind == "FULLY_CONNECTED":
                out = x.reshape(-1, w.shape[1]) @ w.T + b
            else:
                kh, kw = w.shape[1:3]
                patches = ops.im2col(x, (kh, kw), pad_value=0.0,
                                     **self._geometry(op, dilation=True))
                if kind == "CONV_2D":
                    out = patches @ w.reshape(w.shape[0], -1).T + b
                else:
                    c, n = x.shape[3], w.shape[3]
                    taps = patches.reshape(-1, kh * kw, c)[:, :, np.arange(n) // (n // c)]
                    out = np.einsum("mtn,tn->mn", taps, w.reshape(kh * kw, n)) + b
            out = out.reshape((x.shape[0],) + tuple(y.shape))
        elif kind in _POOL_KINDS:
            out = self._float_pool(op, ins[0])
        elif kind == "ADD":
            out = ins[0] + ins[1]
        else:
            out = ins[0].reshape((ins[0].shape[0],) + tuple(y.shape))
        return np.clip(out, lo, hi)

    def _float_pool(self, op, x):
        (fh, fw), geo = _pair_option(op.options, "filter", None), self._geometry(op)
        patches = ops.im2col(x, (fh, fw), pad_value=np.nan, **geo)
        patches = patches.reshape(-1, fh * fw, x.shape[3])
        if op.kind == "MAX_POOL_2D":
            out = np.nanmax(patches, axis=1)
        else:
            out = np.nanmean(patches, axis=1)
        oh = ops.conv_geometry(x.shape[1], fh, geo["stride"][0], geo["padding"])[0]
        return out.reshape(x.shape[0], oh, -1, x.shape[3])
