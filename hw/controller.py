"""The controller: command decoder, load engine, compute engine, store and response engine.

Implements ``docs/isa.md``. One 32-bit command word is consumed per cycle; the compute
engine (:class:`ComputeEngine`) runs a COMPUTE in the background while the decoder goes on
with the commands that do not touch the banks it uses.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .buffers import BankedBuffer, bank_addr_width
from .config import AcceleratorConfig
from .host import WORD
from .isa import ARGS, ISA_VERSION, MAGIC, PAR_WORDS_PER_CHANNEL, Error, Op, words_per_lanes
from .requant import CHANNEL_PARAMS, LAYER_PARAMS

__all__ = ["feed_layout", "requant_layout", "compute_layout", "ComputeEngine", "Controller"]


def feed_layout(rows, cols):
    """Payload of the systolic array's input stream."""
    return data.StructLayout({
        "a": data.ArrayLayout(signed(8), rows),
        "b": data.ArrayLayout(signed(8), cols),
        "last": 1,
    })


def requant_layout(lanes, acc_width):
    """Payload of the requantizer's input stream."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(acc_width), lanes),
        "params": data.ArrayLayout(CHANNEL_PARAMS, lanes),
        "layer": LAYER_PARAMS,
    })


def compute_layout(config):
    """A range-checked COMPUTE command, as the decoder hands it to the compute engine."""
    c = config
    return data.StructLayout({
        "k": range(min(c.act_depth, c.wgt_depth) + 1),
        "m_tiles": range(c.act_depth + 1),
        "n_tiles": range(min(c.wgt_depth, c.par_depth) + 1),
        "act_addr": range(c.act_depth),
        "wgt_addr": range(c.wgt_depth),
        "par_addr": range(c.par_depth),
        "out_addr": range(c.out_depth),
        "act_bank": 1,
        "wgt_bank": 1,
        "par_bank": 1,
        "out_bank": 1,
        "layer": LAYER_PARAMS,
    })


def _buffer_shapes(config):
    return {
        "act": data.ArrayLayout(signed(8), config.rows),
        "wgt": data.ArrayLayout(signed(8), config.cols),
        "par": data.ArrayLayout(CHANNEL_PARAMS, config.cols),
        "out": data.ArrayLayout(signed(8), config.cols),
    }


def _check_config(config):
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")


class ComputeEngine(wiring.Component):
    """Runs one COMPUTE: tile feeder, parameter join, output writer and cycle counter.

    The feeder reads activation word ``act_addr + t*K + k`` and weight word
    ``wgt_addr + u*K + k`` for t-major, u-minor tiles and k in 0..K-1, and streams them to
    the array with ``last`` on k = K-1. Its read ports are enabled exactly when the beat on
    ``feed`` moves on (or there is none), so the one-cycle read latency costs no bubble and
    a stalled beat holds. Each array output row is registered together with a read of its
    parameter group and passed to the requantizer; each requantized row is written to
    ``out_addr + (t*R + i)*n_tiles + u``. ``busy`` drops in the cycle after the last write.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    cmd : :py:`In(stream.Signature(compute_layout(config)))`
        Accepted only while idle.
    busy : :py:`Out(1)`
    running : :py:`Out(compute_layout(config))`
        The command being run (its banks drive the interlocks).
    cycles : :py:`Out(32)`
        Cycles of the current (or last) COMPUTE, as STATUS reports them.
    act, wgt, par : :py:`In(ReadPort.Signature(...))`
        Read ports of the activation, weight and parameter buffers (bank in ``running``).
    out : :py:`In(WritePort.Signature(...))`
        Write port of the output buffer.
    feed : :py:`Out(stream.Signature(feed_layout(R, C)))`
        To the systolic array.
    acc : :py:`In(stream.Signature(data.ArrayLayout(signed(acc_width), C)))`
        From the systolic array.
    rq : :py:`Out(stream.Signature(requant_layout(C, acc_width)))`
        To the requantizer.
    res : :py:`In(stream.Signature(data.ArrayLayout(signed(8), C)))`
        From the requantizer; always ready.
    """

    def __init__(self, config):
        _check_config(config)
        self._config = c = config
        shapes = _buffer_shapes(c)
        super().__init__({
            "cmd": In(stream.Signature(compute_layout(c))),
            "busy": Out(1),
            "running": Out(compute_layout(c)),
            "cycles": Out(32),
            "act": In(ReadPort.Signature(addr_width=bank_addr_width(c.act_depth),
                                         shape=shapes["act"])),
            "wgt": In(ReadPort.Signature(addr_width=bank_addr_width(c.wgt_depth),
                                         shape=shapes["wgt"])),
            "par": In(ReadPort.Signature(addr_width=bank_addr_width(c.par_depth),
                                         shape=shapes["par"])),
            "out": In(WritePort.Signature(addr_width=bank_addr_width(c.out_depth),
                                          shape=shapes["out"])),
            "feed": Out(stream.Signature(feed_layout(c.rows, c.cols))),
            "acc": In(stream.Signature(data.ArrayLayout(signed(c.acc_width), c.cols))),
            "rq": Out(stream.Signature(requant_layout(c.cols, c.acc_width))),
            "res": In(stream.Signature(data.ArrayLayout(signed(8), c.cols))),
        })

    @property
    def latency(self):
        """Cycles from accepting a command to its first beat on ``feed``."""
        return 2

    def elaborate(self, platform):
        m = Module()
        c = self._config
        run = self.running
        start = self.cmd.valid & self.cmd.ready
        m.d.comb += self.cmd.ready.eq(~self.busy)

        with m.If(start):
            m.d.sync += [run.eq(self.cmd.payload), self.busy.eq(1), self.cycles.eq(1)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # Tile feeder: counters name the beat whose read is issued next.
        active = Signal()
        t = Signal.like(run.m_tiles)
        u = Signal.like(run.n_tiles)
        k = Signal.like(run.k)
        act_ptr = Signal(range(c.act_depth + 1))
        act_block = Signal.like(act_ptr)
        wgt_ptr = Signal(range(c.wgt_depth + 1))
        f_valid = Signal()
        f_last = Signal()
        advance = Signal()
        last_k = k == run.k - 1
        m.d.comb += [
            advance.eq(~f_valid | self.feed.ready),
            self.act.en.eq(advance),
            self.act.addr.eq(act_ptr),
            self.wgt.en.eq(advance),
            self.wgt.addr.eq(wgt_ptr),
            self.feed.valid.eq(f_valid),
            self.feed.payload.a.eq(self.act.data),
            self.feed.payload.b.eq(self.wgt.data),
            self.feed.payload.last.eq(f_last),
        ]
        with m.If(advance):
            m.d.sync += [f_valid.eq(active), f_last.eq(last_k)]
            with m.If(active):
                with m.If(last_k):
                    m.d.sync += k.eq(0)
                    with m.If(u == run.n_tiles - 1):
                        m.d.sync += [
                            u.eq(0),
                            wgt_ptr.eq(run.wgt_addr),
                            act_ptr.eq(act_ptr + 1),
                            act_block.eq(act_ptr + 1),
                            t.eq(t + 1),
                        ]
                        with m.If(t == run.m_tiles - 1):
                            m.d.sync += active.eq(0)
                    with m.Else():
                        m.d.sync += [
                            u.eq(u + 1),
                            wgt_ptr.eq(wgt_ptr + 1),
                            act_ptr.eq(act_block),
                        ]
                with m.Else():
                    m.d.sync += [k.eq(k + 1), act_ptr.eq(act_ptr + 1), wgt_ptr.eq(wgt_ptr + 1)]
        with m.If(start):
            p = self.cmd.payload
            m.d.sync += [
                active.eq(1), t.eq(0), u.eq(0), k.eq(0),
                act_ptr.eq(p.act_addr), act_block.eq(p.act_addr), wgt_ptr.eq(p.wgt_addr),
            ]

        # Parameter join: an array row and its group's parameters, one register stage.
        p_valid = Signal()
        p_acc = Signal.like(self.acc.payload)
        p_u = Signal.like(run.n_tiles)
        p_i = Signal(range(c.rows))
        par_ptr = Signal(range(c.par_depth + 1))
        take = self.acc.valid & self.acc.ready
        m.d.comb += [
            self.acc.ready.eq(~p_valid | self.rq.ready),
            self.par.en.eq(take),
            self.par.addr.eq(par_ptr),
            self.rq.valid.eq(p_valid),
            self.rq.payload.acc.eq(p_acc),
            self.rq.payload.params.eq(self.par.data),
            self.rq.payload.layer.eq(run.layer),
        ]
        with m.If(take):
            m.d.sync += [p_valid.eq(1), p_acc.eq(self.acc.payload)]
            with m.If(p_i == c.rows - 1):
                m.d.sync += p_i.eq(0)
                with m.If(p_u == run.n_tiles - 1):
                    m.d.sync += [p_u.eq(0), par_ptr.eq(run.par_addr)]
                with m.Else():
                    m.d.sync += [p_u.eq(p_u + 1), par_ptr.eq(par_ptr + 1)]
            with m.Else():
                m.d.sync += p_i.eq(p_i + 1)
        with m.Elif(self.rq.ready):
            m.d.sync += p_valid.eq(0)
        with m.If(start):
            m.d.sync += [p_u.eq(0), p_i.eq(0), par_ptr.eq(self.cmd.payload.par_addr)]

        # Output writer.
        w_t = Signal.like(run.m_tiles)
        w_u = Signal.like(run.n_tiles)
        w_i = Signal(range(c.rows))
        row_ptr = Signal(range(c.out_depth + 1))
        tile_start = Signal.like(row_ptr)
        next_tile = Signal.like(row_ptr)
        m.d.comb += [
            self.res.ready.eq(1),
            self.out.en.eq(self.res.valid),
            self.out.addr.eq(row_ptr),
            self.out.data.eq(self.res.payload),
        ]
        with m.If(self.res.valid):
            with m.If(w_i == c.rows - 1):
                m.d.comb += next_tile.eq(Mux(w_u == run.n_tiles - 1, row_ptr, tile_start) + 1)
                m.d.sync += [w_i.eq(0), row_ptr.eq(next_tile), tile_start.eq(next_tile)]
                with m.If(w_u == run.n_tiles - 1):
                    m.d.sync += [w_u.eq(0), w_t.eq(w_t + 1)]
                    with m.If(w_t == run.m_tiles - 1):
                        m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += w_u.eq(w_u + 1)
            with m.Else():
                m.d.sync += [w_i.eq(w_i + 1), row_ptr.eq(row_ptr + run.n_tiles)]
        with m.If(start):
            p = self.cmd.payload
            m.d.sync += [w_t.eq(0), w_u.eq(0), w_i.eq(0),
                         row_ptr.eq(p.out_addr), tile_start.eq(p.out_addr)]
        return m


class Controller(wiring.Component):
    """Decodes the ISA v1 command stream and owns the buffers and the compute engine.

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
        _check_config(config)
        self._config = c = config
        super().__init__({
            "i": In(stream.Signature(32)),
            "o": Out(stream.Signature(WORD)),
            "feed": Out(stream.Signature(feed_layout(c.rows, c.cols))),
            "acc": In(stream.Signature(data.ArrayLayout(signed(c.acc_width), c.cols))),
            "rq": Out(stream.Signature(requant_layout(c.cols, c.acc_width))),
            "res": In(stream.Signature(data.ArrayLayout(signed(8), c.cols))),
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
        shapes = _buffer_shapes(c)

        m.submodules.act_buf = act_buf = BankedBuffer(shapes["act"], c.act_depth,
                                                      granularity=1)
        m.submodules.wgt_buf = wgt_buf = BankedBuffer(shapes["wgt"], c.wgt_depth,
                                                      granularity=1)
        m.submodules.par_buf = par_buf = BankedBuffer(shapes["par"], c.par_depth,
                                                      granularity=1)
        m.submodules.out_buf = out_buf = BankedBuffer(shapes["out"], c.out_depth)
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
        flags = Signal(4)
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
        status = [Signal(32, name=f"status{n}") for n in range(4)]
        live_status = [Cat(engine.busy, error != 0), error, engine.cycles, error_count]

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
        p_act = Signal(2 * depth_bits)
        p_wgt = Signal(2 * depth_bits)
        p_mn = Signal(2 * depth_bits)

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

        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [op.eq(word[24:]), flags.eq(word[:4]), arg_index.eq(0),
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
                addr, count = args[0], args[1]
                bad = (count == 0) | (addr + count > load_depth(op))
                m.d.sync += [load_addr.eq(addr), remaining.eq(count), drop.eq(bad),
                             lane_word.eq(0), channel.eq(0), field.eq(0)]
                with m.If(bad):
                    m.d.comb += [raise_error.eq(1), error_code.eq(Error.LOAD_RANGE)]
                    # The host still sends the data words it announced: drop them.
                    m.next = "HEADER"
                    with m.If(count != 0):
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
                m.d.sync += [store_addr.eq(addr), remaining.eq(count), lane_word.eq(0)]
                with m.If((count == 0) | (addr + count > c.out_depth)):
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
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(out_words.word_select(lane_word, 32)),
                    self.o.payload.last.eq(last_word & (remaining == 1)),
                ]
                with m.If(self.o.ready):
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
                    zero.eq((k_arg == 0) | (m_arg == 0) | (n_arg == 0)),
                    p_act.eq(m_arg[:depth_bits] * k_arg[:depth_bits]),
                    p_wgt.eq(n_arg[:depth_bits] * k_arg[:depth_bits]),
                    p_mn.eq(m_arg[:depth_bits] * n_arg[:depth_bits]),
                ]
                m.next = "COMPUTE_RANGE"

            with m.State("COMPUTE_RANGE"):
                bad = (too_big | zero
                       | (act_a + p_act > c.act_depth)
                       | (wgt_a + p_wgt > c.wgt_depth)
                       | (par_a + n_arg > c.par_depth)
                       | (out_a + p_mn * R > c.out_depth))
                with m.If(bad):
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
                    cmd.layer.as_value().eq(layer_arg[:24]),
                ]
                # A running COMPUTE holds ``ready`` low: the interlock.
                with m.If(engine.cmd.ready):
                    m.next = "HEADER"

            with m.State("ID"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.last.eq(resp_index == len(id_words) - 1),
                ]
                with m.Switch(resp_index):
                    for n, value in enumerate(id_words):
                        with m.Case(n):
                            m.d.comb += self.o.payload.data.eq(value)
                with m.If(self.o.ready):
                    m.d.sync += resp_index.eq(resp_index + 1)
                    with m.If(resp_index == len(id_words) - 1):
                        m.next = "HEADER"

            with m.State("STATUS"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.last.eq(resp_index == len(status) - 1),
                ]
                with m.Switch(resp_index):
                    for n, value in enumerate(status):
                        with m.Case(n):
                            m.d.comb += self.o.payload.data.eq(value)
                with m.If(self.o.ready):
                    m.d.sync += resp_index.eq(resp_index + 1)
                    with m.If(resp_index == len(status) - 1):
                        m.next = "HEADER"
        return m
