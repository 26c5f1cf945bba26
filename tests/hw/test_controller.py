# amaranth: UnusedElaboratable=no
"""Controller on the Amaranth simulator, driven through the whole accelerator (host width 32).

Every program is a list of ISA v2 words; the responses are compared with what
``docs/isa.md`` promises, and COMPUTE results with ``golden.requant.requantize`` of the int64
matrix product.
"""

import numpy as np
import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from golden.requant import requantize
from hw.array import array_latency
from hw.compute import ComputeEngine
from hw.config import AcceleratorConfig
from hw.controller import Controller
from hw.isa import ISA_VERSION, MAGIC, Error, Op, header, words_per_lanes
from hw.requant import Requantizer
from hw.top import Accelerator
from tests.hw.streams import recv, send

TINY = AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=3, out_depth=16)


# ISA encoding, written from docs/isa.md independently of hw.driver.

def pack(values):
    """int8 lanes -> words, lane 0 in the lowest byte."""
    values = [int(v) & 0xFF for v in values]
    values += [0] * (-len(values) % 4)
    return [int.from_bytes(bytes(values[n:n + 4]), "little") for n in range(0, len(values), 4)]


def unpack(words, lanes):
    raw = b"".join(int(w).to_bytes(4, "little") for w in words)
    return np.frombuffer(raw, np.int8)[:lanes].astype(np.int64)


def load_act(bank, addr, columns):
    data = [w for col in columns for w in pack(col)]
    return [header(Op.LOAD_ACT, bank), addr, len(columns), *data]


def load_wgt(bank, addr, rows):
    data = [w for row in rows for w in pack(row)]
    return [header(Op.LOAD_WGT, bank), addr, len(rows), *data]


def load_par(bank, addr, groups):
    """``groups``: list of (bias, m0, shift) triples of length-C vectors."""
    data = []
    for bias, m0, shift in groups:
        for b, m, s in zip(bias, m0, shift, strict=True):
            data += [int(b) & 0xFFFFFFFF, int(m) & 0xFFFFFFFF, int(s) & 0xFFFFFFFF]
    return [header(Op.LOAD_PAR, bank), addr, len(groups), *data]


def compute(k, m_tiles, n_tiles, act_addr=0, wgt_addr=0, par_addr=0, out_addr=0,
            layer=(0, -128, 127), banks=(0, 0, 0, 0), partial=False):
    flags = sum(b << n for n, b in enumerate(banks)) | partial << 4
    z, lo, hi = (v & 0xFF for v in layer)
    return [header(Op.COMPUTE, flags), k, m_tiles, n_tiles, act_addr, wgt_addr, par_addr,
            out_addr, z | lo << 8 | hi << 16]


def store(bank, addr, count):
    return [header(Op.STORE, bank), addr, count]


STATUS = [header(Op.STATUS)]
ID = [header(Op.ID)]
CLEAR = [header(Op.CLEAR)]


def run(config, words, n_out, *, seed=0, p_idle=0.0, p_stall=0.0, max_cycles=20000,
        log=None):
    """Send ``words`` into an Accelerator with ``config``; return ``n_out`` response words.

    ``log``: receives the cycle in which each response word was taken.
    """
    dut = Accelerator(config)
    rng = np.random.default_rng(seed)
    out = []

    async def producer(ctx):
        await send(ctx, dut.i, words, rng=rng, p_idle=p_idle)

    async def consumer(ctx):
        out.extend(await recv(ctx, dut.o, n_out, rng=rng, p_stall=p_stall, log=log))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(watchdog(max_cycles), background=True)
    sim.run()
    return [int(w) for w in out]


def watchdog(cycles):
    async def bench(ctx):
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"no end after {cycles} cycles: the controller hangs")
    return bench


def gemm_case(config, rng, m_tiles, n_tiles, k):
    R, C = config.rows, config.cols
    x = rng.integers(-128, 128, size=(m_tiles * R, k))
    w = rng.integers(-127, 128, size=(k, n_tiles * C))
    n = n_tiles * C
    bias = rng.integers(-5000, 5000, size=n)
    m0 = rng.integers(1 << 30, (1 << 31) - 1, size=n)
    shift = rng.integers(-10, 2, size=n)
    return x, w, bias, m0, shift


def gemm_program(config, x, w, bias, m0, shift, *, banks=(0, 0, 0, 0), layer=(0, -128, 127),
                 addrs=(0, 0, 0, 0)):
    R, C = config.rows, config.cols
    m_tiles, k = x.shape[0] // R, x.shape[1]
    n_tiles = w.shape[1] // C
    act_a, wgt_a, par_a, out_a = addrs
    columns = [x[t * R:(t + 1) * R, kk] for t in range(m_tiles) for kk in range(k)]
    rows = [w[kk, u * C:(u + 1) * C] for u in range(n_tiles) for kk in range(k)]
    groups = [(bias[u * C:(u + 1) * C], m0[u * C:(u + 1) * C], shift[u * C:(u + 1) * C])
              for u in range(n_tiles)]
    words = (load_act(banks[0], act_a, columns) + load_wgt(banks[1], wgt_a, rows)
             + load_par(banks[2], par_a, groups)
             + compute(k, m_tiles, n_tiles, act_a, wgt_a, par_a, out_a, layer, banks)
             + store(banks[3], out_a, m_tiles * R * n_tiles))
    return words, m_tiles * R * n_tiles * words_per_lanes(C)


def decode_output(config, words, m, n):
    C = config.cols
    wpl = words_per_lanes(C)
    n_tiles = n // C
    y = np.zeros((m, n), np.int64)
    for row in range(m):
        for u in range(n_tiles):
            base = (row * n_tiles + u) * wpl
            y[row, u * C:(u + 1) * C] = unpack(words[base:base + wpl], C)
    return y


def golden(config, x, w, bias, m0, shift, layer=(0, -128, 127)):
    acc = x.astype(np.int64) @ w.astype(np.int64)
    return requantize(acc, bias, m0, shift, layer[0], layer[1], layer[2],
                      rounding=config.rounding).astype(np.int64)


def test_id():
    c = TINY
    assert run(c, ID, 10) == [MAGIC, ISA_VERSION, c.rows, c.cols, c.acc_width, c.act_depth,
                              c.wgt_depth, c.par_depth, c.out_depth, 0]


def test_status_after_reset_and_nops():
    assert run(TINY, [0, 0, header(Op.NOP, 0x1F)] + STATUS, 6) == [0] * 6


@pytest.mark.parametrize("config", [
    TINY,
    AcceleratorConfig(rows=5, cols=4, act_depth=16, wgt_depth=16, par_depth=2, out_depth=40,
                      rounding="single"),
    # Buffers with registered inputs (read latency 2), depths not powers of two.
    AcceleratorConfig(rows=3, cols=5, act_depth=12, wgt_depth=10, par_depth=3, out_depth=24,
                      buffer_latency=2),
    # Registered read data (ECP5's default), alone and after registered inputs.
    AcceleratorConfig(rows=4, cols=3, act_depth=10, wgt_depth=8, par_depth=3, out_depth=20,
                      buffer_output_register=True),
    AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=2, out_depth=12,
                      buffer_latency=2, buffer_output_register=True),
    # Fewer requantizer units than columns (a DSP budget): a beat takes 2 passes, and the
    # parameter join paces its rows ("deep" requantizer, hw.compute.join_pace) ...
    AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=3, out_depth=16,
                      dsp_budget=8),
    AcceleratorConfig(rows=3, cols=5, act_depth=12, wgt_depth=10, par_depth=3, out_depth=24,
                      dsp_budget=12, buffer_latency=2, buffer_output_register=True),
    # ... or waits for its i.ready ("compact", iCE40).
    AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=3, out_depth=16,
                      device="ice40-up5k"),
])
def test_compute_matches_golden(config):
    rng = np.random.default_rng(1)
    x, w, bias, m0, shift = gemm_case(config, rng, m_tiles=2, n_tiles=2, k=3)
    layer = (-3, -100, 90)
    words, n_out = gemm_program(config, x, w, bias, m0, shift, layer=layer,
                                banks=(1, 0, 1, 1), addrs=(1, 2, 0, 3))
    out = run(config, words + STATUS, n_out + 6, seed=2, p_idle=0.3, p_stall=0.3)
    y = decode_output(config, out[:n_out], x.shape[0], w.shape[1])
    np.testing.assert_array_equal(y, golden(config, x, w, bias, m0, shift, layer))
    status, error, cycles, count, total, computes = out[n_out:]
    assert (status, error, count, computes) == (0, 0, 0, 1)
    assert total == cycles > 2 * 2 * 3


def test_unused_high_bytes_are_zero():
    rng = np.random.default_rng(3)
    x, w, bias, m0, shift = gemm_case(TINY, rng, 1, 1, 2)
    words, n_out = gemm_program(TINY, x, w, bias, m0, shift)
    out = run(TINY, words, n_out)
    assert all(word >> 24 == 0 for word in out)


@pytest.mark.parametrize("latency,outreg", [(1, False), (2, False), (1, True)])
def test_interlock_and_double_buffering(latency, outreg):
    """A LOAD into the bank the running COMPUTE reads waits; one into the other bank doesn't
    corrupt anything; a STORE from the bank COMPUTE writes waits for its results."""
    c = AcceleratorConfig(**{**TINY.to_dict(), "buffer_latency": latency,
                             "buffer_output_register": outreg})
    rng = np.random.default_rng(4)
    k = 4
    x0, w, bias, m0, shift = gemm_case(c, rng, 1, 2, k)
    x1 = rng.integers(-128, 128, size=x0.shape)
    words, n_out = gemm_program(c, x0, w, bias, m0, shift)
    store_words = words[-3:]
    words = words[:-3]
    clobber = load_act(0, 0, [x1[:, kk] for kk in range(k)])
    other = load_act(1, 0, [x1[:, kk] for kk in range(k)])
    second = compute(k, 1, 2, banks=(1, 0, 0, 1)) + store(1, 0, c.rows * 2)
    program = words + other + clobber + store_words + second
    out = run(c, program, 2 * n_out, p_stall=0.2)
    y0 = decode_output(c, out[:n_out], c.rows, 2 * c.cols)
    y1 = decode_output(c, out[n_out:], c.rows, 2 * c.cols)
    np.testing.assert_array_equal(y0, golden(c, x0, w, bias, m0, shift))
    np.testing.assert_array_equal(y1, golden(c, x1, w, bias, m0, shift))


def test_errors_keep_the_stream_in_sync():
    c = TINY
    wc = words_per_lanes(c.cols)
    program = (
        [0x09 << 24, 0xFF << 24 | 0xF]                     # two illegal opcodes
        + [header(Op.LOAD_ACT), 0, 0]                       # count 0: no data follows
        + [header(Op.LOAD_WGT), 7, 2] + [0xDEADBEEF] * 2 * wc   # past the end: dropped
        + [header(Op.LOAD_PAR, 1), 3, 1] + [0x05000000] * 3 * c.cols
        + [header(Op.LOAD_ACT), 0xFFFFFFFF, 1, 0x01000000]  # addr + count wraps in 32 bits
        + compute(0, 1, 1)
        + compute(1, 0, 1)
        + compute(1, 1, 0)
        + compute(9, 1, 1)                                  # K past act/wgt depth
        + compute(1, 1, 1, par_addr=3)
        + compute(2, 4, 1, act_addr=1)                      # 1 + 4*2 > 8
        + compute(1, 8, 1, out_addr=1)                      # 1 + 8*2 rows > 16 words
        + compute(1 << 31, 1 << 31, 1)                      # products overflow 32 bits
        + compute(1, 2, 1, partial=True)                    # partial: one tile only
        + compute(1, 1, 2, partial=True)
        + store(0, 0, 0) + store(1, 16, 1) + store(0, 0xFFFFFFFF, 2)
        + STATUS + ID + CLEAR + STATUS
    )
    out = run(c, program, 6 + 10 + 6)
    assert out[:6] == [0b10, Error.ILLEGAL_OPCODE, 0, 2 + 4 + 10 + 3, 0, 0]
    assert out[6] == MAGIC
    assert out[16:] == [0] * 6


def test_first_error_wins_and_count_goes_on():
    program = store(0, 0, 0) + [0x7F << 24] + STATUS
    assert run(TINY, program, 6) == [0b10, Error.STORE_RANGE, 0, 2, 0, 0]


def test_bad_load_writes_nothing():
    """A LOAD past the end must not write the words inside the bank either."""
    c = TINY
    rng = np.random.default_rng(5)
    x, w, bias, m0, shift = gemm_case(c, rng, 1, 1, 1)
    words, n_out = gemm_program(c, x, w, bias, m0, shift)
    junk = load_act(0, 0, [np.full(c.rows, 99)] * (c.act_depth + 1))
    program = words[:-3 - 9] + junk + words[-3 - 9:]
    out = run(c, program + STATUS, n_out + 6)
    y = decode_output(c, out[:n_out], c.rows, c.cols)
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))
    assert out[n_out:n_out + 2] == [0b10, Error.LOAD_RANGE]


def test_reset_mid_compute_returns_to_idle():
    c = AcceleratorConfig(rows=2, cols=2, act_depth=64, wgt_depth=64, par_depth=1,
                          out_depth=4)
    rng = np.random.default_rng(6)
    x, w, bias, m0, shift = gemm_case(c, rng, 1, 1, 60)
    words, n_out = gemm_program(c, x, w, bias, m0, shift)
    dut = Accelerator(c)
    top = Module()
    top.domains.sync = sync = ClockDomain()
    top.submodules.dut = dut
    responses = []

    async def bench(ctx):
        # Reset in the middle of the COMPUTE, the STORE already waiting on it.
        await send(ctx, dut.i, words)
        for _ in range(10):
            await ctx.tick()
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        await send(ctx, dut.i, STATUS + words)

    async def consumer(ctx):
        responses.extend(await recv(ctx, dut.o, 6 + n_out))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(consumer)
    sim.add_testbench(watchdog(5000), background=True)
    sim.run()
    assert [int(v) for v in responses[:6]] == [0] * 6
    y = decode_output(c, [int(v) for v in responses[6:]], c.rows, c.cols)
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))


@pytest.mark.parametrize("dsp_budget", [None, 8])
def test_utilization_back_to_back_tiles(dsp_budget):
    """K >= max(R, C): the feeder leaves no bubble, so COMPUTE cycles ~ m * n * K; with a
    requantizer of two passes (a DSP budget of 8) too, for K >= 2R."""
    c = AcceleratorConfig(rows=4, cols=4, act_depth=128, wgt_depth=128, par_depth=2,
                          out_depth=16, dsp_budget=dsp_budget)
    rng = np.random.default_rng(7)
    k = 32
    x, w, bias, m0, shift = gemm_case(c, rng, 2, 2, k)
    words, n_out = gemm_program(c, x, w, bias, m0, shift)
    out = run(c, words + STATUS, n_out + 6)
    y = decode_output(c, out[:n_out], x.shape[0], w.shape[1])
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))
    cycles = out[n_out + 2]
    ideal = 2 * 2 * k
    overhead = cycles - ideal
    # Feeder, array, parameter join, requantizer, the other rows of the last tile; the
    # latencies come from the components.
    engine = ComputeEngine(c).latency
    array = array_latency(c.rows, c.cols, c.resources.product_register, c.resources.drain)
    requant = Requantizer(c.cols, rounding=c.rounding,
                          multipliers=c.resources.requant_multipliers)
    assert requant.passes == (1 if dsp_budget is None else 2)
    assert 0 < overhead <= engine + array + 1 + requant.latency + requant.passes * c.rows, cycles


@pytest.mark.parametrize("host_width", [8, 64, 128])
def test_host_widths(host_width):
    """Words cross narrow and wide host streams; every response ends its own beat."""
    from tests.hw.test_host import responses_to_beats, words_to_beats

    c = AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=3, out_depth=16,
                          host_width=host_width)
    rng = np.random.default_rng(8)
    x, w, bias, m0, shift = gemm_case(c, rng, 1, 2, 3)
    words, n_out = gemm_program(c, x, w, bias, m0, shift)
    words = STATUS + words + ID
    words += [0] * (-len(words) % max(1, host_width // 32))   # NOP padding
    c32 = AcceleratorConfig(**{**c.to_dict(), "host_width": 32})
    responses = [[0] * 6, None, Controller(c32).id_words()]
    expected_words = run(c32, words, 6 + n_out + 10)
    responses[1] = expected_words[6:6 + n_out]
    expected = responses_to_beats(responses, host_width)
    beats = run(c, words_to_beats(words, host_width), len(expected), p_idle=0.2, p_stall=0.2)
    assert beats == expected
    y = decode_output(c, responses[1], c.rows, 2 * c.cols)
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))


def test_partial_computes_continue_one_tile():
    """K split over partial COMPUTEs from both banks, backpressure on both streams: the
    array keeps the partial sums (wrapping in acc_width bits), the final COMPUTE ends the
    tile; STATUS counts every COMPUTE's cycles and CLEAR zeroes the totals."""
    c = AcceleratorConfig(rows=2, cols=3, act_depth=8, wgt_depth=8, par_depth=1,
                          out_depth=4, acc_width=16)
    rng = np.random.default_rng(9)
    chunks = (5, 8, 3)
    k = sum(chunks)
    x, w, bias, m0, shift = gemm_case(c, rng, 1, 1, k)
    # Partial sums leave 16 bits, the final one comes back: only it must fit.
    x[:, :15] = -128
    w[:8], w[8:15] = -127, 127
    bias[:] = 0
    group = [(bias, m0, shift)]
    program, k0 = CLEAR + load_par(0, 0, group), 0
    for n, kc in enumerate(chunks):
        bank = n % 2
        program += (load_act(bank, 0, [x[:, kk] for kk in range(k0, k0 + kc)])
                    + load_wgt(bank, 0, [w[kk] for kk in range(k0, k0 + kc)])
                    + compute(kc, 1, 1, banks=(bank, bank, 0, 0), partial=n < 2))
        k0 += kc
    program += store(0, 0, c.rows) + STATUS + CLEAR + STATUS
    n_out = c.rows * words_per_lanes(c.cols)
    out = run(c, program, n_out + 12, p_idle=0.3, p_stall=0.3)
    y = decode_output(c, out[:n_out], c.rows, c.cols)
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))
    status, error, last, _, total, computes = out[n_out:n_out + 6]
    assert (status, error, computes) == (0, 0, 3)
    assert k <= total and last < total
    assert out[n_out + 6:] == [0, 0, last, 0, 0, 0]


def first_response_cycle(config, words):
    """Cycle in which the accelerator offers its first response word to a ready host."""
    seen = []
    run(config, words, 1, max_cycles=200, log=seen)
    return seen[0]


def test_three_response_slices(monkeypatch):
    """The controller's extra response slice (``Plan.response_slices == 3``, ECP5's large
    arrays, whose kept flip-flops this simulator cannot run): outputs, ID and STATUS come
    back exact and in order under bubbles and backpressure, one cycle later than with two
    slices."""
    import dataclasses

    import hw.config

    c = AcceleratorConfig(rows=3, cols=5, act_depth=12, wgt_depth=10, par_depth=3,
                          out_depth=24, buffer_latency=2, buffer_output_register=True)
    two = first_response_cycle(c, ID)
    real_plan = hw.config.plan
    monkeypatch.setattr(hw.config, "plan",
                        lambda config: dataclasses.replace(real_plan(config), response_slices=3))
    assert c.resources.response_slices == 3
    assert first_response_cycle(c, ID) == two + 1
    rng = np.random.default_rng(10)
    x, w, bias, m0, shift = gemm_case(c, rng, m_tiles=2, n_tiles=2, k=4)
    words, n_out = gemm_program(c, x, w, bias, m0, shift, banks=(1, 0, 1, 1))
    out = run(c, ID + words + STATUS + ID, 10 + n_out + 6 + 10, seed=5, p_idle=0.3,
              p_stall=0.4)
    assert out[:10] == out[-10:] == Controller(c).id_words()
    y = decode_output(c, out[10:10 + n_out], x.shape[0], w.shape[1])
    np.testing.assert_array_equal(y, golden(c, x, w, bias, m0, shift))
    status, error, _, count, _, computes = out[10 + n_out:10 + n_out + 6]
    assert (status, error, count, computes) == (0, 0, 0, 1)
