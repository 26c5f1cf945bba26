"""golden.bench runs end to end on a small batch and rewrites only its block of the doc."""

import pytest

from golden import bench


def test_bench_small_batch_updates_doc(tmp_path, capsys):
    doc = tmp_path / "golden.md"
    doc.write_text("# title\n\n<!-- bench:begin -->\nOLD-NUMBERS\n<!-- bench:end -->\n\ntail\n")
    assert bench.main(["--batch", "20", "--repeat", "1", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# title\n") and text.endswith("\ntail\n") and "OLD-NUMBERS" not in text
    assert "python -m golden.bench --batch 20" in text
    assert "max |golden - LiteRT| = " in capsys.readouterr().out


def test_bench_network_is_valid_and_rejects_bad_batch(capsys):
    net = bench.digits_cnn(3)
    assert [op.kind for op in net.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D",
                                           "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    with pytest.raises(SystemExit) as e:
        bench.main(["--batch", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
