"""Numbers of the command stream, version 2 (see docs/isa.md). Shared by gateware and driver."""

import enum

__all__ = ["ISA_VERSION", "MAGIC", "Op", "ARGS", "Error", "ID_WORDS", "STATUS_WORDS",
           "words_per_lanes", "header", "FLAG_BITS", "PARTIAL"]

ISA_VERSION = 2
MAGIC = 0x514D4143  # "QMAC"


class Op(enum.IntEnum):
    NOP = 0x00
    ID = 0x01
    LOAD_ACT = 0x02
    LOAD_WGT = 0x03
    LOAD_PAR = 0x04
    COMPUTE = 0x05
    STORE = 0x06
    STATUS = 0x07
    CLEAR = 0x08


# Argument words after the header, per opcode.
ARGS = {
    Op.NOP: 0, Op.ID: 0, Op.LOAD_ACT: 2, Op.LOAD_WGT: 2, Op.LOAD_PAR: 2,
    Op.COMPUTE: 8, Op.STORE: 2, Op.STATUS: 0, Op.CLEAR: 0,
}


class Error(enum.IntEnum):
    NONE = 0
    ILLEGAL_OPCODE = 1
    LOAD_RANGE = 2
    COMPUTE_RANGE = 3
    STORE_RANGE = 4


ID_WORDS = ("magic", "version", "rows", "cols", "acc_width", "act_depth", "wgt_depth",
            "par_depth", "out_depth", "rounding")
STATUS_WORDS = ("status", "error", "compute_cycles", "error_count", "compute_total",
                "compute_count")
PAR_WORDS_PER_CHANNEL = 3  # bias, M0, shift


def words_per_lanes(lanes):
    """32-bit words that carry ``lanes`` int8 values."""
    return (lanes + 3) // 4


FLAG_BITS = 5          # header bits 0..4; bits 5..23 are reserved
PARTIAL = 1 << 4       # COMPUTE flag: accumulate only, the next COMPUTE goes on with the tile


def header(op, flags=0):
    """The header word of a command."""
    if not 0 <= flags < 1 << FLAG_BITS:
        raise ValueError(f"flags must be in [0, {(1 << FLAG_BITS) - 1}], not {flags!r}")
    return (int(Op(op)) << 24) | flags
