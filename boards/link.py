"""The UART link protocol: frames that carry the accelerator's byte stream, with credits.

Both directions send **frames**::

    SYNC  kind  length  payload[length]  crc_hi  crc_lo

``SYNC`` is 0xA5, ``length`` 0..255, and the CRC is CRC-16/XMODEM (polynomial 0x1021,
initial value 0, the CRC-16 of ``binascii.crc_hqx``) over ``kind``, ``length`` and the
payload, sent most significant byte first.

Host to board:

- ``DATA`` (``D``): payload bytes for the accelerator's input stream. The board keeps them
  in a receive buffer of ``depth`` bytes and hands them to the accelerator only once the
  frame's CRC checked (a corrupted frame never reaches the accelerator).
- ``RESET`` (``R``, no payload): resets the accelerator and the link (buffers, credits,
  faults); the board answers ``READY``.

Board to host:

- ``READY`` (``R``): after a RESET; payload: ``depth`` (2 bytes, big-endian), link version.
- ``DATA`` (``D``): bytes of the accelerator's output stream.
- ``CREDIT`` (``C``): payload: a count (2 bytes, big-endian) of receive-buffer bytes the
  accelerator consumed since the last CREDIT.
- ``FAULT`` (``E``): payload: the :class:`Fault` flags; sent once when the first fault
  appears. The board then drops every DATA frame until the next RESET.

Flow control is a credit window: after READY the host may have at most ``depth`` payload
bytes in flight (sent but not yet returned by CREDIT), so the receive buffer never
overflows however long the accelerator stalls its input. The board sends every byte of
output as it comes; the host reads all the time.

A lost or corrupted byte in either direction breaks a frame's CRC (or its length, which
leaves the frame unfinished until the board's idle timeout ends it) and is reported as a
fault, never taken as data.
"""

import binascii
import enum

__all__ = ["SYNC", "LINK_VERSION", "MAX_PAYLOAD", "Kind", "Fault", "LinkError", "crc16",
           "frame", "FrameReader"]

SYNC = 0xA5
LINK_VERSION = 1
MAX_PAYLOAD = 255


class Kind(enum.IntEnum):
    DATA = ord("D")
    RESET = ord("R")
    READY = ord("R")
    CREDIT = ord("C")
    FAULT = ord("E")


class Fault(enum.IntFlag):
    """Why the board stopped taking data (FAULT payload, sticky until RESET)."""

    CRC = 1         # a frame's CRC did not check
    OVERFLOW = 2    # more payload than the receive buffer holds: the host broke the window
    TIMEOUT = 4     # a frame stopped in the middle (a lost byte)
    UART = 8        # a stop bit was 0, or the receiver overran
    FRAME = 16      # a byte outside a frame, or a frame of unknown kind


class LinkError(RuntimeError):
    """The link broke: a fault reported by the board, a bad frame from it, or a timeout."""


def crc16(data):
    """CRC-16/XMODEM of ``data`` (bytes)."""
    return binascii.crc_hqx(bytes(data), 0)


def frame(kind, payload=b""):
    """One frame of ``kind`` (:class:`Kind`) with ``payload`` (at most 255 bytes)."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = bytes([int(kind), len(payload)]) + payload
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


class FrameReader:
    """Cuts a received byte stream into frames, checking each one.

    Parameters
    ----------
    resync : bool
        Skip bytes until a frame checks (used right after a RESET, when the board may have
        been in the middle of a frame) instead of raising :class:`LinkError`.
    """

    def __init__(self, *, resync=False):
        self._buf = bytearray()
        self.resync = resync

    def feed(self, data):
        """Add received bytes; return the complete frames as a list of (kind, payload)."""
        self._buf += data
        frames = []
        while self._buf:
            buf = self._buf
            if buf[0] != SYNC:
                self._bad(f"byte {buf[0]:#04x} where a frame should start")
                continue
            if len(buf) < 3 or len(buf) < 5 + buf[2]:
                break
            end = 5 + buf[2]
            body, crc = bytes(buf[1:end - 2]), int.from_bytes(buf[end - 2:end], "big")
            if crc16(body) != crc:
                self._bad(f"CRC error in a frame of kind {body[0]:#04x}, {body[1]} bytes")
                continue
            frames.append((body[0], body[2:]))
            del self._buf[:end]
        return frames

    @property
    def pending(self):
        """Bytes of an unfinished frame."""
        return len(self._buf)

    def _bad(self, what):
        if not self.resync:
            raise LinkError(f"corrupted data from the board: {what}")
        del self._buf[0]
