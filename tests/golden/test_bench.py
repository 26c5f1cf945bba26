"""golden.bench runs end to end on a small batch, writes docs only when asked (and then
only its block), and refuses bad arguments before measuring."""

import pytest

from golden import bench


def test_bench_small_batch_updates_doc_when_asked(tmp_path, capsys):
    doc = tmp_path / "golden.md"
    doc.write_text("# title\n\n<!-- bench:begin -->\nOLD-NUMBERS\n<!-- bench:end -->\n\ntail\n")
    assert bench.main(["--batch", "20", "--repeat", "1", "--write-docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# title\n") and text.endswith("\ntail\n") and "OLD-NUMBERS" not in text
    assert "python -m golden.bench --batch 20" in text
    assert "max |golden - LiteRT| = " in capsys.readouterr().out


def test_bench_writes_no_doc_by_default(tmp_path, capsys, monkeypatch):
    doc = tmp_path / "golden.md"
    doc.write_text("<!-- bench:begin -->\nOLD\n<!-- bench:end -->\n")
    monkeypatch.setattr(bench, "DOC", str(doc))
    assert bench.main(["--batch", "5", "--repeat", "1"]) == 0
    assert doc.read_text() == "<!-- bench:begin -->\nOLD\n<!-- bench:end -->\n"
    assert "max |golden - LiteRT| = " in capsys.readouterr().out


def test_bench_network_is_valid():
    net = bench.digits_cnn(3)
    assert [op.kind for op in net.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D",
                                           "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]


@pytest.mark.parametrize("argv, fragment", [
    (["--batch", "0"], "--batch: must be a positive integer"),
    (["--batch", ""], "--batch: must be a positive integer"),
    (["--seed", "-1"], "--seed: must be a non-negative integer, not '-1'"),
    (["--repeat", "x"], "--repeat: must be a positive integer"),
    (["--write-docs", "/proc/x"], "--write-docs: cannot write in '/proc'"),
    (["--write-docs", ""], "--write-docs: must be a file path"),
    (["--write-docs", "/nonexistent-dir/golden.md"], "directory '/nonexistent-dir' does not"),
    (["--batch", str(10**12)], "--batch: 1000000000000 samples need about"),
])
def test_bench_rejects_bad_arguments_before_work(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and err.startswith("python -m golden.bench")
