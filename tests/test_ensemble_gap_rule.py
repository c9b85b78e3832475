"""benchmarks/ensemble_gap_rule.py: the package's rule for "below its best member" is seldom fooled by
equally good models where the bootstrap of the best member's lead often is, and it sees a real
10-point lead."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_mcnemar_is_seldom_fooled_by_luck_where_the_bootstrap_of_the_best_member_often_is(capsys):
    import ensemble_gap_rule

    assert ensemble_gap_rule.main(["--sets", "40", "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    rows = [line.strip("|").split("|") for line in printed.splitlines() if line.startswith("| 0.")]
    assert [float(row[0]) for row in rows] == [0.0, 0.7]
    for _, mcnemar, percentile, basic in ([float(cell) for cell in row] for row in rows):
        assert mcnemar <= 0.1, "equally good models are seldom called apart"
        assert percentile >= 0.25 and percentile > basic >= mcnemar, "the bootstrap of a maximum is fooled by luck"
    seen = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in printed.splitlines() if " points |" in line}
    assert list(seen) == ["3 points", "5 points", "10 points"]
    assert seen["3 points"] <= seen["5 points"] <= seen["10 points"] and seen["10 points"] >= 0.8, seen
