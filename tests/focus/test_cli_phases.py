"""`trainset focus calibrate | render | validate | run` through the CLI and the runner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from tests.focus.plan_formulas import plan_compute_focus_map
from trainset.cli import main
from trainset.focus.pack import pack_dataset
from trainset.store import atomic_write_npz, read_json, read_npz_array


def _run(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """3 synthetic scenes x 6 frames x 32x48 through `focus run` up to the manual gate."""
    from trainset.focus.synthetic import generate_scenes

    base = tmp_path_factory.mktemp("phases")
    raw, out = base / "raw", base / "out"
    generate_scenes(raw, n_scenes=3, n_frames=6, size=(32, 48), seed=3)
    code = _run("focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4")
    return raw, out, code


@pytest.fixture(scope="module")
def finished_master(gated, tmp_path_factory):
    """A copy of the gated run taken through render (2 sets) and validate."""
    raw, out, _ = gated
    copy = tmp_path_factory.mktemp("finished") / "out"
    shutil.copytree(out, copy)
    code = _run(
        "focus", "run", "--raw-root", str(raw), "--out-root", str(copy), "--min-frames", "4",
        "--max-coc", "from-stats", "--sets", "2",
    )  # fmt: skip
    return copy, code


@pytest.fixture
def finished(finished_master, tmp_path):
    """A copy of the finished run that a test may change."""
    master, code = finished_master
    copy = tmp_path / "out"
    shutil.copytree(master, copy)
    return copy, code


def test_run_stops_at_the_gate_and_prints_the_command_to_continue(gated, capsys):
    raw, out, code = gated
    assert code == 0
    stats = read_json(out / "logs" / "coc_stats.json")
    assert (out / "logs" / "coc_histogram.png").exists()
    assert not (out / "scene_000" / "focus_maps").exists()
    # Re-running is cheap (stages are current) and prints the gate again.
    _run("focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4")
    printed = capsys.readouterr().out
    rec = f"{stats['recommended_max_coc']:.6g}"
    assert f"--max-coc {rec}" in printed
    assert f"recommended max_coc = {rec} m ({stats['recommended_max_coc'] * 1e3:.4g} mm)" in printed


def test_run_with_max_coc_renders_and_validates(finished_master):
    out, code = finished_master
    assert code == 0
    report = read_json(out / "logs" / "validation_report.json")
    assert report["passing_scenes"] == report["total_scenes"] == 3
    assert report["total_frames"] == 18
    rec = read_json(out / "logs" / "coc_stats.json")["recommended_max_coc"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["max_coc"] == rec
    assert config["labels"]["max_coc"] == rec
    meta = read_json(out / "scene_001" / "metadata.json")
    assert [s["max_coc"] for s in meta["sets"]] == [rec] * 2
    assert meta["renderer"] == "layered" and meta["sensor_width_m"] == 0.036
    assert len(list((out / "scene_001" / "bokeh_renders").glob("set_*/bokeh_*.png"))) == 12


def test_validate_requeue_repairs_deleted_corrupt_and_missing_files(finished, capsys):
    out, _ = finished
    (out / "scene_000" / "focus_maps" / "set_01" / "focus_0003.npz").unlink()
    (out / "scene_001" / "depth_maps" / "depth_0002.npz").write_bytes(b"garbage")
    (out / "scene_002" / "split.txt").unlink()
    assert _run("focus", "validate", "--out-root", str(out)) == 1
    report = read_json(out / "logs" / "validation_report.json")
    assert report["rerun_stages"] == {
        "scene_000": ["labels"],
        "scene_001": ["depth", "labels", "renders"],
        "scene_002": ["index"],
    }
    capsys.readouterr()
    assert _run("focus", "validate", "--out-root", str(out), "--requeue") == 0
    report = read_json(out / "logs" / "validation_report.json")
    assert report["failed_scenes"] == []
    assert report["requeued"] == {
        "index": ["scene_002"],
        "depth": ["scene_001"],
        "labels": ["scene_000", "scene_001"],
        "renders": ["scene_001"],
    }
    assert _run("focus", "validate", "--out-root", str(out)) == 0


def test_requeue_of_a_packed_scene_repacks_it_so_one_requeue_suffices(finished):
    out, _ = finished
    depth = out / "scene_001" / "depth_maps" / "depth_0002.npz"
    atomic_write_npz(depth, {"depth": np.zeros_like(read_npz_array(depth, "depth"))})
    pack_dataset(out)  # the pack matches the (bad) files: only the depth check fails
    assert _run("focus", "validate", "--out-root", str(out)) == 1
    report = read_json(out / "logs" / "validation_report.json")
    assert report["rerun_stages"] == {"scene_001": ["depth", "labels", "renders", "pack"]}
    assert _run("focus", "validate", "--out-root", str(out), "--requeue") == 0
    assert read_json(out / "logs" / "validation_report.json")["requeued"]["pack"] == ["scene_001"]


def test_render_only_renders_leaves_the_labels_alone(finished):
    out, _ = finished
    label = out / "scene_000" / "focus_maps" / "set_00" / "focus_0000.npz"
    before = label.stat().st_mtime_ns
    code = _run(
        "focus", "render", "--out-root", str(out), "--max-coc", "from-stats", "--only", "renders",
        "--sets", "2", "--sensor-width", "24", "--scene", "scene_000",
    )  # fmt: skip
    assert code == 0
    assert label.stat().st_mtime_ns == before
    assert read_json(out / "scene_000" / "metadata.json")["sensor_width_m"] == 0.024


def test_render_refuses_a_max_coc_in_the_plans_units(gated, capsys):
    _, out, _ = gated
    assert _run("focus", "render", "--out-root", str(out), "--max-coc", "0.063") == 2
    err = capsys.readouterr().err
    assert "max_coc" in err and "0.001..50 mm" in err and "found 0.063 m" in err


def test_render_needs_an_explicit_max_coc(gated, capsys):
    _, out, _ = gated
    with pytest.raises(SystemExit) as exc:
        _run("focus", "render", "--out-root", str(out))
    assert exc.value.code == 2
    assert "--max-coc" in capsys.readouterr().err


def test_render_from_stats_refuses_another_coc_model(gated, capsys):
    _, out, _ = gated
    code = _run(
        "focus", "render", "--out-root", str(out), "--max-coc", "from-stats",
        "--coc-model", "thin_lens",
    )  # fmt: skip
    assert code == 2
    assert "calibration was made with another coc_model" in capsys.readouterr().err


def test_calibrate_writes_stats_where_the_plan_flags_say(gated, tmp_path, capsys):
    _, out, _ = gated
    stats, plot = tmp_path / "s.json", tmp_path / "h.png"
    code = _run(
        "focus", "calibrate", "--out_root", str(out), "--sample_fraction", "1.0",
        "--output_stats", str(stats), "--output_plot", str(plot),
    )  # fmt: skip
    assert code == 0
    assert json.loads(stats.read_text())["counts"]["scenes_used"] == 3
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "recommended max_coc = p95" in capsys.readouterr().out


def test_validate_report_path_and_plan_scene_index_flag(finished_master, tmp_path):
    out, _ = finished_master
    report = tmp_path / "r.json"
    code = _run(
        "focus", "validate", "--out_root", str(out), "--scene_index",
        str(out / "scene_index.json"), "--report", str(report),
    )  # fmt: skip
    assert code == 0
    assert read_json(report)["total_scenes"] == 3


def test_validate_refuses_a_scene_index_from_elsewhere(finished_master, tmp_path, capsys):
    out, _ = finished_master
    code = _run(
        "focus", "validate", "--out-root", str(out), "--scene-index", str(tmp_path / "x.json")
    )
    assert code == 2
    assert "the scene index must be the output root's" in capsys.readouterr().err


def test_focus_maps_of_the_run_are_the_plans_formula_on_the_stored_depth(finished_master):
    out, _ = finished_master
    meta = read_json(out / "scene_002" / "metadata.json")
    assert len(meta["sets"]) == 2
    for s, params in enumerate(meta["sets"]):
        lens = {k: params[k] for k in ("f", "N", "S_focus", "max_coc")}
        for t in (0, 5):
            depth = read_npz_array(out / "scene_002" / "depth_maps" / f"depth_{t:04d}.npz", "depth")
            path = out / "scene_002" / "focus_maps" / f"set_{s:02d}" / f"focus_{t:04d}.npz"
            fm = read_npz_array(path, "focus_map")
            assert fm.dtype == np.float16
            assert (
                fm.tobytes() == plan_compute_focus_map(depth.astype(np.float32), **lens).tobytes()
            )


def _run_config(tmp_path, *extra):
    from trainset.cli import build_parser
    from trainset.focus.cli import run_config

    argv = ["focus", "run", "--raw-root", str(tmp_path / "raw"), "--out-root", str(tmp_path / "o")]
    return run_config(build_parser().parse_args([*argv, *extra]))


def test_run_forwards_the_depth_model_options_to_the_depth_step(tmp_path):
    config = _run_config(
        tmp_path, "--depth-backend", "vda", "--checkpoint", "m.pth", "--encoder", "vits",
        "--input_size", "56", "--device", "cpu", "--depth-option", "batch=8",
    )  # fmt: skip
    assert config.depth.backend_options() == {
        "batch": "8",
        "checkpoint": "m.pth",
        "encoder": "vits",
        "input_size": 56,
        "device": "cpu",
    }


def test_renderer_options_reach_the_renders_stage_resolved(tmp_path):
    from trainset.focus.config import labels_and_renders_params

    config = _run_config(
        tmp_path, "--max-coc", "0.0002",
        "--renderer-option", "highlight_gain=12", "--renderer-option", "hidden=none",
    )  # fmt: skip
    params = labels_and_renders_params(2e-4, config.lens, config.render)["renders"]
    assert params["renderer_options"] == {"highlight_gain": "12", "hidden": "none"}
    assert params["renderer_params"]["highlight_gain"] == 12.0
    assert params["renderer_params"]["hidden"] == "none"
    assert params["renderer_version"] == 2


def _steps(tmp_path, *extra):
    from trainset.focus.steps import plan_run

    return [step.name for step in plan_run(_run_config(tmp_path, *extra), []).steps]


def _write_stats(tmp_path, **stats):
    path = tmp_path / "o" / "logs" / "coc_stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recommended_max_coc": 2e-4, **stats}))


@pytest.mark.parametrize(
    ("max_coc", "stats", "calibrates"),
    [
        (None, None, True),  # the manual gate always calibrates
        (None, {"coc_model": "plan", "n_sets": 4}, True),
        ("from-stats", None, True),  # nothing to take the value from yet
        ("from-stats", {"coc_model": "plan", "n_sets": 4}, False),  # kept: renders stay current
        ("from-stats", {"coc_model": "plan", "n_sets": 2}, True),  # made for other sets
        ("from-stats", {"coc_model": "thin_lens", "n_sets": 4}, True),
        ("0.0002", None, False),  # a given value needs no calibration
    ],
)
def test_run_calibrates_only_when_no_usable_statistics_may_feed_renders(
    tmp_path, max_coc, stats, calibrates
):
    if stats is not None:
        _write_stats(tmp_path, **stats)
    extra = [] if max_coc is None else ["--max-coc", max_coc]
    steps = _steps(tmp_path, *extra, "--sets", "4", "--coc-model", "plan")
    assert ("calibrate" in steps) is calibrates
    assert steps[:2] == ["deblur", "depth"]


def test_unreadable_statistics_are_recalibrated(tmp_path):
    path = tmp_path / "o" / "logs" / "coc_stats.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert "calibrate" in _steps(tmp_path, "--max-coc", "from-stats")


def test_focus_range_is_used_by_calibrate_and_render_and_recorded(gated, tmp_path):
    _, out, _ = gated
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    root = ("--out-root", str(copy))
    assert _run("focus", "calibrate", *root, "--focus-range", "p5-p95", "--sets", "2") == 0
    assert read_json(copy / "logs" / "coc_stats.json")["focus_range"] == "p5-p95"
    code = _run(
        "focus", "render", *root, "--max-coc", "from-stats", "--sets", "2",
        "--focus-range", "p5-p95", "--only", "labels",
    )  # fmt: skip
    assert code == 0
    config = yaml.safe_load((copy / "config.yaml").read_text())
    assert config["labels"]["focus_range"] == "p5-p95"
    for scene in ("scene_000", "scene_001", "scene_002"):
        meta = read_json(copy / scene / "metadata.json")
        stats = read_json(copy / scene / "depth_maps" / "stats.json")
        assert meta["focus_range"] == "p5-p95"
        assert all(stats["d_p5"] <= s["S_focus"] <= stats["d_p95"] for s in meta["sets"])


def test_render_from_stats_refuses_statistics_of_another_focus_range(gated, capsys):
    _, out, _ = gated
    code = _run(
        "focus", "render", "--out-root", str(out), "--max-coc", "from-stats",
        "--focus-range", "p5-p95",
    )  # fmt: skip
    assert code == 2
    assert "calibration was made with another focus_range" in capsys.readouterr().err
