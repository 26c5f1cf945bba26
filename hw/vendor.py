"""Registers that the synthesis tools must keep apart."""

from amaranth import ClockSignal, Instance, ResetSignal, Signal

__all__ = ["FAMILIES", "kept_register"]

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
    reg = Signal(len(value), name=name)
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
