"""The focus demo: synthetic scenes through the whole pipeline, then a summary."""

from __future__ import annotations

from trainset.focus.demo import focus_demo_summary, run_focus_demo


def test_focus_demo_runs_the_whole_pipeline_and_validation_passes(tmp_path):
    result = run_focus_demo(tmp_path, n_scenes=2, n_frames=4, size=(24, 32))
    assert result.exit_code == 0
    assert result.report["failed_scenes"] == []
    assert result.report["total_frames"] == 8
    summary = focus_demo_summary(result)
    rec = result.stats["recommended_max_coc"]
    assert f"= {rec:.6g} m = {rec * 1e3:.4g} mm on the sensor" in summary
    assert "validation: 2/2 scenes, PASS" in summary
    assert (
        tmp_path / "dataset" / "scene_000" / "bokeh_renders" / "set_03" / "bokeh_0003.png"
    ).exists()
