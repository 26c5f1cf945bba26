"""golden.cli: the argument types, output checks and progress line every command shares."""

import argparse
import io
import os

import pytest

from golden.cli import (
    ArgumentParser,
    ProgressLine,
    check_output_dir,
    check_output_file,
    format_bytes,
    int_in,
    nonnegative_int,
    output_file,
    positive_int,
)


def test_integer_types():
    assert positive_int("3") == 3 and nonnegative_int("0") == 0
    for bad in ("0", "-1", "x", "", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            positive_int(bad)
    for bad in ("-1", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match=f"non-negative integer, not {bad!r}"):
            nonnegative_int(bad)
    bits = int_in(range(2, 9))
    assert bits("2") == 2 and bits("8") == 8
    for bad in ("1", "9", "x", "", "4.0"):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=f"integer from 2 to 8, not {bad!r}"):
            bits(bad)


def test_check_output_file(tmp_path):
    check_output_file(str(tmp_path / "new.bin"), force=False)
    (tmp_path / "old.bin").write_text("mine")
    check_output_file(str(tmp_path / "old.bin"), force=True)
    check_output_file(str(tmp_path / "old.bin"))
    for path, message in [
        ("", "must be a file path, not ''"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "no" / "f"), "does not exist"),
        ("/proc/x", "cannot write in '/proc'"),
        (str(tmp_path / "old.bin"), "exists; pass --force"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_output_file(path, force=False)
    assert sorted(os.listdir(tmp_path)) == ["old.bin"]      # the probe leaves nothing
    with pytest.raises(argparse.ArgumentTypeError, match="must be a file path"):
        output_file("")


def test_check_output_dir(tmp_path):
    check_output_dir(str(tmp_path))
    check_output_dir(str(tmp_path / "a" / "b"))             # created later, parent writable
    (tmp_path / "f").write_text("")
    for path, message in [("", "must be a directory path"),
                          (str(tmp_path / "f"), "exists and is not a directory"),
                          ("/proc/x", "cannot write in '/proc'")]:
        with pytest.raises(ValueError, match=message):
            check_output_dir(path)


def test_parser_checks_are_one_line(capsys, tmp_path):
    (tmp_path / "old").write_text("")
    p = ArgumentParser(prog="tool")
    with pytest.raises(SystemExit) as e:
        p.check_output_file(str(tmp_path / "old"), "--out", force=False)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tool: error: argument --out: ") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        p.check_output_dir("/proc/x", "--out-dir")
    assert "argument --out-dir: cannot write" in capsys.readouterr().err


def test_progress_line_only_for_slow_steps():
    quiet = io.StringIO()
    progress = ProgressLine("tool", "ran", 10, "samples", stream=quiet)
    for i in range(10):
        progress.update(i + 1)
    progress.close()
    assert quiet.getvalue() == ""
    slow = io.StringIO()
    progress = ProgressLine("tool", "ran", 10, "samples", stream=slow, delay=0, interval=0)
    progress.update(4)
    progress.close()
    lines = slow.getvalue().splitlines()
    assert lines[0].startswith("tool: ran 4/10 samples (40%), ") and lines[0].endswith(" s")
    assert lines[1].startswith("tool: ran 10/10 samples (100%)") and len(lines) == 2


def test_format_bytes():
    assert [format_bytes(n) for n in (5, 1536, 999_600, 2.5e9, 4e12)] == \
        ["5 B", "1.54 KB", "1 MB", "2.5 GB", "4 TB"]
