"""A missing pipeline file is refused at once, before torch and the plugins are imported."""

import subprocess
import sys
from pathlib import Path

import pytest

from proxynas.errors import ConfigError
from proxynas.pipeline_file import check_pipeline_file

REPO = Path(__file__).resolve().parents[1]


def test_a_file_passes_and_a_missing_one_or_a_folder_names_the_fix(tmp_path):
    given = tmp_path / "p.yaml"
    given.write_text("{}\n")
    assert check_pipeline_file(str(given)) == given
    with pytest.raises(ConfigError, match=r"pipeline file .*nope\.yaml not found; give a pipeline YAML file"):
        check_pipeline_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        check_pipeline_file(tmp_path)


@pytest.mark.parametrize("command", ["run", "stages", "config"])
def test_the_cli_refuses_a_missing_pipeline_file_before_importing_torch(command, tmp_path):
    probe = ("import sys; from proxynas.cli import main; "
             f"code = main([{command!r}, {str(tmp_path / 'nope.yaml')!r}]); "
             "print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["2", "False"]
    assert out.stderr.strip().splitlines() == [
        f"error: pipeline file {tmp_path / 'nope.yaml'} not found; give a pipeline YAML file (see pipelines/ for examples)"]
