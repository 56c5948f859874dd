"""One bad scene never stops the others: `focus run` and every stage, on the local executor.

The SLURM executor follows the same rule: tests/focus/test_slurm_failures.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainset.cli import main
from trainset.focus.deblur import register_deblur_backend
from trainset.focus.synthetic import generate_scenes
from trainset.store import read_json

DONE_DIRS = ("frames_sharp", "depth_maps", "focus_maps", "bokeh_renders")


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _summary(text: str) -> str:
    """The end of a run's output, from its "N scene(s) failed or blocked:" line."""
    match = re.search(r"^\d+ scene\(s\) failed or blocked:", text, re.MULTILINE)
    assert match, text
    return text[match.start() :]


def _complete(out: Path, scene: str) -> bool:
    return all((out / scene / d / ".done").is_file() for d in DONE_DIRS)


def _files(root: Path, scene: str) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in (root / scene).rglob("*")
        if p.is_file()
    }


def _run(raw: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return _cli(
        *("focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"),
        *("--max-coc", "from-stats", *extra),
    )


def _break_depth(raw: Path, scene: str, how: str) -> bytes:
    """Damage one depth file of ``scene`` (``corrupt`` or ``missing``); return its bytes."""
    path = raw / scene / "depth" / "depth_0001.npy"
    good = path.read_bytes()
    if how == "corrupt":
        path.write_bytes(b"not an npy file")
    else:
        path.unlink()
    return good


class _FailOnBlackFrames:
    """A deblur backend that fails on a scene holding an all-black frame (a test marker)."""

    name = "fail_on_black"

    def params(self) -> dict:
        return {}

    def sharpen(self, frames, *, scene_id=""):
        for frame in frames:
            if frame.max() == 0:
                raise ValueError("test marker: black frame")
            yield frame


register_deblur_backend("fail_on_black", _FailOnBlackFrames)


@pytest.fixture(scope="module")
def six_and_two(tmp_path_factory):
    """8 scenes, two with broken depth input (one corrupt file, one missing file), run to the
    end; then the input is fixed and the same command runs again."""
    base = tmp_path_factory.mktemp("six_and_two")
    raw, out = base / "raw", base / "out"
    generate_scenes(raw, n_scenes=8, n_frames=4, size=(24, 32), seed=5)
    corrupt, missing = "scene_002", "scene_005"
    fixes = {
        corrupt: _break_depth(raw, corrupt, "corrupt"),
        missing: _break_depth(raw, missing, "missing"),
    }
    first = _run(raw, out)
    good = [f"scene_{i:03d}" for i in range(8) if f"scene_{i:03d}" not in fixes]
    before = {s: _files(out, s) for s in good}
    first_done = {
        s: [d for d in DONE_DIRS if (out / s / d / ".done").is_file()] for s in (*good, *fixes)
    }
    first_report = read_json(out / "logs" / "validation_report.json")
    for scene, data in fixes.items():
        (raw / scene / "depth" / "depth_0001.npy").write_bytes(data)
    second = _run(raw, out)
    after = {s: _files(out, s) for s in good}
    return {
        "out": out,
        "first": first,
        "second": second,
        "good": good,
        "broken": (corrupt, missing),
        "before": before,
        "after": after,
        "first_done": first_done,
        "first_report": first_report,
    }


def test_run_with_two_broken_scenes_completes_the_six_and_exits_1(six_and_two):
    assert six_and_two["first"][0] == 1
    assert six_and_two["first_done"] == {
        **{s: list(DONE_DIRS) for s in six_and_two["good"]},
        **{s: ["frames_sharp"] for s in six_and_two["broken"]},
    }


def test_run_validates_the_six_and_names_the_two_in_the_report(six_and_two):
    report = six_and_two["first_report"]
    assert report["passing_scenes"] == 6
    assert report["failed_scenes"] == sorted(six_and_two["broken"])
    assert report["rerun_stages"]["scene_002"] == ["depth", "labels", "renders"]
    assert "6/8 scenes pass" in six_and_two["first"][1]


def test_run_prints_each_broken_scene_with_its_reason_and_the_retry_command(six_and_two):
    text = six_and_two["first"][1]
    corrupt, missing = six_and_two["broken"]
    summary = _summary(text)
    assert summary.startswith("2 scene(s) failed or blocked:")
    assert f"{corrupt}: depth failed: InputError:" in summary
    assert "unreadable depth file" in summary
    assert f"{missing}: depth failed: InputError:" in summary
    assert "depth file count differs from frame count (expected 4, found 3)" in summary
    assert "(blocked: labels, renders)" in summary
    assert "retry them after fixing their input" in summary
    assert "trainset focus run --raw-root" in summary and "--max-coc from-stats" in summary


def test_second_run_after_the_fix_completes_the_two_and_redoes_nothing_else(six_and_two):
    out, (code, text, _) = six_and_two["out"], six_and_two["second"]
    assert code == 0, text
    assert all(_complete(out, s) for s in six_and_two["broken"])
    assert six_and_two["after"] == six_and_two["before"]
    report = read_json(out / "logs" / "validation_report.json")
    assert (report["passing_scenes"], report["failed_scenes"]) == (8, [])
    assert "calibration kept" in text


def _plan_sample(ids: list[str], fraction: float) -> list[str]:
    """Independent transcription of the calibration sample over the scenes with depth."""
    k = max(1, int(np.ceil(fraction * len(ids))))
    return sorted(sorted(ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:k])


@pytest.mark.parametrize("broken", ["scene_000", "scene_001", "scene_002"])
def test_run_finishes_the_others_whichever_scene_the_calibration_would_have_sampled(
    tmp_path, broken
):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=7)
    _break_depth(raw, broken, "corrupt")
    code, text, _ = _run(raw, out)
    others = [s for s in ("scene_000", "scene_001", "scene_002") if s != broken]
    assert code == 1, text
    assert all(_complete(out, s) for s in others)
    stats = read_json(out / "logs" / "coc_stats.json")
    assert stats["sampled_scenes"] == _plan_sample(others, 0.2)
    report = read_json(out / "logs" / "validation_report.json")
    assert (report["passing_scenes"], report["failed_scenes"]) == (2, [broken])


def test_run_goes_on_past_scenes_failing_at_index_deblur_and_depth(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=5, n_frames=4, size=(16, 24), seed=9)
    (raw / "scene_001" / "frame_0002.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(raw / "scene_002" / "frame_0000.png")
    _break_depth(raw, "scene_003", "missing")
    code, text, _ = _run(raw, out, "--deblur-backend", "fail_on_black")
    assert code == 1
    assert _complete(out, "scene_000") and _complete(out, "scene_004")
    summary = _summary(text)
    assert "scene_001: rejected at index: corrupt frame frame_0002.png" in summary
    assert "scene_002: deblur failed: ValueError: test marker: black frame" in summary
    assert "(blocked: depth, labels, renders)" in summary
    assert "scene_003: depth failed: InputError" in summary
    assert summary.startswith("3 scene(s) failed or blocked:")


def test_gate_run_with_a_failed_scene_exits_1_and_still_shows_the_gate(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=2)
    _break_depth(raw, "scene_001", "corrupt")
    code, text, _ = _cli(
        "focus", "run", "--raw-root", str(raw), "--out-root", str(out), "--min-frames", "4"
    )
    assert code == 1
    assert "stopped at the manual gate: recommended max_coc" in text
    assert "scene_001: depth failed" in text


def test_run_where_every_scene_fails_stops_with_the_failures_and_exits_1(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=2, n_frames=4, size=(16, 24), seed=2)
    _break_depth(raw, "scene_000", "corrupt")
    _break_depth(raw, "scene_001", "missing")
    code, text, _ = _run(raw, out)
    assert code == 1
    assert "stopped at `trainset focus calibrate`: " in text and "no scene has depth maps" in text
    assert "2 scene(s) failed or blocked:" in text


@pytest.fixture
def one_failed_depth(tmp_path):
    """3 scenes indexed and deblurred; scene_001's depth fails."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    generate_scenes(raw, n_scenes=3, n_frames=4, size=(16, 24), seed=4)
    _break_depth(raw, "scene_001", "corrupt")
    root = ("--out-root", str(out))
    assert _cli("focus", "index", "--raw-root", str(raw), *root, "--min-frames", "4")[0] == 0
    assert _cli("focus", "deblur", *root)[0] == 0
    return raw, out


def test_every_stage_exits_1_when_a_scene_failed_or_is_blocked_by_a_failure(one_failed_depth):
    _, out = one_failed_depth
    root = ("--out-root", str(out))
    code, text, _ = _cli("focus", "depth", *root)
    assert code == 1 and "1 failed" in text
    code, text, _ = _cli("focus", "calibrate", *root)
    assert code == 0 and "not sampled (no depth): scene_001" in text
    code, text, _ = _cli("focus", "render", *root, "--max-coc", "from-stats")
    assert code == 1
    assert "labels: 2 done, 0 already done, 0 failed, 1 blocked" in text
    assert "blocked scene_001: depth failed (InputError:" in text
    assert "fix it and re-run `trainset focus depth`" in text
    assert _cli("focus", "validate", *root)[0] == 1
    assert _cli("focus", "status", *root)[0] == 1


def test_status_shows_failed_and_blocked_scenes_apart(one_failed_depth):
    _, out = one_failed_depth
    _cli("focus", "depth", "--out-root", str(out))
    code, text, _ = _cli("focus", "status", "--out-root", str(out))
    assert code == 1
    stages = ("deblur", "depth", "labels", "renders")
    rows = {w[0]: w[1:] for line in text.splitlines() if (w := line.split()) and w[0] in stages}
    assert rows == {
        "deblur": ["3", "0", "0", "0"],
        "depth": ["2", "0", "1", "0"],
        "labels": ["0", "2", "0", "1"],
        "renders": ["0", "2", "0", "1"],
    }
    assert "  failed: scene_001: InputError:" in text
    assert "  blocked: scene_001 (depth failed)" in text


def test_errors_of_the_whole_invocation_still_exit_2(one_failed_depth, tmp_path):
    _, out = one_failed_depth
    assert _cli("focus", "depth", "--out-root", str(out), "--scene", "nope")[0] == 2
    assert _cli("focus", "depth", "--out-root", str(tmp_path / "missing"))[0] == 2
    fresh = tmp_path / "fresh"
    generate_scenes(tmp_path / "raw2", n_scenes=1, n_frames=4, size=(16, 24), seed=1)
    index = ("focus", "index", "--raw-root", str(tmp_path / "raw2"), "--out-root", str(fresh))
    assert _cli(*index, "--min-frames", "4")[0] == 0
    # Stages run out of order (nothing failed): the invocation is wrong, not a scene.
    assert _cli("focus", "render", "--out-root", str(fresh), "--max-coc", "0.0005")[0] == 2
    assert _cli("focus", "calibrate", "--out-root", str(fresh))[0] == 2
