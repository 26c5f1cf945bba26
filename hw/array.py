"""The R x C output-stationary systolic MAC array with its input skew and output drain.

Datapath, for a tile whose ``last`` beat enters the PE grid in cycle ``T``::

    i ─► stage ─► skew (grid row p: p cycles, column c: c cycles) ─► PE grid
                                                                      │ PE (p, c) sees the
                                                                      │ last step in cycle
                                                                      │ T + p + c
    o ◄─ FIFO ◄─ row register ◄─ drain ◄─ result registers

The flags of a step travel with the operands, so ``done`` of a PE marks the cycle in which
its sum is complete. Rows leave through an output FIFO, one per cycle, while the next tile
already computes in the accumulators. Two drains (``drain``) take them there:

- ``"select"``: grid row p computes tile row p, and row r is complete when PE (r, C-1) is
  done. A one-hot AND-OR select per column takes row r's sums into the row register,
  each PE's by its own ``done`` delayed to that cycle. Latency ``C + PE latency + 3``.
- ``"chain"``: the ``result`` registers of a column form a shift register towards the
  bottom grid row (:class:`hw.pe.PE` ``drain``). Grid row p computes tile row R-1-p, so the
  bottom PE of a column, which completes last, holds row 0. Each PE holds its sum until
  the bottom PE has its own, R-1-p cycles later (its ``done`` delayed, so no start signal
  runs along the column), then the column shifts down one row per cycle until the PE's
  next sum: the bottom PE shows rows 0 to R-1 on consecutive cycles, and deskew registers
  (column c: C-1-c cycles) line the columns up. Every drain wire runs from a PE to its
  neighbour, where the select gathers a column's R sums across the die (on the ECP5-85F
  16x16 it was a fifth of router2's congestion). Latency ``R + C + PE latency + 2``.

Two rules keep this lossless without stalling the grid, which never stops:

- a ``last`` beat enters the grid only once FIFO space is reserved for the tile's R rows
  (a credit counter returns one credit per row read from ``o``);
- two ``last`` beats enter at least ``max(R, C)`` cycles apart: the select reads row r's
  sums before the next tile overwrites them (C) and drains one tile's rows before the next
  tile's (R); the chain needs R (a PE takes its next sum no earlier than the cycle after it
  passed on row 0).

Either the array keeps them itself, holding a ``last`` beat back in its input stage (every
other beat passes at once), or its producer keeps them before the beat even exists
(``lead``): then ``i`` is always ready and nothing but registers lies between the producer
and the grid. With tiles of ``K >= max(R, C)`` beats and a reader that keeps ``o.ready``
high, neither rule bites and the array accepts one beat per cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import MAX_DIM
from .mul import check_impl
from .pe import PE, Operand, pe_latency
from .vendor import kept_register

__all__ = ["DRAINS", "SystolicArray", "array_latency", "fifo_depth", "tile_rules"]


DRAINS = ("select", "chain")


def array_latency(rows, cols, product_register=False, drain="select"):
    """:attr:`SystolicArray.latency` of an R x C array."""
    if drain == "chain":
        return rows + cols + pe_latency(product_register) + 2
    return cols + pe_latency(product_register) + 3


def fifo_depth(rows, cols, product_register=False, lead=None, drain="select"):
    """:attr:`SystolicArray.fifo_depth` of an R x C array."""
    # The array's own input stage takes a tile's credits the cycle after its ``last`` beat
    # was on ``i``; a producer up to ``lead`` cycles before.
    extra = 0 if lead is None else lead + 1
    return rows + array_latency(rows, cols, product_register, drain) - 1 + extra


def _delayed(m, value, cycles, name, *, reset_less=False):
    """``value`` delayed ``cycles`` cycles by registers named ``{name}_{n}`` (without the
    domain's reset if ``reset_less``: data whose flags travel apart)."""
    for n in range(cycles):
        reg = Signal.like(value, name=f"{name}_{n}", reset_less=reset_less)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def tile_rules(m, rows, cols, depth, reserve, returned):
    """The array's two rules as registered flags in module ``m``; returns ``may_end``, high
    when a ``last`` beat may enter (or be issued).

    ``reserve`` is high when a ``last`` beat takes its tile's R credits, ``returned`` when
    a row leaves the output FIFO of ``depth`` rows. ``may_end`` is ``gap == max(R, C)`` and
    ``credits >= R``, both kept as registers, so whatever it gates starts from registers.
    """
    spacing = max(rows, cols)
    gap = Signal(range(spacing + 1), init=spacing)
    credits = Signal(range(depth + 1), init=depth)
    spaced = Signal(init=1)
    room = Signal(init=1)
    with m.If(reserve):
        m.d.sync += [gap.eq(1), spaced.eq(spacing == 1)]
    with m.Elif(~spaced):
        m.d.sync += [gap.eq(gap + 1), spaced.eq(gap == spacing - 1)]
    next_credits = Signal.like(credits)
    m.d.comb += next_credits.eq(credits - Mux(reserve, rows, 0) + returned)
    m.d.sync += [credits.eq(next_credits), room.eq(next_credits >= rows)]
    return spaced & room


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
    drain : {"select", "chain"}
        How rows leave the grid (see the module): the results do not depend on it, the
        latency does.
    fifo_columns : bool
        Build the output FIFO as one memory per column, each with its own copies of the
        pointers (kept registers with ``replica``), instead of one memory of whole rows.
        The results do not depend on it, nor does the latency.
    lead : int or None
        None: the array keeps the two rules of this module itself, holding a ``last`` beat
        back in its input stage. An integer: the producer keeps them. It sends a ``last``
        beat only once it holds R credits for the tile's rows (it starts with
        :attr:`fifo_depth` and gets one back per row read from ``o``) and ``max(R, C)``
        cycles after its previous ``last`` beat (:func:`tile_rules`), and takes the
        credits at most ``lead`` cycles before the beat is on ``i``: the FIFO holds
        ``lead + 1`` rows more, so a full-rate stream never waits. ``i`` is then always
        ready, and each lane takes its operand and its own copy of the flags into a
        register with nothing in front of it: no logic lies between the producer and the
        grid, and no flag register serves lanes across the die.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"a": ArrayLayout(signed(8), rows),
    "b": ArrayLayout(signed(8), cols), "last": 1}), always_ready=lead is not None))``
        One beat per step of a tile. Bubbles are allowed anywhere. ``i.ready`` depends only
        on internal state, never on ``i.valid`` or ``i.payload``; it is low only while a
        ``last`` beat waits in the input stage for FIFO room or for the previous tile's
        results to be read out of the grid (never with ``lead``).
    o : ``Out(stream.Signature(ArrayLayout(signed(acc_width), cols)))``
        R beats per tile, row 0 first. Backpressure never loses data.
    """

    def __init__(self, rows, cols, acc_width=32, *, multipliers=None, fifo_ram=None,
                 product_register=False, lead=None, replica=None, drain="select",
                 fifo_columns=False):
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
        if lead is not None and (not isinstance(lead, int) or lead < 0):
            raise ValueError(f"lead must be None or a non-negative integer, not {lead!r}")
        self._lead = lead
        self._replica = replica
        if drain not in DRAINS:
            raise ValueError(f"drain must be 'select' or 'chain', not {drain!r}")
        self._drain = drain
        self._fifo_columns = bool(fifo_columns)
        self._rows = rows
        self._cols = cols
        self._acc_width = acc_width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(signed(8), rows),
                "b": data.ArrayLayout(signed(8), cols),
                "last": 1,
            }), always_ready=lead is not None)),
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
    def lead(self):
        """Cycles a producer that keeps the rules may take credits ahead (None: the array
        keeps them)."""
        return self._lead

    @property
    def pe_latency(self):
        return pe_latency(self._product_register)

    @property
    def latency(self):
        """Cycles from accepting a tile's ``last`` beat to its first row on ``o``.

        Select: input stage 1, grid to PE (0, C-1) ``C - 1``, PE latency, row register 1,
        FIFO 2. Chain: the same, but to PE (R-1, C-1), ``R + C - 2`` hops: the bottom PE of
        column c shows row 0 ``C - 1 - c`` cycles before the last column's, and its deskew
        registers make up the difference.
        """
        return array_latency(self._rows, self._cols, self._product_register, self._drain)

    @property
    def drain(self):
        return self._drain

    @property
    def fifo_depth(self):
        """Rows the output FIFO holds: enough that credits never stall a full-rate stream.

        When a ``last`` beat enters ``max(R, C) >= R`` cycles after the previous one, only
        rows of earlier tiles whose credits return within the next ``latency - 1 + R -
        max(R, C) <= latency - 1`` cycles are still out; the new tile needs R more. A producer
        that takes the credits up to ``lead`` cycles before its beat is on ``i``, ``lead + 1``
        cycles earlier than the array's own input stage would, needs ``lead + 1`` rows more.
        """
        return fifo_depth(self._rows, self._cols, self._product_register, self._lead,
                          self._drain)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        replica = self._replica

        def flag_register(value, name):
            # Every lane carries the same flags: kept apart, so that no register serves
            # lanes across the die (:func:`hw.vendor.kept_register`).
            return kept_register(m, value, name, family=replica, reset=True)

        def registered(data, valid, last, name):
            """An operand register: the data, and the flags in registers of their own."""
            # Only the flags are reset: the data is read only where they say it is valid,
            # and without the reset its register needs no route from the reset.
            operand = Signal(Operand, name=name)
            flags = flag_register(Cat(valid, last), f"{name}_flags")
            value = Signal.like(operand.data, name=f"{name}_data", reset_less=True)
            m.d.sync += value.eq(data)
            m.d.comb += [operand.data.eq(value), operand.valid.eq(flags[0]),
                         operand.last.eq(flags[1])]
            return operand

        def skew(operand, index, kind):
            """``operand`` delayed ``index`` cycles: row r's activation r cycles late,
            column c's weight c cycles late."""
            for n in range(1, index + 1):
                operand = registered(operand.data, operand.valid, operand.last,
                                     f"{kind}{index}_skew{n}")
            return operand

        if self._lead is None:
            west, north = self._input_stage(m)
        else:
            # The producer keeps the rules: each lane registers its operand and flags.
            def lane(value, index, kind):
                return registered(value, self.i.valid, self.i.payload.last,
                                  f"{kind}{index}_skew0")

            west = [lane(self.i.payload.a[r], r, "a") for r in range(R)]
            north = [lane(self.i.payload.b[c], c, "b") for c in range(C)]
        if self._drain == "chain":
            # Grid row p computes tile row R-1-p: row 0, which the chain shows first, is
            # computed by the bottom row, which completes last.
            west = west[::-1]
        west = [skew(operand, p, "a") for p, operand in enumerate(west)]
        north = [skew(operand, c, "b") for c, operand in enumerate(north)]

        pes = [[PE(self._acc_width, multiplier=self._multipliers[r * C + c],
                   product_register=self._product_register, replica=replica,
                   drain=self._drain == "chain")
                for c in range(C)]
               for r in range(R)]
        for r in range(R):
            for c in range(C):
                pe = m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                m.d.comb += [
                    pe.a.eq(west[r] if c == 0 else pes[r][c - 1].a_out),
                    pe.b.eq(north[c] if r == 0 else pes[r - 1][c].b_out),
                ]

        if self._drain == "chain":
            row, row_valid = self._chain(m, pes)
        else:
            row, row_valid = self._select(m, pes)

        # Output FIFO: ``fifo_depth - 1`` rows in RAM (on ECP5 distributed: block RAM would
        # take C * acc_width / 36 blocks for a few dozen rows) and an output register.
        # Credits keep it from overflowing.
        payload = Signal.like(self.o.payload, name="o_data", reset_less=True)
        level = Signal(range(self.fifo_depth))
        fetch = (level != 0) & (~self.o.valid | self.o.ready)

        def incr(ptr):
            return Mux(ptr == self.fifo_depth - 2, 0, ptr + 1)

        if self._fifo_columns:
            read = [payload.eq(self._column_fifo(m, row, row_valid, fetch, incr))]
        else:
            produce = Signal(range(self.fifo_depth - 1))
            consume = Signal(range(self.fifo_depth - 1))
            data = self._fifo_memory(m, "fifo", len(row.as_value()), row, row_valid, produce,
                                     consume)
            with m.If(row_valid):
                m.d.sync += produce.eq(incr(produce))
            read = [consume.eq(incr(consume)), payload.eq(data)]
        with m.If(fetch):
            m.d.sync += [*read, self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += level.eq(level + row_valid - fetch)
        m.d.comb += self.o.payload.eq(payload)

        return m

    def _fifo_memory(self, m, name, shape, data, en, w_addr, r_addr):
        """A memory of the output FIFO's ``fifo_depth - 1`` rows of ``shape``, written with
        ``data`` at ``w_addr`` when ``en``; returns its data at ``r_addr`` (no read latency)."""
        attrs = {} if self._fifo_ram is None else {"ram_style": self._fifo_ram}
        storage = Memory(shape=shape, depth=self.fifo_depth - 1, init=[], attrs=attrs)
        m.submodules[name] = storage
        w_port = storage.write_port()
        r_port = storage.read_port(domain="comb")
        m.d.comb += [
            w_port.addr.eq(w_addr),
            w_port.data.eq(data),
            w_port.en.eq(en),
            r_port.addr.eq(r_addr),
        ]
        return r_port.data

    def _column_fifo(self, m, row, row_valid, fetch, incr):
        """The output FIFO's rows as one memory per column, each addressed by its own
        copies of the write and read pointers (:func:`hw.vendor.kept_register`); returns
        the row at the read pointers. No pointer register addresses the RAM of every
        column across the die (on the ECP5-85F 16x16 the one read pointer's route to the
        512 distributed-RAM cells of the FIFO was the worst path)."""
        reads = []
        for c in range(self._cols):
            pointers = []
            for name, en in (("produce", row_valid), ("consume", fetch)):
                step = Signal(range(self.fifo_depth - 1), name=f"{name}_{c}_next")
                pointer = kept_register(m, step, f"{name}_{c}", en=en, family=self._replica,
                                        reset=True)
                m.d.comb += step.eq(incr(pointer))
                pointers.append(pointer)
            reads.append(self._fifo_memory(m, f"fifo_{c}", signed(self._acc_width), row[c],
                                           row_valid, *pointers))
        return Cat(reads)

    def _select(self, m, pes):
        """The select drain; returns the row register and its valid flag."""
        R, C = self._rows, self._cols
        # Drain: at most one row completes per cycle (tiles are >= R cycles apart), so
        # the row select is one-hot and an AND-OR mux suffices. Row r completes when
        # PE (r, C-1) is done, C-1-c cycles after PE (r, c) (the grid never stops), so
        # each PE's result is selected by its own ``done`` delayed to that cycle: no select
        # net reaches across a row (on the ECP5-85F 8x8 that net to 256 AND gates was the
        # critical path).
        row = Signal(data.ArrayLayout(signed(self._acc_width), C), reset_less=True)
        row_valid = Signal()
        complete = [pes[r][C - 1].done for r in range(R)]
        columns = []
        for c in range(C):
            column = 0
            for r in range(R):
                select = _delayed(m, pes[r][c].done, C - 1 - c, f"select_{r}_{c}")
                column = column | (pes[r][c].result.as_unsigned()
                                   & select.replicate(self._acc_width))
            columns.append(column)
        m.d.sync += [row.eq(Cat(columns)), row_valid.eq(Cat(complete).any())]
        return row, row_valid

    def _chain(self, m, pes):
        """The chain drain; returns the row register and its valid flag."""
        R, C = self._rows, self._cols
        # PE (p, c) completes R-1-p cycles before the bottom PE of its column; it
        # starts shifting then (its ``done`` delayed, so no start signal reaches along the
        # column) and shifts until its next sum. The next sum comes at least R cycles after
        # this one, no earlier than the cycle after the PE passed on row 0.
        for c in range(C):
            for p in range(R):
                pe = pes[p][c]
                start = _delayed(m, pe.done, R - 1 - p, f"start_{p}_{c}")
                shifting = Signal(name=f"shifting_{p}_{c}")
                drain = start | (shifting & ~pe.done)
                m.d.sync += shifting.eq(drain)
                m.d.comb += pe.drain.eq(drain)
                if p > 0:
                    m.d.comb += pe.drain_in.eq(pes[p - 1][c].result)

        # Deskew: the bottom PE of column c shows row 0 C-1-c cycles before the last
        # column's bottom PE; ``row`` takes row r of all columns at once.
        columns = [_delayed(m, pes[R - 1][c].result, C - 1 - c, f"deskew_{c}", reset_less=True)
                   for c in range(C)]
        row = Signal(data.ArrayLayout(signed(self._acc_width), C), reset_less=True)
        row_valid = Signal()
        first = pes[R - 1][C - 1].done
        remaining = Signal(range(R))
        with m.If(first):
            m.d.sync += remaining.eq(R - 1)
        with m.Elif(remaining != 0):
            m.d.sync += remaining.eq(remaining - 1)
        m.d.sync += [row.eq(Cat(columns)), row_valid.eq(first | (remaining != 0))]
        return row, row_valid

    def _input_stage(self, m):
        """The input stage that keeps the two rules; returns the undelayed operands of the
        rows and the columns."""
        R, C = self._rows, self._cols
        stage = Signal.like(self.i.payload)
        stage_valid = Signal()
        advance = Signal()
        reserve = Signal()
        stage_free = ~stage_valid | advance
        # The input stage's ready and the operands' valid flags start from registers.
        may_end = tile_rules(m, R, C, self.fifo_depth, reserve, self.o.valid & self.o.ready)
        m.d.comb += [
            advance.eq(stage_valid & (~stage.last | may_end)),
            reserve.eq(advance & stage.last),
            self.i.ready.eq(stage_free),
        ]
        with m.If(stage_free):
            m.d.sync += [stage.eq(self.i.payload), stage_valid.eq(self.i.valid)]

        def operand(lane, index, kind):
            value = Signal(Operand, name=f"{kind}{index}_skew0")
            m.d.comb += [value.data.eq(lane), value.valid.eq(advance),
                         value.last.eq(stage.last)]
            return value

        return ([operand(stage.a[r], r, "a") for r in range(R)],
                [operand(stage.b[c], c, "b") for c in range(C)])
