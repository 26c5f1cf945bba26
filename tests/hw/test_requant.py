# amaranth: UnusedElaboratable=no

"""hw.requant.Requantizer in the Amaranth simulator: rtl(case) == golden.requant(case).

The case generator and the payload packing here are shared with the Verilator test
(``tests/sim/test_requant_rtl.py``).
"""

import numpy as np
import pytest
from amaranth import Shape, signed
from amaranth.lib import data
from amaranth.sim import Simulator

from golden.arith import INT32_MAX, INT32_MIN
from golden.requant import requantize
from hw.requant import CHANNEL_PARAMS, LAYER_PARAMS, PIPELINES, Requantizer

M0_MIN = 2**30


def _shift_range(rounding):
    return (-31, 31) if rounding == "double" else (-31, 30)


def _split_total(rng, total, acc_width):
    """(acc, bias) with acc in the acc_width range and acc + bias == total (int32)."""
    lo, hi = -(2 ** (acc_width - 1)), 2 ** (acc_width - 1) - 1
    acc = rng.integers(lo, hi, size=total.shape, endpoint=True)
    # Small totals often come from a small accumulator and no bias.
    acc = np.where(rng.random(total.shape) < 0.25, np.clip(total, lo, hi), acc)
    bias = np.clip(total - acc, INT32_MIN, INT32_MAX)
    return acc, bias


def _layers(rng, count):
    """(z_out, act_min, act_max) rows: no activation, ReLU, ReLU6-like and random ranges."""
    z = rng.integers(-128, 127, size=count, endpoint=True)
    lo = rng.integers(-128, 127, size=count, endpoint=True)
    hi = rng.integers(-128, 127, size=count, endpoint=True)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    kind = np.arange(count) % 4
    lo = np.select([kind == 0, kind == 1, kind == 2], [-128, z, z], lo)
    hi = np.select([kind == 0, kind == 1, kind == 2], [127, 127, np.minimum(127, z + 40)], hi)
    return np.stack([z, lo, hi], axis=1)


def random_case(rng, beats, lanes, acc_width=32, rounding="double", n_layers=8):
    """Random beats: full-range and near-clamp totals, M0 mostly in [2**30, 2**31 - 1].

    Returns a dict of int64 arrays: ``acc``, ``bias``, ``m0``, ``shift`` of shape
    (beats, lanes) and ``layer`` (beats,) indexing ``layers`` (n_layers, 3).
    """
    shape = (beats, lanes)
    smin, smax = _shift_range(rounding)
    shift = rng.integers(smin, smax, size=shape, endpoint=True)
    m0 = rng.integers(M0_MIN, INT32_MAX, size=shape, endpoint=True)
    pick = rng.random(shape)
    m0 = np.select([pick < 0.02, pick < 0.04, pick < 0.06], [0, INT32_MAX, M0_MIN], m0)
    layers = _layers(rng, n_layers)
    layer = rng.integers(0, n_layers, size=beats)
    z_out, act_min, act_max = (layers[layer, i, None] for i in range(3))
    # Half the totals are uniform over int32 (mostly clamped or zero after scaling); the
    # other half are aimed just around the clamp range so rounding and clamping matter.
    target = rng.uniform(act_min - 4, act_max + 4, size=shape) - z_out
    aimed = np.rint(target * 2.0 ** (31 - shift) / np.maximum(m0, 1))
    aimed = np.clip(aimed, INT32_MIN, INT32_MAX).astype(np.int64)
    aimed += rng.integers(-2, 2, size=shape, endpoint=True)
    uniform = rng.integers(INT32_MIN, INT32_MAX, size=shape, endpoint=True)
    total = np.clip(np.where(rng.random(shape) < 0.5, uniform, aimed), INT32_MIN, INT32_MAX)
    acc, bias = _split_total(rng, total, acc_width)
    return {
        "acc": acc, "bias": bias, "m0": m0, "shift": shift, "layer": layer, "layers": layers,
    }


def corner_case(lanes, acc_width=32, rounding="double"):
    """Every corner named in ARITHMETIC.md, one (total, m0, shift) per lane-vector.

    int32 extremes at both shift ends, M0 in {0, 2**30, 2**31 - 1}, the left-shift wrap,
    exact ties of SRDHM, RDBPOT and the single rounding on both signs, and the INT32_MIN *
    INT32_MIN saturation (M0 = INT32_MIN lies outside the contract's M0 range, but the
    golden model defines it and the signed datapath handles it).
    """
    smin, smax = _shift_range(rounding)
    rows = []
    totals = [INT32_MIN, INT32_MIN + 1, -(2**30), -2, -1, 0, 1, 2, 2**30, INT32_MAX - 1,
              INT32_MAX]
    for total in totals:
        for m0 in (0, 1, M0_MIN, M0_MIN + 1, INT32_MAX - 1, INT32_MAX):
            for shift in sorted({smin, smin + 1, -16, -1, 0, 1, 15, smax - 1, smax}):
                rows.append((total, m0, shift))
    for k in (0, 1, 2, 5, 1000):
        for n in range(0, 32 if rounding == "double" else 62):
            for sign in (1, -1):
                if rounding == "double":
                    # SRDHM(2x, 2**30) == x exactly; x = +-(2k+1) * 2**(n-1) ties RDBPOT.
                    x = sign * (2 * k + 1) * (1 << n) // 2
                    if INT32_MIN <= 2 * x <= INT32_MAX:
                        rows.append((2 * x, M0_MIN, -n))
                    # An odd total times 2**30 ties the SRDHM rounding.
                    rows.append((sign * (2 * k + 1), M0_MIN, -n))
                else:
                    # total * m0 == +-(2k+1) * 2**(t-1), t = 31 - shift.
                    shift = 30 - n
                    if not smin <= shift <= smax:
                        continue
                    m0 = 1 << min(n, 30)
                    total = sign * (2 * k + 1) << max(n - 30, 0)
                    if INT32_MIN <= total <= INT32_MAX:
                        rows.append((total, m0, shift))
    # Results out = x around the saturation of the output stage (|x| near 256), which the
    # layers below shift by z_out in [-128, 127] and clamp.
    for x in range(-300, 301):
        rows.append((2 * x, M0_MIN, 0) if rounding == "double" else (x, M0_MIN, 1))
    for shift in range(smin, smax + 1):
        rows.append((INT32_MIN, INT32_MIN, shift))
        rows.append((INT32_MAX, INT32_MIN, shift))
        rows.append((INT32_MIN, INT32_MAX, shift))
    rows = np.array(rows, dtype=np.int64)
    pad = -len(rows) % lanes
    rows = np.concatenate([rows, rows[:pad]]).reshape(-1, lanes, 3)
    total, m0, shift = rows[..., 0], rows[..., 1], rows[..., 2]
    acc, bias = _split_total(np.random.default_rng(0), total, acc_width)
    layers = np.array([[0, -128, 127], [-5, -128, 127], [17, -3, 90], [-128, -128, 127],
                       [127, -128, 127], [127, 100, 126], [-128, -127, -100]])
    beats = len(total)
    return {"acc": acc, "bias": bias, "m0": m0, "shift": shift,
            "layer": np.arange(beats) % len(layers), "layers": layers}


def join(*cases):
    """Concatenate cases beat-wise (each keeps its own layer table)."""
    out = {key: np.concatenate([c[key] for c in cases]) for key in ("acc", "bias", "m0", "shift")}
    offsets = np.cumsum([0] + [len(c["layers"]) for c in cases[:-1]])
    out["layer"] = np.concatenate([c["layer"] + o for c, o in zip(cases, offsets, strict=True)])
    out["layers"] = np.concatenate([c["layers"] for c in cases])
    return out


def reference(case, rounding):
    """golden.requant.requantize over the case, one call per layer."""
    out = np.zeros(case["acc"].shape, dtype=np.int8)
    for index, (z_out, act_min, act_max) in enumerate(case["layers"].tolist()):
        sel = case["layer"] == index
        if sel.any():
            out[sel] = requantize(case["acc"][sel], case["bias"][sel], case["m0"][sel],
                                  case["shift"][sel], z_out, act_min, act_max,
                                  rounding=rounding)
    return out


def _pack_into(bits, shape, offset, value):
    if isinstance(shape, data.StructLayout):
        for name, field in shape:
            _pack_into(bits, field.shape, offset + field.offset, value[name])
    elif isinstance(shape, data.ArrayLayout):
        elem = shape.elem_shape
        size = elem.size if isinstance(elem, data.Layout) else Shape.cast(elem).width
        for j in range(shape.length):
            _pack_into(bits, elem, offset + j * size, _lane(value, j))
    else:
        width = Shape.cast(shape).width
        v = np.asarray(value, dtype=np.int64)
        bits[:, offset:offset + width] = (v[:, None] >> np.arange(width)) & 1


def _lane(value, j):
    if isinstance(value, dict):
        return {key: _lane(v, j) for key, v in value.items()}
    return value[:, j]


def pack_inputs(dut, case):
    """The ``i.payload`` words of every beat, as (beats, bytes) little-endian uint8."""
    layout = data.Layout.cast(dut.i.payload.shape())
    layer = case["layers"][case["layer"]]
    value = {
        "acc": case["acc"],
        "params": {"bias": case["bias"], "m0": case["m0"], "shift": case["shift"]},
        "layer": {"z_out": layer[:, 0], "act_min": layer[:, 1], "act_max": layer[:, 2]},
    }
    bits = np.zeros((len(case["acc"]), layout.size), dtype=np.uint8)
    _pack_into(bits, layout, 0, value)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_outputs(words, lanes):
    """``o.payload`` words (Python ints) -> (beats, lanes) int8."""
    raw = b"".join(int(w).to_bytes(lanes, "little") for w in words)
    return np.frombuffer(raw, dtype=np.int8).reshape(-1, lanes)


def simulate(dut, case, *, seed=0, p_gap=0.3, p_stall=0.3):
    """Drive ``case`` through ``dut`` with random valid gaps and ready stalls."""
    words = [int.from_bytes(row.tobytes(), "little") for row in pack_inputs(dut, case)]
    rng = np.random.default_rng(seed)
    received = []
    payload = dut.i.payload.as_value()

    async def producer(ctx):
        for word in words:
            while rng.random() < p_gap:
                await ctx.tick()
            ctx.set(payload, word)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(received) < len(words):
            while rng.random() < p_stall:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            word, = await ctx.tick().sample(dut.o.payload.as_value()).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            received.append(word)
        # Nothing may follow the last beat: no duplicates.
        ctx.set(dut.o.ready, 1)
        for _ in range(dut.latency + 2):
            await ctx.tick()
            assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return unpack_outputs(received, dut.lanes)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("acc_width", [32, 16, 24])
def test_random(rounding, acc_width, pipeline):
    rng = np.random.default_rng(acc_width * 10 + len(rounding) + len(pipeline))
    dut = Requantizer(4, acc_width=acc_width, rounding=rounding, pipeline=pipeline)
    case = random_case(rng, 2000, 4, acc_width, rounding)
    np.testing.assert_array_equal(simulate(dut, case, seed=acc_width),
                                  reference(case, rounding))


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_corners(rounding, pipeline):
    dut = Requantizer(8, rounding=rounding, pipeline=pipeline)
    case = corner_case(8, rounding=rounding)
    np.testing.assert_array_equal(simulate(dut, case, p_gap=0.1, p_stall=0.1),
                                  reference(case, rounding))


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_narrow_corners(rounding):
    dut = Requantizer(3, acc_width=16, rounding=rounding)
    rng = np.random.default_rng(3)
    case = random_case(rng, 40, 3, 16, rounding)
    case["acc"][:20] = np.where(np.arange(3) % 2, -(2**15), 2**15 - 1)
    case["bias"][:20] = 0
    np.testing.assert_array_equal(simulate(dut, case), reference(case, rounding))


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_logic_partial_products(rounding, pipeline):
    # Past a device's DSP blocks the partial products are built in logic: same numbers.
    lanes = 2
    multipliers = ["logic", "dsp", "logic", "logic", "dsp", "logic", "dsp", "logic"]
    dut = Requantizer(lanes, rounding=rounding, multipliers=multipliers, pipeline=pipeline)
    assert dut.multipliers == tuple(multipliers)
    rng = np.random.default_rng(17)
    case = join(corner_case(lanes, rounding=rounding),
                random_case(rng, 300, lanes, rounding=rounding))
    np.testing.assert_array_equal(simulate(dut, case, p_gap=0.2, p_stall=0.2),
                                  reference(case, rounding))


@pytest.mark.parametrize("lanes", [1, 5])
def test_lanes(lanes):
    rng = np.random.default_rng(lanes)
    dut = Requantizer(lanes)
    case = random_case(rng, 100, lanes)
    np.testing.assert_array_equal(simulate(dut, case, p_gap=0.5, p_stall=0.6),
                                  reference(case, "double"))


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("rounding", ["double", "single"])
def test_throughput_and_latency(rounding, pipeline):
    """One beat per cycle with no bubbles; the first result ``latency`` cycles later."""
    dut = Requantizer(2, rounding=rounding, pipeline=pipeline)
    # One layer: in the compact pipeline a new layer record waits for the beats before it.
    case = random_case(np.random.default_rng(5), 20, 2, rounding=rounding, n_layers=1)
    words = [int.from_bytes(row.tobytes(), "little") for row in pack_inputs(dut, case)]
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for cycle in range(len(words) + dut.latency + 1):
            if cycle < len(words):
                ctx.set(dut.i.payload.as_value(), words[cycle])
                assert ctx.get(dut.i.ready)
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.o.valid):
                seen.append((cycle, ctx.get(dut.o.payload.as_value())))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [c for c, _ in seen] == list(range(dut.latency, dut.latency + len(words)))
    np.testing.assert_array_equal(unpack_outputs([w for _, w in seen], 2),
                                  reference(case, rounding))


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize(("lanes", "units"), [(2, 1), (4, 2), (5, 2), (3, 1)])
def test_shared_units(lanes, units, rounding, pipeline):
    """Fewer datapaths than lanes: each beat takes ``passes`` cycles, same numbers."""
    dut = Requantizer(lanes, rounding=rounding, pipeline=pipeline,
                      multipliers=["dsp", "logic", "dsp", "dsp"] * units)
    assert (dut.units, dut.passes) == (units, -(-lanes // units))
    rng = np.random.default_rng(lanes * 100 + units)
    case = join(corner_case(lanes, rounding=rounding),
                random_case(rng, 400, lanes, rounding=rounding))
    np.testing.assert_array_equal(simulate(dut, case, p_gap=0.3, p_stall=0.3, seed=units),
                                  reference(case, rounding))


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("units", [1, 2])
def test_shared_units_rate_and_latency(units, pipeline):
    """Back to back, a beat every ``passes`` cycles; each result ``latency`` cycles after
    its beat's transfer."""
    dut = Requantizer(4, pipeline=pipeline, multipliers=["dsp"] * 4 * units)
    case = random_case(np.random.default_rng(9), 12, 4, n_layers=1)
    words = [int.from_bytes(row.tobytes(), "little") for row in pack_inputs(dut, case)]
    taken, seen = [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for cycle in range(len(words) * dut.passes + dut.latency + 1):
            if len(taken) < len(words):
                ctx.set(dut.i.payload.as_value(), words[len(taken)])
                if ctx.get(dut.i.ready):
                    taken.append(cycle)
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.o.valid):
                seen.append((cycle, ctx.get(dut.o.payload.as_value())))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(taken) == len(words) and taken[0] < dut.passes
    assert set(np.diff(taken)) == {dut.passes}
    assert [c for c, _ in seen] == [t + dut.latency for t in taken]
    np.testing.assert_array_equal(unpack_outputs([w for _, w in seen], 4),
                                  reference(case, "double"))


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_full_pipeline_holds_under_stall(pipeline):
    """With o stalled the pipeline fills to ``latency`` beats, then refuses more."""
    dut = Requantizer(1, pipeline=pipeline)

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        accepted = 0
        for _ in range(3 * dut.latency):
            accepted += ctx.get(dut.i.ready)
            await ctx.tick()
        assert accepted == dut.latency

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_signature():
    dut = Requantizer(3, acc_width=20)
    layout = data.Layout.cast(dut.i.payload.shape())
    assert layout == data.StructLayout({
        "acc": data.ArrayLayout(signed(20), 3),
        "params": data.ArrayLayout(CHANNEL_PARAMS, 3),
        "layer": LAYER_PARAMS,
    })
    assert data.Layout.cast(dut.o.payload.shape()) == data.ArrayLayout(signed(8), 3)
    assert (dut.lanes, dut.acc_width, dut.rounding, dut.pipeline, dut.latency) == (
        3, 20, "double", "deep", 13)
    assert Requantizer(3, rounding="single").latency == 12
    assert Requantizer(3, pipeline="compact").latency == 10
    assert Requantizer(3, rounding="single", pipeline="compact").latency == 9


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lanes": 0}, r"^Lane count must be an integer in 1\.\.64, not 0$"),
    ({"lanes": 65}, r"^Lane count must be an integer in 1\.\.64, not 65$"),
    ({"lanes": "4"}, r"^Lane count must be an integer in 1\.\.64, not '4'$"),
    ({"lanes": 4, "acc_width": 15}, r"^Accumulator width must be an integer in 16\.\.32, not 15$"),
    ({"lanes": 4, "acc_width": 33}, r"^Accumulator width must be an integer in 16\.\.32, not 33$"),
    ({"lanes": 4, "rounding": "up"}, r"^Rounding must be one of 'double', 'single', not 'up'$"),
    ({"lanes": 2, "multipliers": ["dsp"] * 12},
     r"^multipliers must have 4 x 1\.\.2 entries, not 12$"),
    ({"lanes": 2, "multipliers": ["dsp"] * 6},
     r"^multipliers must have 4 x 1\.\.2 entries, not 6$"),
    ({"lanes": 4, "pipeline": "short"},
     r"^Pipeline must be one of 'deep', 'compact', not 'short'$"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Requantizer(**kwargs)
