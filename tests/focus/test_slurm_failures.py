"""One bad scene never stops the others on SLURM either (the local rule: test_failure_isolation.py).

Four independent submissions run side by side on the local cluster: 8 scenes of which two have
broken depth input (one corrupt file, one missing file), and a 3-scene set broken at each scene
in turn, so that every choice the calibration sample could have made is covered. Each is one
`focus run --executor slurm --max-coc from-stats` (calibration included).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.slurm_helpers import CONFIG, cli, require_controller, wait
from trainset.focus.synthetic import generate_scenes
from trainset.store import read_json

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
DIRS = ("frames_sharp", "depth_maps", "focus_maps", "bokeh_renders")
THREE = ("scene_000", "scene_001", "scene_002")


def _break(raw: Path, scene: str, how: str) -> None:
    path = raw / scene / "depth" / "depth_0001.npy"
    if how == "corrupt":
        path.write_bytes(b"not an npy file")
    else:
        path.unlink()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_controller()
    base = tmp_path_factory.mktemp("slurm_failures")
    config = base / "slurm.yaml"
    config.write_text(CONFIG)
    roots = {}
    raw = base / "eight" / "raw"
    generate_scenes(raw, n_scenes=8, n_frames=4, size=(16, 24), seed=5)
    _break(raw, "scene_002", "corrupt")
    _break(raw, "scene_005", "missing")
    roots["eight"] = raw
    for broken in THREE:
        raw = base / broken / "raw"
        generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=7)
        _break(raw, broken, "corrupt")
        roots[broken] = raw
    outs = {}
    for name, raw in roots.items():
        out = raw.parent / "out"
        code, text = cli(
            *("focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"),
            *("--max-coc", "from-stats", "--executor", "slurm", "--slurm-config", str(config)),
        )
        assert code == 0, text
        outs[name] = out
    wait(*outs.values())
    return outs


def _done(out: Path, scene: str) -> list[str]:
    return [d for d in DIRS if (out / scene / d / ".done").is_file()]


def test_six_good_scenes_complete_and_validate_beside_two_broken_ones(runs):
    out = runs["eight"]
    broken = ("scene_002", "scene_005")
    for i in range(8):
        scene = f"scene_{i:03d}"
        assert _done(out, scene) == (["frames_sharp"] if scene in broken else list(DIRS))
    report = read_json(out / "logs" / "validation_report.json")
    assert (report["passing_scenes"], report["failed_scenes"]) == (6, list(broken))
    code, text = cli("focus", "status", "--out-root", str(out))
    assert code == 1
    assert "  failed: scene_002: InputError:" in text and "  failed: scene_005: InputError:" in text
    assert "  blocked: scene_005 (depth failed)" in text


@pytest.mark.parametrize("broken", THREE)
def test_the_others_finish_whichever_scene_the_calibration_would_have_sampled(runs, broken):
    out = runs[broken]
    assert _done(out, broken) == ["frames_sharp"]
    assert all(_done(out, s) == list(DIRS) for s in THREE if s != broken)
    stats = read_json(out / "logs" / "coc_stats.json")
    assert broken not in stats["sampled_scenes"]
    report = read_json(out / "logs" / "validation_report.json")
    assert (report["passing_scenes"], report["failed_scenes"]) == (2, [broken])
