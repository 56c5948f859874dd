"""The focus demo: synthetic scenes through the whole pipeline, then a summary."""

from __future__ import annotations

from trainset.focus.demo import focus_demo_summary


def test_focus_demo_runs_the_whole_pipeline_and_validation_passes(focus_demo):
    result = focus_demo
    assert result.exit_code == 0
    assert result.report["failed_scenes"] == []
    assert result.report["total_frames"] == 8
    summary = focus_demo_summary(result)
    rec = result.stats["recommended_max_coc"]
    assert f"= {rec:.6g} m = {rec * 1e3:.4g} mm on the sensor" in summary
    assert "validation: 2/2 scenes, PASS" in summary
    assert (result.out_root / "scene_000" / "bokeh_renders" / "set_03" / "bokeh_0003.png").exists()
