"""A short crash test (benchmarks/crash_test.py): a run SIGKILLed at random moments resumes to the same results."""

from tests.benchmark_scripts import load_benchmark
from tests.quickstart import QUICKSTART, TINY


def _crash_test_module():
    return load_benchmark("crash_test")


def test_a_run_killed_twice_at_random_moments_ends_with_the_uninterrupted_results(tmp_path):
    crash = _crash_test_module()
    lines = []
    report = crash.crash_test(str(QUICKSTART), TINY, kills=2, seed=3,
                              work=tmp_path / "work", log=lines.append)
    assert report.kills == 2 and len(report.left_behind) == 2
    assert report.equal, "the resumed run's results differ from the uninterrupted run's"
    assert len(report.attempt_seconds) == 2 + report.completed_early + 1
