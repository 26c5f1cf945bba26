"""cocotb testbench of the board top (``boards.top.UartAccelerator``) at its UART pins.

A bit-level UART model sits on ``rx``/``tx``; the host code of ``boards.run`` runs
unchanged in a bridge thread and talks to it through :class:`SimPort`, a port whose
``read``/``pause`` advance the simulation and whose clock is simulated time. Python wakes
once per bit (``ClockCycles`` over a whole bit time), never per cycle.

The pytest side writes ``CASE`` (.npz) with ``divisor`` and ``period_ps`` (the clock),
``request`` (:meth:`boards.run.Request.to_dict` as JSON), and ``noise``: rows of (direction,
byte index, action) with direction 0 host to board, 1 board to host, action 0 drop the
byte, 1 flip its bit 3. It writes ``OUT`` (a pickle) with the ``boards.run.execute``
result or the error it raised.
"""

import json
import os
import pickle

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

from boards.link import LinkError


class UartLine:
    """Both directions of the serial line, with optional byte loss / corruption."""

    def __init__(self, dut, divisor, noise):
        self.dut, self.div = dut, divisor
        self.to_board = bytearray()
        self.from_board = bytearray()
        self.arrived = Event()
        self.wake = Event()
        self.noise = {(int(d), int(i)): int(a) for d, i, a in noise}
        self.counts = [0, 0]
        dut.rx.value = 1

    def _noisy(self, direction, byte):
        n = self.counts[direction]
        self.counts[direction] += 1
        action = self.noise.get((direction, n))
        if action == 0:
            return None
        return byte ^ 0x08 if action == 1 else byte

    async def drive(self):
        clk = self.dut.clk
        while True:
            if not self.to_board:
                self.wake.clear()
                await self.wake.wait()
                continue
            byte = self._noisy(0, self.to_board.pop(0))
            if byte is None:
                continue
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(clk, self.div)

    async def monitor(self):
        clk = self.dut.clk
        while True:
            await FallingEdge(self.dut.tx)
            await ClockCycles(clk, self.div // 2)
            byte = 0
            for i in range(8):
                await ClockCycles(clk, self.div)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(clk, self.div)   # the stop bit's middle
            byte = self._noisy(1, byte)
            if byte is not None:
                self.from_board.append(byte)
                self.arrived.set()


class SimPort:
    """A link port on the simulated line; time is simulated seconds."""

    def __init__(self, line, period_ps):
        self.line = line
        self.period_ps = period_ps

    @resume
    async def write(self, data):
        self.line.to_board += data
        self.line.wake.set()

    @resume
    async def read(self, timeout):
        line = self.line
        if not line.from_board and timeout > 0:
            line.arrived.clear()
            await First(line.arrived.wait(), Timer(max(1, round(timeout * 1e12)), unit="ps"))
        # Gather what follows right behind, so the host wakes per burst, not per byte.
        while line.from_board:
            have = len(line.from_board)
            await ClockCycles(self.line.dut.clk, 12 * line.div)
            if len(line.from_board) == have:
                break
        data = bytes(line.from_board)
        line.from_board.clear()
        return data

    @resume
    async def pause(self, seconds):
        await Timer(max(1, round(seconds * 1e12)), unit="ps")

    def now(self):
        return get_sim_time("ps") * 1e-12


@cocotb.test()
async def run_host(dut):
    """Run ``boards.run.execute`` of ``CASE`` against the board top; write ``OUT``."""
    from boards import run

    case = np.load(os.environ["CASE"], allow_pickle=False)
    period = int(case["period_ps"])
    request = run.Request.from_dict(json.loads(str(case["request"])))
    cocotb.start_soon(Clock(dut.clk, period, unit="ps").start())
    dut.rst.value = 1
    line = UartLine(dut, int(case["divisor"]), case["noise"].reshape(-1, 3))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    cocotb.start_soon(line.drive())
    cocotb.start_soon(line.monitor())
    port = SimPort(line, period)
    try:
        result = await bridge(run.execute)(port, request)
        out = {"result": result}
    except (LinkError, run.ConfigMismatch) as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    with open(os.environ["OUT"], "wb") as f:
        pickle.dump(out, f)
