"""benchmarks/live_edges.py: NB201 training steps built by build and build_for_training, side by side."""

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


def _quotient_rounding(numerator: float, denominator: float) -> float:
    """How far a ratio printed to 0.01 may be from the quotient of its times printed to 0.1 ms."""
    return 0.005 + (numerator / denominator) * (0.05 / numerator + 0.05 / denominator) + 1e-9


def test_the_quick_run_times_both_builds_and_finds_them_bit_equal(capsys):
    bench = load_benchmark("live_edges")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| nb201")]
    assert len(rows) == 1
    label, archs, built, live, ratio, equal = rows[0]
    assert archs == "3" and float(built) > 0 and float(live) > 0
    assert float(ratio) == pytest.approx(float(live) / float(built), abs=_quotient_rounding(float(live), float(built)))
    assert equal == "yes"
