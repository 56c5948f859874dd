"""Fixtures for the focus pipeline tests: small synthetic raw sets (generated once, copied)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trainset.focus.synthetic import generate_scenes


@pytest.fixture(scope="session")
def _small_raw_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("master") / "raw"
    generate_scenes(raw, n_scenes=3, n_frames=6, size=(32, 48), seed=1)
    return raw


@pytest.fixture
def small_raw(_small_raw_master: Path, tmp_path: Path) -> Path:
    """3 scenes x 6 frames x 32x48 pixels of synthetic raw data with provided depth (a copy)."""
    raw = tmp_path / "raw"
    shutil.copytree(_small_raw_master, raw)
    return raw
