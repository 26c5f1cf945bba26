"""The R x C output-stationary systolic MAC array with its input skew and output drain.

Datapath, for a tile whose ``last`` beat enters the PE grid in cycle ``T``::

    i ─► stage ─► skew (row r: r cycles, column c: c cycles) ─► PE grid
                                                                  │ PE (r, c) sees the last
                                                                  │ step in cycle T + r + c
    o ◄─ FIFO ◄─ row register ◄─ one-hot row select ◄─ result registers of row r,
                                                        complete in cycle
                                                        T + r + C - 1 + PE latency

The flags of a step travel with the operands, so ``done`` of PE (r, C-1), the last PE of
row ``r`` to see a tile's ``last`` step, marks the cycle in which that row's results are
complete.
Rows of one tile complete on consecutive cycles and are written one per cycle into an
output FIFO, while the next tile already computes in the accumulators.

Two rules keep this lossless without stalling the grid, which never stops:

- a ``last`` beat enters the grid only once FIFO space is reserved for the tile's R rows
  (a credit counter returns one credit per row read from ``o``);
- two ``last`` beats enter at least ``max(R, C)`` cycles apart, so row r's results are
  read before the next tile overwrites them (C) and one tile's rows are drained before the
  next tile's (R).

Both rules only ever hold back a ``last`` beat in the input stage; every other beat passes
at once. With tiles of ``K >= max(R, C)`` beats and a reader that keeps ``o.ready`` high,
neither rule bites and the array accepts one beat per cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import MAX_DIM
from .mul import check_impl
from .pe import PE, Operand, pe_latency

__all__ = ["SystolicArray", "array_latency", "fifo_depth"]


def array_latency(cols, product_register=False, ready_register=False):
    """:attr:`SystolicArray.latency` of an array of ``cols`` columns."""
    return cols + pe_latency(product_register) + 3 + bool(ready_register)


def fifo_depth(rows, cols, product_register=False, ready_register=False):
    """:attr:`SystolicArray.fifo_depth` of an R x C array."""
    return rows + array_latency(cols, product_register, ready_register) - 1


class SystolicArray(wiring.Component):
    """R x C int8 MAC array computing one ``R x C`` output tile per ``K``-beat input tile.

    Beat ``k`` of a tile carries ``a[r] = X[m0 + r, k]`` and ``b[c] = W[k, n0 + c]``; the
    beat with ``last`` set ends the tile. The array answers each tile with R beats, beat
    ``r`` holding row ``r`` of the tile: ``o[c] = sum_k a_r[k] * b_c[k]`` (Z = 0 arithmetic,
    wrapping modulo ``2 ** acc_width``). Tiles are answered in order.

    Parameters
    ----------
    rows : int
        R, activation lanes, 1..64.
    cols : int
        C, weight lanes, 1..64.
    acc_width : int
        Accumulator bits per PE, at least 16.
    multipliers : sequence of str or None
        How each PE builds its product (:class:`hw.mul.Multiplier`), row-major, R x C
        entries; None makes every one ``"dsp"``. The results do not depend on it.
    fifo_ram : {None, "distributed", "block"}
        Yosys ``ram_style`` of the output FIFO's rows (None: Yosys chooses).
    product_register : bool
        ``product_register`` of every PE (:class:`hw.pe.PE`): one more cycle of latency.
    replica : {None, "ecp5"}
        ``replica`` of every PE (:class:`hw.pe.PE`): how its flag registers are built.
    ready_register : bool
        Make ``i.ready`` a register and take each beat into a register with no logic in
        front of it (one more cycle of latency): beats that arrive while the input stage
        holds a ``last`` beat back wait in two spare registers beside it, and ``i.ready`` is
        low while one does. No state logic of the array then reaches the producer, nor any
        of the producer's logic the array's input registers, whatever lies between them on
        the die.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"a": ArrayLayout(signed(8), rows),
    "b": ArrayLayout(signed(8), cols), "last": 1})))``
        One beat per step of a tile. Bubbles are allowed anywhere. ``i.ready`` depends only
        on internal state, never on ``i.valid`` or ``i.payload``; it is low only while a
        ``last`` beat waits in the input stage for FIFO room or for the previous tile's
        results to be read out of the grid (with ``ready_register``, only once a second
        beat waits behind it).
    o : ``Out(stream.Signature(ArrayLayout(signed(acc_width), cols)))``
        R beats per tile, row 0 first. Backpressure never loses data.
    """

    def __init__(self, rows, cols, acc_width=32, *, multipliers=None, fifo_ram=None,
                 product_register=False, ready_register=False, replica=None):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or not 1 <= value <= MAX_DIM:
                raise ValueError(f"{name} must be an integer in 1..{MAX_DIM}, not {value!r}")
        if not isinstance(acc_width, int) or acc_width < 16:
            raise ValueError(f"acc_width must be an integer of at least 16, not {acc_width!r}")
        if multipliers is None:
            multipliers = ["dsp"] * (rows * cols)
        multipliers = list(multipliers)
        if len(multipliers) != rows * cols:
            raise ValueError(f"multipliers must have {rows * cols} entries, "
                             f"not {len(multipliers)}")
        for impl in multipliers:
            check_impl(impl)
        if fifo_ram not in (None, "distributed", "block"):
            raise ValueError(f"fifo_ram must be None, 'distributed' or 'block', "
                             f"not {fifo_ram!r}")
        self._multipliers = multipliers
        self._fifo_ram = fifo_ram
        self._product_register = bool(product_register)
        self._ready_register = bool(ready_register)
        self._replica = replica
        self._rows = rows
        self._cols = cols
        self._acc_width = acc_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(signed(8), rows),
                "b": data.ArrayLayout(signed(8), cols),
                "last": 1,
            }))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(acc_width), cols))),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def acc_width(self):
        return self._acc_width

    @property
    def min_tile_spacing(self):
        """Fewest cycles between two ``last`` beats entering the grid: ``max(R, C)``."""
        return max(self._rows, self._cols)

    @property
    def multipliers(self):
        """How each PE builds its product, row-major."""
        return tuple(self._multipliers)

    @property
    def pe_latency(self):
        return pe_latency(self._product_register)

    @property
    def latency(self):
        """Cycles from accepting a tile's ``last`` beat to its first row on ``o``.

        Input stage 1 (2 with ``ready_register``), grid to PE (0, C-1) ``C - 1``, PE
        latency, row register 1, FIFO 2.
        """
        return array_latency(self._cols, self._product_register, self._ready_register)

    @property
    def fifo_depth(self):
        """Rows the output FIFO holds: enough that credits never stall a full-rate stream.

        When a ``last`` beat enters ``max(R, C) >= R`` cycles after the previous one, only
        rows of earlier tiles whose credits return within the next ``latency - 1 + R -
        max(R, C) <= latency - 1`` cycles are still out; the new tile needs R more.
        """
        return fifo_depth(self._rows, self._cols, self._product_register,
                          self._ready_register)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        # Input stage: holds a `last` beat back until it may enter the grid.
        stage = Signal.like(self.i.payload)
        stage_valid = Signal()
        gap = Signal(range(self.min_tile_spacing + 1), init=self.min_tile_spacing)
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        # Both rules as registered flags (``gap == max(R, C)``, ``credits >= R``): the input
        # stage's ready and the operands' valid flags start from registers.
        spaced = Signal(init=1)
        room = Signal(init=1)
        may_end = spaced & room
        advance = Signal()
        reserve = Signal()
        stage_free = ~stage_valid | advance
        m.d.comb += [
            advance.eq(stage_valid & (~stage.last | may_end)),
            reserve.eq(advance & stage.last),
        ]
        if self._ready_register:
            # A beat taken in cycle t sits in ``taken`` in cycle t + 1, then moves on to the
            # stage or the first free spare. ``i.ready`` is high only while both spares are
            # free, so the beat in ``taken`` and the one taken with that ready always find
            # room.
            taken = Signal.like(self.i.payload, name="taken")
            taken_valid = Signal()
            spares = [Signal.like(self.i.payload, name=f"spare{n}") for n in range(2)]
            spare_valid = [Signal(name=f"spare{n}_valid") for n in range(2)]
            m.d.comb += self.i.ready.eq(~spare_valid[0])
            m.d.sync += [taken.eq(self.i.payload),
                         taken_valid.eq(self.i.valid & self.i.ready)]
            with m.If(stage_free):
                with m.If(spare_valid[0]):
                    m.d.sync += [stage.eq(spares[0]), stage_valid.eq(1)]
                    with m.If(spare_valid[1]):
                        m.d.sync += [spares[0].eq(spares[1]), spares[1].eq(taken),
                                     spare_valid[1].eq(taken_valid)]
                    with m.Else():
                        m.d.sync += [spares[0].eq(taken), spare_valid[0].eq(taken_valid)]
                with m.Else():
                    m.d.sync += [stage.eq(taken), stage_valid.eq(taken_valid)]
            with m.Elif(taken_valid):
                with m.If(~spare_valid[0]):
                    m.d.sync += [spares[0].eq(taken), spare_valid[0].eq(1)]
                with m.Else():
                    m.d.sync += [spares[1].eq(taken), spare_valid[1].eq(1)]
        else:
            m.d.comb += self.i.ready.eq(stage_free)
            with m.If(stage_free):
                m.d.sync += [stage.eq(self.i.payload), stage_valid.eq(self.i.valid)]
        with m.If(reserve):
            m.d.sync += [gap.eq(1), spaced.eq(self.min_tile_spacing == 1)]
        with m.Elif(~spaced):
            m.d.sync += [gap.eq(gap + 1), spaced.eq(gap == self.min_tile_spacing - 1)]
        popped = self.o.valid & self.o.ready
        next_credits = Signal.like(credits)
        m.d.comb += next_credits.eq(credits - Mux(reserve, R, 0) + popped)
        m.d.sync += [credits.eq(next_credits), room.eq(next_credits >= R)]

        # Skew: row r's activation r cycles late, column c's weight c cycles late.
        def skewed(lane, index, kind):
            operand = Signal(Operand, name=f"{kind}{index}_skew0")
            m.d.comb += [
                operand.data.eq(lane),
                operand.valid.eq(advance),
                operand.last.eq(stage.last),
            ]
            for n in range(1, index + 1):
                delayed = Signal(Operand, name=f"{kind}{index}_skew{n}")
                m.d.sync += delayed.eq(operand)
                operand = delayed
            return operand

        west = [skewed(stage.a[r], r, "a") for r in range(R)]
        north = [skewed(stage.b[c], c, "b") for c in range(C)]

        pes = [[PE(self._acc_width, multiplier=self._multipliers[r * C + c],
                   product_register=self._product_register, replica=self._replica)
                for c in range(C)]
               for r in range(R)]
        for r in range(R):
            for c in range(C):
                pe = m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                m.d.comb += [
                    pe.a.eq(west[r] if c == 0 else pes[r][c - 1].a_out),
                    pe.b.eq(north[c] if r == 0 else pes[r - 1][c].b_out),
                ]

        # Drain: at most one row completes per cycle (tiles are >= R cycles apart), so
        # the row select is one-hot and an AND-OR mux suffices. Row r completes when
        # PE (r, C-1) is done, C-1-c cycles after PE (r, c) (the grid never stops), so
        # each PE's result is selected by its own ``done`` delayed to that cycle: no select
        # net reaches across a row (on the ECP5-85F 8x8 that net to 256 AND gates was the
        # critical path).
        row = Signal(data.ArrayLayout(signed(self._acc_width), C))
        row_valid = Signal()
        complete = [pes[r][C - 1].done for r in range(R)]
        columns = []
        for c in range(C):
            column = 0
            for r in range(R):
                select = pes[r][c].done
                for n in range(C - 1 - c):
                    delayed = Signal(name=f"select_{r}_{c}_{n}")
                    m.d.sync += delayed.eq(select)
                    select = delayed
                column = column | (pes[r][c].result.as_unsigned()
                                   & select.replicate(self._acc_width))
            columns.append(column)
        m.d.sync += [row.eq(Cat(columns)), row_valid.eq(Cat(complete).any())]

        # Output FIFO: ``fifo_depth - 1`` rows in RAM (on ECP5 distributed: block RAM would
        # take C * acc_width / 36 blocks for a few dozen rows) and an output register.
        # Credits keep it from overflowing.
        attrs = {} if self._fifo_ram is None else {"ram_style": self._fifo_ram}
        storage = Memory(shape=len(row.as_value()), depth=self.fifo_depth - 1, init=[],
                         attrs=attrs)
        m.submodules.fifo = storage
        w_port = storage.write_port()
        r_port = storage.read_port(domain="comb")
        produce = Signal.like(w_port.addr)
        consume = Signal.like(r_port.addr)
        level = Signal(range(self.fifo_depth))
        fetch = (level != 0) & (~self.o.valid | self.o.ready)

        def incr(ptr):
            return Mux(ptr == self.fifo_depth - 2, 0, ptr + 1)

        m.d.comb += [
            w_port.addr.eq(produce),
            w_port.data.eq(row),
            w_port.en.eq(row_valid),
            r_port.addr.eq(consume),
        ]
        with m.If(row_valid):
            m.d.sync += produce.eq(incr(produce))
        with m.If(fetch):
            m.d.sync += [consume.eq(incr(consume)), self.o.payload.eq(r_port.data),
                         self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += level.eq(level + row_valid - fetch)

        return m
