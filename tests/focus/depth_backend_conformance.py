"""The contract every depth backend meets; a backend's tests subclass :class:`DepthBackendContract`.

A subclass sets ``make_backend(self)`` (returns the backend) and may override ``make_scene``
(default: 5 synthetic frames of 32x48 with provided depth). Then pytest runs every check below
against that backend.
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
        raise AssertionError("subclasses return their backend here")

    def make_scene(self, tmp_path: Path) -> DepthScene:
        (scene,) = generate_scenes(
            tmp_path / "raw", n_scenes=1, n_frames=self.n_frames, size=self.size, seed=9
        )
        return DepthScene(scene.scene_id, scene.frame_paths, scene.frame_paths[0].parent)

    def test_predict_yields_one_float32_map_per_frame_in_frame_shape(self, tmp_path):
        scene = self.make_scene(tmp_path)
        maps = list(self.make_backend().predict(scene))
        assert len(maps) == len(scene.frame_paths)
        for depth, frame in zip(maps, scene.iter_frames()):
            assert depth.shape == frame.shape[:2]
            assert depth.dtype == np.float32

    def test_params_are_json_and_stable(self):
        first, second = self.make_backend().params(), self.make_backend().params()
        assert json.loads(json.dumps(first)) == first
        assert first == second

    def test_name_is_a_non_empty_string(self):
        name = self.make_backend().name
        assert isinstance(name, str) and name
