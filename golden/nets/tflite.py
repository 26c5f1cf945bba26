"""Float32 ``.tflite`` models as :class:`~golden.nets.FloatNet`, and back.

A user brings a trained float model as a ``.tflite`` file; :func:`load_float_tflite`
turns it into the float network that ``golden.ptq`` quantizes and ``golden.qat``
fine-tunes. Supported, in subgraph 0 with one input and one output:

==================  =====================================================================
operator            accepted form
==================  =====================================================================
CONV_2D             OHWI weights, optional bias, any stride, SAME / VALID, dilation 1
DEPTHWISE_CONV_2D   1HWC weights (depth multiplier 1), optional bias, dilation 1
FULLY_CONNECTED     (N, K) weights, optional bias; a non-flat input is flattened first
ADD                 two activations of the same shape
AVERAGE_POOL_2D,    filter = stride with no padding, tiling the input exactly
MAX_POOL_2D
RESHAPE             to (batch, K): a flatten
==================  =====================================================================

with fused NONE, RELU or RELU6 activations. A standalone RELU / RELU6 after such a layer or
ADD is fused into it, and a MEAN over height and width (global average pooling, as
Keras's ``GlobalAveragePooling2D`` converts) becomes an average pool of the whole map.
Anything else (another operator, a quantized or float16 model, a broadcasting ADD,
overlapping pooling) is refused with one :class:`~golden.tflite_io.TFLiteError` naming
the operator or tensor.

:func:`to_float_tflite_bytes` writes a float network (batch norms folded) in the same
form, so the shipped networks have float reference models that LiteRT runs.
"""

import os
import re

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from ..tflite_io import (
    _ACTIVATION_NAMES,
    _FILE_IDENTIFIER,
    _OPERATOR_NAMES,
    _PADDING_NAMES,
    _TYPE_NAMES,
    TFLiteError,
    _parse,
    _text,
)
from .model import INPUT, FloatNet, Node

__all__ = ["from_float_tflite_bytes", "load_float_tflite", "to_float_tflite_bytes",
           "save_float_tflite"]


_SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D",
              "MAX_POOL_2D", "RESHAPE", "MEAN", "RELU", "RELU6")


class _Reader:
    """State of one import: tensors, their node names and the nodes built so far."""

    def __init__(self, model):
        if not model.subgraphs:
            raise TFLiteError("model has no subgraphs")
        self.sg = model.subgraphs[0]
        self.buffers = model.buffers or []
        self.tensors = self.sg.tensors or []
        self.names = {}  # tensor index -> node name (or INPUT)
        self.shapes = {}  # node name -> per-sample shape
        self.nodes = []
        self.used = {INPUT}

    def where(self, index):
        return f"tensor {index} {_text(self.tensors[index].name)!r}"

    def check_float(self, index):
        t = self.tensors[index]
        if t.type != fb.TensorType.FLOAT32:
            kind = _TYPE_NAMES.get(t.type, str(t.type))
            raise TFLiteError(f"{self.where(index)} is {kind}: golden.ptq and golden.qat take a "
                              f"float32 model (an int8 model runs as it is)")

    def constant(self, index, where):
        if not 0 <= index < len(self.tensors):
            raise TFLiteError(f"{where}: tensor index {index} out of range")
        self.check_float(index)
        t = self.tensors[index]
        raw = self.buffers[t.buffer].data if 0 <= t.buffer < len(self.buffers) else None
        if raw is None or len(raw) == 0:
            raise TFLiteError(f"{where}: {self.where(index)} must be a constant")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        if len(raw) != 4 * int(np.prod(shape)):
            raise TFLiteError(f"{where}: {self.where(index)} holds {len(raw)} bytes, shape "
                              f"{list(shape)} needs {4 * int(np.prod(shape))}")
        data = np.frombuffer(bytes(raw), dtype="<f4").reshape(shape).astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise TFLiteError(f"{where}: {self.where(index)} holds inf or nan")
        return data

    def activation(self, index, where):
        if index not in self.names:
            raise TFLiteError(f"{where}: input {self.where(index)} is not the model input or "
                              f"an earlier operator's output")
        return self.names[index]

    def unique(self, text):
        """A node name from ``text``: no dots (parameter keys are "node.param"), unique."""
        base = re.sub(r"[^A-Za-z0-9_/;:-]", "_", text)
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def add(self, index, kind, inputs, params=None, options=None, shape=None, text=None):
        """Append a node computing tensor ``index`` (None: a node the file has implicitly,
        named ``text``)."""
        if index is not None:
            text = _text(self.tensors[index].name) or f"t{index}"
        name = self.unique(text)
        self.nodes.append(Node(name, kind, inputs, params or {}, options or {}))
        if index is not None:
            self.names[index] = name
        self.shapes[name] = tuple(shape)
        return name


def _activation(options, where):
    code = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
    name = _ACTIVATION_NAMES.get(code, str(code))
    if name not in ("NONE", "RELU", "RELU6"):
        raise TFLiteError(f"{where}: unsupported fused activation {name}")
    return name


def _window(o, where):
    padding = _PADDING_NAMES.get(o.padding, str(o.padding))
    if padding not in ("SAME", "VALID"):
        raise TFLiteError(f"{where}: unsupported padding {padding}")
    return (int(o.strideH), int(o.strideW)), padding


def _conv_out(shape, kernel, stride, padding, where):
    out = []
    for size, k, s in zip(shape[:2], kernel, stride, strict=True):
        if s < 1:
            raise TFLiteError(f"{where}: strides must be positive, not {stride}")
        o = -(-size // s) if padding == "SAME" else (size - k) // s + 1
        if o < 1:
            raise TFLiteError(f"{where}: a {kernel} window does not fit the input {shape}")
        out.append(o)
    return tuple(out)


def _weighted(r, kind, op, where):
    ins = [int(i) for i in op.inputs or []]
    if len(ins) not in (2, 3) or ins[1] < 0:
        raise TFLiteError(f"{where}: needs an input, weights and an optional bias")
    x = r.activation(ins[0], where)
    shape = r.shapes[x]
    w = r.constant(ins[1], where)
    o = op.builtinOptions
    if kind != "FULLY_CONNECTED" and o is None:
        raise TFLiteError(f"{where}: missing builtin options")
    options = {"activation": _activation(o, where)}
    if kind == "FULLY_CONNECTED":
        if w.ndim != 2:
            raise TFLiteError(f"{where}: weights must be (N, K), not {list(w.shape)}")
        if o is not None and o.weightsFormat != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise TFLiteError(f"{where}: shuffled weights are not supported")
        if int(np.prod(shape)) != w.shape[1]:
            raise TFLiteError(f"{where}: input of shape {list(shape)} does not hold K = "
                              f"{w.shape[1]} values per sample")
        if len(shape) != 1:
            x = r.add(None, "reshape", [x], shape=(w.shape[1],), text=f"{x}/flat")
        n, out = w.shape[0], (w.shape[0],)
        node_kind = "fc"
    else:
        if len(shape) != 3 or w.ndim != 4:
            raise TFLiteError(f"{where}: input must be (H, W, C) and weights 4-D, not "
                              f"{list(shape)} and {list(w.shape)}")
        if (int(o.dilationHFactor), int(o.dilationWFactor)) != (1, 1):
            raise TFLiteError(f"{where}: dilated convolutions are not supported")
        stride, padding = _window(o, where)
        if kind == "CONV_2D":
            if w.shape[3] != shape[2]:
                raise TFLiteError(f"{where}: weights must have {shape[2]} input channels, not "
                                  f"{w.shape[3]}")
            n, node_kind = w.shape[0], "conv"
        else:
            if w.shape[0] != 1 or w.shape[3] != shape[2]:
                raise TFLiteError(f"{where}: only depth multiplier 1 is supported: weights "
                                  f"must be (1, KH, KW, {shape[2]}), not {list(w.shape)}")
            n, node_kind = w.shape[3], "dwconv"
        out = (*_conv_out(shape, w.shape[1:3], stride, padding, where), n)
        options.update(stride=stride, padding=padding)
    if len(ins) == 3 and ins[2] >= 0:
        b = r.constant(ins[2], where)
        if b.shape != (n,):
            raise TFLiteError(f"{where}: bias must have shape ({n},), not {list(b.shape)}")
    else:
        b = np.zeros(n)
    return r.add(op.outputs[0], node_kind, [x], {"w": w, "b": b}, options, out)


def _operator(r, kind, op, where):
    outs = [int(i) for i in op.outputs or []]
    if len(outs) != 1 or not 0 <= outs[0] < len(r.tensors):
        raise TFLiteError(f"{where}: must have exactly one output tensor")
    r.check_float(outs[0])
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return _weighted(r, kind, op, where)
    ins = [int(i) for i in op.inputs or []]
    o = op.builtinOptions
    if kind in ("RELU", "RELU6"):
        return _fuse_activation(r, kind, ins, outs[0], where)
    if kind == "MEAN":
        return _global_mean(r, ins, outs[0], o, where)
    if kind == "ADD":
        if len(ins) != 2:
            raise TFLiteError(f"{where}: needs two inputs")
        a, b = (r.activation(i, where) for i in ins)
        if r.shapes[a] != r.shapes[b]:
            raise TFLiteError(f"{where}: inputs of shapes {list(r.shapes[a])} and "
                              f"{list(r.shapes[b])}: broadcasting is not supported")
        return r.add(outs[0], "add", [a, b], options={"activation": _activation(o, where)},
                     shape=r.shapes[a])
    if not ins:
        raise TFLiteError(f"{where}: needs an input")
    x = r.activation(ins[0], where)
    shape = r.shapes[x]
    if kind == "RESHAPE":
        t = r.tensors[outs[0]]
        out = tuple(int(d) for d in (t.shape if t.shape is not None else ()))[1:]
        if len(out) != 1 or out[0] != int(np.prod(shape)):
            raise TFLiteError(f"{where}: only a flatten to (batch, {int(np.prod(shape))}) is "
                              f"supported, not output shape {list(t.shape)}")
        return r.add(outs[0], "reshape", [x], shape=out)
    if o is None:
        raise TFLiteError(f"{where}: missing builtin options")
    if _activation(o, where) != "NONE":
        raise TFLiteError(f"{where}: a fused activation on pooling is not supported")
    stride, padding = _window(o, where)
    size = (int(o.filterHeight), int(o.filterWidth))
    if len(shape) != 3 or size != stride or shape[0] % size[0] or shape[1] % size[1]:
        raise TFLiteError(f"{where}: only pooling with filter = stride that tiles the input "
                          f"exactly is supported, not filter {size} stride {stride} on "
                          f"{list(shape)}")
    out = (shape[0] // size[0], shape[1] // size[1], shape[2])
    return r.add(outs[0], "maxpool" if kind == "MAX_POOL_2D" else "avgpool", [x],
                 options={"size": size}, shape=out)


def _fuse_activation(r, kind, ins, out, where):
    """A standalone RELU / RELU6 joins the layer or ADD that feeds it, as TFLite fuses it."""
    if len(ins) != 1:
        raise TFLiteError(f"{where}: needs one input")
    x = r.activation(ins[0], where)
    src = next((n for n in r.nodes if n.name == x), None)
    if src is None or src.kind not in ("conv", "dwconv", "fc", "add") or \
            src.activation != "NONE" or \
            sum(1 for o in r.sg.operators or [] if ins[0] in list(o.inputs or [])) != 1:
        raise TFLiteError(f"{where}: only an activation on the single output of a conv, "
                          f"depthwise, fully-connected or ADD with none of its own is supported")
    src.options["activation"] = kind
    r.names[out] = x
    return x


def _global_mean(r, ins, out, o, where):
    """MEAN over height and width (global average pooling) as an average pool of the whole
    map, flattened unless ``keep_dims``."""
    if len(ins) != 2:
        raise TFLiteError(f"{where}: needs an input and an axis tensor")
    x = r.activation(ins[0], where)
    shape = r.shapes[x]
    t = r.tensors[ins[1]]
    raw = r.buffers[t.buffer].data if 0 <= t.buffer < len(r.buffers) else None
    if t.type != fb.TensorType.INT32 or raw is None or len(raw) == 0:
        raise TFLiteError(f"{where}: the axes must be a constant int32 tensor")
    axes = sorted(int(a) % 4 for a in np.frombuffer(bytes(raw), dtype="<i4"))
    if len(shape) != 3 or axes != [1, 2]:
        raise TFLiteError(f"{where}: only a mean over height and width of an (H, W, C) "
                          f"tensor is supported, not axes {axes} of {list(shape)}")
    keep = bool(getattr(o, "keepDims", False))
    name = r.add(out if keep else None, "avgpool", [x], options={"size": shape[:2]},
                 shape=(1, 1, shape[2]), text=f"{x}/mean")
    if keep:
        return name
    return r.add(out, "reshape", [name], shape=(shape[2],))


def from_float_tflite_bytes(data, name=None):
    """Parse a float32 .tflite flatbuffer into a :class:`FloatNet` (subgraph 0).

    Parameters
    ----------
    data : bytes
    name : str, optional
        Name of the network (default: the subgraph's name, else ``"model"``).

    Raises
    ------
    TFLiteError
        Malformed bytes, a non-float32 tensor, an unsupported operator or form (see the
        module notes), more than one input or output.
    """
    model = _parse(data)
    try:
        return _float_net(model, name)
    except TFLiteError:
        raise
    except ValueError as e:
        raise TFLiteError(str(e)) from None
    except (TypeError, AttributeError, IndexError, KeyError, OverflowError) as e:
        raise TFLiteError(f"malformed .tflite file: {e}") from None


def _float_net(model, name):
    r = _Reader(model)
    sg = r.sg
    inputs, outputs = list(sg.inputs or []), list(sg.outputs or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise TFLiteError(f"model must have one input and one output, not {len(inputs)} and "
                          f"{len(outputs)}")
    i = int(inputs[0])
    r.check_float(i)
    shape = tuple(int(d) for d in (r.tensors[i].shape if r.tensors[i].shape is not None else ()))
    if len(shape) not in (2, 4) or shape[0] not in (1, -1) or min(shape[1:]) < 1:
        raise TFLiteError(f"{r.where(i)}: input shape must be (1, H, W, C) or (1, K), not "
                          f"{list(shape)}")
    r.names[i] = INPUT
    r.shapes[INPUT] = shape[1:]
    codes = model.operatorCodes or []
    for k, op in enumerate(sg.operators or []):
        if not 0 <= op.opcodeIndex < len(codes):
            raise TFLiteError(f"op {k}: opcode index {op.opcodeIndex} out of range")
        code = flatbuffer_utils.get_builtin_code_from_operator_code(codes[op.opcodeIndex])
        kind = _OPERATOR_NAMES.get(code, f"builtin code {code}")
        if kind == "CUSTOM":
            kind = f"CUSTOM {_text(codes[op.opcodeIndex].customCode)!r}"
        if kind not in _SUPPORTED:
            hint = ""
            if kind == "SOFTMAX" and k == len(sg.operators) - 1:
                hint = " (a final SOFTMAX does not change the top-1: convert without it)"
            raise TFLiteError(f"unsupported operator {kind} (op {k}); a float model may use "
                              f"{', '.join(_SUPPORTED)}{hint}")
        _operator(r, kind, op, f"op {k} {kind}")
    out = int(outputs[0])
    if not r.nodes or r.names.get(out) != r.nodes[-1].name:
        raise TFLiteError(f"the model output {r.where(out)} must be the last operator's output")
    return FloatNet(name or _text(sg.name) or "model", shape[1:], r.nodes)


def load_float_tflite(path):
    """Read a float32 .tflite file into a :class:`FloatNet` named after the file; see
    :func:`from_float_tflite_bytes` for the errors raised."""
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    return from_float_tflite_bytes(data, os.path.splitext(os.path.basename(path))[0])


# -- export ----------------------------------------------------------------------------

_OPCODES = {"conv": "CONV_2D", "dwconv": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED",
            "add": "ADD", "maxpool": "MAX_POOL_2D", "avgpool": "AVERAGE_POOL_2D",
            "reshape": "RESHAPE"}


def to_float_tflite_bytes(net):
    """Serialize a float network as a float32 .tflite flatbuffer.

    Batch norms are folded into the layers before them first (as a converter does).
    Activations get shape ``[1, ...]`` and signature ``[-1, ...]``.

    Returns
    -------
    bytes
    """
    from ..ptq.transforms import fold_batch_norm, output_shapes

    if any(n.kind == "bn" for n in net.nodes):
        net = fold_batch_norm(net)
    shapes = output_shapes(net)
    buffers, tensors, index = [fb.BufferT()], [], {}

    def activation(name):
        index[name] = len(tensors)
        tensors.append(fb.TensorT(type=fb.TensorType.FLOAT32, name=name.encode(), buffer=0,
                                  shape=[1, *shapes[name]], shapeSignature=[-1, *shapes[name]]))
        return index[name]

    def constant(name, value):
        data = np.ascontiguousarray(value, dtype="<f4")
        tensors.append(fb.TensorT(type=fb.TensorType.FLOAT32, name=name.encode(),
                                  buffer=len(buffers), shape=list(value.shape)))
        buffers.append(fb.BufferT(data=np.frombuffer(data.tobytes(), dtype=np.uint8)))
        return len(tensors) - 1

    activation(INPUT)
    codes, code_index, operators = [], {}, []
    for n in net.nodes:
        kind = _OPCODES[n.kind]
        if kind not in code_index:
            code = getattr(fb.BuiltinOperator, kind)
            code_index[kind] = len(codes)
            codes.append(fb.OperatorCodeT(deprecatedBuiltinCode=min(code, 127),
                                          builtinCode=code, version=1))
        ins = [index[i] for i in n.inputs]
        act = getattr(fb.ActivationFunctionType, n.activation)
        o = n.options
        if n.kind in ("conv", "dwconv", "fc"):
            ins += [constant(f"{n.name}/weights", n.params["w"]),
                    constant(f"{n.name}/bias", n.params["b"])]
        if n.kind == "conv":
            opts = (fb.BuiltinOptions.Conv2DOptions, fb.Conv2DOptionsT(
                padding=getattr(fb.Padding, o["padding"]), strideH=o["stride"][0],
                strideW=o["stride"][1], fusedActivationFunction=act, dilationHFactor=1,
                dilationWFactor=1))
        elif n.kind == "dwconv":
            opts = (fb.BuiltinOptions.DepthwiseConv2DOptions, fb.DepthwiseConv2DOptionsT(
                padding=getattr(fb.Padding, o["padding"]), strideH=o["stride"][0],
                strideW=o["stride"][1], depthMultiplier=1, fusedActivationFunction=act,
                dilationHFactor=1, dilationWFactor=1))
        elif n.kind == "fc":
            opts = (fb.BuiltinOptions.FullyConnectedOptions,
                    fb.FullyConnectedOptionsT(fusedActivationFunction=act))
        elif n.kind == "add":
            opts = (fb.BuiltinOptions.AddOptions, fb.AddOptionsT(fusedActivationFunction=act))
        elif n.kind in ("maxpool", "avgpool"):
            (fh, fw) = o["size"]
            opts = (fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptionsT(
                padding=fb.Padding.VALID, strideH=fh, strideW=fw, filterHeight=fh,
                filterWidth=fw))
        else:
            opts = (fb.BuiltinOptions.ReshapeOptions,
                    fb.ReshapeOptionsT(newShape=[-1, *shapes[n.name]]))
        op = fb.OperatorT(opcodeIndex=code_index[kind], inputs=ins,
                          outputs=[activation(n.name)])
        op.builtinOptionsType, op.builtinOptions = opts
        operators.append(op)
    subgraph = fb.SubGraphT(tensors=tensors, inputs=[0], outputs=[index[net.output]],
                            operators=operators, name=net.name.encode())
    model = fb.ModelT(version=3, operatorCodes=codes, subgraphs=[subgraph],
                      description=b"qmac float reference", buffers=buffers)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def save_float_tflite(net, path):
    """Write :func:`to_float_tflite_bytes` of ``net`` to ``path``."""
    data = to_float_tflite_bytes(net)
    with open(os.fspath(path), "wb") as f:
        f.write(data)


def main(argv=None):
    """``python -m golden.nets.tflite``: write a shipped network as a float32 .tflite."""
    import sys

    from ..cli import ArgumentParser
    from .zoo import MODELS, load

    p = ArgumentParser(prog="python -m golden.nets.tflite",
                       description="Write a shipped reference network (batch norms folded) "
                                   "as a float32 .tflite file, the form a user's own float "
                                   "model takes for golden.ptq and golden.qat.")
    p.add_argument("--model", choices=MODELS, required=True, help="network")
    p.add_argument("--out", required=True, metavar="MODEL.tflite", help="file to write")
    args = p.parse_args(argv)
    try:
        save_float_tflite(load(args.model), args.out)
    except (ValueError, OSError) as e:
        print(f"golden.nets.tflite: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.model}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
