import numpy as np

from trainset.focus.pack import PACK_DIR, open_packed, pack_dataset
from trainset.focus.validate import check_scene
from trainset.testing.clip_scenes import SETS, write_scene


def test_pack_command_packs_then_reports_current(cli, tmp_path):
    write_scene(tmp_path, "s0", n_frames=4)
    first = cli("focus", "pack", "--out-root", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "packed 1 scene(s), 0 already current" in first.stdout
    packed = open_packed(tmp_path / "s0")
    assert packed is not None and packed.frames.shape[0] == 4
    second = cli("focus", "pack", "--out_root", str(tmp_path))
    assert "packed 0 scene(s), 1 already current" in second.stdout


def test_validate_names_a_corrupt_pack_and_repacking_repairs_it(tmp_path):
    write_scene(tmp_path, "s0", n_frames=4)
    pack_dataset(tmp_path)
    frames = next((tmp_path / "s0" / PACK_DIR).glob("frames*.npy"))
    data = bytearray(frames.read_bytes())
    data[-1] ^= 0xFF
    frames.write_bytes(bytes(data))
    scene = check_scene(tmp_path, "s0", n_frames=4, n_sets=len(SETS))
    packed_failures = [f for f in scene.failures if f[2] == "pack"]
    assert packed_failures and "sha256 differs" in packed_failures[0][1]
    assert "pack" in scene.rerun_stages()
    pack_dataset(tmp_path, scenes=["s0"], force=True)
    assert not [f for f in check_scene(tmp_path, "s0", 4, len(SETS)).failures if f[2] == "pack"]
    packed = open_packed(tmp_path / "s0")
    assert packed is not None
    assert np.asarray(packed.frames).shape[0] == 4


def test_status_counts_current_and_stale_packs(cli, tmp_path):
    write_scene(tmp_path, "s0", n_frames=4)
    write_scene(tmp_path, "s1", n_frames=4)
    pack_dataset(tmp_path)
    (tmp_path / "s1" / "metadata.json").write_text(
        (tmp_path / "s1" / "metadata.json").read_text().replace("0.", "0.0", 1)
    )
    result = cli("focus", "status", "--out-root", str(tmp_path))
    pack_line = next(line for line in result.stdout.splitlines() if line.startswith("pack "))
    assert pack_line.split()[:4] == ["pack", "1", "1", "0"]
    assert "1 stale" in pack_line
