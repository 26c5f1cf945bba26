"""The controller: command decoder, load engine, compute engine, store and response engine.

Implements ``docs/isa.md``. One 32-bit command word is consumed per cycle; the compute
engine (:class:`hw.compute.ComputeEngine`) runs a COMPUTE in the background while the
decoder goes on with the commands that do not touch the banks it uses.
"""

from contextlib import contextmanager

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .compute import (
    ComputeEngine,
    array_ports,
    buffer,
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
from .skid import SkidBuffer

__all__ = ["Controller"]

#: The decoder's states (``docs/isa.md``); the first is the state after reset.
STATES = ("HEADER", "ARGS", "LOAD_CHECK", "LOAD_RANGE", "LOAD_VERDICT", "LOAD_WAIT", "LOAD_DATA",
          "STORE_CHECK", "STORE_RANGE", "STORE_VERDICT", "STORE_WAIT", "STORE_DATA",
          "COMPUTE_CHECK", "COMPUTE_MUL", "COMPUTE_RANGE", "COMPUTE_COMPARE", "COMPUTE_VERDICT",
          "COMPUTE_ISSUE", "ID_LOAD", "STATUS_SNAPSHOT", "RESPOND")


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

        m.submodules.act_buf = act_buf = buffer(c, "act", granularity=1)
        m.submodules.wgt_buf = wgt_buf = buffer(c, "wgt", granularity=1)
        m.submodules.par_buf = par_buf = buffer(c, "par", granularity=1)
        m.submodules.out_buf = out_buf = buffer(c, "out")
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
        # Command words reach the decoder through a register slice, with their opcode
        # decoded in front of it into a flag per opcode: the decoder's logic starts from
        # registers and tests a flag, not an 8-bit compare.
        slot = data.StructLayout({"word": 32, "is_op": len(Op)})
        m.submodules.in_slice = in_slice = SkidBuffer(slot)
        m.d.comb += [
            in_slice.i.valid.eq(self.i.valid),
            self.i.ready.eq(in_slice.i.ready),
            in_slice.i.payload.word.eq(self.i.payload),
            in_slice.i.payload.is_op.eq(Cat(self.i.payload[24:] == o for o in Op)),
        ]
        command = in_slice.o
        word = command.payload.word
        # The opcode of the command being decoded, one flag per opcode.
        op = Signal(len(Op))

        def is_op(o, flags=op):
            return flags[list(Op).index(o)]

        flags = Signal(FLAG_BITS)
        bank = flags[0]
        # COMPUTE and STORE arguments only matter below the bits of the largest depth (a set
        # bit above is a range error, kept in ``big``): narrow registers, short range checks.
        # LOAD's count (arg 1) stays 32 bits, since a bad LOAD still drops ``count`` items;
        # the layer word (arg 7) has 24 bits.
        depth_bits = max(c.act_depth, c.wgt_depth, c.par_depth, c.out_depth).bit_length()
        widths = [depth_bits, 32, *[depth_bits] * 5, 24]
        assert len(widths) == max(ARGS.values())
        args = [Signal(w, name=f"arg{n}") for n, w in enumerate(widths)]
        big = Signal(len(widths) - 1)
        arg_index = Signal(range(len(args)))
        n_args = Signal(range(len(args) + 1))
        # ID and STATUS responses: shifted out of ``shift``, ``resp_left`` more words after
        # the first, ``resp_last`` registered (resp_left == 0).
        resp_left = Signal(range(max(len(self.id_words()), len(STATUS_WORDS))))
        resp_last = Signal()

        # Errors and status. An error is registered before it is counted, so the verdict
        # logic of a state does not reach the 32-bit counter in the same cycle; STATUS takes
        # its snapshot a cycle after the header, when every earlier error is counted.
        error = Signal(8)
        error_count = Signal(32)
        raise_error = Signal()
        error_code = Signal(8)
        raised = Signal()
        raised_code = Signal(8)
        m.d.sync += [raised.eq(raise_error), raised_code.eq(error_code)]
        with m.If(raised):
            m.d.sync += error_count.eq(error_count + 1)
            with m.If(error == 0):
                m.d.sync += error.eq(raised_code)
        shift = [Signal(32, name=f"shift{n}")
                 for n in range(max(len(self.id_words()), len(STATUS_WORDS)))]
        live_status = [Cat(engine.busy, error != 0), error, engine.cycles, error_count,
                       engine.total, engine.count]
        assert len(live_status) == len(STATUS_WORDS)

        # Load engine state.
        remaining = Signal(32)
        last_item = Signal()   # remaining == 1, registered
        drop = Signal()
        # The next LOAD data word ends an item (a buffer word), registered: the item count
        # and address step on it without decoding the word counters in that cycle.
        ends_item = Signal()
        load_addr = Signal(32)
        lane_word = Signal(range(max(words_per_lanes(R), words_per_lanes(C), 2)))
        channel = Signal(range(C))
        field = Signal(range(PAR_WORDS_PER_CHANNEL))
        bias = Signal(32)
        m0 = Signal(32)

        # Store engine state.
        store_addr = Signal(range(c.out_depth + 1))
        to_read = Signal(range(c.out_depth + 1))

        # LOAD / STORE range check: the sum, then the compare, each in its own cycle.
        range_sum = Signal(depth_bits + 1)
        range_over = Signal()

        # COMPUTE range check.
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
        s_act = Signal(2 * depth_bits + 1)
        s_wgt = Signal(2 * depth_bits + 1)
        s_par = Signal(depth_bits + 1)
        s_out = Signal(2 * depth_bits + R.bit_length() + 1)
        range_bad = Signal()

        def conflict_for():
            return Mux(is_op(Op.LOAD_ACT), run.act_bank,
                       Mux(is_op(Op.LOAD_WGT), run.wgt_bank, run.par_bank)) == bank

        def words_per_item():
            return Mux(is_op(Op.LOAD_ACT), words_per_lanes(R),
                       Mux(is_op(Op.LOAD_WGT), words_per_lanes(C), PAR_WORDS_PER_CHANNEL * C))

        def load_depth():
            return Mux(is_op(Op.LOAD_ACT), c.act_depth,
                       Mux(is_op(Op.LOAD_WGT), c.wgt_depth, c.par_depth))

        # Load data paths: every lane (channel) sees the same bytes, write enables pick.
        # The write ports are registers (the write lands a cycle after its word): no path
        # from the host stream reaches the block RAMs. Each buffer's address, bank and data
        # registers load only during a LOAD into it, so Yosys keeps them apart instead of
        # merging them into one register whose net reaches every block RAM of the three.
        load_word = command.valid & command.ready
        writing = Signal()
        for buf, lanes, o in ((act_buf, R, Op.LOAD_ACT), (wgt_buf, C, Op.LOAD_WGT)):
            with m.If(is_op(o)):
                m.d.sync += [
                    buf.w_bank.eq(bank),
                    buf.w.addr.eq(load_addr),
                    buf.w.data.as_value().eq(Cat(*(word.word_select(j % 4, 8)
                                                   for j in range(lanes)))),
                ]
            m.d.sync += buf.w.en.eq(Mux(writing & is_op(o),
                                        Cat(*(lane_word == j // 4 for j in range(lanes))), 0))
        record = Signal(CHANNEL_PARAMS)
        m.d.comb += [
            record.bias.eq(bias),
            record.m0.eq(m0),
            record.shift.eq(word[:6]),
        ]
        with m.If(is_op(Op.LOAD_PAR)):
            m.d.sync += [
                par_buf.w_bank.eq(bank),
                par_buf.w.addr.eq(load_addr),
                par_buf.w.data.as_value().eq(Cat(*(record.as_value() for _ in range(C)))),
            ]
        m.d.sync += par_buf.w.en.eq(Mux(writing & is_op(Op.LOAD_PAR) & (field == 2),
                                        Cat(*(channel == j for j in range(C))), 0))

        # Store data path: the output buffer is read ahead into a queue of two rows, so its
        # read enable and address depend on registers only, never on the response stream's
        # ready; the queue's head row goes out word by word.
        out_bits = out_buf.r.data.as_value()
        queue = [Signal(len(out_bits), name=f"store_q{n}") for n in range(2)]
        queued = Signal(range(3))
        head = Signal()        # the entry whose row goes out
        tail = Signal()        # the entry the next row read goes to
        # Reads in flight, one bit per cycle of the buffer's read latency; the read port is
        # always enabled and a row is queued when its read arrives.
        in_flight = Signal(out_buf.latency)
        arriving = in_flight[-1]
        storing = Signal()
        reading = Signal()
        row_sent = Signal()
        out_words = Cat(Mux(head, queue[1], queue[0]),
                        Const(0, 32 * words_per_lanes(C) - len(out_bits)))
        room = Signal()
        m.d.comb += [
            # The queue's two entries hold the rows queued and those in flight.
            room.eq(sum(in_flight) + queued < 2),
            reading.eq(storing & (to_read != 0) & room),
            out_buf.r_bank.eq(bank),
            out_buf.r.addr.eq(store_addr),
            out_buf.r.en.eq(1),
        ]
        m.d.sync += [in_flight.eq(Cat(reading, in_flight[:-1])),
                     queued.eq(queued + arriving - row_sent)]
        with m.If(reading):
            m.d.sync += [store_addr.eq(store_addr + 1), to_read.eq(to_read - 1)]
        with m.If(arriving):
            m.d.sync += tail.eq(~tail)
            for n, entry in enumerate(queue):
                with m.If(tail == n):
                    m.d.sync += entry.eq(out_bits)
        with m.If(row_sent):
            m.d.sync += head.eq(~head)

        id_words = self.id_words()

        # Registered output port: the FSM offers response words on ``resp``, a skid buffer
        # keeps the output buffer's read data and the response muxes off ``o.payload`` and
        # makes ``resp.ready`` a register, so no response logic depends on ``o.ready``.
        # With three response slices (``Plan.response_slices``) a first slice takes the
        # multiplexers' result beside them, so a long route to the second one starts from
        # a register and meets at most its skid multiplexer.
        m.submodules.out_slice = out_slice = SkidBuffer(WORD)
        resp = out_slice.i
        wiring.connect(m, out_slice.o, wiring.flipped(self.o))
        if c.resources.response_slices == 3:
            m.submodules.resp_slice = resp_slice = SkidBuffer(WORD)
            wiring.connect(m, resp_slice.o, out_slice.i)
            resp = resp_slice.i

        # The decoder's state machine is one-hot, a register per state: a state's logic
        # starts from its own flag, never from a decoded state number, and a transition
        # changes only the flags of the two states (a state takes at most one transition a
        # cycle). ``i.ready`` and the compute engine's ``cmd.valid`` come from the flags, so
        # no state logic reaches the input slice or the many registers the engine loads
        # when it takes a command.
        state = {name: Signal(name=f"in_{name}", init=name == STATES[0]) for name in STATES}
        current = []

        @contextmanager
        def in_state(name):
            current.append(name)
            with m.If(state[name]):
                yield
            current.pop()

        def goto(next_state):
            m.d.sync += [state[current[-1]].eq(0), state[next_state].eq(1)]

        m.d.comb += [
            command.ready.eq(state["HEADER"] | state["ARGS"] | state["LOAD_DATA"]),
            engine.cmd.valid.eq(state["COMPUTE_ISSUE"]),
        ]

        # The command offered in COMPUTE_ISSUE, straight from the argument registers.
        cmd = engine.cmd.payload
        m.d.comb += [
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

        with in_state("HEADER"):
            with m.If(command.valid):
                decoded = command.payload.is_op
                m.d.sync += [op.eq(decoded), flags.eq(word[:FLAG_BITS]), arg_index.eq(0)]
                # The flags are exclusive (none set: an illegal opcode).
                with m.If(is_op(Op.ID, decoded)):
                    goto("ID_LOAD")
                with m.If(is_op(Op.STATUS, decoded)):
                    goto("STATUS_SNAPSHOT")
                with m.If(is_op(Op.CLEAR, decoded)):
                    m.d.sync += [error.eq(0), error_count.eq(0)]
                    m.d.comb += engine.clear.eq(1)
                with m.If(is_op(Op.LOAD_ACT, decoded) | is_op(Op.LOAD_WGT, decoded)
                          | is_op(Op.LOAD_PAR, decoded) | is_op(Op.STORE, decoded)):
                    m.d.sync += n_args.eq(2)
                    goto("ARGS")
                with m.If(is_op(Op.COMPUTE, decoded)):
                    m.d.sync += n_args.eq(ARGS[Op.COMPUTE])
                    goto("ARGS")
                with m.If(~decoded.any()):
                    m.d.comb += [raise_error.eq(1), error_code.eq(Error.ILLEGAL_OPCODE)]

        with in_state("ARGS"):
            with m.If(command.valid):
                for n, arg in enumerate(args):
                    with m.If(arg_index == n):
                        m.d.sync += arg.eq(word[:len(arg)])
                        if n < len(big):
                            m.d.sync += big[n].eq(word[len(arg):].any())
                m.d.sync += arg_index.eq(arg_index + 1)
                with m.If(arg_index == n_args - 1):
                    with m.If(is_op(Op.STORE)):
                        goto("STORE_CHECK")
                    with m.Elif(is_op(Op.COMPUTE)):
                        goto("COMPUTE_CHECK")
                    with m.Else():
                        goto("LOAD_CHECK")

        with in_state("LOAD_CHECK"):
            # The sum, the compare and the verdict each take a cycle (LOAD_RANGE,
            # LOAD_VERDICT).
            addr, count = args[0], args[1]
            m.d.sync += [load_addr.eq(addr), remaining.eq(count), last_item.eq(count == 1),
                         range_sum.eq(addr + count[:depth_bits]),
                         range_over.eq(big[0] | count[depth_bits:].any()
                                       | (count[:depth_bits] == 0)),
                         lane_word.eq(0), channel.eq(0), field.eq(0),
                         ends_item.eq(~is_op(Op.LOAD_PAR) & (words_per_item() == 1))]
            goto("LOAD_RANGE")

        with in_state("LOAD_RANGE"):
            m.d.sync += drop.eq(range_over | (range_sum > load_depth()))
            goto("LOAD_VERDICT")

        with in_state("LOAD_VERDICT"):
            with m.If(drop):
                m.d.comb += [raise_error.eq(1), error_code.eq(Error.LOAD_RANGE)]
                # The host still sends the data words it announced: drop them.
                with m.If(remaining != 0):
                    goto("LOAD_DATA")
                with m.Else():
                    goto("HEADER")
            with m.Else():
                goto("LOAD_WAIT")

        with in_state("LOAD_WAIT"):
            with m.If(~(engine.busy & conflict_for())):
                goto("LOAD_DATA")

        with in_state("LOAD_DATA"):
            m.d.comb += writing.eq(load_word & ~drop)
            with m.If(command.valid):
                with m.If(is_op(Op.LOAD_PAR)):
                    with m.Switch(field):
                        with m.Case(0):
                            m.d.sync += [bias.eq(word), field.eq(1)]
                        with m.Case(1):
                            m.d.sync += [m0.eq(word), field.eq(2),
                                         ends_item.eq(channel == C - 1)]
                        with m.Default():
                            m.d.sync += [field.eq(0), channel.eq(channel + 1),
                                         ends_item.eq(0)]
                            with m.If(channel == C - 1):
                                m.d.sync += channel.eq(0)
                with m.Else():
                    m.d.sync += [lane_word.eq(lane_word + 1),
                                 ends_item.eq(lane_word == words_per_item() - 2)]
                    with m.If(ends_item):
                        m.d.sync += [lane_word.eq(0), ends_item.eq(words_per_item() == 1)]
                with m.If(ends_item):
                    m.d.sync += [load_addr.eq(load_addr + 1), remaining.eq(remaining - 1),
                                 last_item.eq(remaining == 2)]
                    with m.If(last_item):
                        goto("HEADER")

        with in_state("STORE_CHECK"):
            addr, count = args[0], args[1]
            m.d.sync += [store_addr.eq(addr), remaining.eq(count), to_read.eq(count),
                         last_item.eq(count == 1), lane_word.eq(0), head.eq(0), tail.eq(0),
                         range_sum.eq(addr + count[:depth_bits]),
                         range_over.eq(big[0] | count[depth_bits:].any()
                                       | (count[:depth_bits] == 0))]
            goto("STORE_RANGE")

        with in_state("STORE_RANGE"):
            m.d.sync += range_bad.eq(range_over | (range_sum > c.out_depth))
            goto("STORE_VERDICT")

        def verdict(code, next_state):
            """A range check's last step: raise ``code`` and end the command, or go on."""
            with m.If(range_bad):
                m.d.comb += [raise_error.eq(1), error_code.eq(code)]
                goto("HEADER")
            with m.Else():
                goto(next_state)

        with in_state("STORE_VERDICT"):
            verdict(Error.STORE_RANGE, "STORE_WAIT")

        with in_state("STORE_WAIT"):
            with m.If(~(engine.busy & (run.out_bank == bank))):
                m.d.sync += storing.eq(1)
                goto("STORE_DATA")

        with in_state("STORE_DATA"):
            last_word = lane_word == words_per_lanes(C) - 1
            m.d.comb += [
                resp.valid.eq(queued != 0),
                resp.payload.data.eq(out_words.word_select(lane_word, 32)),
                resp.payload.last.eq(last_word & last_item),
            ]
            with m.If(resp.valid & resp.ready):
                m.d.sync += lane_word.eq(lane_word + 1)
                with m.If(last_word):
                    m.d.comb += row_sent.eq(1)
                    m.d.sync += [lane_word.eq(0), remaining.eq(remaining - 1),
                                 last_item.eq(remaining == 2)]
                    with m.If(last_item):
                        m.d.sync += storing.eq(0)
                        goto("HEADER")

        with in_state("COMPUTE_CHECK"):
            m.d.sync += [
                too_big.eq(big.any()),
                # A partial COMPUTE continues one tile: m_tiles = n_tiles = 1.
                zero.eq((k_arg == 0) | (m_arg == 0) | (n_arg == 0)
                        | (flags[4] & ((m_arg != 1) | (n_arg != 1)))),
                mul_m.eq(m_arg[:depth_bits]),
                mul_n.eq(n_arg),
                sh_k.eq(k_arg),
                sh_n.eq(n_arg),
                p_act.eq(0),
                p_wgt.eq(0),
                p_mn.eq(0),
            ]
            goto("COMPUTE_MUL")

        with in_state("COMPUTE_MUL"):
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
                goto("COMPUTE_RANGE")

        with in_state("COMPUTE_RANGE"):
            # The sums, then the compares (COMPUTE_COMPARE).
            m.d.sync += [s_act.eq(act_a + p_act), s_wgt.eq(wgt_a + p_wgt),
                         s_par.eq(par_a + n_arg), s_out.eq(out_a + p_out)]
            goto("COMPUTE_COMPARE")

        with in_state("COMPUTE_COMPARE"):
            m.d.sync += range_bad.eq(
                too_big | zero
                | (s_act > c.act_depth) | (s_wgt > c.wgt_depth)
                | (s_par > c.par_depth) | (s_out > c.out_depth))
            goto("COMPUTE_VERDICT")

        with in_state("COMPUTE_VERDICT"):
            verdict(Error.COMPUTE_RANGE, "COMPUTE_ISSUE")

        with in_state("COMPUTE_ISSUE"):
            # A running COMPUTE holds ``ready`` low: the interlock.
            with m.If(engine.cmd.ready):
                goto("HEADER")

        # The response registers load in states of their own: their load enables are
        # state flags, not the header's decoding.
        with in_state("ID_LOAD"):
            m.d.sync += [
                *(s.eq(v) for s, v in zip(shift, id_words, strict=False)),
                resp_left.eq(len(id_words) - 1),
                resp_last.eq(len(id_words) == 1),
            ]
            goto("RESPOND")

        with in_state("STATUS_SNAPSHOT"):
            m.d.sync += [
                *(s.eq(v) for s, v in zip(shift, live_status, strict=False)),
                resp_left.eq(len(live_status) - 1),
                resp_last.eq(len(live_status) == 1),
            ]
            goto("RESPOND")

        with in_state("RESPOND"):
            # The ID words or the STATUS snapshot shift out word by word: no multiplexer.
            m.d.comb += [
                resp.valid.eq(1),
                resp.payload.last.eq(resp_last),
                resp.payload.data.eq(shift[0]),
            ]
            with m.If(resp.ready):
                m.d.sync += [resp_left.eq(resp_left - 1), resp_last.eq(resp_left == 1),
                             *(a.eq(b) for a, b in zip(shift[:-1], shift[1:], strict=True))]
                with m.If(resp_last):
                    goto("HEADER")
        return m
