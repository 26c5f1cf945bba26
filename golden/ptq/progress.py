"""A plain-text progress bar on stderr for long calibrations (no extra dependency).

On a terminal the bar is redrawn in place; on a pipe or file only the finished line is
written, so logs stay one line per task.
"""

import sys

__all__ = ["Progress"]


class Progress:
    """Count ``total`` steps of a task named ``label``.

    Parameters
    ----------
    total : int
        Number of steps, >= 1.
    label : str
    stream : file, optional
        Defaults to ``sys.stderr``; ``None`` disables all output.
    width : int
        Bar width in characters.
    """

    def __init__(self, total, label, stream=sys.stderr, width=30):
        if int(total) < 1:
            raise ValueError(f"total must be >= 1, not {total!r}")
        self.total, self.label, self.stream, self.width = int(total), label, stream, width
        self.done = 0
        self.live = stream is not None and getattr(stream, "isatty", lambda: False)()

    def _line(self):
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label:<28} [{bar}] {self.done}/{self.total}"

    def update(self, steps=1):
        """Advance by ``steps``; redraw on a terminal."""
        self.done = min(self.total, self.done + steps)
        if self.live:
            self.stream.write("\r" + self._line())
            self.stream.flush()

    def close(self):
        """Finish the line (marking every step done)."""
        self.done = self.total
        if self.stream is not None:
            self.stream.write(("\r" if self.live else "") + self._line() + "\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
