"""ISA v2 executed in Python: ``docs/isa.md`` as a program.

:class:`IsaModel` consumes the input word stream of the accelerator and produces its
response words, with the banks, the COMPUTE semantics (NumPy + ``golden.requant``) and the
sticky error status of the ISA. It lets the host driver be tested without RTL, and it is
the reference for the response streams of the RTL tests.

What it is not: a timing model. COMPUTE finishes the moment it is decoded, so STATUS never
shows ``busy`` and the interlocks never wait; the ``compute cycles`` word is set to
``K * m_tiles * n_tiles`` (the ideal step count, i.e. 100 % utilization) and the total
counts those, only so that STATUS has defined values. Measured cycles come from the RTL
(``python -m sim.bench``).

Where the ISA leaves results unspecified (``acc`` outside ``acc_width`` bits, ``acc + bias``
outside int32, ``act_min > act_max``, a shift outside the rounding's range) the model raises
:class:`UnspecifiedBehaviour` instead of inventing a value: a host that gets there has a bug.
Buffer contents are undefined after power-up; the model fills them with seeded garbage so a
host that reads what it never wrote gets wrong numbers rather than lucky zeros.
"""

import numpy as np

from golden.requant import requantize
from hw.isa import ARGS, FLAG_BITS, ISA_VERSION, MAGIC, PAR_WORDS_PER_CHANNEL, PARTIAL, Error, Op

__all__ = ["IsaModel", "UnspecifiedBehaviour"]


class UnspecifiedBehaviour(ValueError):
    """The stream asked for something whose result the ISA does not specify."""


def _int8(v):
    return ((int(v) & 0xFF) ^ 0x80) - 0x80


class IsaModel:
    """The accelerator of ``config`` at the level of the command stream.

    Parameters
    ----------
    config : hw.config.AcceleratorConfig
    seed : int
        Seed of the power-up garbage in the buffers.

    Attributes
    ----------
    act, wgt : ndarray of int8, shape (2, depth, R) and (2, depth, C)
    par : ndarray of uint32, shape (2, par_depth, C, 3)
        Raw words bias, M0, shift per channel.
    out : ndarray of int8, shape (2, out_depth, C)
    error, error_count, compute_cycles, compute_total, compute_count : int
        What STATUS reports.
    partial : ndarray of int64, shape (R, C), or None
        The sums that partial COMPUTEs left in the array for the next COMPUTE's first tile.
    """

    def __init__(self, config, *, seed=0):
        self.config = c = config
        rng = np.random.default_rng(seed)
        self.act = rng.integers(-128, 128, (2, c.act_depth, c.rows), dtype=np.int8)
        self.wgt = rng.integers(-128, 128, (2, c.wgt_depth, c.cols), dtype=np.int8)
        self.par = rng.integers(0, 1 << 32, (2, c.par_depth, c.cols, PAR_WORDS_PER_CHANNEL),
                                dtype=np.uint32)
        self.out = rng.integers(-128, 128, (2, c.out_depth, c.cols), dtype=np.int8)
        self.reset()

    # The words per item of each load: one activation word, one weight word, one group.
    def _load_target(self, op):
        c = self.config
        return {
            Op.LOAD_ACT: (self.act, (c.rows + 3) // 4),
            Op.LOAD_WGT: (self.wgt, (c.cols + 3) // 4),
            Op.LOAD_PAR: (self.par, c.cols * PAR_WORDS_PER_CHANNEL),
        }[op]

    def reset(self):
        """Reset: idle, no error, cycles 0, partial commands and sums discarded; buffers
        kept."""
        self.error = 0
        self.error_count = 0
        self.compute_cycles = 0
        self.compute_total = 0
        self.compute_count = 0
        self.partial = None
        self._pending = np.zeros(0, dtype=np.uint32)
        self._load = None     # (array, bank, addr, items left, words per item, drop)

    def __call__(self, words, sizes=None):
        """Transport interface of :class:`hw.driver.Driver`: :meth:`run` (the model needs
        no response ``sizes``: it answers every command at once)."""
        return self.run(words)

    def run(self, words):
        """Consume input words; return the response words they produce.

        A command cut off at the end of ``words`` waits for the next call, as the hardware
        would wait for the next beat.
        """
        buf = np.concatenate([self._pending, np.asarray(words, dtype=np.uint32)])
        out, pos = [], 0
        while pos < len(buf):
            if self._load is not None:
                consumed = self._load_data(buf, pos)
                if consumed == pos:
                    break  # wait for the rest of an item
                pos = consumed
                continue
            op_code, flags = int(buf[pos]) >> 24, int(buf[pos]) & ((1 << FLAG_BITS) - 1)
            try:
                op = Op(op_code)
            except ValueError:
                self._fail(Error.ILLEGAL_OPCODE)
                pos += 1
                continue
            if pos + 1 + ARGS[op] > len(buf):
                break
            args = [int(a) for a in buf[pos + 1:pos + 1 + ARGS[op]]]
            pos += 1 + ARGS[op]
            response = self._execute(op, flags, args)
            if response is not None:
                out.append(self._pad(response))
        self._pending = buf[pos:]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)

    def _pad(self, response):
        response = np.asarray(response, dtype=np.uint32)
        wpb = max(1, self.config.host_width // 32)
        return np.concatenate([response, np.zeros(-len(response) % wpb, dtype=np.uint32)])

    def _fail(self, code):
        if self.error == 0:
            self.error = int(code)
        self.error_count = (self.error_count + 1) % (1 << 32)

    def _execute(self, op, flags, args):
        c = self.config
        if op == Op.ID:
            return [MAGIC, ISA_VERSION, c.rows, c.cols, c.acc_width, c.act_depth, c.wgt_depth,
                    c.par_depth, c.out_depth, int(c.rounding == "single")]
        if op == Op.STATUS:
            return [2 * (self.error != 0), self.error, self.compute_cycles, self.error_count,
                    self.compute_total, self.compute_count]
        if op == Op.CLEAR:
            self.error = self.error_count = self.compute_total = self.compute_count = 0
        elif op in (Op.LOAD_ACT, Op.LOAD_WGT, Op.LOAD_PAR):
            addr, count = args
            array, per_item = self._load_target(op)
            drop = count == 0 or addr + count > array.shape[1]
            if drop:
                self._fail(Error.LOAD_RANGE)
            if count:
                self._load = (array, flags & 1, addr, count, per_item, drop)
        elif op == Op.COMPUTE:
            self._compute(flags, *args)
        elif op == Op.STORE:
            addr, count = args
            if count == 0 or addr + count > c.out_depth:
                self._fail(Error.STORE_RANGE)
                return None
            rows = self.out[flags & 1, addr:addr + count]
            words = np.zeros((count, 4 * ((c.cols + 3) // 4)), dtype=np.uint8)
            words[:, :c.cols] = rows.view(np.uint8)
            return words.view("<u4").astype(np.uint32).ravel()
        return None

    def _load_data(self, buf, pos):
        array, bank, addr, left, per_item, drop = self._load
        items = min(left, (len(buf) - pos) // per_item)
        if items == 0:
            return pos
        data = buf[pos:pos + items * per_item]
        if not drop:
            if array.dtype == np.int8:
                lanes = array.shape[2]
                words = data.astype("<u4").view(np.uint8).reshape(items, 4 * per_item)
                array[bank, addr:addr + items] = words[:, :lanes].view(np.int8)
            else:
                array[bank, addr:addr + items] = data.reshape(items, *array.shape[2:])
        left -= items
        self._load = None if left == 0 else (array, bank, addr + items, left, per_item, drop)
        return pos + items * per_item

    def _compute(self, flags, k, m_tiles, n_tiles, act_addr, wgt_addr, par_addr, out_addr,
                 layer):
        c = self.config
        r, cols = c.rows, c.cols
        partial = bool(flags & PARTIAL)
        if (k == 0 or m_tiles == 0 or n_tiles == 0
                or partial and (m_tiles != 1 or n_tiles != 1)
                or act_addr + m_tiles * k > c.act_depth
                or wgt_addr + n_tiles * k > c.wgt_depth
                or par_addr + n_tiles > c.par_depth
                or out_addr + m_tiles * r * n_tiles > c.out_depth):
            self._fail(Error.COMPUTE_RANGE)
            return
        ab, wb, pb, ob = (flags >> i & 1 for i in range(4))
        x = self.act[ab, act_addr:act_addr + m_tiles * k].reshape(m_tiles, k, r)
        x = x.transpose(0, 2, 1).reshape(m_tiles * r, k)
        w = self.wgt[wb, wgt_addr:wgt_addr + n_tiles * k].reshape(n_tiles, k, cols)
        w = w.transpose(1, 0, 2).reshape(k, n_tiles * cols)
        # float64 holds every partial sum exactly (|acc| <= K * 2**14 < 2**53).
        acc = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        self.compute_cycles = k * m_tiles * n_tiles % (1 << 32)
        self.compute_total = (self.compute_total + self.compute_cycles) % (1 << 32)
        self.compute_count = (self.compute_count + 1) % (1 << 32)
        if self.partial is not None:
            acc[:r, :cols] += self.partial
        if partial:
            # Partial sums wrap in acc_width bits; only the tile's final sum must fit.
            self.partial = acc
            return
        self.partial = None
        limit = 1 << (c.acc_width - 1)
        if np.any((acc < -limit) | (acc >= limit)):
            raise UnspecifiedBehaviour(f"COMPUTE: an accumulator leaves {c.acc_width} bits")
        par = self.par[pb, par_addr:par_addr + n_tiles].reshape(n_tiles * cols, -1)
        bias = par[:, 0].view(np.int32)
        m0 = par[:, 1].view(np.int32)
        shift = ((par[:, 2].astype(np.int64) & 0x3F) ^ 0x20) - 0x20
        z_out, act_min, act_max = (_int8(layer >> s) for s in (0, 8, 16))
        lo, hi = -31, 31 if c.rounding == "double" else 30
        if np.any((shift < lo) | (shift > hi)):
            raise UnspecifiedBehaviour(f"COMPUTE: a shift outside [{lo}, {hi}]")
        if act_min > act_max:
            raise UnspecifiedBehaviour(f"COMPUTE: act_min {act_min} > act_max {act_max}")
        try:
            y = requantize(acc, bias, m0, shift, z_out, act_min, act_max, rounding=c.rounding)
        except OverflowError:
            raise UnspecifiedBehaviour("COMPUTE: acc + bias leaves int32") from None
        self.out[ob, out_addr:out_addr + m_tiles * r * n_tiles] = \
            y.reshape(m_tiles * r * n_tiles, cols)
