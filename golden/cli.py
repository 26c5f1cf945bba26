"""What every ``python -m ...`` command of the project shares: one-line argument errors."""

import argparse

__all__ = ["ArgumentParser", "positive_int"]


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit status 2.

    The message names the bad argument; the usage block is one ``--help`` away.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value
