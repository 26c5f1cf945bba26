"""The host end of the UART link: a ``hw.driver`` transport over any byte port.

A *port* moves bytes and knows the time::

    port.write(data)        # send bytes
    port.read(timeout)      # bytes received so far, waiting up to timeout s for the first
    port.pause(seconds)     # leave the line idle
    port.now()              # seconds, on the port's clock

:class:`SerialPort` is a USB serial port (pyserial); the simulated board's port lives in
``sim.tb.board_tb`` and counts simulated time. :class:`LinkTransport` speaks
:mod:`boards.link` over a port: it is the ``transport`` of ``hw.driver.Driver``, keeps at
most the board's credit window in flight, and turns every fault, bad frame or silence
longer than ``timeout`` into one :class:`~boards.link.LinkError`.
"""

import time

import numpy as np

from hw.driver import response_length

from .link import LINK_VERSION, MAX_PAYLOAD, Fault, FrameReader, Kind, LinkError, frame
from .top import IDLE_TIMEOUT_S

__all__ = ["SerialPort", "LinkTransport"]


class SerialPort:
    """A serial port (``pyserial``) as a link port.

    Raises
    ------
    LinkError
        If the port cannot be opened (missing device, no permission, busy).
    """

    def __init__(self, device, baud):
        import serial

        try:
            self._serial = serial.Serial(device, baud, timeout=0, write_timeout=5)
        except (serial.SerialException, ValueError, OSError) as e:
            raise LinkError(f"cannot open serial port {device}: {e}") from None
        self.device = device

    def write(self, data):
        import serial

        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"cannot write to {self.device}: {e}") from None

    def read(self, timeout):
        import serial

        try:
            self._serial.timeout = timeout
            first = self._serial.read(1)
            return first + self._serial.read(self._serial.in_waiting) if first else first
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"cannot read from {self.device}: {e}") from None

    def pause(self, seconds):
        time.sleep(seconds)

    def now(self):
        return time.monotonic()

    def close(self):
        self._serial.close()


class LinkTransport:
    """``hw.driver`` transport over :mod:`boards.link`.

    Parameters
    ----------
    port : object
        A port (see the module docstring).
    config : AcceleratorConfig
        The build; ``host_width`` 8.
    timeout : float
        Seconds without any byte from the board (while one is due) before giving up.
    poll : float
        Longest single wait on the port.
    """

    def __init__(self, port, config, *, timeout=2.0, poll=0.05):
        if config.host_width != 8:
            raise ValueError(f"the UART link carries host_width 8, not {config.host_width}")
        self.port = port
        self.config = config
        self.timeout = timeout
        self.poll = poll
        self.window = 0
        self.depth = 0
        self._reader = FrameReader()

    def reset(self):
        """Reset the link and the accelerator (RESET frame); wait for READY.

        The line is left idle longer than the board's frame timeout first, so a frame that
        a lost byte left unfinished ends before the RESET starts.
        """
        self.port.pause(2 * IDLE_TIMEOUT_S)
        self.port.read(0)
        self.port.write(frame(Kind.RESET))
        self._reader = FrameReader(resync=True)
        start = self.port.now()
        while True:
            frames = self._reader.feed(self.port.read(self.poll))
            ready = [body for kind, body in frames if kind == Kind.READY]
            if ready:
                body = ready[-1]
                if len(body) != 3 or body[2] != LINK_VERSION:
                    raise LinkError(f"the board speaks link version "
                                    f"{body[2] if len(body) == 3 else '?'}, not {LINK_VERSION}")
                self.depth = self.window = int.from_bytes(body[:2], "big")
                self._reader = FrameReader()
                return self.depth
            if self.port.now() - start > self.timeout:
                raise LinkError(f"no answer to RESET within {self.timeout:g} s: is the board "
                                f"programmed with a qmac bitstream and on this port at this "
                                f"baud rate?")

    def __call__(self, words, sizes):
        """Send ``words``; return the response words of the responses of ``sizes`` words
        (``hw.driver.Driver``'s transport interface)."""
        if not self.depth:
            self.reset()
        try:
            return self._transfer(words, 4 * response_length(sizes, self.config.host_width))
        except LinkError:
            self.depth = 0   # the next call starts with a RESET
            raise

    def _transfer(self, words, expect):
        data = np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()
        got = bytearray()
        sent = 0
        last = self.port.now()
        while sent < len(data) or len(got) < expect:
            while sent < len(data) and self.window > 0:
                n = min(MAX_PAYLOAD, self.window, len(data) - sent)
                self.port.write(frame(Kind.DATA, data[sent:sent + n]))
                sent += n
                self.window -= n
            chunk = self.port.read(self.poll)
            if chunk:
                last = self.port.now()
                for kind, body in self._reader.feed(chunk):
                    self._take(kind, body, got)
            elif self.port.now() - last > self.timeout:
                raise LinkError(
                    f"the board stopped answering: {self.timeout:g} s without a byte; sent "
                    f"{sent} of {len(data)} bytes, received {len(got)} of {expect} response "
                    f"bytes")
            if len(got) > expect:
                raise LinkError(f"the board sent {len(got)} response bytes, more than the "
                                f"{expect} expected")
        return np.frombuffer(bytes(got), dtype="<u4").astype(np.uint32)

    def _take(self, kind, body, got):
        if kind == Kind.DATA:
            got += body
        elif kind == Kind.CREDIT and len(body) == 2:
            self.window += int.from_bytes(body, "big")
            if self.window > self.depth:
                raise LinkError(f"the board returned more credit ({self.window}) than its "
                                f"buffer holds ({self.depth})")
        elif kind == Kind.FAULT and len(body) == 1:
            raise LinkError(f"the board reported a link fault: {Fault(body[0])!r} (a byte "
                            f"was lost or corrupted on the way to the board)")
        else:
            raise LinkError(f"unexpected frame from the board: kind {kind:#04x}, "
                            f"{len(body)} bytes")
