"""The pipeline file a command names: there, and a file.

Its own light module (it imports nothing heavy) so that the command line can
refuse a missing file at once, before importing torch and the plugins that a
config's validation needs (seconds).
"""

from __future__ import annotations

from pathlib import Path

from proxynas.errors import ConfigError


def check_pipeline_file(path: str | Path) -> Path:
    """``path`` as a Path; a ConfigError naming the fix when it is missing or a folder."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"pipeline file {path} {what}; give a pipeline YAML file (see pipelines/ for examples)")
    return path
