"""The controller: command decoder, load engine, compute engine, store and response engine.

Implements ``docs/isa.md``. One 32-bit command word is consumed per cycle; the compute
engine (:class:`hw.compute.ComputeEngine`) runs a COMPUTE in the background while the
decoder goes on with the commands that do not touch the banks it uses.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .buffers import BankedBuffer
from .compute import (
    ComputeEngine,
    array_ports,
    buffer_shapes,
    check_config,
)
from .host import WORD
from .isa import (
    ARGS,
    FLAG_BITS,
    ISA_VERSION,
    MAGIC,
    PAR_WORDS_PER_CHANNEL,
    STATUS_WORDS,
    Error,
    Op,
    words_per_lanes,
)
from .requant import CHANNEL_PARAMS

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Decodes the ISA v2 command stream and owns the buffers and the compute engine.

    The decoder takes one word per cycle when it can. Loads assemble their data into the
    activation, weight and parameter buffers through per-lane (per-channel) write enables,
    so a buffer word is written piecewise as its data words arrive. STORE streams output
    words with one cycle of read latency before the first. Interlocks and errors follow
    ``docs/isa.md`` exactly.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    i : :py:`In(stream.Signature(32))`
        Command words.
    o : :py:`Out(stream.Signature(WORD))`
        Response words, ``last`` on the final word of each response.
    feed, acc, rq, res : streams
        To and from the systolic array and the requantizer, as in :class:`ComputeEngine`.
    """

    def __init__(self, config):
        check_config(config)
        self._config = c = config
        super().__init__({
            "i": In(stream.Signature(32)),
            "o": Out(stream.Signature(WORD)),
            **array_ports(c),
        })

    @property
    def config(self):
        return self._config

    def id_words(self):
        """The ID response, as integers."""
        c = self._config
        return [MAGIC, ISA_VERSION, c.rows, c.cols, c.acc_width, c.act_depth, c.wgt_depth,
                c.par_depth, c.out_depth, 0 if c.rounding == "double" else 1]

    def elaborate(self, platform):
        m = Module()
        c = self._config
        R, C = c.rows, c.cols
        shapes = buffer_shapes(c)

        ram = c.resources.buffer_ram
        m.submodules.act_buf = act_buf = BankedBuffer(shapes["act"], c.act_depth,
                                                      granularity=1, ram=ram("act"))
        m.submodules.wgt_buf = wgt_buf = BankedBuffer(shapes["wgt"], c.wgt_depth,
                                                      granularity=1, ram=ram("wgt"))
        m.submodules.par_buf = par_buf = BankedBuffer(shapes["par"], c.par_depth,
                                                      granularity=1, ram=ram("par"))
        m.submodules.out_buf = out_buf = BankedBuffer(shapes["out"], c.out_depth,
                                                      ram=ram("out"))
        m.submodules.engine = engine = ComputeEngine(c)
        run = engine.running

        wiring.connect(m, engine.act, act_buf.r)
        wiring.connect(m, engine.wgt, wgt_buf.r)
        wiring.connect(m, engine.par, par_buf.r)
        wiring.connect(m, engine.out, out_buf.w)
        m.d.comb += [
            act_buf.r_bank.eq(run.act_bank),
            wgt_buf.r_bank.eq(run.wgt_bank),
            par_buf.r_bank.eq(run.par_bank),
            out_buf.w_bank.eq(run.out_bank),
        ]
        for name in ("feed", "rq"):
            wiring.connect(m, getattr(engine, name), wiring.flipped(getattr(self, name)))
        for name in ("acc", "res"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(engine, name))

        # Decoder registers.
        word = self.i.payload
        op = Signal(8)
        flags = Signal(FLAG_BITS)
        bank = flags[0]
        args = [Signal(32, name=f"arg{n}") for n in range(max(ARGS.values()))]
        arg_index = Signal(range(len(args)))
        n_args = Signal(range(len(args) + 1))
        resp_index = Signal(range(10))

        # Errors and status.
        error = Signal(8)
        error_count = Signal(32)
        raise_error = Signal()
        error_code = Signal(8)
        with m.If(raise_error):
            m.d.sync += error_count.eq(error_count + 1)
            with m.If(error == 0):
                m.d.sync += error.eq(error_code)
        status = [Signal(32, name=f"status{n}") for n in range(len(STATUS_WORDS))]
        live_status = [Cat(engine.busy, error != 0), error, engine.cycles, error_count,
                       engine.total, engine.count]

        # Load engine state.
        remaining = Signal(32)
        drop = Signal()
        load_addr = Signal(32)
        lane_word = Signal(range(max(words_per_lanes(R), words_per_lanes(C), 2)))
        channel = Signal(range(C))
        field = Signal(range(PAR_WORDS_PER_CHANNEL))
        bias = Signal(32)
        m0 = Signal(32)

        # Store engine state.
        store_addr = Signal(range(c.out_depth + 1))

        # COMPUTE range check.
        depth_bits = max(c.act_depth, c.wgt_depth, c.par_depth, c.out_depth).bit_length()
        k_arg, m_arg, n_arg, act_a, wgt_a, par_a, out_a, layer_arg = args
        too_big = Signal()
        zero = Signal()
        # The products are formed by shift-and-add, one bit of m_tiles / n_tiles a cycle:
        # no multiplier, and only one adder level on any path.
        mul_m = Signal(depth_bits)
        mul_n = Signal(depth_bits)
        sh_k = Signal(2 * depth_bits)
        sh_n = Signal(2 * depth_bits)
        p_act = Signal(2 * depth_bits)
        p_wgt = Signal(2 * depth_bits)
        p_mn = Signal(2 * depth_bits)
        p_out = Signal(2 * depth_bits + R.bit_length())
        range_bad = Signal()

        def conflict_for(o):
            return Mux(o == Op.LOAD_ACT, run.act_bank,
                       Mux(o == Op.LOAD_WGT, run.wgt_bank, run.par_bank)) == bank

        def words_per_item(o):
            return Mux(o == Op.LOAD_ACT, words_per_lanes(R),
                       Mux(o == Op.LOAD_WGT, words_per_lanes(C), PAR_WORDS_PER_CHANNEL * C))

        def load_depth(o):
            return Mux(o == Op.LOAD_ACT, c.act_depth,
                       Mux(o == Op.LOAD_WGT, c.wgt_depth, c.par_depth))

        # Load data paths: every lane (channel) sees the same bytes, write enables pick.
        load_word = self.i.valid & self.i.ready
        writing = Signal()
        for buf, lanes, o in ((act_buf, R, Op.LOAD_ACT), (wgt_buf, C, Op.LOAD_WGT)):
            m.d.comb += [
                buf.w_bank.eq(bank),
                buf.w.addr.eq(load_addr),
                buf.w.data.as_value().eq(Cat(*(word.word_select(j % 4, 8)
                                               for j in range(lanes)))),
                buf.w.en.eq(Mux(writing & (op == o),
                                Cat(*(lane_word == j // 4 for j in range(lanes))), 0)),
            ]
        record = Signal(CHANNEL_PARAMS)
        m.d.comb += [
            record.bias.eq(bias),
            record.m0.eq(m0),
            record.shift.eq(word[:6]),
            par_buf.w_bank.eq(bank),
            par_buf.w.addr.eq(load_addr),
            par_buf.w.data.as_value().eq(Cat(*(record.as_value() for _ in range(C)))),
            par_buf.w.en.eq(Mux(writing & (op == Op.LOAD_PAR) & (field == 2),
                                Cat(*(channel == j for j in range(C))), 0)),
        ]

        # Store data path.
        out_bits = out_buf.r.data.as_value()
        out_words = Cat(out_bits, Const(0, 32 * words_per_lanes(C) - len(out_bits)))
        # A read port's ``en`` resets to 1: hold the data unless a state reads.
        m.d.comb += [out_buf.r_bank.eq(bank), out_buf.r.addr.eq(store_addr),
                     out_buf.r.en.eq(0)]

        id_words = self.id_words()

        # Registered output port: the FSM offers response words on ``resp``; the register
        # keeps the output buffer's read data and the response muxes off ``o.payload``.
        resp = stream.Signature(WORD).create(path=("resp",))
        m.d.comb += resp.ready.eq(~self.o.valid | self.o.ready)
        with m.If(resp.ready):
            m.d.sync += [self.o.valid.eq(resp.valid), self.o.payload.eq(resp.payload)]

        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [op.eq(word[24:]), flags.eq(word[:FLAG_BITS]), arg_index.eq(0),
                                 resp_index.eq(0)]
                    with m.Switch(word[24:]):
                        with m.Case(Op.NOP):
                            pass
                        with m.Case(Op.ID):
                            m.next = "ID"
                        with m.Case(Op.STATUS):
                            m.d.sync += [s.eq(v) for s, v in zip(status, live_status, strict=True)]
                            m.next = "STATUS"
                        with m.Case(Op.CLEAR):
                            m.d.sync += [error.eq(0), error_count.eq(0)]
                            m.d.comb += engine.clear.eq(1)
                        with m.Case(Op.LOAD_ACT, Op.LOAD_WGT, Op.LOAD_PAR, Op.STORE):
                            m.d.sync += n_args.eq(2)
                            m.next = "ARGS"
                        with m.Case(Op.COMPUTE):
                            m.d.sync += n_args.eq(ARGS[Op.COMPUTE])
                            m.next = "ARGS"
                        with m.Default():
                            m.d.comb += [raise_error.eq(1), error_code.eq(Error.ILLEGAL_OPCODE)]

            with m.State("ARGS"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    for n, arg in enumerate(args):
                        with m.If(arg_index == n):
                            m.d.sync += arg.eq(word)
                    m.d.sync += arg_index.eq(arg_index + 1)
                    with m.If(arg_index == n_args - 1):
                        with m.Switch(op):
                            with m.Case(Op.STORE):
                                m.next = "STORE_CHECK"
                            with m.Case(Op.COMPUTE):
                                m.next = "COMPUTE_CHECK"
                            with m.Default():
                                m.next = "LOAD_CHECK"

            with m.State("LOAD_CHECK"):
                # The verdict is registered and acted on in LOAD_VERDICT: the 33-bit sum and
                # compare do not reach the error counters and the state in one cycle.
                addr, count = args[0], args[1]
                m.d.sync += [load_addr.eq(addr), remaining.eq(count),
                             drop.eq((count == 0) | (addr + count > load_depth(op))),
                             lane_word.eq(0), channel.eq(0), field.eq(0)]
                m.next = "LOAD_VERDICT"

            with m.State("LOAD_VERDICT"):
                with m.If(drop):
                    m.d.comb += [raise_error.eq(1), error_code.eq(Error.LOAD_RANGE)]
                    # The host still sends the data words it announced: drop them.
                    m.next = "HEADER"
                    with m.If(remaining != 0):
                        m.next = "LOAD_DATA"
                with m.Else():
                    m.next = "LOAD_WAIT"

            with m.State("LOAD_WAIT"):
                with m.If(~(engine.busy & conflict_for(op))):
                    m.next = "LOAD_DATA"

            with m.State("LOAD_DATA"):
                m.d.comb += [self.i.ready.eq(1), writing.eq(load_word & ~drop)]
                with m.If(self.i.valid):
                    item_done = Signal()
                    with m.If(op == Op.LOAD_PAR):
                        with m.Switch(field):
                            with m.Case(0):
                                m.d.sync += [bias.eq(word), field.eq(1)]
                            with m.Case(1):
                                m.d.sync += [m0.eq(word), field.eq(2)]
                            with m.Default():
                                m.d.sync += [field.eq(0), channel.eq(channel + 1)]
                                with m.If(channel == C - 1):
                                    m.d.sync += channel.eq(0)
                                    m.d.comb += item_done.eq(1)
                    with m.Else():
                        m.d.sync += lane_word.eq(lane_word + 1)
                        with m.If(lane_word == words_per_item(op) - 1):
                            m.d.sync += lane_word.eq(0)
                            m.d.comb += item_done.eq(1)
                    with m.If(item_done):
                        m.d.sync += [load_addr.eq(load_addr + 1), remaining.eq(remaining - 1)]
                        with m.If(remaining == 1):
                            m.next = "HEADER"

            with m.State("STORE_CHECK"):
                addr, count = args[0], args[1]
                m.d.sync += [store_addr.eq(addr), remaining.eq(count), lane_word.eq(0),
                             range_bad.eq((count == 0) | (addr + count > c.out_depth))]
                m.next = "STORE_VERDICT"

            with m.State("STORE_VERDICT"):
                with m.If(range_bad):
                    m.d.comb += [raise_error.eq(1), error_code.eq(Error.STORE_RANGE)]
                    m.next = "HEADER"
                with m.Else():
                    m.next = "STORE_WAIT"

            with m.State("STORE_WAIT"):
                with m.If(~(engine.busy & (run.out_bank == bank))):
                    m.d.comb += out_buf.r.en.eq(1)
                    m.d.sync += store_addr.eq(store_addr + 1)
                    m.next = "STORE_DATA"

            with m.State("STORE_DATA"):
                last_word = lane_word == words_per_lanes(C) - 1
                m.d.comb += [
                    resp.valid.eq(1),
                    resp.payload.data.eq(out_words.word_select(lane_word, 32)),
                    resp.payload.last.eq(last_word & (remaining == 1)),
                ]
                with m.If(resp.ready):
                    m.d.sync += lane_word.eq(lane_word + 1)
                    with m.If(last_word):
                        m.d.sync += [lane_word.eq(0), remaining.eq(remaining - 1)]
                        with m.If(remaining == 1):
                            m.next = "HEADER"
                        with m.Else():
                            m.d.comb += out_buf.r.en.eq(1)
                            m.d.sync += store_addr.eq(store_addr + 1)

            with m.State("COMPUTE_CHECK"):
                m.d.sync += [
                    too_big.eq(Cat(a[depth_bits:] for a in args[:7]).any()),
                    # A partial COMPUTE continues one tile: m_tiles = n_tiles = 1.
                    zero.eq((k_arg == 0) | (m_arg == 0) | (n_arg == 0)
                            | (flags[4] & ((m_arg != 1) | (n_arg != 1)))),
                    mul_m.eq(m_arg[:depth_bits]),
                    mul_n.eq(n_arg[:depth_bits]),
                    sh_k.eq(k_arg[:depth_bits]),
                    sh_n.eq(n_arg[:depth_bits]),
                    p_act.eq(0),
                    p_wgt.eq(0),
                    p_mn.eq(0),
                ]
                m.next = "COMPUTE_MUL"

            with m.State("COMPUTE_MUL"):
                # p_act = m * K, p_wgt = n * K, p_mn = m * n.
                m.d.sync += [
                    mul_m.eq(mul_m >> 1),
                    mul_n.eq(mul_n >> 1),
                    sh_k.eq(sh_k << 1),
                    sh_n.eq(sh_n << 1),
                ]
                with m.If(mul_m[0]):
                    m.d.sync += [p_act.eq(p_act + sh_k), p_mn.eq(p_mn + sh_n)]
                with m.If(mul_n[0]):
                    m.d.sync += p_wgt.eq(p_wgt + sh_k)
                with m.If((mul_m == 0) & (mul_n == 0)):
                    # R is a constant: m * n * R is a sum of shifted copies, no multiplier.
                    m.d.sync += p_out.eq(sum(p_mn << i for i in range(R.bit_length())
                                             if R >> i & 1))
                    m.next = "COMPUTE_RANGE"

            with m.State("COMPUTE_RANGE"):
                m.d.sync += range_bad.eq(
                    too_big | zero
                    | (act_a[:depth_bits] + p_act > c.act_depth)
                    | (wgt_a[:depth_bits] + p_wgt > c.wgt_depth)
                    | (par_a[:depth_bits] + n_arg[:depth_bits] > c.par_depth)
                    | (out_a[:depth_bits] + p_out > c.out_depth))
                m.next = "COMPUTE_VERDICT"

            with m.State("COMPUTE_VERDICT"):
                with m.If(range_bad):
                    m.d.comb += [raise_error.eq(1), error_code.eq(Error.COMPUTE_RANGE)]
                    m.next = "HEADER"
                with m.Else():
                    m.next = "COMPUTE_ISSUE"

            with m.State("COMPUTE_ISSUE"):
                cmd = engine.cmd.payload
                m.d.comb += [
                    engine.cmd.valid.eq(1),
                    cmd.k.eq(k_arg),
                    cmd.m_tiles.eq(m_arg),
                    cmd.n_tiles.eq(n_arg),
                    cmd.act_addr.eq(act_a),
                    cmd.wgt_addr.eq(wgt_a),
                    cmd.par_addr.eq(par_a),
                    cmd.out_addr.eq(out_a),
                    cmd.act_bank.eq(flags[0]),
                    cmd.wgt_bank.eq(flags[1]),
                    cmd.par_bank.eq(flags[2]),
                    cmd.out_bank.eq(flags[3]),
                    cmd.partial.eq(flags[4]),
                    cmd.layer.as_value().eq(layer_arg[:24]),
                ]
                # A running COMPUTE holds ``ready`` low: the interlock.
                with m.If(engine.cmd.ready):
                    m.next = "HEADER"

            with m.State("ID"):
                m.d.comb += [
                    resp.valid.eq(1),
                    resp.payload.last.eq(resp_index == len(id_words) - 1),
                ]
                with m.Switch(resp_index):
                    for n, value in enumerate(id_words):
                        with m.Case(n):
                            m.d.comb += resp.payload.data.eq(value)
                with m.If(resp.ready):
                    m.d.sync += resp_index.eq(resp_index + 1)
                    with m.If(resp_index == len(id_words) - 1):
                        m.next = "HEADER"

            with m.State("STATUS"):
                m.d.comb += [
                    resp.valid.eq(1),
                    resp.payload.last.eq(resp_index == len(status) - 1),
                ]
                with m.Switch(resp_index):
                    for n, value in enumerate(status):
                        with m.Case(n):
                            m.d.comb += resp.payload.data.eq(value)
                with m.If(resp.ready):
                    m.d.sync += resp_index.eq(resp_index + 1)
                    with m.If(resp_index == len(status) - 1):
                        m.next = "HEADER"
        return m
