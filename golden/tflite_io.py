"""Read and write int8 ``.tflite`` models as :class:`golden.graph.Network`.

Import takes subgraph 0 of a flatbuffer model; tensor indices of the ``Network`` are the
TFLite tensor indices. Activation shapes lose their leading batch dimension (which must
be 1 in the file); constants keep their full shape. Export writes the inverse: activations
get shape ``[1, ...]`` with signature ``[-1, ...]`` so an interpreter can resize the batch,
constants get their own buffers, scales are float32 and per-channel parameters carry
``quantized_dimension``. Only the operators in :data:`golden.graph.OPS` are supported.
"""

import os

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from .graph import OPS, Network, Op, QuantParams, Tensor

__all__ = ["TFLiteError", "from_tflite_bytes", "load_tflite", "to_tflite_bytes", "save_tflite"]


class TFLiteError(ValueError):
    """A .tflite file that is malformed or uses something the golden model does not run."""


def _enum_names(cls):
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_OPERATOR_NAMES = _enum_names(fb.BuiltinOperator)
_TYPE_NAMES = _enum_names(fb.TensorType)
_ACTIVATION_NAMES = _enum_names(fb.ActivationFunctionType)
_PADDING_NAMES = _enum_names(fb.Padding)
_DTYPES = {fb.TensorType.INT8: "int8", fb.TensorType.INT32: "int32"}
_TYPE_CODES = {name: code for code, name in _DTYPES.items()}

# Operator versions written on export: the int8 versions of each builtin, which every
# interpreter since TFLite 2.3 resolves.
_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2,
             "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "RESHAPE": 1}

_FILE_IDENTIFIER = b"TFL3"


# -- import ----------------------------------------------------------------------------


def _text(value):
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _quant_params(t, where):
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    if q.details is not None:
        raise TFLiteError(f"{where}: custom or blockwise quantization is not supported")
    scale = np.asarray(q.scale, dtype=np.float64)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], dtype=np.int64)
    try:
        return QuantParams(scale, zp, int(q.quantizedDimension))
    except ValueError as e:
        raise TFLiteError(f"{where}: {e}") from None


def _tensor(index, t, buffers):
    name = _text(t.name)
    where = f"tensor {index} {name!r}"
    type_name = _TYPE_NAMES.get(t.type, str(t.type))
    if t.type not in _DTYPES:
        raise TFLiteError(f"{where} is {type_name}; only int8 models are supported")
    if t.sparsity is not None:
        raise TFLiteError(f"{where}: sparse tensors are not supported")
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    dtype = _DTYPES[t.type]
    if not 0 <= t.buffer < len(buffers):
        raise TFLiteError(f"{where}: buffer index {t.buffer} out of range")
    raw = buffers[t.buffer].data
    quant = _quant_params(t, where)
    if raw is not None and len(raw) > 0:
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise TFLiteError(f"{where}: buffer holds {len(raw)} bytes, shape {list(shape)} "
                              f"needs {expected}")
        data = np.frombuffer(bytes(raw), dtype=np.dtype(dtype).newbyteorder("<"))
        return Tensor(name, shape, dtype, quant, data.astype(dtype).reshape(shape))
    if not shape or shape[0] != 1:
        raise TFLiteError(f"{where}: activation shape {list(shape)} must start with a batch "
                          f"dimension of 1")
    if t.shapeSignature is not None and any(int(d) < 0 for d in list(t.shapeSignature)[1:]):
        raise TFLiteError(f"{where}: dynamic dimensions {list(t.shapeSignature)} are not "
                          f"supported")
    return Tensor(name, shape[1:], dtype, quant)


def _activation(options, where):
    code = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
    name = _ACTIVATION_NAMES.get(code, str(code))
    if name not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        raise TFLiteError(f"{where}: unsupported fused activation {name}")
    return name


def _options(kind, o, where):
    opt = {"activation": _activation(o, where)} if kind != "RESHAPE" else {}
    if o is None:
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
            raise TFLiteError(f"{where}: missing builtin options")
        return opt
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opt["stride"] = (int(o.strideH), int(o.strideW))
        opt["padding"] = _PADDING_NAMES.get(o.padding, str(o.padding))
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        opt["dilation"] = (int(o.dilationHFactor), int(o.dilationWFactor))
    if kind == "DEPTHWISE_CONV_2D" and o.depthMultiplier:
        opt["depth_multiplier"] = int(o.depthMultiplier)
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opt["filter"] = (int(o.filterHeight), int(o.filterWidth))
    if kind == "FULLY_CONNECTED":
        if o.weightsFormat != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise TFLiteError(f"{where}: shuffled weights are not supported")
        if o.keepNumDims:
            opt["keep_num_dims"] = True
    if kind == "RESHAPE" and o.newShape is not None and len(o.newShape):
        opt["new_shape"] = tuple(int(d) for d in o.newShape)
    return opt


def _parse(data):
    data = bytes(data)
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise TFLiteError("not a .tflite model: missing the TFL3 file identifier")
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes is "malformed"
        raise TFLiteError(f"malformed or truncated .tflite file: {e}") from None


def from_tflite_bytes(data):
    """Parse an int8 .tflite flatbuffer into a validated :class:`Network` (subgraph 0).

    Raises
    ------
    TFLiteError
        Malformed or truncated bytes, non-int8 tensors ("tensor 0 'input' is FLOAT32; only
        int8 models are supported"), unsupported operators ("unsupported operator SOFTMAX
        (op 3)", the index of the operator in the subgraph) or inconsistent shapes.
    """
    model = _parse(data)
    try:
        return _network(model)
    except TFLiteError:
        raise
    except ValueError as e:  # NetworkError and friends: keep the message, one error type
        raise TFLiteError(str(e)) from None
    except (TypeError, AttributeError, IndexError, KeyError, OverflowError) as e:
        raise TFLiteError(f"malformed .tflite file: {e}") from None


def _network(model):
    if not model.subgraphs:
        raise TFLiteError("model has no subgraphs")
    sg = model.subgraphs[0]
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    tensors = [_tensor(i, t, buffers) for i, t in enumerate(sg.tensors or [])]
    op_list = []
    for k, o in enumerate(sg.operators or []):
        if not 0 <= o.opcodeIndex < len(codes):
            raise TFLiteError(f"op {k}: opcode index {o.opcodeIndex} out of range")
        code = flatbuffer_utils.get_builtin_code_from_operator_code(codes[o.opcodeIndex])
        kind = _OPERATOR_NAMES.get(code, f"builtin code {code}")
        if kind == "CUSTOM":
            kind = f"CUSTOM {_text(codes[o.opcodeIndex].customCode)!r}"
        if kind not in OPS:
            raise TFLiteError(f"unsupported operator {kind} (op {k})")
        options = _options(kind, o.builtinOptions, f"op {k} {kind}")
        op_list.append(Op(kind, [int(i) for i in o.inputs or []],
                          [int(i) for i in o.outputs or []], options))
    net = Network(tensors, op_list, [int(i) for i in sg.inputs or []],
                  [int(i) for i in sg.outputs or []], _text(sg.name) or "network")
    return net.validate()


def load_tflite(path):
    """Read ``path`` (an int8 .tflite file) into a :class:`Network`; see
    :func:`from_tflite_bytes` for the errors raised."""
    with open(os.fspath(path), "rb") as f:
        return from_tflite_bytes(f.read())


# -- export ----------------------------------------------------------------------------


def _quantization(q):
    if q is None:
        return None
    return fb.QuantizationParametersT(
        scale=np.asarray(q.scale, dtype=np.float32),
        zeroPoint=np.asarray(q.zero_point, dtype=np.int64),
        quantizedDimension=int(q.axis) if q.per_channel else 0,
    )


def _builtin_options(op):
    opt, kind = op.options, op.kind
    act = getattr(fb.ActivationFunctionType, opt.get("activation", "NONE"))
    stride = opt.get("stride", (1, 1))
    padding = getattr(fb.Padding, opt.get("padding", "VALID"))
    if kind == "CONV_2D":
        dh, dw = opt.get("dilation", (1, 1))
        return fb.BuiltinOptions.Conv2DOptions, fb.Conv2DOptionsT(
            padding=padding, strideH=stride[0], strideW=stride[1],
            fusedActivationFunction=act, dilationHFactor=dh, dilationWFactor=dw)
    if kind == "DEPTHWISE_CONV_2D":
        dh, dw = opt.get("dilation", (1, 1))
        return fb.BuiltinOptions.DepthwiseConv2DOptions, fb.DepthwiseConv2DOptionsT(
            padding=padding, strideH=stride[0], strideW=stride[1],
            depthMultiplier=opt["depth_multiplier"], fusedActivationFunction=act,
            dilationHFactor=dh, dilationWFactor=dw)
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        fh, fw = opt["filter"]
        return fb.BuiltinOptions.Pool2DOptions, fb.Pool2DOptionsT(
            padding=padding, strideH=stride[0], strideW=stride[1], filterHeight=fh,
            filterWidth=fw, fusedActivationFunction=act)
    if kind == "FULLY_CONNECTED":
        return fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT(
            fusedActivationFunction=act, keepNumDims=bool(opt.get("keep_num_dims", False)))
    if kind == "ADD":
        return fb.BuiltinOptions.AddOptions, fb.AddOptionsT(fusedActivationFunction=act)
    return None


def _pair(value):
    return (value, value) if isinstance(value, (int, np.integer)) else tuple(value)


def to_tflite_bytes(network):
    """Serialize a :class:`Network` as an int8 .tflite flatbuffer (one subgraph).

    The network is validated first. Tensor indices and names are kept; activation tensors
    get a batch dimension of 1 (signature -1); RESHAPE writes ``new_shape`` as
    ``[-1, *output shape]`` so the batch can be resized.

    Returns
    -------
    bytes
    """
    network.validate()
    buffers = [fb.BufferT()]
    tensors = []
    for t in network.tensors:
        tt = fb.TensorT(type=_TYPE_CODES[t.dtype], name=t.name.encode("utf-8"),
                        quantization=_quantization(t.quant))
        if t.data is None:
            tt.shape = [1, *t.shape]
            tt.shapeSignature = [-1, *t.shape]
            tt.buffer = 0
        else:
            tt.shape = list(t.shape)
            data = np.ascontiguousarray(t.data, dtype=np.dtype(t.dtype).newbyteorder("<"))
            tt.buffer = len(buffers)
            buffers.append(fb.BufferT(data=np.frombuffer(data.tobytes(), dtype=np.uint8)))
        tensors.append(tt)
    codes, code_index, operators = [], {}, []
    for op in network.ops:
        if op.kind not in code_index:
            code = getattr(fb.BuiltinOperator, op.kind)
            code_index[op.kind] = len(codes)
            codes.append(fb.OperatorCodeT(deprecatedBuiltinCode=min(code, 127),
                                          builtinCode=code, version=_VERSIONS[op.kind]))
        o = fb.OperatorT(opcodeIndex=code_index[op.kind], inputs=list(op.inputs),
                         outputs=list(op.outputs))
        options = _builtin_options(_normalized(network, op))
        if op.kind == "RESHAPE":
            options = (fb.BuiltinOptions.ReshapeOptions, fb.ReshapeOptionsT(
                newShape=[-1, *network.tensors[op.outputs[0]].shape]))
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options
        operators.append(o)
    subgraph = fb.SubGraphT(tensors=tensors, inputs=list(network.inputs),
                            outputs=list(network.outputs), operators=operators,
                            name=network.name.encode("utf-8"))
    model = fb.ModelT(version=3, operatorCodes=codes, subgraphs=[subgraph],
                      description=b"qmac golden export", buffers=buffers)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def _normalized(network, op):
    """``op`` with options in the exact form the writer expects (pairs, depth multiplier)."""
    opt = dict(op.options)
    for key in ("stride", "dilation", "filter"):
        if key in opt:
            opt[key] = _pair(opt[key])
    if op.kind == "DEPTHWISE_CONV_2D" and "depth_multiplier" not in opt:
        x, w = (network.tensors[i] for i in op.inputs[:2])
        opt["depth_multiplier"] = w.shape[3] // x.shape[2]
    return Op(op.kind, op.inputs, op.outputs, opt)


def save_tflite(network, path):
    """Write :func:`to_tflite_bytes` of ``network`` to ``path``."""
    data = to_tflite_bytes(network)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
