"""A quantized network: a small graph of golden integer ops, with a float reference beside it.

Data model shared by the TFLite importer/exporter, the PTQ toolkit and the hardware
compiler. Tensors are indexed by position in ``Network.tensors``; for an imported model
that index is the TFLite tensor index. Layout is NHWC; convolution weights are
OHWI (TFLite's CONV_2D), depthwise weights 1HW(I*M) (TFLite's DEPTHWISE_CONV_2D),
fully-connected weights (N, K) (TFLite's FULLY_CONNECTED).
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["QuantParams", "Tensor", "Op", "Network", "OPS"]

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


@dataclass
class Network:
    tensors: list
    ops: list
    inputs: list
    outputs: list
    name: str = "network"
