"""The compute engine: runs one COMPUTE of docs/isa.md in the background of the decoder.

Tile feeder into the systolic array, join of each array row with its channel parameters
on the way to the requantizer, output-bank writer and the COMPUTE cycle counters.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .array import SystolicArray, fifo_depth, tile_rules
from .buffers import BankedBuffer, bank_addr_width
from .config import AcceleratorConfig
from .requant import CHANNEL_PARAMS, LAYER_PARAMS, input_pace

__all__ = ["feed_layout", "requant_layout", "array_ports", "compute_layout", "buffer_shapes",
           "buffer", "systolic_array", "join_pace", "check_config", "ComputeEngine"]


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


def array_ports(config):
    """The ports that face the systolic array and the requantizer (compute engine side)."""
    c = config
    return {
        "feed": Out(stream.Signature(feed_layout(c.rows, c.cols), always_ready=True)),
        "acc": In(stream.Signature(data.ArrayLayout(signed(c.acc_width), c.cols))),
        "rq": Out(stream.Signature(requant_layout(c.cols, c.acc_width))),
        "res": In(stream.Signature(data.ArrayLayout(signed(8), c.cols))),
    }


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
        "partial": 1,
        "layer": LAYER_PARAMS,
    })


def buffer_shapes(config):
    return {
        "act": data.ArrayLayout(signed(8), config.rows),
        "wgt": data.ArrayLayout(signed(8), config.cols),
        "par": data.ArrayLayout(CHANNEL_PARAMS, config.cols),
        "out": data.ArrayLayout(signed(8), config.cols),
    }


def _buffer_options(config, name):
    plan = config.resources
    ram = plan.buffer_ram(name)
    return dict(ram=ram, latency=plan.buffer_latency if ram == "block" else 1,
                output_register=plan.output_register)


def buffer(config, name, *, granularity=None):
    """The :class:`~hw.buffers.BankedBuffer` of buffer ``name`` as the resource plan builds
    it (block RAM or SPRAM, read latency, output register, register copies)."""
    plan = config.resources
    return BankedBuffer(buffer_shapes(config)[name], getattr(config, f"{name}_depth"),
                        granularity=granularity, replica=plan.replica,
                        group=plan.groups.get(name, 1), **_buffer_options(config, name))


def buffer_latency(config, name):
    """Read latency of buffer ``name`` (:func:`buffer`, :attr:`BankedBuffer.latency`)."""
    return BankedBuffer.read_latency(**_buffer_options(config, name))


def _feed_latency(config):
    """Read latency of the activation and weight buffers (the larger)."""
    return max(buffer_latency(config, "act"), buffer_latency(config, "wgt"))


def _array_options(config):
    return dict(product_register=config.resources.product_register,
                lead=_feed_latency(config), drain=config.resources.drain)


def systolic_array(config):
    """The :class:`~hw.array.SystolicArray` of ``config`` as the resource plan builds it,
    fed by a :class:`ComputeEngine`, which keeps its rules (``lead``)."""
    plan = config.resources
    return SystolicArray(config.rows, config.cols, config.acc_width,
                         multipliers=plan.pe_multipliers, fifo_ram=plan.fifo_ram,
                         replica=plan.flag_replica, fifo_columns=plan.fifo_columns,
                         **_array_options(config))


def join_pace(config):
    """Cycles between the rows the parameter join hands the requantizer of ``config``, when
    it paces them itself; None when it waits for the requantizer's ``i.ready``.

    The requantizer's output is always ready (the output writer is), so it takes a beat
    every :func:`~hw.requant.input_pace` cycles where its input register holds the beat
    (``"deep"``): a join that offers rows no closer than that never sees ``i.ready`` low.
    The ``"compact"`` one needs a beat held until its last pass, so its join waits for
    ``i.ready``.
    """
    plan = config.resources
    return input_pace(config.cols, plan.requant_multipliers, plan.requant_pipeline,
                      config.rounding)


def check_config(config):
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")


class ComputeEngine(wiring.Component):
    """Runs one COMPUTE: tile feeder, parameter join, output writer and cycle counter.

    The feeder reads activation word ``act_addr + t*K + k`` and weight word
    ``wgt_addr + u*K + k`` for t-major, u-minor tiles and k in 0..K-1, and streams them to
    the array with ``last`` on k = K-1, except in a partial COMPUTE (one tile, ``partial``
    set): it streams its K beats without ``last``, so the array goes on accumulating them
    into the tile the next COMPUTE continues, and it is done once its last beat is on
    ``feed``. It keeps the array's rules itself (:class:`~hw.array.SystolicArray` with
    ``lead`` the read latency, :func:`systolic_array`): the read of a ``last`` beat waits
    until the array's output FIFO has room for the tile's rows and the previous tile is far
    enough ahead, and every beat reaches ``feed`` exactly the read latency after its read,
    never held back. Each array output row is registered together with a read of its
    parameter group and passed to the requantizer; each requantized row is written to
    ``out_addr + (t*R + i)*n_tiles + u``. ``busy`` drops in the cycle after the last write
    (after the last beat of a partial COMPUTE).

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
    total, count : :py:`Out(32)`
        Busy cycles of all COMPUTEs and their number since reset or ``clear`` (modulo
        2^32), as STATUS reports them.
    clear : :py:`In(1)`
        Zeroes ``total`` and ``count`` (a COMPUTE running on goes on counting). The
        counters show it from the second cycle on (STATUS takes its snapshot later).
    act, wgt, par : :py:`In(ReadPort.Signature(...))`
        Read ports of the activation, weight and parameter buffers (bank in ``running``).
    out : :py:`In(WritePort.Signature(...))`
        Write port of the output buffer.
    feed : :py:`Out(stream.Signature(feed_layout(R, C), always_ready=True))`
        To the systolic array built by :func:`systolic_array`.
    acc : :py:`In(stream.Signature(data.ArrayLayout(signed(acc_width), C)))`
        From the systolic array.
    rq : :py:`Out(stream.Signature(requant_layout(C, acc_width)))`
        To the requantizer.
    res : :py:`In(stream.Signature(data.ArrayLayout(signed(8), C)))`
        From the requantizer; always ready.
    """

    def __init__(self, config):
        check_config(config)
        self._config = c = config
        shapes = buffer_shapes(c)
        super().__init__({
            "cmd": In(stream.Signature(compute_layout(c))),
            "busy": Out(1),
            "running": Out(compute_layout(c)),
            "cycles": Out(32),
            "total": Out(32),
            "count": Out(32),
            "clear": In(1),
            "act": In(ReadPort.Signature(addr_width=bank_addr_width(c.act_depth),
                                         shape=shapes["act"])),
            "wgt": In(ReadPort.Signature(addr_width=bank_addr_width(c.wgt_depth),
                                         shape=shapes["wgt"])),
            "par": In(ReadPort.Signature(addr_width=bank_addr_width(c.par_depth),
                                         shape=shapes["par"])),
            "out": In(WritePort.Signature(addr_width=bank_addr_width(c.out_depth),
                                          shape=shapes["out"])),
            **array_ports(c),
        })

    @property
    def read_latency(self):
        """Read latency of the activation and weight buffers (the larger)."""
        return _feed_latency(self._config)

    @property
    def latency(self):
        """Cycles from accepting a command to its first beat on ``feed``."""
        return self.read_latency + 2

    def elaborate(self, platform):
        m = Module()
        c = self._config
        run = self.running
        # The command is registered when it is accepted and started a cycle later, from
        # that register: the decoder's hand-off reaches only the command register, not the
        # many registers a start loads.
        accept = self.cmd.valid & self.cmd.ready
        start = Signal()
        m.d.sync += start.eq(accept)
        m.d.comb += self.cmd.ready.eq(~self.busy)

        with m.If(accept):
            m.d.sync += [run.eq(self.cmd.payload), self.busy.eq(1), self.cycles.eq(1)]
        with m.Elif(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        # ``clear`` is registered before it reaches the counters (the decoder's state logic
        # stays off the paths into them) and then sets them to this cycle's counts, which
        # is what zeroing them a cycle earlier would have left: no STATUS can look between.
        cleared = Signal()
        m.d.sync += cleared.eq(self.clear)
        with m.If(cleared):
            m.d.sync += [self.total.eq(accept | self.busy), self.count.eq(accept)]
        with m.Else():
            with m.If(accept | self.busy):
                m.d.sync += self.total.eq(self.total + 1)
            with m.If(accept):
                m.d.sync += self.count.eq(self.count + 1)

        # Loop ends, registered with the command; every loop counter counts down to 0 with
        # a registered ``last`` flag, so no loop test compares or subtracts.
        ends = {name: Signal.like(getattr(run, name), name=f"{name}_end")
                for name in ("k", "n_tiles", "m_tiles")}
        ones = {name: Signal(name=f"{name}_one") for name in ends}
        with m.If(accept):
            for name, end in ends.items():
                value = getattr(self.cmd.payload, name)
                m.d.sync += [end.eq(value - 1), ones[name].eq(value == 1)]

        def loop(name, shape, end, one):
            """A down counter ``left`` and its flag ``last`` (left == 0); ``step`` goes on
            to the next index (from 0 back to ``end``), ``restart`` starts from ``end``."""
            left = Signal(shape, name=f"{name}_left")
            last = Signal(name=f"{name}_last")

            def restart(first_end, first_one):
                m.d.sync += [left.eq(first_end), last.eq(first_one)]

            def step():
                with m.If(last):
                    restart(end, one)
                with m.Else():
                    m.d.sync += [left.eq(left - 1), last.eq(left == 1)]
            return last, restart, step

        def command_loop(name, field):
            last, restart, step = loop(name, getattr(run, field).shape(), ends[field],
                                       ones[field])
            return last, lambda: restart(ends[field], ones[field]), step

        # Tile feeder: the loop counters name the beat whose read is issued next. The
        # buffers read every cycle, and every issued read reaches ``feed`` ``L`` cycles later
        # (the read latency), with nothing but registers on the way: the feeder keeps the
        # array's two rules itself (``SystolicArray(lead=L)``), so the array never holds a
        # beat back. A ``last`` beat is issued only with R credits for its rows in the
        # array's output FIFO (one back per row the parameter join takes) and ``max(R, C)``
        # cycles after the previous one; other beats are issued at once. The block RAMs
        # lie across the die from the array, and no route between them carries logic.
        L = self.read_latency
        act_l, wgt_l = buffer_latency(c, "act"), buffer_latency(c, "wgt")
        active = Signal()
        last_k, restart_k, step_k = command_loop("k", "k")
        last_u, restart_u, step_u = command_loop("u", "n_tiles")
        last_t, restart_t, step_t = command_loop("t", "m_tiles")
        act_ptr = Signal(range(c.act_depth + 1))
        act_block = Signal.like(act_ptr)
        wgt_ptr = Signal(range(c.wgt_depth + 1))
        ending = Signal()
        issue = Signal()
        reserve = Signal()
        take = self.acc.valid & self.acc.ready
        flight = [Signal(data.StructLayout({"valid": 1, "last": 1, "end": 1}),
                         name=f"flight{n}") for n in range(L)]
        may_end = tile_rules(m, c.rows, c.cols, fifo_depth(c.rows, c.cols, **_array_options(c)),
                             reserve, take)
        m.d.comb += [
            ending.eq(last_k & ~run.partial),
            issue.eq(active & (~ending | may_end)),
            reserve.eq(issue & ending),
            self.act.en.eq(1),
            self.act.addr.eq(act_ptr),
            self.wgt.en.eq(1),
            self.wgt.addr.eq(wgt_ptr),
        ]
        m.d.sync += [
            flight[0].valid.eq(issue),
            flight[0].last.eq(ending),
            flight[0].end.eq(last_k & last_u & last_t),
            *(b.eq(a) for a, b in zip(flight, flight[1:], strict=False)),
        ]

        def delayed(value, cycles, name):
            for n in range(cycles):
                reg = Signal.like(value, name=f"{name}_d{n}", reset_less=True)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        # The buffer with the shorter latency is delayed to the other's.
        feed = self.feed
        m.d.comb += [
            feed.valid.eq(flight[-1].valid),
            feed.payload.a.eq(delayed(self.act.data, L - act_l, "act_data")),
            feed.payload.b.eq(delayed(self.wgt.data, L - wgt_l, "wgt_data")),
            feed.payload.last.eq(flight[-1].last),
        ]
        with m.If(issue):
            step_k()
            with m.If(last_k):
                step_u()
                with m.If(last_u):
                    step_t()
                    m.d.sync += [
                        wgt_ptr.eq(run.wgt_addr),
                        act_ptr.eq(act_ptr + 1),
                        act_block.eq(act_ptr + 1),
                    ]
                    with m.If(last_t):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += [wgt_ptr.eq(wgt_ptr + 1), act_ptr.eq(act_block)]
            with m.Else():
                m.d.sync += [act_ptr.eq(act_ptr + 1), wgt_ptr.eq(wgt_ptr + 1)]
        # A partial COMPUTE writes no rows: it is done when its last beat is on ``feed``.
        with m.If(run.partial & flight[-1].valid & flight[-1].end):
            m.d.sync += self.busy.eq(0)
        with m.If(start):
            restart_k()
            restart_u()
            restart_t()
            m.d.sync += [active.eq(1), act_ptr.eq(run.act_addr), act_block.eq(run.act_addr),
                         wgt_ptr.eq(run.wgt_addr)]

        # Parameter join: each array row waits in a register stage per cycle of the
        # parameter buffer's read latency while its group's parameters are read; the stages
        # and the read move together whenever the requantizer takes a beat.
        par_l = buffer_latency(c, "par")
        p_valid = [Signal(name=f"p_valid{n}") for n in range(par_l)]
        # Data registers have no reset, only their valid flags.
        p_acc = [Signal.like(self.acc.payload, name=f"p_acc{n}", reset_less=True)
                 for n in range(par_l)]
        last_pi, restart_pi, step_pi = loop("p_i", range(c.rows), c.rows - 1, c.rows == 1)
        last_pu, restart_pu, step_pu = command_loop("p_u", "n_tiles")
        par_ptr = Signal(range(c.par_depth + 1))
        move = Signal()
        pace = join_pace(c)
        if pace is None:
            m.d.comb += [move.eq(~p_valid[-1] | self.rq.ready), self.acc.ready.eq(move)]
        else:
            # Paced: a row is taken at most every ``pace`` cycles, so the requantizer takes
            # every row the join offers, and the stages and the read move every cycle.
            # ``acc.ready`` is a register and nothing here waits for ``rq.ready``: no
            # enable reaches from the requantizer across the die to the join's stages and
            # the array FIFO's output register.
            may_take = Signal(init=1, name="join_open")
            if pace > 1:
                gap = Signal(range(pace), name="join_gap")
                with m.If(take):
                    m.d.sync += [gap.eq(pace - 1), may_take.eq(0)]
                with m.Else():
                    m.d.sync += [gap.eq(Mux(gap == 0, 0, gap - 1)), may_take.eq(gap <= 1)]
            m.d.comb += [move.eq(1), self.acc.ready.eq(may_take)]
        m.d.comb += [
            self.par.en.eq(move),
            self.par.addr.eq(par_ptr),
            self.rq.valid.eq(p_valid[-1]),
            self.rq.payload.acc.eq(p_acc[-1]),
            self.rq.payload.params.eq(self.par.data),
            self.rq.payload.layer.eq(run.layer),
        ]
        with m.If(move):
            m.d.sync += [p_valid[0].eq(self.acc.valid), p_acc[0].eq(self.acc.payload)]
            for n in range(1, par_l):
                m.d.sync += [p_valid[n].eq(p_valid[n - 1]), p_acc[n].eq(p_acc[n - 1])]
        with m.If(take):
            step_pi()
            with m.If(last_pi):
                step_pu()
                with m.If(last_pu):
                    m.d.sync += par_ptr.eq(run.par_addr)
                with m.Else():
                    m.d.sync += par_ptr.eq(par_ptr + 1)
        with m.If(start):
            restart_pi(c.rows - 1, c.rows == 1)
            restart_pu()
            m.d.sync += par_ptr.eq(run.par_addr)

        # Output writer.
        last_wi, restart_wi, step_wi = loop("w_i", range(c.rows), c.rows - 1, c.rows == 1)
        last_wu, restart_wu, step_wu = command_loop("w_u", "n_tiles")
        last_wt, restart_wt, step_wt = command_loop("w_t", "m_tiles")
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
            step_wi()
            with m.If(last_wi):
                step_wu()
                m.d.comb += next_tile.eq(Mux(last_wu, row_ptr, tile_start) + 1)
                m.d.sync += [row_ptr.eq(next_tile), tile_start.eq(next_tile)]
                with m.If(last_wu):
                    step_wt()
                    with m.If(last_wt):
                        m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += row_ptr.eq(row_ptr + run.n_tiles)
        with m.If(start):
            restart_wi(c.rows - 1, c.rows == 1)
            restart_wu()
            restart_wt()
            m.d.sync += [row_ptr.eq(run.out_addr), tile_start.eq(run.out_addr)]
        return m
