"""Fixtures for the focus pipeline tests: small synthetic raw sets (generated once, copied)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainset.focus.synthetic import generate_scenes
from trainset.store.sentinels import write_sentinel


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


@pytest.fixture
def indexed_small(small_raw: Path, tmp_path: Path) -> Path:
    """``trainset focus index`` run on :func:`small_raw` (min 4 frames); returns the out root."""
    from trainset.cli import main

    out = tmp_path / "out"
    argv = ["focus", "index", "--raw-root", str(small_raw), "--out-root", str(out)]
    assert main([*argv, "--min-frames", "4"]) == 0
    return out


class SceneInputs:
    """Writes the files the index, deblur and depth stages leave for labels/renders/validate:
    ``split.txt``, ``frames_sharp/frame_XXXX.png`` (seeded texture), ``depth_maps/depth_XXXX.npz``
    (key ``depth``, float16 metres: a tilted plane with a near box), ``depth_maps/stats.json``,
    sentinels for ``frames_sharp`` and ``depth_maps``, and ``scene_index.json``."""

    @staticmethod
    def scene_depth(scene_id: str, t: int, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) float16 depth in metres: a plane from 1.5 m to 12 m with a box at 0.8 m."""
        h, w = shape
        offset = (int(hashlib.sha256(scene_id.encode()).hexdigest()[:4], 16) % 100) / 100.0
        rows = np.linspace(1.5 + offset, 12.0 + offset, h, dtype=np.float32)[:, None]
        depth = np.repeat(rows, w, axis=1) * (1.0 + 0.01 * t)
        depth[h // 4 : h // 2, w // 4 : w // 2] = 0.8 + 0.05 * t
        return depth.astype(np.float16)

    @staticmethod
    def scene_frame(scene_id: str, t: int, shape: tuple[int, int]) -> np.ndarray:
        """(H, W, 3) uint8 seeded texture."""
        seed = int(hashlib.sha256(f"{scene_id}:{t}".encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)

    @staticmethod
    def write_depth(root: Path, scene_id: str, t: int, shape: tuple[int, int]) -> None:
        """Write one depth NPZ the way the depth stage does (key 'depth', float16)."""
        folder = root / scene_id / "depth_maps"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, depth=SceneInputs.scene_depth(scene_id, t, shape))
        (folder / f"depth_{t:04d}.npz").write_bytes(buf.getvalue())

    @staticmethod
    def write_depth_stats(root: Path, scene_id: str, n_frames: int, shape: tuple[int, int]) -> dict:
        """stats.json from the stored (float16) depth of every frame."""
        values = np.stack(
            [
                SceneInputs.scene_depth(scene_id, t, shape).astype(np.float32)
                for t in range(n_frames)
            ]
        )
        stats = {
            "d_min": float(values.min()),
            "d_max": float(values.max()),
            "d_median": float(np.median(values)),
            "d_p5": float(np.percentile(values, 5)),
            "d_p95": float(np.percentile(values, 95)),
        }
        (root / scene_id / "depth_maps" / "stats.json").write_text(json.dumps(stats))
        return stats

    @staticmethod
    def build_dataset(
        root: Path,
        scenes: dict[str, int],
        *,
        shape: tuple[int, int] = (24, 32),
        splits: dict[str, str] | None = None,
    ) -> dict[str, dict]:
        """Write the inputs of the labels and renders stages for ``scenes`` (id -> frame count)."""
        root.mkdir(parents=True, exist_ok=True)
        index: dict[str, dict] = {}
        for i, (scene_id, n_frames) in enumerate(sorted(scenes.items())):
            split = (splits or {}).get(scene_id, ("train", "val", "test")[i % 3])
            scene_dir = root / scene_id
            (scene_dir / "frames_sharp").mkdir(parents=True, exist_ok=True)
            (scene_dir / "split.txt").write_text(split + "\n")
            for t in range(n_frames):
                Image.fromarray(SceneInputs.scene_frame(scene_id, t, shape)).save(
                    scene_dir / "frames_sharp" / f"frame_{t:04d}.png"
                )
                SceneInputs.write_depth(root, scene_id, t, shape)
            SceneInputs.write_depth_stats(root, scene_id, n_frames, shape)
            write_sentinel(scene_dir / "frames_sharp", "deblur", 1, {"backend": "test"})
            write_sentinel(scene_dir / "depth_maps", "depth", 1, {"backend": "test"})
            index[scene_id] = {
                "frames": [f"frame_{t:04d}.png" for t in range(n_frames)],
                "split": split,
            }
        (root / "scene_index.json").write_text(json.dumps(index))
        return index

    @staticmethod
    def corrupt_file(path: Path) -> None:
        """Overwrite a file with bytes that are not a zip/PNG."""
        path.write_bytes(b"not a valid file")


@pytest.fixture
def scene_inputs() -> type[SceneInputs]:
    """Writer of small labels/renders inputs (see :class:`SceneInputs`)."""
    return SceneInputs


@pytest.fixture(scope="session")
def focus_demo(tmp_path_factory: pytest.TempPathFactory):
    """``run_focus_demo`` of 2 scenes x 4 frames x 24x32 px (it ends by writing its report)."""
    from trainset.focus.demo import run_focus_demo

    return run_focus_demo(tmp_path_factory.mktemp("demo"), n_scenes=2, n_frames=4, size=(24, 32))
