"""benchmarks/live_edges.py: NB201 training steps built by build and build_for_training, side by side."""

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


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
    assert float(ratio) == pytest.approx(float(live) / float(built), abs=0.01)
    assert equal == "yes"
