# amaranth: UnusedElaboratable=no
"""The whole accelerator on Verilator: rtl(program) == golden(layer), responses == ISA model.

Programs come from ``hw.driver``; ``sim.tb.accel_tb`` drives them into ``hw.top.Accelerator``
with random valid gaps and ready stalls; every result is decoded here and compared with the
golden model, every response stream with ``sim.model.IsaModel`` (STATUS's busy bit and
cycle count excepted: the model has no timing).
"""

import functools

import numpy as np
import pytest

from hw import driver as drv
from hw.array import array_latency
from hw.compute import ComputeEngine, buffer_latency
from hw.config import AcceleratorConfig
from hw.isa import ID_WORDS, STATUS_WORDS, Op
from hw.requant import Requantizer
from sim import bench
from sim.model import IsaModel
from tests.hw.test_driver import golden_gemm

CONFIGS = {
    # Registered buffer read data, as on ECP5.
    "4x4": AcceleratorConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, par_depth=2,
                             out_depth=32, buffer_output_register=True),
    # Host beats through a relay of 3 stages each way (hw.build --host-relay 3).
    "3x5-single-h8": AcceleratorConfig(rows=3, cols=5, rounding="single", host_width=8,
                                       acc_width=24, act_depth=48, wgt_depth=40, par_depth=2,
                                       out_depth=30, host_relay=3),
    # Buffers with registered inputs, as on ECP5 (read latency 2).
    "8x8-h64": AcceleratorConfig(rows=8, cols=8, host_width=64, act_depth=128, wgt_depth=96,
                                 par_depth=3, out_depth=96, buffer_latency=2),
}
SLOW_CONFIGS = {
    "16x16-h128": AcceleratorConfig(host_width=128),
    "5x3-h16-acc20": AcceleratorConfig(rows=5, cols=3, host_width=16, acc_width=20,
                                       rounding="single", act_depth=32, wgt_depth=32,
                                       par_depth=2, out_depth=20),
}
BACKPRESSURE = dict(gap_p=0.3, gap_max=3, stall_p=0.3, stall_max=4)


@functools.cache
def build_dir(name):
    return bench.build({**CONFIGS, **SLOW_CONFIGS}[name])


def random_layer(rng, config, m, k, n):
    """Full-range operands; per-channel (M0, shift) over a wide span of exponents; nonzero
    z_out; no clamp, ReLU or ReLU6-like ranges."""
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    x.flat[rng.integers(0, x.size)] = -128
    w.flat[rng.integers(0, w.size)] = -127
    acc_room = 2 ** (config.acc_width - 1) - 1 - k * 127 * 128
    bias = rng.integers(-min(acc_room, 2 ** 24), min(acc_room, 2 ** 24) + 1, n)
    real = np.exp2(rng.uniform(-14 - np.log2(k), 3 - np.log2(k), n))
    if rng.random() < 0.3:
        # Shift at both ends: -31, and the largest left shift that cannot wrap acc * 2^left.
        bound = k * 127 * 128 + int(np.abs(bias).max())
        top = 31 - bound.bit_length()
        real[rng.integers(0, n)] = rng.choice([2.0 ** -31.5, 2.0 ** (top - 0.5)])
    m0, shift = drv.multipliers(config, real)
    z_out = int(rng.integers(-128, 128))
    act = rng.integers(0, 3)
    act_min, act_max = ((-128, 127), (max(-128, z_out), 127),
                        (max(-128, z_out), min(127, z_out + int(rng.integers(1, 100)))))[act]
    return x, w, bias, m0, shift, z_out, act_min, act_max


def ragged_shapes(rng, config, count):
    r, c = config.rows, config.cols
    k_max = min(config.act_depth, config.wgt_depth)
    fixed = [(1, 1, 1), (r, 1, c), (r + 1, 2 * r + 1, c - 1 or 1), (1, k_max, 1),
             (3 * r + 2, k_max // 3, 4 * c + 1)]
    rand = [(int(rng.integers(1, 5 * r)), int(rng.integers(1, k_max // 2 + 1)),
             int(rng.integers(1, 5 * c))) for _ in range(count)]
    return fixed + rand


def check_responses(config, got, want, sizes, kinds):
    """Response by response: STATUS without busy bit and cycles, everything else exact."""
    g = drv.split_responses(got, sizes, config.host_width)
    w = drv.split_responses(want, sizes, config.host_width)
    for n, (kind, a, b) in enumerate(zip(kinds, g, w, strict=True)):
        if kind == "status":
            sa, sb = drv.parse_status(a), drv.parse_status(b)
            assert (sa.error_pending, sa.error, sa.error_count) == \
                (sb.error_pending, sb.error, sb.error_count), f"response {n}: {sa} != {sb}"
            assert int(a[0]) & ~3 == 0, f"response {n}: reserved status bits {int(a[0]):#x}"
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"response {n} ({kind})")


class Script:
    """A command stream built piece by piece, with the kinds and sizes of its responses."""

    def __init__(self, config):
        self.config = config
        self.parts, self.kinds, self.sizes = [], [], []

    def add(self, words, *responses):
        self.parts.append(np.asarray(words, dtype=np.uint32))
        for kind, size in responses:
            self.kinds.append(kind)
            self.sizes.append(size)

    def status(self):
        self.add(drv.cmd_status(), ("status", len(STATUS_WORDS)))

    def program(self, program):
        self.add(program.words, *program.responses)

    @property
    def words(self):
        return drv.pad_to_beats(np.concatenate(self.parts), self.config.host_width)

    @property
    def expect(self):
        return drv.response_length(self.sizes, self.config.host_width)


@pytest.mark.parametrize("name", CONFIGS)
def test_random_gemms_with_backpressure(name, tmp_path):
    """Ragged GEMMs (M, K, N not multiples of R, C; 1s), chunked and double-buffered."""
    config = CONFIGS[name]
    rng = np.random.default_rng([11, len(name)])
    layers, runs = [], [bench.Run(drv.pad_to_beats(np.concatenate(
        [drv.cmd_id(), drv.cmd_status()]), config.host_width),
        drv.response_length([len(ID_WORDS), len(STATUS_WORDS)], config.host_width))]
    for n, (m, k, nn) in enumerate(ragged_shapes(rng, config, 8)):
        layer = random_layer(rng, config, m, k, nn)
        program = drv.compile_gemm(config, *layer, strategy=drv.STRATEGIES[n % 2])
        layers.append((layer, program))
        runs.append(bench.Run.of(program))
    assert any(len(p.plan.steps) > 2 for _, p in layers)
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name),
                            seed=int(rng.integers(1 << 30)), **BACKPRESSURE)
    ident, status = drv.split_responses(results[0].resp, [len(ID_WORDS), len(STATUS_WORDS)],
                                        config.host_width)
    assert drv.parse_id(ident).to_config(config.host_width) == drv.reported(config)
    assert drv.parse_status(status) == drv.Status(False, False, 0, 0, 0)
    for (layer, program), result in zip(layers, results[1:], strict=True):
        plan = program.plan
        np.testing.assert_array_equal(program.decode(result.resp), golden_gemm(config, *layer),
                                      err_msg=f"{name} M, K, N = {plan.m}, {plan.k}, {plan.n}")
        last = program.plan.steps[-1]
        assert program.status(result.resp).compute_cycles >= last.m_tiles * last.n_tiles * \
            program.plan.k


def test_back_to_back_programs_without_backpressure(tmp_path):
    """Programs concatenated in one stream: the next one's loads overlap the last STOREs."""
    name = "4x4"
    config = CONFIGS[name]
    rng = np.random.default_rng(5)
    script, layers = Script(config), []
    for m, k, n in ragged_shapes(rng, config, 4):
        layer = random_layer(rng, config, m, k, n)
        program = drv.compile_gemm(config, *layer, status=False)
        layers.append((layer, program))
        script.program(program)
    script.status()
    [result] = bench.run_rtl(config, [bench.Run(script.words, script.expect)],
                             workdir=tmp_path, build_dir=build_dir(name))
    check_responses(config, result.resp, IsaModel(config).run(script.words), script.sizes,
                    script.kinds)
    resp = result.resp
    for layer, program in layers:
        n = program.expected_response_words
        np.testing.assert_array_equal(program.decode(resp[:n]), golden_gemm(config, *layer))
        resp = resp[n:]
    assert drv.parse_status(resp).error == 0


def beats_through(config, words):
    """Input beats up to and including the one carrying word ``words - 1``."""
    wpb = drv.words_per_beat(config.host_width)
    return -(-words // wpb) * max(1, 32 // config.host_width)


@pytest.mark.parametrize("name", CONFIGS)
def test_reset_in_the_middle(name, tmp_path):
    """Reset while loading (in the middle of a narrow host's word), right after a COMPUTE
    was accepted, and in the middle of a STORE's response; each time STATUS then reads zero
    and a fresh program is exact."""
    config = CONFIGS[name]
    rng = np.random.default_rng([3, len(name)])
    r, c = config.rows, config.cols
    big_layer = random_layer(rng, config, 5 * r + 1, config.act_depth // 3, 3 * c + 2)
    big = drv.compile_gemm(config, *big_layer)
    # An error before the reset, which the reset must clear.
    words = drv.pad_to_beats(np.concatenate([np.array([0x0F << 24], np.uint32), big.words]),
                             config.host_width)
    last_compute = int(np.flatnonzero((words >> 24) == Op.COMPUTE)[-1])
    status_only = drv.pad_to_beats(drv.cmd_status(), config.host_width)
    n_status = drv.response_length([len(STATUS_WORDS)], config.host_width)
    out_beats = beats_through(config, big.expected_response_words)
    runs, fresh = [], []
    for reset in (("in", beats_through(config, len(words)) // 3 | 1),
                  ("in", beats_through(config, last_compute + 1 + 8)),
                  ("out", out_beats // 2 | 1), ("cycle", 5)):
        layer = random_layer(rng, config, int(rng.integers(1, 3 * r)),
                             int(rng.integers(1, 40)), int(rng.integers(1, 3 * c)))
        program = drv.compile_gemm(config, *layer)
        fresh.append((layer, program))
        runs += [bench.Run(words, big.expected_response_words, reset=reset,
                           steps=bench.compute_steps(big)),
                 bench.Run(status_only, n_status),
                 bench.Run.of(program)]
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name))
    for n, (layer, program) in enumerate(fresh):
        after_reset, result = results[3 * n + 1], results[3 * n + 2]
        assert drv.parse_status(after_reset.resp) == drv.Status(False, False, 0, 0, 0)
        np.testing.assert_array_equal(program.decode(result.resp), golden_gemm(config, *layer))


def illegal_script(config, rng):
    """Every error of docs/isa.md, each followed by STATUS (and CLEAR), between valid work
    whose results must not be disturbed."""
    s = Script(config)
    r, c = config.rows, config.cols
    k = 6
    x, w, bias, m0, shift, z_out, act_min, act_max = random_layer(rng, config, 2 * r, k, 2 * c)
    valid = drv.compile_gemm(config, x, w, bias, m0, shift, z_out, act_min, act_max,
                             status=False, strategy="fewest")
    assert len(valid.plan.steps) == 1
    step = valid.plan.steps[0]
    compute_and_store = np.concatenate([
        drv.cmd_compute(k, step.m_tiles, step.n_tiles, layer=drv.layer_word(z_out, act_min,
                                                                            act_max),
                        banks=(step.act_bank, step.wgt_bank, step.wgt_bank, 1)),
        drv.cmd_store(1, 0, 2 * r * 2)])
    store_size = 2 * r * 2 * -(-c // 4)

    def error(words):
        s.add(words)
        s.status()
        s.add(drv.cmd_clear())

    s.add(drv.cmd_clear())
    s.status()
    s.program(valid)
    error(np.array([0x09 << 24], np.uint32))
    error(np.array([0xFF << 24 | 0xABCDEF], np.uint32))
    # Reserved header bits and unused flags are ignored.
    s.add(np.array([Op.STATUS << 24 | 0x5A5A5F], np.uint32), ("status", len(STATUS_WORDS)))
    junk_act = rng.integers(-128, 128, (3, r), dtype=np.int8)
    junk_wgt = rng.integers(-128, 128, (3, c), dtype=np.int8)
    junk_par = [np.full((2, c), v) for v in (7, 1 << 30, -3)]
    for bank in (0, 1):
        error(drv.cmd_load_act(bank, config.act_depth - 2, junk_act))
        error(drv.cmd_load_wgt(bank, config.wgt_depth - 1, junk_wgt[:2]))
        error(drv.cmd_load_par(bank, config.par_depth - 1, *junk_par))
    error(drv.cmd_load_act(0, 2 ** 32 - 1, junk_act[:1]))
    error(drv.cmd_load_wgt(0, 2 ** 32 - 2, junk_wgt[:3]))
    error(drv.command(Op.LOAD_ACT, 0, 0, 0))
    error(drv.command(Op.LOAD_PAR, 1, 0, 0))
    for args, kw in [((0, 1, 1), {}), ((1, 0, 1), {}), ((1, 1, 0), {}),
                     ((config.act_depth // 2 + 1, 2, 1), {}),
                     ((config.wgt_depth // 2 + 1, 1, 2), {}),
                     ((1, 1, config.par_depth + 1), {}),
                     ((1, 1, 1), {"par_addr": config.par_depth}),
                     ((1, 1, 1), {"act_addr": config.act_depth}),
                     ((1, 1, 1), {"wgt_addr": 2 ** 32 - 1}),
                     ((2 ** 31, 2, 1), {}), ((1, 2 ** 16, 2 ** 16), {}),
                     ((1, config.out_depth // r + 1, 1), {}),
                     ((1, 1, 1), {"out_addr": config.out_depth - r + 1})]:
        error(drv.cmd_compute(*args, **kw))
    error(drv.cmd_store(0, config.out_depth, 1))
    error(drv.cmd_store(1, 0, 0))
    error(drv.cmd_store(0, 2 ** 32 - 1, 1))
    error(drv.cmd_store(1, 1, config.out_depth))
    # The resident operands survived the dropped loads: recompute, store, same words.
    s.add(compute_and_store, ("store", store_size))
    # Sticky: the first error wins, the count goes on; STATUS and CLEAR never wait.
    s.add(np.concatenate([drv.cmd_store(0, 0, 0), np.array([0x0C << 24], np.uint32),
                          drv.cmd_compute(0, 0, 0)]))
    s.status()
    s.add(compute_and_store, ("store", store_size))
    s.status()
    s.add(drv.cmd_clear())
    s.add(drv.cmd_id(), ("id", len(ID_WORDS)))
    return s


@pytest.mark.parametrize("name", ["4x4", "3x5-single-h8"])
def test_illegal_commands(name, tmp_path):
    """Errors set the documented STATUS, write nothing, never hang; a following valid
    program computes exactly."""
    config = CONFIGS[name]
    rng = np.random.default_rng([23, len(name)])
    script = illegal_script(config, rng)
    layer = random_layer(rng, config, 2 * config.rows + 1, 9, 3 * config.cols - 1)
    after = drv.compile_gemm(config, *layer)
    results = bench.run_rtl(config, [bench.Run(script.words, script.expect),
                                     bench.Run.of(after)],
                            workdir=tmp_path, build_dir=build_dir(name), **BACKPRESSURE)
    want = IsaModel(config).run(script.words)
    check_responses(config, results[0].resp, want, script.sizes, script.kinds)
    np.testing.assert_array_equal(after.decode(results[1].resp), golden_gemm(config, *layer))


def random_par(rng, config, count, k_max):
    """Random valid parameter groups: full-range M0, any shift that cannot wrap."""
    c = config.cols
    bias = rng.integers(-2 ** 20, 2 ** 20, (count, c))
    m0 = rng.integers(0, 2 ** 31, (count, c))
    m0[rng.random((count, c)) < 0.1] = 2 ** 31 - 1
    left = max(0, 30 - (k_max * 2 ** 14 + 2 ** 20).bit_length())
    shift = rng.integers(-31, left + 1, (count, c))
    return bias, m0, shift


def random_isa_script(config, rng, commands):
    """Random valid commands at random addresses and banks (all four buffers, non-zero
    offsets, full-range int8 including -128 weights), with STATUS, ID, NOP and the odd
    error in between; STOREs only read output words some COMPUTE wrote. Every bit the ISA
    says the hardware ignores is random: reserved header bits, unused flags, unused high
    bytes of data words, the shift word's upper 26 bits, the layer word's top byte."""
    s = Script(config)
    r, c = config.rows, config.cols
    k_max = min(config.act_depth, config.wgt_depth, 64,
                (2 ** (config.acc_width - 1) - 1 - 2 ** 20) // 2 ** 14)
    written = np.zeros((2, config.out_depth), bool)

    def add(words, *responses):
        words = np.array(words, dtype=np.uint32)
        op = int(words[0]) >> 24
        used = {Op.COMPUTE: 0x1F, Op.LOAD_ACT: 1, Op.LOAD_WGT: 1, Op.LOAD_PAR: 1,
                Op.STORE: 1}.get(op, 0)
        words[0] |= int(rng.integers(0, 1 << 24)) & ~used & 0xFFFFFF
        s.add(words, *responses)

    def junk_lanes(values):
        words = drv.pack_lanes(values)
        lanes = values.shape[1]
        if lanes % 4:
            mask = (0xFFFFFFFF << (8 * (lanes % 4))) & 0xFFFFFFFF
            junk = rng.integers(0, 1 << 32, len(words), dtype=np.uint64).astype(np.uint32)
            words[:, -1] |= junk & np.uint32(mask)
        return words.ravel()

    def load_act(bank, addr, count):
        add(np.concatenate([drv.command(Op.LOAD_ACT, bank, addr, count),
                            junk_lanes(rng.integers(-128, 128, (count, r), np.int8))]))

    def load_wgt(bank, addr, count):
        add(np.concatenate([drv.command(Op.LOAD_WGT, bank, addr, count),
                            junk_lanes(rng.integers(-128, 128, (count, c), np.int8))]))

    def load_par(bank, addr, count):
        bias, m0, shift = random_par(rng, config, count, k_max)
        shift = (shift & 0x3F) | rng.integers(0, 1 << 26, shift.shape) << 6
        shift = (shift ^ 2 ** 31) - 2 ** 31      # as int32
        add(drv.cmd_load_par(bank, addr, bias, m0, shift))

    def compute(bank_out=None, whole=False):
        k = 1 if whole else int(rng.integers(1, k_max + 1))
        mt_max = min(config.act_depth // k, config.out_depth // r)
        mt = mt_max if whole else int(rng.integers(1, mt_max + 1))
        nt_max = min(config.wgt_depth // k, config.par_depth, config.out_depth // (r * mt))
        nt = 1 if whole else int(rng.integers(1, nt_max + 1))
        out_words = mt * r * nt
        addrs = [int(rng.integers(0, limit + 1)) for limit in (
            config.act_depth - mt * k, config.wgt_depth - nt * k, config.par_depth - nt,
            config.out_depth - out_words)]
        if whole:
            addrs[3] = 0
        banks = [int(b) for b in rng.integers(0, 2, 4)]
        if bank_out is not None:
            banks[3] = bank_out
        z_out = int(rng.integers(-128, 128))
        lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
        layer = drv.layer_word(z_out, lo, hi) | int(rng.integers(0, 256)) << 24
        add(drv.cmd_compute(k, mt, nt, act_addr=addrs[0], wgt_addr=addrs[1],
                            par_addr=addrs[2], out_addr=addrs[3], layer=layer, banks=banks))
        written[banks[3], addrs[3]:addrs[3] + out_words] = True

    def store():
        bank = int(rng.integers(0, 2))
        starts = np.flatnonzero(written[bank])
        if len(starts) == 0:
            return
        addr = int(rng.choice(starts))
        run = np.argmin(np.append(written[bank, addr:], False))
        count = int(rng.integers(1, run + 1))
        add(drv.cmd_store(bank, addr, count), ("store", count * -(-c // 4)))

    for bank in (0, 1):
        load_act(bank, 0, config.act_depth)
        load_wgt(bank, 0, config.wgt_depth)
        load_par(bank, 0, config.par_depth)
    for bank in (0, 1):
        compute(bank_out=bank, whole=True)
    s.status()
    for _ in range(commands):
        op = rng.choice(["act", "wgt", "par", "compute", "compute", "store", "store",
                         "status", "misc"])
        if op in ("act", "wgt", "par"):
            depth = {"act": config.act_depth, "wgt": config.wgt_depth,
                     "par": config.par_depth}[op]
            count = int(rng.integers(1, min(depth, 20) + 1))
            addr = int(rng.integers(0, depth - count + 1))
            {"act": load_act, "wgt": load_wgt, "par": load_par}[op](
                int(rng.integers(0, 2)), addr, count)
        elif op == "compute":
            compute()
        elif op == "store":
            store()
        elif op == "status":
            add(drv.cmd_status(), ("status", len(STATUS_WORDS)))
        else:
            which = rng.integers(0, 4)
            if which == 0:
                add(drv.cmd_nop())
            elif which == 1:
                add(drv.cmd_id(), ("id", len(ID_WORDS)))
            elif which == 2:
                add(drv.cmd_store(0, config.out_depth, 1))
            else:
                s.add(np.array([int(rng.integers(9, 256)) << 24], np.uint32))
    s.status()
    return s


@pytest.mark.parametrize("name", CONFIGS)
def test_random_command_streams(name, tmp_path):
    """Random valid ISA streams with non-zero addresses and both banks of every buffer: the
    RTL's responses equal the ISA model's, word for word."""
    config = CONFIGS[name]
    rng = np.random.default_rng([41, len(name)])
    scripts = [random_isa_script(config, rng, 60) for _ in range(2)]
    runs = [bench.Run(sc.words, sc.expect) for sc in scripts]
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name),
                            seed=int(rng.integers(1 << 30)), **BACKPRESSURE)
    model = IsaModel(config)
    for script, result in zip(scripts, results, strict=True):
        check_responses(config, result.resp, model.run(script.words), script.sizes,
                        script.kinds)


def test_interlocks_and_busy_status(tmp_path):
    """A LOAD into a bank the running COMPUTE reads, a STORE from the bank it writes and a
    second COMPUTE all wait; STATUS during a COMPUTE shows busy and a running count."""
    name = "4x4"
    config = CONFIGS[name]
    rng = np.random.default_rng(17)
    r, c = config.rows, config.cols
    s = Script(config)
    k, mt, nt = 16, 4, 2                      # 128 array steps: a long COMPUTE
    par = random_par(rng, config, config.par_depth, k)
    layer = drv.layer_word(3, -100, 100)
    for bank in (0, 1):
        s.add(drv.cmd_load_act(bank, 0, rng.integers(-128, 128, (mt * k, r), np.int8)))
        s.add(drv.cmd_load_wgt(bank, 0, rng.integers(-128, 128, (nt * k, c), np.int8)))
        s.add(drv.cmd_load_par(bank, 0, *par))
    run = drv.cmd_compute(k, mt, nt, layer=layer)
    store = drv.cmd_store(0, 0, mt * r * nt)
    store_resp = ("store", mt * r * nt * -(-c // 4))
    s.add(run)
    busy_at = len(s.kinds)
    s.status()                                 # during the COMPUTE: busy
    for load in (drv.cmd_load_act(0, 0, rng.integers(-128, 128, (mt * k, r), np.int8)),
                 drv.cmd_load_wgt(0, 0, rng.integers(-128, 128, (nt * k, c), np.int8)),
                 drv.cmd_load_par(0, 0, *random_par(rng, config, config.par_depth, k))):
        s.add(load)                            # must wait for the COMPUTE reading bank 0
    s.add(store, store_resp)                   # the old operands' result
    s.add(run)
    s.add(store, store_resp)                   # waits for the new result
    s.add(drv.cmd_compute(k, mt, nt, layer=layer, banks=(1, 1, 1, 1)))
    s.add(run)                                 # a second COMPUTE waits for the first
    s.add(drv.cmd_store(1, 0, mt * r * nt), store_resp)
    s.add(store, store_resp)
    s.status()
    [result] = bench.run_rtl(config, [bench.Run(s.words, s.expect)], workdir=tmp_path,
                             build_dir=build_dir(name))
    check_responses(config, result.resp, IsaModel(config).run(s.words), s.sizes, s.kinds)
    statuses = drv.split_responses(result.resp, s.sizes, config.host_width)
    busy, done = drv.parse_status(statuses[busy_at]), drv.parse_status(statuses[-1])
    assert busy.busy and 0 < busy.compute_cycles < k * mt * nt, busy
    assert not done.busy and done.compute_cycles >= k * mt * nt, done


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_CONFIGS)
def test_slow_configs(name, tmp_path):
    """Bigger and odder builds: 16x16 with a 128-bit host on a 256^3-class GEMM, a 5x3
    array with a 16-bit host and a 20-bit accumulator."""
    config = SLOW_CONFIGS[name]
    rng = np.random.default_rng([31, len(name)])
    k_max = min(config.act_depth, config.wgt_depth, 256)
    shapes = [(1, 1, 1), (config.rows * 16 - 3, k_max, config.cols * 16 - 5)]
    if config.acc_width < 32:
        k_max = min(k_max, (2 ** (config.acc_width - 1) - 1 - 2 ** 10) // (127 * 128))
        shapes = [(1, 1, 1), (17, k_max, 13), (4, 3, 29)]
    layers, runs = [], []
    for m, k, n in shapes:
        layer = random_layer(rng, config, m, min(k, k_max), n)
        program = drv.compile_gemm(config, *layer)
        layers.append((layer, program))
        runs.append(bench.Run.of(program))
    script = illegal_script(config, rng)
    runs.append(bench.Run(script.words, script.expect))
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name),
                            **BACKPRESSURE)
    for (layer, program), result in zip(layers, results, strict=False):
        np.testing.assert_array_equal(program.decode(result.resp), golden_gemm(config, *layer))
    check_responses(config, results[-1].resp, IsaModel(config).run(script.words),
                    script.sizes, script.kinds)


def test_bench_measures_a_resident_gemm(tmp_path):
    """``sim.bench.measure``: one COMPUTE, STATUS cycles >= ideal, phases add up."""
    name = "4x4"
    config = CONFIGS[name]
    program, want = bench.random_gemm(config, 8, 30, 8, np.random.default_rng(2))
    assert len(program.plan.steps) == 1
    [row] = bench.measure(config, [("gemm", program, want)], build_dir=build_dir(name),
                          workdir=tmp_path)
    assert row.exact and row.computes == 1
    # Fill and drain: the feeder, the array, the parameter join, the requantizer and the
    # other rows of the last tile; the latencies come from the components.
    overhead = (ComputeEngine(config).latency
                + array_latency(config.rows, config.cols, config.resources.product_register,
                                config.resources.drain)
                + buffer_latency(config, "par")
                + Requantizer(config.cols, rounding=config.rounding).latency + config.rows)
    assert row.ideal == 2 * 2 * 30 <= row.compute <= row.ideal + overhead
    p = row.phases
    assert abs(p["load"] + p["compute_tb"] + p["store"] - row.total) <= 2, (p, row.total)
    assert p["compute_tb"] >= row.compute
    assert "gemm" in bench.format_table(config, [row]) and "ideal 120" in \
        bench.format_phases(row)


@pytest.mark.parametrize("argv, message", [
    (["gemm", "--pe", "0x4"], "--pe rows must be in 1..64"),
    (["gemm", "--m", "-3"], "must be a positive integer"),
    (["layers", "--host-width", "24"], "invalid choice"),
    (["gemm", "--acc-width", "16", "--k", "3"], "16-bit"),
    (["gemm", "--seed", "-1"], "--seed: must be a non-negative integer"),
    (["gemm", "--m", "1000000000"], "M=1000000000 K=256 N=256 needs about"),
    (["conv", "--cin", "100000", "--size", "1000"], "needs about"),
])
def test_bench_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", CONFIGS)
def test_split_k_with_backpressure(name, tmp_path):
    """K beyond a bank (two, three and more chunks): partial COMPUTEs keep the sums in the
    array; exact, and STATUS counts every COMPUTE of the program."""
    config = CONFIGS[name]
    rng = np.random.default_rng([13, len(name)])
    r, c = config.rows, config.cols
    depth = min(config.act_depth, config.wgt_depth)
    k_fits = (2 ** (config.acc_width - 1) - 1 - 2 ** 20) // (127 * 128)
    shapes = [(2 * r + 1, 2 * depth - 3, 2 * c - 1), (r, 3 * depth + 1, c + 1),
              (1, 5 * depth, 1)]
    layers, runs = [], []
    for m, k, n in shapes:
        layer = random_layer(rng, config, m, min(k, k_fits), n)
        program = drv.compile_gemm(config, *layer, strategy=drv.STRATEGIES[len(runs) % 2])
        layers.append((layer, program))
        runs.append(bench.Run.of(program))
    assert any(p.plan.k_chunks >= 3 for _, p in layers)
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name),
                            seed=int(rng.integers(1 << 30)), **BACKPRESSURE)
    for (layer, program), result in zip(layers, results, strict=True):
        plan = program.plan
        np.testing.assert_array_equal(program.decode(result.resp), golden_gemm(config, *layer),
                                      err_msg=f"{name} M, K, N = {plan.m}, {plan.k}, {plan.n}")
        busy, computes = program.usage(result.resp)
        assert computes == len(plan.steps) and busy >= plan.ideal_cycles


def command_like_layer(rng, config, m, k, n):
    """Operands whose data words read as COMPUTE headers (top byte 0x05), followed by words
    that would announce huge K, m_tiles and n_tiles: lane 3 (mod 4) of activations and
    weights is 5, lane 2 is -2 (0x05fe....), biases are 0x0545...., M0s 0x05fe....."""
    x, w, bias, m0, shift, z_out, act_min, act_max = random_layer(rng, config, m, k, n)
    x[3::4], x[2::4] = 5, -2
    w[:, 3::4], w[:, 2::4] = 5, -2
    bias = 0x05450000 + rng.integers(0, 1 << 16, n)
    m0 = 0x05FE0000 + rng.integers(0, 1 << 16, n)
    return x, w, bias, m0, shift, z_out, act_min, act_max


def test_data_that_looks_like_commands(tmp_path):
    """Data words that decode as COMPUTE headers must not change the run: the time budget
    comes from the commands the driver emitted."""
    name = "4x4"
    config = CONFIGS[name]
    rng = np.random.default_rng(19)
    layers, runs = [], []
    for m, k, n in ((9, 11, 10), (5, 2 * config.act_depth + 7, 6)):
        layer = command_like_layer(rng, config, m, k, n)
        program = drv.compile_gemm(config, *layer)
        words = program.words
        assert np.count_nonzero(words >> 24 == Op.COMPUTE) > len(program.plan.steps)
        layers.append((layer, program))
        runs.append(bench.Run.of(program))
        assert bench.default_timeout(config, words, program.expected_response_words,
                                     runs[-1].steps) < 100 * len(words) + 10 ** 5
    results = bench.run_rtl(config, runs, workdir=tmp_path, build_dir=build_dir(name),
                            **BACKPRESSURE)
    for (layer, program), result in zip(layers, results, strict=True):
        np.testing.assert_array_equal(program.decode(result.resp), golden_gemm(config, *layer))


@pytest.mark.slow
@pytest.mark.parametrize("pe", [(8, 8), (16, 16)])
def test_deep_convolutions(pe, tmp_path):
    """3x3 convolutions over 512 and 1024 channels (K = 4608, 9216: two and three chunks
    of the default 4096-word banks) on default-depth builds, exact; utilization of the
    COMPUTEs near the ideal."""
    config = AcceleratorConfig(rows=pe[0], cols=pe[1])
    rng = np.random.default_rng(29)
    layers = [bench.random_conv(config, rng, f"conv3x3 {cin}", 3, cin, 2 * pe[1] + 3, 3,
                                out_scale=0.03 * np.sqrt(9 * cin))
              for cin in (512, 1024)]
    assert [p.plan.k_chunks for _, p, _ in layers] == [2, 3]
    rows = bench.measure(config, layers, build_dir=bench.build(config), workdir=tmp_path)
    for row in rows:
        assert row.exact, row
        assert row.utilization > 0.9, bench.format_table(config, rows)


def test_failed_simulation_names_its_kept_log():
    """A failed run says what the testbench saw and keeps its case and log."""
    import re
    import shutil
    from pathlib import Path

    from sim.harness import SimulationFailed

    name = "4x4"
    config = CONFIGS[name]
    program = drv.compile_gemm(config, *random_layer(np.random.default_rng(1), config, 8, 30,
                                                     8))
    with pytest.raises(SimulationFailed, match=r"timeout after 20 cycles") as exc:
        bench.run_rtl(config, [bench.Run(program.words, program.expected_response_words,
                                         timeout=20)], build_dir=build_dir(name))
    folder = Path(re.search(r"kept in (\S+)\)", str(exc.value)).group(1))
    assert (folder / "sim.log").is_file() and (folder / "case.npz").is_file()
    shutil.rmtree(folder)
