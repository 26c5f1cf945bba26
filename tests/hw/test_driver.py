"""The host driver against the ISA model: driver -> sim.model -> decode == golden."""

import numpy as np
import pytest

from golden.arith import AccumulatorOverflowError, quantize_multiplier
from golden.ops import conv2d, fully_connected, gemm, output_multipliers
from golden.requant import requantize
from hw import driver as drv
from hw.config import AcceleratorConfig
from hw.isa import Error, Op
from sim.model import IsaModel, UnspecifiedBehaviour

SMALL = AcceleratorConfig(rows=4, cols=4, act_depth=64, wgt_depth=64, par_depth=2,
                          out_depth=32)
ODD = AcceleratorConfig(rows=3, cols=5, rounding="single", host_width=64, act_depth=45,
                        wgt_depth=50, par_depth=3, out_depth=30)
NARROW = AcceleratorConfig(rows=8, cols=8, host_width=8, act_depth=96, wgt_depth=128,
                           par_depth=4, out_depth=64)
WIDE = AcceleratorConfig(rows=2, cols=7, host_width=128, rounding="single", act_depth=20,
                         wgt_depth=20, par_depth=1, out_depth=6, acc_width=24)
CONFIGS = {"4x4": SMALL, "3x5": ODD, "8x8n": NARROW, "2x7w": WIDE,
           "16x16": AcceleratorConfig()}


def random_layer(rng, config, m, k, n):
    """Full-range int8 operands and per-channel requant parameters across exponents."""
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    w.flat[rng.integers(0, w.size)] = -127
    x.flat[rng.integers(0, x.size)] = -128
    bound = 2 ** 31 - 1 - k * 127 * 128
    bias = rng.integers(-min(bound, 2 ** 22), min(bound, 2 ** 22) + 1, n)
    # Multipliers spanning many exponents keep outputs away from being all-saturated.
    real = np.exp2(rng.uniform(-12 - np.log2(k), 2 - np.log2(k), n))
    m0, shift = drv.multipliers(config, real)
    z_out = int(rng.integers(-128, 128))
    act_min, act_max = sorted(int(v) for v in rng.integers(-128, 128, 2))
    if rng.random() < 0.3:
        act_min, act_max = max(-128, z_out), 127          # ReLU
    return x, w, bias, m0, shift, z_out, act_min, act_max


def golden_gemm(config, x, w, bias, m0, shift, z_out, act_min, act_max):
    acc = gemm(x, np.ascontiguousarray(w.T), acc_width=config.acc_width)
    return requantize(acc, bias, m0, shift, z_out, act_min, act_max, rounding=config.rounding)


def shapes(rng, config, count):
    r, c = config.rows, config.cols
    k_max = min(config.act_depth, config.wgt_depth, 3 * max(r, c) + 5)
    fixed = [(1, 1, 1), (r, 1, c), (r + 1, k_max, c + 1), (1, k_max, 1)]
    rand = [(int(rng.integers(1, 6 * r)), int(rng.integers(1, k_max + 1)),
             int(rng.integers(1, 6 * c))) for _ in range(count)]
    return fixed + rand


def split_shapes(rng, config, count):
    """K beyond a bank: just past it, two and three banks' worth, odd sizes."""
    r, c = config.rows, config.cols
    depth = min(config.act_depth, config.wgt_depth)
    fixed = [(1, depth + 1, 1), (r + 1, 2 * depth, 2 * c + 1), (2 * r, 3 * depth - 1, c)]
    rand = [(int(rng.integers(1, 3 * r)), int(rng.integers(depth + 1, 4 * depth)),
             int(rng.integers(1, 3 * c))) for _ in range(count)]
    return fixed + rand


@pytest.mark.parametrize("strategy", drv.STRATEGIES)
@pytest.mark.parametrize("name", CONFIGS)
def test_random_gemm_through_model(name, strategy):
    config = CONFIGS[name]
    rng = np.random.default_rng([7, len(name), strategy == "fewest"])
    model = IsaModel(config, seed=3)
    for m, k, n in shapes(rng, config, 12):
        layer = random_layer(rng, config, m, k, n)
        program = drv.compile_gemm(config, *layer, strategy=strategy)
        response = model.run(program.words)
        assert len(response) == program.expected_response_words
        np.testing.assert_array_equal(program.decode(response), golden_gemm(config, *layer),
                                      err_msg=f"{name} M={m} K={k} N={n}")
        status = program.status(response)
        assert status.error == 0 and not status.busy


@pytest.mark.parametrize("strategy", drv.STRATEGIES)
@pytest.mark.parametrize("name", CONFIGS)
def test_split_k_through_model(name, strategy):
    """K beyond a bank: partial COMPUTEs over chunks, exact."""
    config = CONFIGS[name]
    rng = np.random.default_rng([8, len(name), strategy == "fewest"])
    model = IsaModel(config, seed=4)
    for m, k, n in split_shapes(rng, config, 3):
        layer = random_layer(rng, config, m, k, n)
        program = drv.compile_gemm(config, *layer, strategy=strategy)
        assert program.plan.k_chunks == -(-k // min(config.act_depth, config.wgt_depth))
        response = model.run(program.words)
        np.testing.assert_array_equal(program.decode(response), golden_gemm(config, *layer),
                                      err_msg=f"{name} M={m} K={k} N={n}")
        assert program.usage(response) == (program.plan.ideal_cycles,
                                           len(program.plan.steps))


def test_plans_fit_banks_and_double_buffer():
    rng = np.random.default_rng(11)
    for config in CONFIGS.values():
        for m, k, n in shapes(rng, config, 20) + split_shapes(rng, config, 5):
            plan = drv.plan_gemm(config, m, k, n)
            covered = np.zeros((plan.m_tiles, plan.n_tiles, k), dtype=int)
            prev = None
            for s in plan.steps:
                assert s.m_tiles * s.k <= config.act_depth
                assert s.n_tiles * s.k <= config.wgt_depth
                assert s.n_tiles <= config.par_depth
                assert s.m_tiles * config.rows * s.n_tiles <= config.out_depth
                assert not s.partial or s.m_tiles == s.n_tiles == 1
                covered[s.t0:s.t0 + s.m_tiles, s.u0:s.u0 + s.n_tiles, s.k0:s.k0 + s.k] += 1
                if prev is not None:
                    # Never load into a bank the previous (maybe running) COMPUTE reads,
                    # never compute into the bank whose STORE is still to come, and a
                    # tile's partial steps run back to back and end in a final step.
                    assert prev.partial or s.out_bank != prev.out_bank
                    assert not s.load_act or s.act_bank != prev.act_bank
                    assert not s.load_wgt or s.wgt_bank != prev.wgt_bank
                    assert not s.load_par or s.par_bank != prev.par_bank
                    if prev.partial:
                        assert (s.t0, s.u0, s.out_bank) == (prev.t0, prev.u0, prev.out_bank)
                prev = s
            assert not prev.partial
            assert np.all(covered == 1)
            assert plan.ideal_cycles == -(-m // config.rows) * -(-n // config.cols) * k
            assert plan.ideal_cycles == sum(s.m_tiles * s.n_tiles * s.k for s in plan.steps)


def test_chunking_is_exercised():
    plan = drv.plan_gemm(SMALL, 37, 20, 23)
    assert len(plan.steps) > 2
    assert any(not s.load_act for s in plan.steps) or any(not s.load_wgt for s in plan.steps)
    # 256^3 on the default 16x16 build is resident at once with "fewest".
    assert len(drv.plan_gemm(AcceleratorConfig(), 256, 256, 256, "fewest").steps) == 1


def test_conv2d_and_fully_connected_match_golden():
    rng = np.random.default_rng(5)
    config = NARROW
    x = rng.integers(-128, 128, (2, 7, 6, 3), dtype=np.int8)
    w = rng.integers(-127, 128, (10, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 10).astype(np.int32)
    m0, shift = drv.layer_multipliers(config, 0.05, rng.uniform(0.001, 0.02, 10), 0.1)
    for padding, stride in (("SAME", 1), ("VALID", 2), ("SAME", (2, 1))):
        kw = dict(z_in=-7, z_out=3, stride=stride, padding=padding, act_min=3, act_max=127)
        program = drv.compile_conv2d(config, x, w, bias, m0, shift, **kw)
        y = program.decode(IsaModel(config)(program.words))
        np.testing.assert_array_equal(y, conv2d(x, w, bias, m0, shift, rounding="double",
                                                **kw))
    xf = rng.integers(-128, 128, (3, 40), dtype=np.int8)
    wf = rng.integers(-127, 128, (11, 40), dtype=np.int8)
    kw = dict(z_in=12, z_out=-20)
    y = drv.Driver(config, IsaModel(config)).fully_connected(xf, wf, None, m0[0], shift[0],
                                                             **kw)
    np.testing.assert_array_equal(y, fully_connected(xf, wf, None, m0[0], shift[0], **kw))


def test_multipliers_use_the_build_rounding():
    real = np.array([1e-12, 0.3, 0.75, 1.0, 3.5, 2.0 ** 31, 2.0 ** 40])
    for rounding in ("double", "single"):
        config = AcceleratorConfig(rounding=rounding)
        for got, want in zip(drv.multipliers(config, real),
                             quantize_multiplier(real, rounding=rounding), strict=True):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(drv.layer_multipliers(config, 0.02, [0.01, 0.3], 0.07),
                             output_multipliers(0.02, [0.01, 0.3], 0.07, rounding=rounding),
                             strict=True):
            np.testing.assert_array_equal(got, want)


def test_accumulator_overflow_is_refused():
    """Decided per channel from the weights and bias (golden.arith.check_accumulator)."""
    config = AcceleratorConfig(acc_width=16)
    x = np.zeros((4, 3), np.int8)
    w = np.full((3, 4), 127, np.int8)
    w[:, 2] = -127
    drv.compile_gemm(config, x[:, :2], w[:2], 0, 1 << 30, 0)      # 2 * 127 * 128 fits 16 bits
    with pytest.raises(AccumulatorOverflowError, match=r"output channel 0 .*K=3.*16-bit"):
        drv.compile_gemm(config, x, w, 0, 1 << 30, 0)
    drv.compile_gemm(AcceleratorConfig(), x, np.zeros((3, 4), np.int8), 2 ** 31 - 1, 1 << 30, 0)
    bias = [0, 0, 2 ** 31 - 1 - 3 * 127 * 128, 0]                  # channel 2: hi = 3 * 127 * 128
    drv.compile_gemm(AcceleratorConfig(), x, w, bias, 1 << 30, 0)
    bias[2] += 1
    with pytest.raises(AccumulatorOverflowError, match=r"output channel 2: .*int32"):
        drv.compile_gemm(AcceleratorConfig(), x, w, bias, 1 << 30, 0)


def test_split_k_reuses_resident_chunks():
    """Two chunks a tile: the next tile of the same activations finds them resident; three
    chunks: the order runs back and forth, so two of them are."""
    for chunks in (2, 3):
        plan = drv.plan_gemm(SMALL, 4, chunks * SMALL.act_depth, 12)
        assert plan.k_chunks == chunks
        loads = sum(s.load_act for s in plan.steps) + sum(s.load_wgt for s in plan.steps)
        # Weights: every chunk of the three tiles; activations: every chunk once, and with
        # three chunks one more at each of the two tile changes.
        assert loads == 3 * chunks + chunks + (0 if chunks == 2 else 2)


@pytest.mark.parametrize("bad, match", [
    (dict(w=np.full((2, 2), -128, np.int8)), "-127, 127"),
    (dict(x=np.zeros((2, 3), np.int8)), "share K"),
    (dict(x=np.zeros((2, 2), np.int16)), "int8"),
    (dict(shift=32), "shift"),
    (dict(m0=-1), "m0"),
    (dict(bias=np.zeros(3, int)), "shape"),
    (dict(act_min=5, act_max=4), "act_max"),
    (dict(z_out=128), "z_out"),
])
def test_bad_operands_are_refused(bad, match):
    args = dict(x=np.zeros((2, 2), np.int8), w=np.zeros((2, 2), np.int8), bias=0,
                m0=1 << 30, shift=0, z_out=0, act_min=-128, act_max=127)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        drv.compile_gemm(SMALL, **args)


def test_single_rounding_shift_range():
    config = AcceleratorConfig(rounding="single")
    with pytest.raises(ValueError, match="shift"):
        drv.compile_gemm(config, np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8), 0,
                         1 << 30, 31)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(1)
    for lanes in range(1, 10):
        v = rng.integers(-128, 128, (5, lanes), dtype=np.int8)
        words = drv.pack_lanes(v)
        assert words.shape == (5, (lanes + 3) // 4) and words.dtype == np.uint32
        np.testing.assert_array_equal(drv.unpack_lanes(words, lanes), v)
    assert drv.pack_lanes(np.array([1, -1, 2], np.int8))[0] == 0x02FF01


def test_id_and_status_through_driver():
    model = IsaModel(ODD)
    d = drv.Driver(ODD, model)
    dev = d.identify()
    assert (dev.rows, dev.cols, dev.rounding, dev.act_depth) == (3, 5, "single", 45)
    assert d.status() == drv.Status(False, False, 0, 0, 0)
    with pytest.raises(drv.AcceleratorError, match="device is"):
        drv.Driver(AcceleratorConfig(rows=3, cols=5, host_width=64), model).identify()
    with pytest.raises(drv.AcceleratorError, match="magic"):
        drv.parse_id(np.arange(10, dtype=np.uint32))


def model_status(model):
    return drv.parse_status(model.run(drv.cmd_status()))


def test_errors_are_sticky_counted_and_cleared():
    c = SMALL
    model = IsaModel(c)
    ones = np.ones((2, c.rows), np.int8)
    cases = [
        (np.array([0x09 << 24], np.uint32), Error.ILLEGAL_OPCODE),
        (np.array([0xFF << 24 | 0xFFFFFF], np.uint32), Error.ILLEGAL_OPCODE),
        (drv.cmd_load_act(0, c.act_depth - 1, ones), Error.LOAD_RANGE),
        (drv.cmd_load_act(1, 2 ** 32 - 1, ones[:1]), Error.LOAD_RANGE),
        (drv.command(Op.LOAD_WGT, 0, 0, 0), Error.LOAD_RANGE),
        (drv.cmd_load_par(0, c.par_depth, *np.zeros((3, 1, c.cols), int)), Error.LOAD_RANGE),
        (drv.cmd_compute(0, 1, 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 0, 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 1, 0), Error.COMPUTE_RANGE),
        (drv.cmd_compute(c.act_depth // 2 + 1, 2, 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(c.wgt_depth // 2 + 1, 1, 2), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 1, c.par_depth + 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 1, 1, par_addr=c.par_depth), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 1, 1, act_addr=2 ** 32 - 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(2 ** 31, 2, 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, c.out_depth // c.rows + 1, 1), Error.COMPUTE_RANGE),
        (drv.cmd_compute(1, 1, 1, out_addr=c.out_depth - c.rows + 1), Error.COMPUTE_RANGE),
        (drv.cmd_store(0, c.out_depth, 1), Error.STORE_RANGE),
        (drv.cmd_store(0, 0, 0), Error.STORE_RANGE),
        (drv.cmd_store(1, 2 ** 32 - 1, 1), Error.STORE_RANGE),
    ]
    for words, code in cases:
        assert len(model.run(words)) == 0, Error(code).name     # no response, no hang
        assert model_status(model) == drv.Status(False, True, code, 0, 1), Error(code).name
        model.run(drv.cmd_clear())
        assert model_status(model) == drv.Status(False, False, 0, 0, 0)
    # Sticky: the first error wins, the count goes on.
    for _ in range(2):
        model.run(np.concatenate([words for words, _ in cases]))
    assert model_status(model) == drv.Status(False, True, Error.ILLEGAL_OPCODE, 0,
                                             2 * len(cases))


def test_illegal_opcode_skips_only_its_header():
    model = IsaModel(SMALL)
    # 0x0A000001 is illegal; the next word is decoded as a header (STATUS).
    response = model.run(np.array([0x0A000001, Op.STATUS << 24], np.uint32))
    assert drv.parse_status(response) == drv.Status(False, True, Error.ILLEGAL_OPCODE, 0, 1)


def test_range_errors_write_nothing():
    c = SMALL
    rng = np.random.default_rng(2)
    model = IsaModel(c)
    x, w, *rest = random_layer(rng, c, 8, 16, 8)
    program = drv.compile_gemm(c, x, w, *rest, strategy="fewest")
    assert len(program.plan.steps) == 1
    before = program.decode(model.run(program.words))
    act, wgt, par, out = (a.copy() for a in (model.act, model.wgt, model.par, model.out))
    junk = np.full((3, c.rows), 99, np.int8)
    model.run(np.concatenate([
        drv.cmd_load_act(0, c.act_depth - 2, junk),
        drv.cmd_load_wgt(0, c.wgt_depth - 1, junk[:2, :c.cols]),
        drv.cmd_load_par(0, c.par_depth - 1, *np.ones((3, 2, c.cols), int)),
        drv.cmd_compute(16, 8, 1, out_addr=1),
        drv.cmd_compute(16, 1, 2, wgt_addr=c.wgt_depth - 31),
    ]))
    for a, b in ((act, model.act), (wgt, model.wgt), (par, model.par), (out, model.out)):
        np.testing.assert_array_equal(a, b)
    assert model_status(model).error_count == 5
    # Dropped data did not desynchronise the stream: the program still computes exactly.
    model.run(drv.cmd_clear())
    np.testing.assert_array_equal(program.decode(model.run(program.words)), before)


def test_decode_reports_errors_and_bad_lengths():
    c = SMALL
    model = IsaModel(c)
    program = drv.compile_gemm(c, np.ones((3, 3), np.int8), np.ones((3, 3), np.int8), 0,
                               1 << 30, 0)
    model.run(np.array([0x0B << 24], np.uint32))
    response = model.run(program.words)
    with pytest.raises(drv.AcceleratorError, match="ILLEGAL_OPCODE"):
        program.decode(response)
    with pytest.raises(drv.AcceleratorError, match="expected"):
        program.decode(response[:-1])
    with pytest.raises(drv.AcceleratorError, match="expected"):
        program.decode(np.concatenate([response, [0]]))


def test_model_streams_across_arbitrary_splits():
    c = ODD
    rng = np.random.default_rng(9)
    layer = random_layer(rng, c, 10, 14, 12)
    program = drv.compile_gemm(c, *layer)
    words = np.concatenate([drv.cmd_id(), program.words, drv.cmd_status()])
    whole = IsaModel(c).run(words)
    model = IsaModel(c)
    cuts = np.sort(rng.choice(len(words), 40, replace=False))
    pieces = [model.run(part) for part in np.split(words, cuts)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    # 64-bit host: every response padded to whole beats (ID: 10 words, STATUS: 6).
    assert len(whole) == 10 + program.expected_response_words + 6


def test_model_refuses_unspecified_results():
    c = SMALL
    model = IsaModel(c)
    model.run(np.concatenate([
        drv.cmd_load_act(0, 0, np.full((1, 4), 1, np.int8)),
        drv.cmd_load_wgt(0, 0, np.full((1, 4), 1, np.int8)),
        drv.cmd_load_par(0, 0, *np.array([[[0] * 4], [[1 << 30] * 4], [[32] * 4]])),
    ]))
    with pytest.raises(UnspecifiedBehaviour, match="shift"):
        model.run(drv.cmd_compute(1, 1, 1))
    model.run(drv.cmd_load_par(0, 0, *np.array([[[0] * 4], [[1 << 30] * 4], [[0] * 4]])))
    with pytest.raises(UnspecifiedBehaviour, match="act_min"):
        model.run(drv.cmd_compute(1, 1, 1, layer=drv.layer_word(0, 5, 4)))
    model.run(drv.cmd_load_par(0, 0, *np.array([[[2 ** 31 - 1] * 4], [[1 << 30] * 4],
                                                  [[0] * 4]])))
    with pytest.raises(UnspecifiedBehaviour, match="int32"):
        model.run(drv.cmd_compute(1, 1, 1))


def test_commands_cover_the_program_words():
    """``Program.commands`` names every command, data included, so a runner never has to
    parse the words (whose data may look like headers)."""
    rng = np.random.default_rng(21)
    for config in (SMALL, WIDE):
        for m, k, n in ((9, 30, 10), (5, 3 * config.act_depth + 1, 6)):
            program = drv.compile_gemm(config, *random_layer(rng, config, m, k, n))
            pos = 0
            for cmd in program.commands:
                assert cmd.start == pos and int(program.words[pos]) >> 24 == cmd.op
                pos += cmd.size
            assert not np.any(program.words[pos:])           # only NOP padding follows
            computes = [c for c in program.commands if c.op == Op.COMPUTE]
            assert len(computes) == len(program.plan.steps)
            assert sum(c.steps for c in computes) == program.plan.ideal_cycles
