"""Vendor primitives: registers the synthesis tools must keep apart, and carry chains."""

from amaranth import Cat, ClockSignal, Const, Instance, Mux, ResetSignal, Signal

__all__ = ["FAMILIES", "kept_register", "carry_chain"]

#: Families whose flip-flop primitive :func:`kept_register` knows.
FAMILIES = (None, "ecp5")


def kept_register(m, value, name, *, en=1, family=None, reset=False):
    """``value`` registered (clock enable ``en``) in the ``sync`` domain of module ``m``.

    Yosys merges registers with equal inputs into one, which then drives the loads of all
    of them, wherever they lie on the die. With ``family="ecp5"`` the register is a
    ``TRELLIS_FF`` per bit marked ``keep``, which Yosys leaves alone, cleared by the
    domain's reset if ``reset`` (else only at configuration); with None it is a plain
    register (for simulation: the same behaviour).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    reg = Signal(len(value), name=name, reset_less=not reset)
    if family is None:
        with m.If(en):
            m.d.sync += reg.eq(value)
        return reg
    for n in range(len(value)):
        m.submodules[f"{name}_ff{n}"] = Instance(
            "TRELLIS_FF", a_keep=1,
            p_GSR="DISABLED", p_CEMUX="CE", p_CLKMUX="CLK", p_LSRMUX="LSR",
            p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
            i_CLK=ClockSignal(), i_CE=en, i_LSR=ResetSignal() if reset else 0,
            i_DI=value[n], o_Q=reg[n])
    return reg


def carry_chain(m, bits, name, *, cin=0, family=None):
    """The sum of two rows of one-bit terms along a carry chain, one term pair per bit.

    ``bits`` lists, least significant first, the pairs ``(x, y)`` of one bit position; each
    term is ``(f, p, q)``: the function ``f(p, q) -> 0 or 1`` of two one-bit values (a
    constant term has ``p = q = 0``). Returns the ``len(bits)``-bit sum of the two rows and
    ``cin``, modulo its width.

    With ``family="ecp5"`` each position is one half of a ``CCU2C``, whose LUT4 (inputs
    A, B of ``x`` and C, D of ``y``) gives ``x ^ y``, and whose LUT2 (A, B: the same table
    with C = D = 0) gives the carry where ``x == y``: so the two terms cost no LUT of their
    own. That asks ``y(0, 0) == 0``; a pair that does not has its terms swapped (both
    terms nonzero at (0, 0) raise ValueError). With None the same tables are evaluated in
    plain logic, as Yosys's simulation model of ``CCU2C`` does, for the simulators.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    cells = []
    for n, (x, y) in enumerate(bits):
        if y[0](0, 0):
            x, y = y, x
        if y[0](0, 0):
            raise ValueError(f"bit {n} of {name}: neither term is 0 at inputs 0")
        table = 0
        for i in range(16):
            a, b, c, d = (i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1
            table |= (x[0](a, b) ^ y[0](c, d)) << i
        cells.append((table, (x[1], x[2], y[1], y[2])))
    total = Signal(len(bits), name=name)
    if family is None:
        carry = Const(cin, 1)
        for n, (table, inputs) in enumerate(cells):
            index = Cat(*inputs)
            lut4 = Signal(name=f"{name}_p{n}")
            lut2 = Signal(name=f"{name}_g{n}")
            m.d.comb += [lut4.eq(Const(table, 16).bit_select(index, 1)),
                         lut2.eq(Const(table & 0xF, 4).bit_select(index[:2], 1)),
                         total[n].eq(lut4 ^ carry)]
            carry = Mux(lut4, carry, lut2)
        return total
    if len(cells) % 2:
        cells.append((0, (0, 0, 0, 0)))
    carry = Const(cin, 1)
    for n in range(0, len(cells), 2):
        cout = Signal(name=f"{name}_c{n // 2}")
        outputs = Signal(2, name=f"{name}_s{n // 2}")
        ports = {"i_CIN": carry, "o_COUT": cout, "o_S0": outputs[0], "o_S1": outputs[1]}
        for half in (0, 1):
            table, inputs = cells[n + half]
            ports[f"p_INIT{half}"] = Const(table, 16)
            ports[f"p_INJECT1_{half}"] = "NO"
            for pin, value in zip("ABCD", inputs, strict=True):
                ports[f"i_{pin}{half}"] = value
        m.submodules[f"{name}_ccu{n // 2}"] = Instance("CCU2C", **ports)
        m.d.comb += total[n:n + 2].eq(outputs) if n + 1 < len(bits) else total[n].eq(outputs[0])
        carry = cout
    return total
