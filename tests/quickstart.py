"""The quickstart pipeline shrunk to seconds, shared by the tests that run it end to end."""

from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.yaml"
#: overrides that make the quickstart pipeline run in a few seconds on a CPU
TINY = [
    "sample.num_archs=5",
    "report.top_k=3",
    "report.bootstrap=50",
    "distill.ipc=2",
    "distill.methods.dm.iterations=3",
    "proxy.epochs=2",
    "reference.epochs=1",
    "space.channels=4",
    "run.device=cpu",
]
