"""Fixtures of the search tests."""

from __future__ import annotations

import optuna
import pytest

from proxynas.spaces import NB201Space

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture()
def space() -> NB201Space:
    return NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)


@pytest.fixture()
def full_space() -> NB201Space:
    """All 15,625 cells (no disconnected ones skipped): every code is a member."""
    return NB201Space(channels=4, cells_per_stage=1)
