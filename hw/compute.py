"""The compute engine: runs one COMPUTE of docs/isa.md in the background of the decoder.

Tile feeder into the systolic array, join of each array row with its channel parameters
on the way to the requantizer, output-bank writer and the COMPUTE cycle counters.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .buffers import bank_addr_width
from .config import AcceleratorConfig
from .requant import CHANNEL_PARAMS, LAYER_PARAMS
from .skid import SkidBuffer

__all__ = ["feed_layout", "requant_layout", "array_ports", "compute_layout", "buffer_shapes",
           "check_config", "ComputeEngine"]


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
        "feed": Out(stream.Signature(feed_layout(c.rows, c.cols))),
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


def check_config(config):
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")


class ComputeEngine(wiring.Component):
    """Runs one COMPUTE: tile feeder, parameter join, output writer and cycle counter.

    The feeder reads activation word ``act_addr + t*K + k`` and weight word
    ``wgt_addr + u*K + k`` for t-major, u-minor tiles and k in 0..K-1, and streams them to
    the array with ``last`` on k = K-1, except in a partial COMPUTE (one tile, ``partial``
    set): it streams its K beats without ``last``, so the array goes on accumulating them
    into the tile the next COMPUTE continues, and it is done once its last beat has entered
    the array. Its read ports are enabled exactly when the beat on
    ``feed`` moves on (or there is none), so the one-cycle read latency costs no bubble and
    a stalled beat holds. Each array output row is registered together with a read of its
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
        Zeroes ``total`` and ``count`` (a COMPUTE running on goes on counting).
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
    def latency(self):
        """Cycles from accepting a command to its first beat on ``feed``."""
        return 3

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
        with m.If(self.clear):
            m.d.sync += [self.total.eq(0), self.count.eq(0)]
        with m.Else():
            with m.If(start | self.busy):
                m.d.sync += self.total.eq(self.total + 1)
            with m.If(start):
                m.d.sync += self.count.eq(self.count + 1)

        p = self.cmd.payload
        # Loop ends, registered when the command starts; every loop counter counts down to
        # 0 with a registered ``last`` flag, so no loop test compares or subtracts.
        ends = {name: Signal.like(getattr(run, name), name=f"{name}_end")
                for name in ("k", "n_tiles", "m_tiles")}
        ones = {name: Signal(name=f"{name}_one") for name in ends}
        with m.If(start):
            for name, end in ends.items():
                m.d.sync += [end.eq(getattr(p, name) - 1), ones[name].eq(getattr(p, name) == 1)]

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
            return last, lambda: restart(getattr(p, field) - 1, getattr(p, field) == 1), step

        # Tile feeder: the loop counters name the beat whose read is issued next.
        active = Signal()
        last_k, restart_k, step_k = command_loop("k", "k")
        last_u, restart_u, step_u = command_loop("u", "n_tiles")
        last_t, restart_t, step_t = command_loop("t", "m_tiles")
        act_ptr = Signal(range(c.act_depth + 1))
        act_block = Signal.like(act_ptr)
        wgt_ptr = Signal(range(c.wgt_depth + 1))
        f_valid = Signal()
        f_last = Signal()
        f_end = Signal()       # the beat read is the command's last one
        advance = Signal()

        # The beats leave through a skid buffer: ``feed`` comes from registers, and the read
        # enables depend on its registered ``ready``, not on the array's.
        m.submodules.feed_slice = feed_slice = SkidBuffer(data.StructLayout({
            "beat": feed_layout(c.rows, c.cols), "end": 1}))
        beat = feed_slice.o.payload.beat
        m.d.comb += [
            advance.eq(~f_valid | feed_slice.i.ready),
            self.act.en.eq(advance),
            self.act.addr.eq(act_ptr),
            self.wgt.en.eq(advance),
            self.wgt.addr.eq(wgt_ptr),
            feed_slice.i.valid.eq(f_valid),
            feed_slice.i.payload.beat.a.eq(self.act.data),
            feed_slice.i.payload.beat.b.eq(self.wgt.data),
            feed_slice.i.payload.beat.last.eq(f_last),
            feed_slice.i.payload.end.eq(f_end),
            self.feed.valid.eq(feed_slice.o.valid),
            self.feed.payload.eq(beat),
            feed_slice.o.ready.eq(self.feed.ready),
        ]
        with m.If(advance):
            m.d.sync += [f_valid.eq(active), f_last.eq(last_k & ~run.partial),
                         f_end.eq(last_k & last_u & last_t)]
            with m.If(active):
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
        # A partial COMPUTE writes no rows: it is done when its last beat is taken.
        with m.If(run.partial & self.feed.valid & self.feed.ready & feed_slice.o.payload.end):
            m.d.sync += self.busy.eq(0)
        with m.If(start):
            restart_k()
            restart_u()
            restart_t()
            m.d.sync += [active.eq(1), act_ptr.eq(p.act_addr), act_block.eq(p.act_addr),
                         wgt_ptr.eq(p.wgt_addr)]

        # Parameter join: an array row and its group's parameters, one register stage.
        p_valid = Signal()
        p_acc = Signal.like(self.acc.payload)
        last_pi, restart_pi, step_pi = loop("p_i", range(c.rows), c.rows - 1, c.rows == 1)
        last_pu, restart_pu, step_pu = command_loop("p_u", "n_tiles")
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
            step_pi()
            with m.If(last_pi):
                step_pu()
                with m.If(last_pu):
                    m.d.sync += par_ptr.eq(run.par_addr)
                with m.Else():
                    m.d.sync += par_ptr.eq(par_ptr + 1)
        with m.Elif(self.rq.ready):
            m.d.sync += p_valid.eq(0)
        with m.If(start):
            restart_pi(c.rows - 1, c.rows == 1)
            restart_pu()
            m.d.sync += par_ptr.eq(p.par_addr)

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
            m.d.sync += [row_ptr.eq(p.out_addr), tile_start.eq(p.out_addr)]
        return m
