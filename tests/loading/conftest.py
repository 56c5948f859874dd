"""Fixtures for the loading tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainset.testing.shard_files import write_shards


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    """Three shards of 7, 3 and 6 records of 4x5 float32."""
    return write_shards(tmp_path, [7, 3, 6])
