import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainset.cli import main
from trainset.focus.synthetic import generate_scenes
from trainset.store.codecs import read_npz_array

SCENES = [f"scene_{i:03d}" for i in range(6)]


def plan_assign_splits(scene_ids, seed=42):
    """Independent copy of the plan's assign_splits."""
    ids = sorted(scene_ids)
    rng = random.Random(seed)
    rng.shuffle(ids)
    n = len(ids)
    return {
        sid: "train" if i < int(0.8 * n) else "val" if i < int(0.9 * n) else "test"
        for i, sid in enumerate(ids)
    }


def _files(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """6 scenes x 16 frames x 128x128 through index, deblur, depth with the CLI."""
    base = tmp_path_factory.mktemp("pipeline")
    raw, out = base / "raw", base / "out"
    generate_scenes(raw, n_scenes=6, n_frames=16, size=(128, 128), seed=0)
    codes = [
        main(["focus", "index", "--raw_root", str(raw), "--out_root", str(out)]),
        main(["focus", "deblur", "--out-root", str(out)]),
        main(["focus", "depth", "--out-root", str(out), "--workers", "2"]),
    ]
    return raw, out, codes


def test_synthetic_set_completes_every_stage(synthetic_run):
    _, _, codes = synthetic_run
    assert codes == [0, 0, 0]


def test_synthetic_set_writes_exactly_the_plans_files(synthetic_run):
    _, out, _ = synthetic_run
    files = set(_files(out))
    for sid in SCENES:
        scene = {f for f in files if f.startswith(f"{sid}/")}
        expected = {f"{sid}/split.txt", f"{sid}/frames_sharp/.done", f"{sid}/depth_maps/.done"}
        expected |= {f"{sid}/frames_sharp/frame_{t:04d}.png" for t in range(16)}
        expected |= {f"{sid}/depth_maps/depth_{t:04d}.npz" for t in range(16)}
        expected |= {f"{sid}/depth_maps/stats.json"}
        assert scene == expected
    logs = {f for f in files if f.startswith("logs/") and not f.startswith("logs/by_scene/")}
    assert logs == {
        "logs/rejected_scenes.json",
        "logs/ignored_files.json",
        "logs/sharpness.csv",
        "logs/sharpness_warnings.txt",
        "logs/deblur_psnr.csv",
        "logs/depth_nan_patches.csv",
        "logs/depth_sanity_warnings.txt",
        "logs/depth_consistency_warnings.txt",
    }
    assert {"scene_index.json", "config.yaml"} <= files
    assert not [f for f in files if ".tmp-" in f]


def test_synthetic_depth_is_stored_to_float16_precision(synthetic_run):
    raw, out, _ = synthetic_run
    for sid in SCENES:
        for t in (0, 15):
            provided = np.load(raw / sid / "depth" / f"depth_{t:04d}.npy")
            stored = read_npz_array(out / sid / "depth_maps" / f"depth_{t:04d}.npz", "depth")
            assert stored.dtype == np.float16
            assert np.array_equal(stored, provided.astype(np.float16))


def test_synthetic_splits_equal_the_plans_assign_splits(synthetic_run):
    _, out, _ = synthetic_run
    index = json.loads((out / "scene_index.json").read_text())
    assert {sid: e["split"] for sid, e in index.items()} == plan_assign_splits(SCENES)


def test_config_records_every_stage(synthetic_run):
    import yaml

    _, out, _ = synthetic_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert list(config) == ["index", "deblur", "depth"]
    assert config["index"]["seed"] == 42 and config["index"]["min_frames"] == 16
    assert config["deblur"]["backend"] == "passthrough"
    assert config["depth"]["backend_params"] == {
        "depth_scale": 1000.0,
        "invalid_codes": "default",
        "depth_range_m": [0.001, 10000.0],
    }


def test_second_run_rewrites_no_file(synthetic_run):
    raw, out, _ = synthetic_run
    before = _files(out)
    assert main(["focus", "index", "--raw-root", str(raw), "--out-root", str(out)]) == 0
    assert main(["focus", "deblur", "--out-root", str(out)]) == 0
    assert main(["focus", "depth", "--out-root", str(out)]) == 0
    assert _files(out) == before


def test_status_counts_done_stages(synthetic_run, capsys):
    _, out, _ = synthetic_run
    assert main(["focus", "status", "--out-root", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["stage", "done", "pending", "failed", "blocked"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["deblur"] == ["6", "0", "0", "0"]
    assert rows["depth"] == ["6", "0", "0", "0"]
    assert rows["labels"] == ["0", "6", "0", "0"]


def _deblur_and_depth(out):
    assert main(["focus", "deblur", "--out-root", str(out)]) == 0
    assert main(["focus", "depth", "--out-root", str(out)]) == 0


def test_changing_a_parameter_redoes_the_stage_and_its_dependents(indexed_small):
    out = indexed_small
    _deblur_and_depth(out)
    before = _files(out)
    assert main(["focus", "deblur", "--out-root", str(out), "--sharpness-ratio", "0.3"]) == 0
    assert main(["focus", "depth", "--out-root", str(out)]) == 0
    after = _files(out)
    for sid in ("scene_000", "scene_001", "scene_002"):
        assert after[f"{sid}/frames_sharp/.done"] != before[f"{sid}/frames_sharp/.done"]
        assert after[f"{sid}/depth_maps/.done"] != before[f"{sid}/depth_maps/.done"]


def test_task_index_runs_the_scene_at_that_position(indexed_small, capsys):
    out = indexed_small
    assert main(["focus", "deblur", "--out-root", str(out), "--task-index", "1"]) == 0
    assert [p.name for p in sorted(out.glob("*/frames_sharp/.done"))] == [".done"]
    assert (out / "scene_001" / "frames_sharp" / ".done").exists()


def test_depth_before_deblur_exits_2_naming_the_stage(indexed_small, capsys):
    out = indexed_small
    assert main(["focus", "depth", "--out-root", str(out)]) == 2
    assert "run `trainset focus deblur` first" in capsys.readouterr().out


def test_unknown_backend_exits_2(indexed_small, capsys):
    out = indexed_small
    assert main(["focus", "depth", "--out-root", str(out), "--backend", "nope"]) == 2
    assert "unknown depth backend" in capsys.readouterr().err


def test_backend_option_without_equals_exits_2(indexed_small, capsys):
    out = indexed_small
    assert main(["focus", "deblur", "--out-root", str(out), "--backend-option", "x"]) == 2
    assert "key '--backend-option': option must be KEY=VALUE" in capsys.readouterr().err


def test_stage_without_index_exits_2(tmp_path, capsys):
    assert main(["focus", "deblur", "--out-root", str(tmp_path)]) == 2
    assert "run `trainset focus index` first" in capsys.readouterr().err


def test_scene_and_task_index_together_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["focus", "deblur", "--out-root", str(tmp_path), "--scene", "a", "--task-index", "0"])
    assert exc.value.code == 2


def test_killed_depth_run_finishes_on_rerun_with_loadable_files_and_no_temps(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=4, n_frames=8, size=(48, 48), seed=2)
    assert (
        main(
            ["focus", "index", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "8"]
        )
        == 0
    )
    assert main(["focus", "deblur", "--out-root", str(out)]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # The run SIGKILLs itself at its 18th atomic rename: config.yaml, then 13 per scene (8 maps,
    # stats.json, 3 log parts, .done), so scene_001's depth_0003.npz is written and fsynced but
    # never renamed. Deterministic, unlike a kill timed from outside.
    killer = (
        "import os, signal, sys\n"
        "import trainset.store.atomic as atomic\n"
        "renames = [0]\n"
        "def replace(src, dst):\n"
        "    renames[0] += 1\n"
        "    if renames[0] == 18:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    os.replace(src, dst)\n"
        "atomic._replace = replace\n"
        "from trainset.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", killer, "focus", "depth", "--out-root", str(out)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    temps = [p.relative_to(out) for p in out.rglob("*") if ".tmp-" in p.name]
    assert [(t.parent.as_posix(), t.name.split(".tmp-")[0]) for t in temps] == [
        ("scene_001/depth_maps", ".depth_0003.npz")
    ]
    assert not (out / "scene_001" / "depth_maps" / "depth_0003.npz").exists()
    assert [p.parent.parent.name for p in out.glob("*/depth_maps/.done")] == ["scene_000"]
    assert main(["focus", "depth", "--out-root", str(out)]) == 0
    assert len(list(out.glob("*/depth_maps/.done"))) == 4
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    for npz in out.glob("*/depth_maps/depth_*.npz"):
        assert read_npz_array(npz, "depth").shape == (48, 48)
    for stats in out.glob("*/depth_maps/stats.json"):
        assert set(json.loads(stats.read_text())) == {
            *("d_min", "d_max", "d_median", "d_p5", "d_p95", "valid_fraction")
        }


def test_bad_raw_set_rejects_or_patches_each_bad_scene_and_exit_codes_say_so(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=8, n_frames=4, size=(24, 32), seed=3)
    names = {
        "scene_000": "good",
        "scene_001": "corrupt_png",
        "scene_002": "truncated_jpeg",
        "scene_003": "mixed_sizes",
        "scene_004": "too_few",
        "scene_005": "depth_missing",
        "scene_006": "depth_nan",
        "scene_007": "depth_shape",
    }
    for old, new in names.items():
        (raw / old).rename(raw / new)
    (raw / "corrupt_png" / "frame_0002.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    frame = raw / "truncated_jpeg" / "frame_0001.png"
    big = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    jpg = raw / "truncated_jpeg" / "frame_0001.jpg"
    Image.fromarray(big).save(jpg, format="JPEG")
    jpg.write_bytes(jpg.read_bytes()[:300])
    frame.unlink()
    Image.fromarray(np.zeros((24, 30, 3), np.uint8)).save(raw / "mixed_sizes" / "frame_0003.png")
    (raw / "too_few" / "frame_0003.png").unlink()
    (raw / "depth_missing" / "depth" / "depth_0002.npy").unlink()
    bad = np.load(raw / "depth_nan" / "depth" / "depth_0001.npy")
    bad[0, :4] = [np.nan, np.inf, 0.0, -1.0]
    np.save(raw / "depth_nan" / "depth" / "depth_0001.npy", bad)
    np.save(raw / "depth_shape" / "depth" / "depth_0000.npy", np.ones((24, 31), np.float32))
    shutil.copytree(raw / "good", raw / ".unsafe")

    assert (
        main(
            ["focus", "index", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"]
        )
        == 0
    )
    rejected = json.loads((out / "logs" / "rejected_scenes.json").read_text())
    assert sorted(rejected) == [
        ".unsafe",
        "corrupt_png",
        "mixed_sizes",
        "too_few",
        "truncated_jpeg",
    ]
    assert rejected["too_few"] == "only 3 frames (minimum 4)"
    assert main(["focus", "deblur", "--out-root", str(out)]) == 0
    capsys.readouterr()
    assert main(["focus", "depth", "--out-root", str(out)]) == 1
    report = capsys.readouterr().out
    assert "depth: 2 done, 0 already done, 2 failed, 0 blocked" in report
    assert (
        "failed depth_missing: InputError" in report and "failed depth_shape: InputError" in report
    )
    patches = (out / "logs" / "depth_nan_patches.csv").read_text().splitlines()
    assert patches[1].startswith("depth_nan,depth_0001.npz,1,1,2,0,")
    assert (out / "good" / "depth_maps" / ".done").exists()
    assert (out / "depth_nan" / "depth_maps" / ".done").exists()
    assert main(["focus", "status", "--out-root", str(out)]) == 1
    status = capsys.readouterr().out
    assert "depth 2 0 2" in " ".join(status.split())


def test_sharpness_ratio_outside_zero_one_exits_2(indexed_small, capsys):
    code = main(["focus", "deblur", "--out-root", str(indexed_small), "--sharpness-ratio", "1.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "key '--sharpness-ratio': sharpness ratio must be in (0, 1)" in err
    assert not list(indexed_small.glob("*/frames_sharp"))


def test_median_range_out_of_order_exits_2(indexed_small, capsys):
    argv = ["focus", "depth", "--out-root", str(indexed_small), "--median-range", "5", "2"]
    assert main(argv) == 2
    assert "key '--median-range': median range must be 0 < LOW < HIGH" in capsys.readouterr().err
