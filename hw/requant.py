"""The requantizer: a stream of int32 accumulator vectors in, a stream of int8 vectors out.

Gateware twin of :func:`golden.requant.requantize`; ``docs/arithmetic.md`` explains how each
pipeline stage realizes ``../shared/ARITHMETIC.md``.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.arith import INT32_MAX, ROUNDINGS

__all__ = ["CHANNEL_PARAMS", "LAYER_PARAMS", "Requantizer"]

#: Per output channel: zero-point-folded bias, Q31 multiplier and its power-of-two exponent.
CHANNEL_PARAMS = data.StructLayout({
    "bias": signed(32),
    "m0": signed(32),
    "shift": signed(6),
})

#: Per layer: output zero point and the clamp range of the fused activation.
LAYER_PARAMS = data.StructLayout({
    "z_out": signed(8),
    "act_min": signed(8),
    "act_max": signed(8),
})

_LATENCY = {"double": 8, "single": 6}


class Requantizer(wiring.Component):
    """Requantize ``lanes`` accumulators per beat to int8, exactly as the golden model.

    Per lane: ``clamp(MultiplyByQuantizedMultiplier(acc + bias, m0, shift) + z_out, act_min,
    act_max)``. Inputs must satisfy the contract of :func:`golden.requant.requantize`:
    ``acc + bias`` fits int32, ``shift`` in [-31, 31] (``"double"``) or [-31, 30]
    (``"single"``), ``act_min <= act_max``; outside it the output is unspecified.

    The datapath is a pipeline of :attr:`latency` register stages, each with its own valid
    bit; a stage loads whenever it is empty or its beat moves on, so bubbles are squeezed
    out under backpressure and a full pipeline still accepts one beat per cycle while ``o``
    is ready. ``i.ready`` depends combinationally on ``o.ready``; ``o.valid`` and
    ``o.payload`` are registers.

    Parameters
    ----------
    lanes : int
        Accumulators per beat, 1..64 (the columns of the MAC array).
    acc_width : int
        Width of the accumulators, 16..32; they are sign-extended to 32 bits.
    rounding : {"double", "single"}
        TFLite's default double rounding (SRDHM, then RoundingDivideByPOT) or
        ``TFLITE_SINGLE_ROUNDING``.

    Members
    -------
    i : :py:`In(stream.Signature(data.StructLayout({"acc": ..., "params": ..., "layer": ...})))`
        ``acc``: ``ArrayLayout(signed(acc_width), lanes)``; ``params``:
        ``ArrayLayout(CHANNEL_PARAMS, lanes)``, one record per lane; ``layer``:
        ``LAYER_PARAMS``.
    o : :py:`Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))`
        The int8 results, lane for lane.
    """

    def __init__(self, lanes, acc_width=32, rounding="double"):
        if not isinstance(lanes, int) or not 1 <= lanes <= 64:
            raise ValueError(f"Lane count must be an integer in 1..64, not {lanes!r}")
        if not isinstance(acc_width, int) or not 16 <= acc_width <= 32:
            raise ValueError(f"Accumulator width must be an integer in 16..32, "
                             f"not {acc_width!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"Rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                             f"not {rounding!r}")
        self._lanes = lanes
        self._acc_width = acc_width
        self._rounding = rounding
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(acc_width), lanes),
                "params": data.ArrayLayout(CHANNEL_PARAMS, lanes),
                "layer": LAYER_PARAMS,
            }))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def rounding(self):
        return self._rounding

    @property
    def latency(self):
        """Cycles from a beat's transfer on ``i`` to its presentation on ``o``, if not stalled."""
        return _LATENCY[self._rounding]

    def elaborate(self, platform):
        m = Module()
        depth = self.latency

        # load[k]: stage k takes the beat from stage k - 1 (or from ``i``) this cycle.
        valid = [Signal(name=f"valid_{k}") for k in range(depth)]
        load = [Signal(name=f"load_{k}") for k in range(depth)] + [self.o.ready]
        for k in reversed(range(depth)):
            m.d.comb += load[k].eq(~valid[k] | load[k + 1])
            with m.If(load[k]):
                m.d.sync += valid[k].eq(self.i.valid if k == 0 else valid[k - 1])
        m.d.comb += [
            self.i.ready.eq(load[0]),
            self.o.valid.eq(valid[-1]),
        ]

        def stage(k, name, shape, value):
            reg = Signal(shape, name=name)
            with m.If(load[k]):
                m.d.sync += reg.eq(value)
            return reg

        layer = [self.i.payload.layer]
        for k in range(depth - 1):
            layer.append(stage(k, f"layer_{k}", LAYER_PARAMS, layer[-1]))

        lane_fn = self._lane_double if self._rounding == "double" else self._lane_single
        for j in range(self._lanes):
            def lane_stage(k, name, shape, value, j=j):
                return stage(k, f"l{j}_{name}", shape, value)
            result = lane_fn(lane_stage, layer, self.i.payload.acc[j],
                             self.i.payload.params[j])
            m.d.comb += self.o.payload[j].eq(result)
        return m

    @staticmethod
    def _bias_add(stage, acc, params):
        # The contract guarantees that the sum fits int32: drop the carry bit.
        return stage(0, "total", signed(32), (acc + params.bias)[:32].as_signed())

    def _lane_double(self, stage, layer, acc, params):
        total = self._bias_add(stage, acc, params)
        shift = params.shift
        m0 = stage(0, "m0", signed(32), params.m0)
        left = stage(0, "left", unsigned(5), Mux(shift > 0, shift, 0))
        right = stage(0, "right", unsigned(5), Mux(shift < 0, -shift, 0))

        # acc * 2**left wraps in 32 bits, as the int32 multiply in C does.
        scaled = stage(1, "scaled", signed(32), (total << left)[:32].as_signed())
        m0 = stage(1, "m0_1", signed(32), m0)
        right = stage(1, "right_1", unsigned(5), right)

        # SRDHM: trunc((ab + nudge) / 2**31) == floor((ab + 2**30) / 2**31)
        #      == floor((floor(ab / 2**30) + 1) / 2), so only ab[30:] is kept and rounded.
        ab_hi = stage(2, "ab_hi", signed(34), (scaled * m0)[30:].as_signed())
        right = stage(2, "right_2", unsigned(5), right)

        # 2**31 only for INT32_MIN * INT32_MIN: the one saturation.
        high = (ab_hi + 1)[1:].as_signed()
        srdhm = stage(3, "srdhm", signed(32), Mux(high > INT32_MAX, INT32_MAX, high))
        right = stage(3, "right_3", unsigned(5), right)

        # RDBPOT, ties away from zero: (x + 2**(n-1) - (x < 0)) >> n for n > 0, x for n == 0.
        half = (Const(1, 32) << right)[1:]
        nudge = half - ((srdhm < 0) & right.any())
        rounded = stage(4, "rounded", signed(33), srdhm + nudge)
        right = stage(4, "right_4", unsigned(5), right)
        out = stage(5, "out", signed(32), rounded >> right)
        return self._output(stage, 6, layer, out)

    def _lane_single(self, stage, layer, acc, params):
        total = self._bias_add(stage, acc, params)
        m0 = stage(0, "m0", signed(32), params.m0)
        # t = 31 - shift; the rounding shifts by t - 1 first, then by 1.
        pre = stage(0, "pre", unsigned(6), 30 - params.shift)

        product = stage(1, "product", signed(64), total * m0)
        pre = stage(1, "pre_1", unsigned(6), pre)

        # floor((p + 2**(t-1)) / 2**t) == floor((floor(p / 2**(t-1)) + 1) / 2), and the result
        # is wrapped to int32, so 33 bits of floor(p / 2**(t-1)) are all that matter.
        scaled = stage(2, "scaled", signed(33), (product >> pre)[:33].as_signed())
        out = stage(3, "out", signed(32), (scaled + 1)[1:33].as_signed())
        return self._output(stage, 4, layer, out)

    @staticmethod
    def _output(stage, k, layer, out):
        params = layer[k]
        shifted = stage(k, "shifted", signed(33), out + params.z_out)
        params = layer[k + 1]
        clamped = Mux(shifted < params.act_min, params.act_min,
                      Mux(shifted > params.act_max, params.act_max, shifted))
        return stage(k + 1, "clamped", signed(8), clamped)
