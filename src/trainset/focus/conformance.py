"""Conformance checks every depth backend meets, for backends' test suites to reuse.

A test class named ``Test...`` subclasses :class:`DepthBackendContract`, returns its backend
from ``make_backend`` and may override ``make_scene`` (default: 5 synthetic frames of 32x48);
pytest then runs every ``test_...`` method below against that backend (pytest's ``tmp_path``
fixture is passed by name). Only imported by tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainset.focus.depth_backends import DepthBackend, DepthScene
from trainset.focus.synthetic import generate_scenes


class DepthBackendContract:
    """Checks shared by all depth backends."""

    n_frames = 5
    size = (32, 48)

    def make_backend(self) -> DepthBackend:
        """The backend under test (subclasses return theirs)."""
        raise AssertionError(f"{type(self).__name__} must return its backend from make_backend")

    def make_scene(self, tmp_path: Path) -> DepthScene:
        """A one-scene synthetic set under ``tmp_path`` as the backend sees it."""
        (scene,) = generate_scenes(
            tmp_path / "raw", n_scenes=1, n_frames=self.n_frames, size=self.size, seed=9
        )
        return DepthScene(scene.scene_id, scene.frame_paths, scene.frame_paths[0].parent)

    def test_predict_yields_one_float32_map_per_frame_in_frame_shape(self, tmp_path: Path) -> None:
        scene = self.make_scene(tmp_path)
        maps = list(self.make_backend().predict(scene))
        assert len(maps) == len(scene.frame_paths)
        for depth, frame in zip(maps, scene.iter_frames()):
            assert depth.shape == frame.shape[:2]
            assert depth.dtype == np.float32

    def test_params_are_json_and_stable(self) -> None:
        first, second = self.make_backend().params(), self.make_backend().params()
        assert json.loads(json.dumps(first)) == first
        assert first == second

    def test_name_is_a_non_empty_string(self) -> None:
        name = self.make_backend().name
        assert isinstance(name, str) and name
