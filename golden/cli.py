"""What every ``python -m ...`` command of the project shares.

One-line argument errors (exit status 2), argparse types for counts and output paths that
are checked before any work starts, a refusal to overwrite a user's file unasked, the
memory a run may take, and a progress line for long steps.
"""

import argparse
import os
import sys
import tempfile
import time

__all__ = [
    "ArgumentParser",
    "positive_int",
    "nonnegative_int",
    "int_in",
    "output_file",
    "output_dir",
    "check_output_file",
    "check_output_dir",
    "available_memory",
    "format_bytes",
    "ProgressLine",
]


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit status 2.

    The message names the bad argument; the usage block is one ``--help`` away.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def check_output_file(self, path, option, *, force=None):
        """:func:`check_output_file` after parsing; a failure is :meth:`error`.

        ``force`` is the value of the command's ``--force`` flag, or None for an output
        the command is meant to rewrite (a report).
        """
        try:
            check_output_file(path, force=force)
        except ValueError as e:
            self.error(f"argument {option}: {e}")

    def check_output_dir(self, path, option):
        """:func:`check_output_dir` after parsing; a failure is :meth:`error`."""
        try:
            check_output_dir(path)
        except ValueError as e:
            self.error(f"argument {option}: {e}")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def nonnegative_int(text):
    """argparse type: an integer >= 0 (a seed, a count that may be zero)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text!r}")
    return value


def int_in(values):
    """argparse type factory: an integer in ``values``, a ``range`` (bit widths)."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value not in values:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {values.start} to {values.stop - 1}, not {text!r}")
        return value
    return convert


def _probe(directory):
    """Create and remove a file in ``directory``: the only test that the OS will let us."""
    try:
        fd, name = tempfile.mkstemp(dir=directory or ".", prefix=".write-test-")
    except OSError as e:
        raise ValueError(f"cannot write in {directory or '.'!r}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path, *, force=None):
    """Check that ``path`` can be written now, before the work that produces it.

    Raises ValueError (one line) when ``path`` is empty, a directory, in a directory that
    does not exist or cannot be written, or exists while ``force`` is False (a user's
    file is never overwritten unasked; ``force=None`` skips that test).
    """
    if not path:
        raise ValueError("must be a file path, not ''")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a file")
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"directory {parent!r} does not exist")
    if force is False and os.path.lexists(path):
        raise ValueError(f"{path!r} exists; pass --force to overwrite it")
    _probe(parent)


def check_output_dir(path):
    """Check that directory ``path`` exists and can be written, or can be created."""
    if not path:
        raise ValueError("must be a directory path, not ''")
    if os.path.isdir(path):
        _probe(path)
        return
    if os.path.lexists(path):
        raise ValueError(f"{path!r} exists and is not a directory")
    parent = os.path.dirname(os.path.normpath(path))
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    _probe(parent)


def _as_type(check):
    def convert(text):
        try:
            check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text
    convert.__name__ = check.__name__
    return convert


output_file = _as_type(check_output_file)
output_file.__doc__ = "argparse type: a file path that can be written (no overwrite check)."
output_dir = _as_type(check_output_dir)
output_dir.__doc__ = "argparse type: a directory that exists and is writable, or can be made."


def available_memory():
    """Bytes of memory available to a new allocation (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(n):
    """``1536 -> '1.54 KB'``: decimal units, three significant digits."""
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if abs(n) < 999.5 or unit == "TB":
            return f"{n:.3g} {unit}" if abs(n) < 999.5 else f"{n:.0f} {unit}"


class ProgressLine:
    """A progress line on stderr for a step that turns out to be slow.

    Silent for the first ``delay`` seconds (fast runs print nothing), then one line at
    most every ``interval`` seconds: ``prog: what done/total unit (p%), t s``. On a
    terminal the line is redrawn in place.

    Parameters
    ----------
    prog : str
        Command name prefixing the line.
    what : str
        The step, e.g. ``"running"``.
    total : int
    unit : str
    stream : file, optional
        Defaults to ``sys.stderr``; None disables output.
    """

    def __init__(self, prog, what, total, unit="", *, stream=sys.stderr, delay=2.0,
                 interval=5.0):
        self.prog, self.what, self.total, self.unit = prog, what, int(total), unit
        self.stream, self.delay, self.interval = stream, delay, interval
        self.start = time.monotonic()
        self.last = None
        self.live = stream is not None and getattr(stream, "isatty", lambda: False)()

    def _line(self, done):
        pct = 100 * done / self.total if self.total else 100.0
        unit = f" {self.unit}" if self.unit else ""
        return (f"{self.prog}: {self.what} {done}/{self.total}{unit} ({pct:.0f}%), "
                f"{time.monotonic() - self.start:.1f} s")

    def update(self, done):
        """Report ``done`` of ``total``, if the step has been slow and a line is due."""
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self.start < self.delay or \
                (self.last is not None and now - self.last < self.interval):
            return
        self.last = now
        self.stream.write(("\r" if self.live else "") + self._line(done) +
                          ("" if self.live else "\n"))
        self.stream.flush()

    def close(self):
        """End the line (only if one was printed)."""
        if self.stream is not None and self.last is not None:
            self.stream.write(("\r" if self.live else "") + self._line(self.total) + "\n")
            self.stream.flush()
