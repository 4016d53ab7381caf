"""benchmarks/memory_layout.py: operator and training-step tables in both layouts, and each space's declaration."""

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


def _quotient_rounding(numerator: float, denominator: float) -> float:
    """How far a ratio printed to 0.01 may be from the quotient of its times printed to 0.1 ms."""
    return 0.005 + (numerator / denominator) * (0.05 / numerator + 0.05 / denominator) + 1e-9


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("memory_layout")


def _rows(out: str) -> list[list[str]]:
    """The cells of every markdown table row (headers included; separator lines start with |-)."""
    return [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]


def test_the_quick_run_times_every_operator_and_space_in_both_layouts(bench, capsys):
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    ops = [row[0] for row in _rows(out) if row[1].startswith("[")]
    assert ops == ["conv 3x3", "avg pool 3x3 (NB201's)", "BatchNorm (training)"]
    spaces = {row[0].split(" ")[0]: row for row in _rows(out) if row[1].endswith("x8")}
    assert set(spaces) == {"nb201", "convnet720"}
    for row in spaces.values():
        nchw, nhwc, ratio = float(row[3]), float(row[4]), float(row[5])
        assert nchw > 0 and nhwc > 0 and ratio == pytest.approx(nhwc / nchw, abs=_quotient_rounding(nhwc, nchw))
        if nchw != nhwc:  # equal after rounding to 0.1 ms: the verdict comes from the unrounded times
            assert row[7] == ("yes" if (row[6] == "True") == (nhwc < nchw) else "NO")
        else:
            assert row[7] in {"yes", "NO"}
    assert spaces["nb201"][6] == "True" and spaces["convnet720"][6] == "False"  # what the spaces declare


def test_a_training_step_changes_the_weights_in_either_layout(bench):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 10))
    before = [p.detach().clone() for p in net.parameters()]
    net.to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    assert bench.step_seconds(net, x, torch.arange(4), torch.device("cpu"), steps=2) > 0
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
