"""The simulated reader study's quick mode runs end to end (bench/reader_study.py)."""

from __future__ import annotations

from bench.reader_study import BUDGETS, CONDITIONS, main


def test_the_reader_study_quick_mode_prints_its_table_and_writes_the_plot(tmp_path, capsys):
    out = tmp_path / "study.png"
    result = main(["--quick", "--cases", "8", "--seeds", "2", "--size", "48", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| informative first + auto-accept |" in printed
    assert "reaching random's 100 % quality" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result["table"]
    assert set(table) == {(key, b) for key in CONDITIONS for b in BUDGETS}
    # Everything reviewed: the order no longer matters.
    full = [table[(key, 1.0)][0] for key in CONDITIONS if not key[1]]
    assert full[0] == full[1]
    assert all(0.0 <= mean <= 1.0 for mean, _half in table.values())
