"""The requantizer: a stream of int32 accumulator vectors in, a stream of int8 vectors out.

Gateware twin of :func:`golden.requant.requantize`; ``docs/arithmetic.md`` explains how each
pipeline stage realizes ``../shared/ARITHMETIC.md``.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.arith import INT32_MAX, ROUNDINGS

from .mul import LATENCY as MUL_LATENCY
from .mul import Multiplier, check_impl

__all__ = ["CHANNEL_PARAMS", "LAYER_PARAMS", "PIPELINES", "Requantizer"]

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

#: The 32 x 32 multiply of a lane as four 16 x 16 partial products (see
#: ``docs/arithmetic.md``): (a_lo, b_lo), (a_lo, b_hi), (a_hi, b_lo), (a_hi, b_hi), the high
#: halves signed.
PRODUCTS_PER_LANE = 4
_PRODUCT_LATENCY = MUL_LATENCY + 2
# Steps of the datapath (see docs/arithmetic.md): the input register, the steps before the
# multiply, and after it up to the output. Each step ends in a register in the "deep"
# pipeline.
_STEPS = {"double": 1 + 2 + _PRODUCT_LATENCY + 6, "single": 1 + 1 + _PRODUCT_LATENCY + 6}
#: The steps that end in a register, per pipeline and rounding; the others are merged into
#: the step after them. "compact" has no input register and merges the left shift into the
#: multiplier's operand stage and the byte and bit shifts of the single rounding: about one
#: carry chain or one shifter per stage, what a 30 MHz clock period holds on the iCE40 UP5K
#: (about 3 ns per LUT with its routing, 0.28 ns per carry).
_REGISTERED = {
    "deep": {r: tuple(range(n)) for r, n in _STEPS.items()},
    "compact": {"double": (1, 3, 4, 5, 6, 7, 8, 9, 11, 12),
                "single": (1, 2, 3, 4, 5, 7, 8, 10, 11)},
}
PIPELINES = tuple(_REGISTERED)


def _passes(lanes, units):
    return -(-lanes // units)


def input_pace(lanes, multipliers, pipeline, rounding):
    """Cycles between the beats a :class:`Requantizer` of these parameters takes when its
    ``o`` is always ready and each beat is offered on ``i`` for one cycle only: its
    :attr:`~Requantizer.passes` if its input register holds a beat for them (``"deep"``),
    None if it takes a beat at its last pass and needs it held on ``i`` until then."""
    if _REGISTERED[pipeline][rounding][0] != 0:
        return None
    return _passes(lanes, len(multipliers) // PRODUCTS_PER_LANE)


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
    multipliers : sequence of str or None
        How each 16 x 16 partial product is built (:class:`hw.mul.Multiplier`),
        ``PRODUCTS_PER_LANE`` per datapath unit, unit-major; None makes every one ``"dsp"``
        with one unit per lane. With fewer units than lanes (:attr:`units`), each beat
        goes through the units in :attr:`passes` consecutive cycles, lanes
        ``[p * units, (p + 1) * units)`` in pass p, and ``i`` takes a beat every
        :attr:`passes` cycles. The results do not depend on it.
    pipeline : {"deep", "compact"}
        ``"deep"`` registers every step of the datapath (12 stages with double rounding,
        11 with single) for fast clocks; ``"compact"`` merges steps (10 stages, 9 with
        single rounding) and keeps one layer record for all beats in flight (a beat whose
        record differs waits until the beats before it are past the clamp), for devices
        with few flip-flops (iCE40). The results do not depend on it.

    Members
    -------
    i : :py:`In(stream.Signature(data.StructLayout({"acc": ..., "params": ..., "layer": ...})))`
        ``acc``: ``ArrayLayout(signed(acc_width), lanes)``; ``params``:
        ``ArrayLayout(CHANNEL_PARAMS, lanes)``, one record per lane; ``layer``:
        ``LAYER_PARAMS``.
    o : :py:`Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))`
        The int8 results, lane for lane.
    """

    def __init__(self, lanes, acc_width=32, rounding="double", *, multipliers=None,
                 pipeline="deep"):
        if not isinstance(lanes, int) or not 1 <= lanes <= 64:
            raise ValueError(f"Lane count must be an integer in 1..64, not {lanes!r}")
        if not isinstance(acc_width, int) or not 16 <= acc_width <= 32:
            raise ValueError(f"Accumulator width must be an integer in 16..32, "
                             f"not {acc_width!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"Rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                             f"not {rounding!r}")
        if pipeline not in PIPELINES:
            raise ValueError(f"Pipeline must be one of {', '.join(map(repr, PIPELINES))}, "
                             f"not {pipeline!r}")
        self._pipeline = pipeline
        count = PRODUCTS_PER_LANE * lanes
        multipliers = ["dsp"] * count if multipliers is None else list(multipliers)
        if (len(multipliers) % PRODUCTS_PER_LANE or not 0 < len(multipliers) <= count):
            raise ValueError(f"multipliers must have {PRODUCTS_PER_LANE} x 1..{lanes} entries, "
                             f"not {len(multipliers)}")
        for impl in multipliers:
            check_impl(impl)
        self._multipliers = multipliers
        self._units = len(multipliers) // PRODUCTS_PER_LANE
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
    def multipliers(self):
        return tuple(self._multipliers)

    @property
    def pipeline(self):
        return self._pipeline

    @property
    def units(self):
        """Datapaths (multiplier sets) the lanes are computed in."""
        return self._units

    @property
    def passes(self):
        """Cycles a beat spends going through the units: ``ceil(lanes / units)``."""
        return _passes(self._lanes, self._units)

    @property
    def latency(self):
        """Cycles from a beat's transfer on ``i`` to its presentation on ``o``, if not stalled."""
        registered = _REGISTERED[self._pipeline][self._rounding]
        # With an input register a beat is taken at its first pass, without at its last.
        return len(registered) + (self.passes - 1 if registered[0] == 0 else 0)

    def elaborate(self, platform):
        m = Module()
        registered = _REGISTERED[self._pipeline][self._rounding]
        depth = len(registered)
        units, passes = self._units, self.passes
        # Step n of the datapath is computed in register stage reg_of[n]: the first stage
        # whose register ends at or after it.
        reg_of = [next(k for k, r in enumerate(registered) if r >= n)
                  for n in range(_STEPS[self._rounding])]

        # load[k]: register stage k takes the beat from stage k - 1 (or from ``i``) this
        # cycle.
        # A beat's passes (issue counts them) leave the input register if there is one
        # (it holds the beat meanwhile), or ``i`` itself (whose payload stays put until
        # the beat is taken, after its last pass). The stages after that hold one pass
        # each, and the last one collects the passes of a beat (collect counts them) and is
        # valid once it has them all.
        holding = registered[0] == 0
        valid = [Signal(name=f"valid_{k}") for k in range(depth)]
        load = [Signal(name=f"load_{k}") for k in range(depth)] + [self.o.ready]
        if passes > 1:
            issue = Signal(range(passes), name="issue")
            collect = Signal(range(passes), name="collect")
        else:
            issue = collect = Const(0)
        last_issue = issue == passes - 1
        last_collect = collect == passes - 1
        # The compact pipeline keeps one layer record for the beats past stage 0 (instead
        # of a copy per stage): a beat whose record differs waits in stage 0 until those
        # beats are past the clamp, the last step that reads it. In the accelerator the
        # record changes once per COMPUTE, whose rows have drained by then anyway. Both
        # conditions are registers (updated from the next cycle's contents), so ``i.ready``
        # does not wait for a comparison.
        shared_layer = self._pipeline == "compact"
        admit = Const(1)
        if shared_layer:
            layer_0 = Signal(LAYER_PARAMS, name="layer_0", reset_less=True)
            layer_reg = Signal(LAYER_PARAMS, name="layer", reset_less=True)
            same = Signal(name="same_layer")
            ahead = Signal(range(depth), name="ahead")  # beats in stages 1 .. depth - 2
            empty = Signal(name="ahead_empty", init=1)
            admit = empty | same
        for k in reversed(range(depth)):
            if k == 0:
                freed = load[1] & admit & (last_issue if holding else 1)
            else:
                freed = load[k + 1]
            m.d.comb += load[k].eq(~valid[k] | freed)
            with m.If(load[k]):
                if k == 0:
                    m.d.sync += valid[k].eq(self.i.valid)
                elif k == 1:
                    m.d.sync += valid[k].eq(valid[0] & admit)
                elif k == depth - 1:
                    m.d.sync += valid[k].eq(valid[k - 1] & last_collect)
                else:
                    m.d.sync += valid[k].eq(valid[k - 1])
        arrive = load[depth - 1] & valid[depth - 2]
        advance = load[1] & valid[0] & admit
        if shared_layer:
            incoming = self.i.payload.layer.as_value()
            count = ahead + advance - arrive
            m.d.sync += [
                ahead.eq(count),
                empty.eq(count == 0),
                same.eq(Mux(load[0],
                            Mux(advance, incoming == layer_0.as_value(),
                                incoming == layer_reg.as_value()),
                            advance | same)),
            ]
            with m.If(load[0]):
                m.d.sync += layer_0.eq(self.i.payload.layer)
            with m.If(advance):
                m.d.sync += layer_reg.eq(layer_0)
        if passes > 1:
            with m.If(advance if holding else load[0] & self.i.valid):
                m.d.sync += issue.eq(Mux(last_issue, 0, issue + 1))
            with m.If(arrive):
                m.d.sync += collect.eq(Mux(last_collect, 0, collect + 1))
        m.d.comb += [
            self.i.ready.eq(load[0] if holding else load[0] & last_issue),
            self.o.valid.eq(valid[-1]),
        ]

        def stage(n, name, shape, value):
            """``value`` as ``shape`` at the end of step n: a register, or a wire if the
            step is merged into the next. The registers have no reset: only the valid flags
            do, and the domain's reset then reaches a few flip-flops, not every lane's."""
            reg = Signal(shape, name=name, reset_less=True)
            if n not in registered:
                m.d.comb += reg.eq(value)
            else:
                with m.If(load[reg_of[n]]):
                    m.d.sync += reg.eq(value)
            return reg

        def product(n, name, a, b, impls):
            """``a * b`` of two signed 32-bit values, as signed(64), at the end of step n + 3.

            With the halves a = a_hi 2**16 + a_lo (a_hi signed, a_lo unsigned), likewise b:
            a b = a_hi b_hi 2**32 + (a_lo b_hi + a_hi b_lo) 2**16 + a_lo b_lo, four 16 x 16
            products of which three have a signed operand (DSP blocks take those whole).
            """
            halves = [(a[:16], b[:16]), (a[:16], b[16:].as_signed()),
                      (a[16:].as_signed(), b[:16]), (a[16:].as_signed(), b[16:].as_signed())]
            parts = []
            # The multiplier's two registers end steps n and n + 1, in every pipeline.
            en = Cat(load[reg_of[n]], load[reg_of[n + 1]])
            for i, ((x, y), impl) in enumerate(zip(halves, impls, strict=True)):
                mul = m.submodules[f"{name}_mul{i}"] = Multiplier(x.shape(), y.shape(),
                                                                  impl=impl)
                m.d.comb += [mul.a.eq(x), mul.b.eq(y), mul.en.eq(en)]
                parts.append(mul.p)
            ll, lh, hl, hh = parts
            # Two additions, each of a product shifted in place: Yosys 0.70's ice40_dsp packs
            # an addition of two registered products into the first one's SB_MAC16 (the
            # second product register as its C/D input register) and then loses the second
            # product, leaving C/D undriven.
            part = stage(n + 2, f"{name}_part", signed(64), Cat(ll, hh).as_signed() + (lh << 16))
            hl = stage(n + 2, f"{name}_hl", signed(32), hl)
            return stage(n + 3, name, signed(64), part + (hl << 16))

        # Step 0 only registers the inputs (in the deep pipeline): they come straight from
        # block RAM (the parameters) whose clock-to-output time leaves no room for logic
        # behind it at ECP5 speeds.
        acc = stage(0, "acc", self.i.payload.acc.shape(), self.i.payload.acc)
        params = stage(0, "params", self.i.payload.params.shape(), self.i.payload.params)
        # Otherwise the layer record travels beside the beat, one copy per register stage
        # up to the last one's input; layer(n) is the record at the start of step n.
        layer_regs = [self.i.payload.layer]
        for k in range(0 if shared_layer else depth - 1):
            layer_regs.append(Signal(LAYER_PARAMS, name=f"layer_{k}", reset_less=True))
            with m.If(load[k]):
                m.d.sync += layer_regs[-1].eq(layer_regs[-2])

        def layer(n):
            return layer_reg if shared_layer else layer_regs[reg_of[n]]

        lane_fn = self._lane_double if self._rounding == "double" else self._lane_single
        out = Signal(self.o.payload.shape(), reset_less=True)
        m.d.comb += self.o.payload.eq(out)
        for u in range(units):
            # A unit's step n is the pipeline's step n + 1, after the input register.
            def lane_stage(n, name, shape, value, u=u):
                return stage(n + 1, f"l{u}_{name}", shape, value)
            def lane_product(n, name, a, b, u=u):
                impls = self._multipliers[PRODUCTS_PER_LANE * u:PRODUCTS_PER_LANE * (u + 1)]
                return product(n + 1, f"l{u}_{name}", a, b, impls)
            def lane_layer(n):
                return layer(n + 1)
            # Unit u computes lane p * units + u in pass p (the last pass may have fewer).
            lanes = [p * units + u for p in range(passes) if p * units + u < self._lanes]
            if len(lanes) == 1:
                unit_acc, unit_params = acc[u], params[u]
            else:
                unit_acc = Array(acc[j] for j in lanes)[issue]
                unit_params = CHANNEL_PARAMS(Array(params[j].as_value() for j in lanes)[issue])
            result = lane_fn(lane_stage, lane_product, lane_layer, unit_acc, unit_params)
            for p, j in enumerate(lanes):
                with m.If(arrive & (collect == p)):
                    m.d.sync += out[j].eq(result)
        return m

    @staticmethod
    def _bias_add(stage, acc, params):
        # The contract guarantees that the sum fits int32: drop the carry bit.
        return stage(0, "total", signed(32), (acc + params.bias)[:32].as_signed())

    def _lane_double(self, stage, product, layer, acc, params):
        total = self._bias_add(stage, acc, params)
        shift = params.shift
        m0 = stage(0, "m0", signed(32), params.m0)
        left = stage(0, "left", unsigned(5), Mux(shift > 0, shift, 0))
        right = stage(0, "right", unsigned(5), Mux(shift < 0, -shift, 0))

        # acc * 2**left wraps in 32 bits, as the int32 multiply in C does.
        scaled = stage(1, "scaled", signed(32), (total << left)[:32].as_signed())
        m0 = stage(1, "m0_1", signed(32), m0)
        for k in range(1, 2 + _PRODUCT_LATENCY):
            right = stage(k, f"right_{k}", unsigned(5), right)

        # SRDHM: trunc((ab + nudge) / 2**31) == floor((ab + 2**30) / 2**31)
        #      == floor((floor(ab / 2**30) + 1) / 2), so only ab[30:] is kept and rounded.
        k = 2 + _PRODUCT_LATENCY
        ab_hi = product(2, "ab", scaled, m0)[30:].as_signed()

        # 2**31 only for INT32_MIN * INT32_MIN: the one saturation. high lies in
        # [-2**31, 2**31], so it is above INT32_MAX exactly when it is not negative and
        # has bit 31 set (no comparator needed).
        high = (ab_hi + 1)[1:].as_signed()
        srdhm = stage(k, "srdhm", signed(32), Mux(high[31] & ~high[-1], INT32_MAX, high))
        right = stage(k, f"right_{k}", unsigned(5), right)

        # RDBPOT, ties away from zero: (x + 2**(n-1) - (x < 0)) >> n for n > 0, x for n == 0.
        # The nudge is added as mask + carry: mask = 2**(n-1) - 1 (-1 for n == 0) depends on
        # n alone, carry = 1 - (x < 0 and n > 0), so one carry chain does the whole sum.
        none = right == 0
        mask = Cat(*(none | (i + 1 < right) for i in range(32)), none).as_signed()
        carry = ~((srdhm < 0) & ~none)
        rounded = stage(k + 1, "rounded", signed(33), srdhm + mask + carry)
        right = stage(k + 1, f"right_{k + 1}", unsigned(5), right)
        out = stage(k + 2, "out", signed(32), rounded >> right)
        return self._output(stage, k + 3, layer, out)

    def _lane_single(self, stage, product, layer, acc, params):
        total = self._bias_add(stage, acc, params)
        m0 = stage(0, "m0", signed(32), params.m0)
        # t = 31 - shift; the rounding shifts by t - 1 first, then by 1.
        pre = stage(0, "pre", unsigned(6), 30 - params.shift)
        for k in range(1, 1 + _PRODUCT_LATENCY):
            pre = stage(k, f"pre_{k}", unsigned(6), pre)

        k = 1 + _PRODUCT_LATENCY
        full = product(1, "product", total, m0)

        # floor((p + 2**(t-1)) / 2**t) == floor((floor(p / 2**(t-1)) + 1) / 2), and the result
        # is wrapped to int32, so 33 bits of floor(p / 2**(t-1)) are all that matter. The
        # shift by up to 61 is done in two steps: whole bytes, then bits.
        coarse = stage(k, "coarse", signed(40), (full >> Cat(Const(0, 3), pre[3:]))[:40])
        fine = stage(k, "fine", unsigned(3), pre[:3])
        scaled = stage(k + 1, "scaled", signed(33), (coarse >> fine)[:33].as_signed())
        out = stage(k + 2, "out", signed(32), (scaled + 1)[1:33].as_signed())
        return self._output(stage, k + 3, layer, out)

    @staticmethod
    def _output(stage, k, layer, out):
        # z_out, act_min and act_max are int8, so saturating out to [-256, 255] first does
        # not change the clamped result: beyond that range out + z_out lies beyond
        # [-128, 127] on the same side. out is in it when its bits 8..31 are all equal.
        # The saturation (a 24-bit reduction) and the addition are separate steps.
        fits = out[8:].all() | ~out[8:].any()
        near = stage(k, "near", signed(9), Mux(fits, out[:9].as_signed(),
                                                Mux(out[-1], -256, 255)))
        shifted = stage(k + 1, "shifted", signed(10), near + layer(k + 1).z_out)
        # The last step's register is the output beat (elaborate).
        params = layer(k + 2)
        return Mux(shifted < params.act_min, params.act_min,
                   Mux(shifted > params.act_max, params.act_max, shifted))[:8].as_signed()
