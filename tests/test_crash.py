"""A short crash test (benchmarks/crash_test.py): a run SIGKILLed at random moments resumes to the same results."""

import importlib.util
import sys
from pathlib import Path

from tests.quickstart import QUICKSTART, TINY

ROOT = Path(__file__).resolve().parents[1]


def _crash_test_module():
    spec = importlib.util.spec_from_file_location("crash_test", ROOT / "benchmarks" / "crash_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("crash_test", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_run_killed_twice_at_random_moments_ends_with_the_uninterrupted_results(tmp_path):
    crash = _crash_test_module()
    lines = []
    report = crash.crash_test(str(QUICKSTART), TINY, kills=2, seed=3,
                              work=tmp_path / "work", log=lines.append)
    assert report.kills == 2 and len(report.left_behind) == 2
    assert report.equal, "the resumed run's results differ from the uninterrupted run's"
    assert len(report.attempt_seconds) == 2 + report.completed_early + 1
