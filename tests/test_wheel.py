"""The built wheel works on its own: installed outside the checkout, run from elsewhere.

Catches package data that only exists in the source tree (e.g. search-space
specs read from the repo root): the editable install used by the other tests
would never notice. Offline: no build isolation, no dependency resolution; the
wheel goes into a throwaway ``--target`` directory put first on PYTHONPATH, and
its dependencies come from the running interpreter's environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_installed_wheel_runs_outside_the_checkout(tmp_path):
    # Build from a copy of the tracked sources, so the checkout gets no build/ or egg-info litter.
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".proxynas", "mlruns", "build", "dist", "*.egg-info", "__pycache__", "tests",
            ".pytest_cache",
        ),
    )
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(wheels), str(src)], cwd=tmp_path)
    [wheel] = wheels.glob("proxynas-*.whl")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         cwd=tmp_path)
    shutil.rmtree(src)  # nothing may be read from a source tree any more

    work = tmp_path / "elsewhere"
    work.mkdir()
    pipeline = work / "quickstart.yaml"
    shutil.copy(REPO / "pipelines" / "quickstart.yaml", pipeline)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    env.pop("PROXYNAS_SHARED_DATA", None)

    where = _run([sys.executable, "-c", "import proxynas; print(proxynas.__file__)"], cwd=work, env=env)
    location = Path(where.stdout.strip()).resolve()
    assert location.is_relative_to(site.resolve()), f"imported {location}, not the installed wheel"
    assert not location.is_relative_to(REPO)

    listing = _run([sys.executable, "-m", "proxynas", "list"], cwd=work, env=env).stdout
    assert "nb201" in listing and "convnet720" in listing, listing

    config = _run([sys.executable, "-m", "proxynas", "config", str(pipeline)], cwd=work, env=env).stdout
    assert "nb201" in config and "skip_disconnected" in config, config

    # every built-in spec loads from the installed package
    specs = _run(
        [sys.executable, "-c",
         "from proxynas.spaces import SEARCH_SPACES\n"
         "for name in SEARCH_SPACES: print(name, SEARCH_SPACES.get(name)().size())"],
        cwd=work, env=env,
    ).stdout
    assert "nb201 15625" in specs and "convnet720 720" in specs, specs

    # the demo pipeline (what `make demo` runs), shrunk to seconds, from the installed wheel
    demo = work / "demo.yaml"
    shutil.copy(REPO / "pipelines" / "demo.yaml", demo)
    shrink = ["sample.num_archs=4", "report.top_k=3", "report.bootstrap=20", "distill.ipc=2",
              "distill.methods.dm.iterations=2", "proxy.epochs=1", "reference.epochs=1", "run.device=cpu"]
    ran = _run([sys.executable, "-m", "proxynas", "run", str(demo), "--no-mlflow", "--cache-dir", str(work / "cache"),
                *(arg for item in shrink for arg in ("--set", item))], cwd=work, env=env).stdout
    assert "4 architectures; reference: mean test accuracy" in ran, ran
    assert "\ndm " in ran and "\nrandom " in ran and "\nsynflow " in ran, ran
    assert "Best ranking: " in ran and "the random subset: dm " in ran, ran
