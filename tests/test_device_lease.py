"""benchmarks/device_lease.py: the parts' deadlines and what is read from their output."""

import sys
import time

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def lease():
    return load_benchmark("device_lease")


PROBE = """\
imagefolder train 49500 / test 10000; storage ipc 10; seeds 1; device cuda; protocol paper
    dm 10/200 after 0.0 s loss 234
    dm 50/200 after 0.4 s loss 200
    dm 200/200 after 1.9 s loss 150
  dm       ipc  10 seed 0: acc   n/a  distill    12.0 s  peak  2821.0 MiB
    mtt 1/3 after 0.0 s
    mtt 3/3 after 8.0 s
    mtt 10/20 after 0.0 s loss 0.4
    mtt 20/20 after 5.0 s loss 0.3
"""


def test_seconds_per_iteration_come_from_the_last_phase_of_a_method(lease):
    assert lease.seconds_per_iteration(PROBE, "dm") == pytest.approx(1.9 / 190)
    assert lease.seconds_per_iteration(PROBE, "mtt") == pytest.approx(0.5)  # iterations, not the experts
    assert lease.seconds_per_iteration(PROBE, "idc") is None


def test_a_part_is_stopped_at_its_timeout_and_its_output_kept(lease, tmp_path):
    cmd = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    start = time.perf_counter()
    text, seconds, code = lease.run_part("slow", cmd, 3, tmp_path)
    assert code is None and time.perf_counter() - start < 30
    assert text.startswith("started") and "stopped at its 3 s timeout" in text
    assert (tmp_path / "slow.log").read_text() == text


def test_a_failing_part_reports_its_exit_code_and_the_next_part_runs(lease, tmp_path, capsys):
    text, _, code = lease.run_part("bad", [sys.executable, "-c", "raise SystemExit(3)"], 30, tmp_path)
    assert code == 3
    assert lease.run_part("good", [sys.executable, "-c", "print('| a | b |')"], 30, tmp_path)[2] == 0
    assert lease.tables("noise\n| a | b |\nmore noise") == "| a | b |"


def test_the_summary_keeps_tables_and_test_outcomes(lease):
    text = "noise\n| a | b |\n.....ss\nFAILED tests/x.py::test_y - AssertionError\n1 failed, 23 passed, 4 skipped in 14.6s\n"
    kept = lease.tables(text).splitlines()
    assert kept == ["| a | b |", "FAILED tests/x.py::test_y - AssertionError", "1 failed, 23 passed, 4 skipped in 14.6s"]
