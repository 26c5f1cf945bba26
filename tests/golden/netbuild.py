"""Random int8 networks for the tests, and a LiteRT reference runner.

Weights, biases, scales and zero points are drawn at random; requantization multipliers
``s_in * s_w / s_out`` are drawn on a log scale so that one layer covers many shifts.
"""

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from golden.graph import Network, Op, QuantParams, Tensor
from golden.ops import conv_geometry


class Builder:
    """Append tensors and operators; every method returns the new output tensor index."""

    def __init__(self, rng):
        self.rng = rng
        self.tensors = []
        self.ops = []
        self.inputs = []

    def _tensor(self, name, shape, dtype="int8", quant=None, data=None):
        self.tensors.append(Tensor(name, tuple(shape), dtype, quant, data))
        return len(self.tensors) - 1

    def _act_quant(self, scale=None, zp=None):
        scale = float(self.rng.uniform(0.01, 0.1)) if scale is None else scale
        zp = int(self.rng.integers(-100, 100)) if zp is None else zp
        return QuantParams(scale, zp)

    def input(self, shape, scale=None, zp=None):
        i = self._tensor(f"input{len(self.inputs)}", shape, quant=self._act_quant(scale, zp))
        self.inputs.append(i)
        return i

    def shape(self, i):
        return self.tensors[i].shape

    def scale(self, i):
        return float(self.tensors[i].quant.scale[0])

    def _weights(self, kind, x, w_shape, n, axis, per_channel, log2_mult, out_scale, out_zp,
                 bias):
        rng = self.rng
        w = rng.integers(-127, 128, w_shape, endpoint=False).astype(np.int8)
        if per_channel:
            mult = 2.0 ** rng.uniform(*log2_mult, n)
        else:
            mult = np.array([2.0 ** rng.uniform(*log2_mult)])
        yq = self._act_quant(out_scale, out_zp)
        s_w = mult * yq.scale[0] / self.scale(x)
        wi = self._tensor(f"{kind.lower()}_w{len(self.ops)}", w_shape,
                          quant=QuantParams(s_w, 0, axis), data=w)
        bi = -1
        if bias:
            k = int(np.prod(w_shape)) // n
            b = rng.integers(-(2**14) * k // 4, (2**14) * k // 4 + 1, n).astype(np.int32)
            bi = self._tensor(f"{kind.lower()}_b{len(self.ops)}", (n,), "int32",
                              QuantParams(self.scale(x) * np.broadcast_to(s_w, (n,)), 0), b)
        return wi, bi, yq

    def conv2d(self, x, n, kernel=3, stride=1, padding="SAME", dilation=1,
               activation="NONE", per_channel=True, log2_mult=(-14, -6), out_scale=None,
               out_zp=None, bias=True):
        h, w_, c = self.shape(x)
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        dh, dw = (dilation, dilation) if np.isscalar(dilation) else dilation
        wi, bi, yq = self._weights("CONV_2D", x, (n, kh, kw, c), n, 0, per_channel,
                                   log2_mult, out_scale, out_zp, bias)
        oh = conv_geometry(h, kh, sh, padding, dh)[0]
        ow = conv_geometry(w_, kw, sw, padding, dw)[0]
        y = self._tensor(f"conv{len(self.ops)}", (oh, ow, n), quant=yq)
        self.ops.append(Op("CONV_2D", [x, wi, bi], [y],
                           dict(stride=(sh, sw), padding=padding, dilation=(dh, dw),
                                activation=activation)))
        return y

    def depthwise(self, x, depth_multiplier=1, kernel=3, stride=1, padding="SAME",
                  dilation=1, activation="NONE", per_channel=True, log2_mult=(-10, -4),
                  out_scale=None, out_zp=None, bias=True):
        h, w_, c = self.shape(x)
        n = c * depth_multiplier
        kh, kw = (kernel, kernel) if np.isscalar(kernel) else kernel
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        dh, dw = (dilation, dilation) if np.isscalar(dilation) else dilation
        wi, bi, yq = self._weights("DEPTHWISE_CONV_2D", x, (1, kh, kw, n), n, 3, per_channel,
                                   log2_mult, out_scale, out_zp, bias)
        oh = conv_geometry(h, kh, sh, padding, dh)[0]
        ow = conv_geometry(w_, kw, sw, padding, dw)[0]
        y = self._tensor(f"dw{len(self.ops)}", (oh, ow, n), quant=yq)
        self.ops.append(Op("DEPTHWISE_CONV_2D", [x, wi, bi], [y],
                           dict(stride=(sh, sw), padding=padding, dilation=(dh, dw),
                                depth_multiplier=depth_multiplier, activation=activation)))
        return y

    def fully_connected(self, x, n, activation="NONE", per_channel=False,
                        log2_mult=(-14, -6), out_scale=None, out_zp=None, bias=True):
        k = int(np.prod(self.shape(x)))
        wi, bi, yq = self._weights("FULLY_CONNECTED", x, (n, k), n, 0, per_channel,
                                   log2_mult, out_scale, out_zp, bias)
        y = self._tensor(f"fc{len(self.ops)}", (n,), quant=yq)
        self.ops.append(Op("FULLY_CONNECTED", [x, wi, bi], [y], dict(activation=activation)))
        return y

    def pool(self, kind, x, filter_size=2, stride=2, padding="VALID", activation="NONE"):
        h, w_, c = self.shape(x)
        fh, fw = (filter_size, filter_size) if np.isscalar(filter_size) else filter_size
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        oh = conv_geometry(h, fh, sh, padding)[0]
        ow = conv_geometry(w_, fw, sw, padding)[0]
        q = self.tensors[x].quant
        y = self._tensor(f"pool{len(self.ops)}", (oh, ow, c),
                         quant=QuantParams(q.scale.copy(), q.zero_point.copy()))
        self.ops.append(Op(kind, [x], [y], dict(filter=(fh, fw), stride=(sh, sw),
                                               padding=padding, activation=activation)))
        return y

    def add(self, a, b, activation="NONE", out_scale=None, out_zp=None):
        sa, sb = self.shape(a), self.shape(b)
        shape = np.broadcast_shapes((1, *sa) if self.tensors[a].data is None else sa,
                                    (1, *sb) if self.tensors[b].data is None else sb)[1:]
        y = self._tensor(f"add{len(self.ops)}", shape, quant=self._act_quant(out_scale, out_zp))
        self.ops.append(Op("ADD", [a, b], [y], dict(activation=activation)))
        return y

    def constant(self, shape, scale=None, zp=None):
        data = self.rng.integers(-128, 128, shape).astype(np.int8)
        return self._tensor(f"const{len(self.tensors)}", shape, quant=self._act_quant(scale, zp),
                            data=data)

    def reshape(self, x, shape):
        q = self.tensors[x].quant
        y = self._tensor(f"reshape{len(self.ops)}", shape,
                         quant=QuantParams(q.scale.copy(), q.zero_point.copy()))
        self.ops.append(Op("RESHAPE", [x], [y]))
        return y

    def build(self, outputs, name="test"):
        return Network(self.tensors, self.ops, list(self.inputs), list(outputs), name)


def litert_run(model, inputs):
    """Run a .tflite model (bytes) in LiteRT's reference kernels on a batch.

    ``inputs`` maps input tensor index -> batch. Returns every tensor, by index.
    """
    it = Interpreter(model_content=model,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                     experimental_preserve_all_tensors=True)
    for i, x in inputs.items():
        it.resize_tensor_input(i, list(x.shape))
    it.allocate_tensors()
    for i, x in inputs.items():
        it.set_tensor(i, x)
    it.invoke()
    return {d["index"]: it.get_tensor(d["index"]) for d in it.get_tensor_details()}


def random_batch(rng, shape, n=16):
    """Full-range int8 inputs plus the corner cases: one sample all -128, one all 127."""
    x = rng.integers(-128, 128, (n, *shape)).astype(np.int8)
    x[0] = -128
    x[1] = 127
    return x
