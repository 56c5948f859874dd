import io
import sys

from trainset import doctor


def _report(monkeypatch, tmp_path, *, machine="x86_64", missing=()):
    monkeypatch.setattr(doctor.platform, "machine", lambda: machine)
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(
        doctor.importlib.util, "find_spec", lambda name: None if name in missing else real(name)
    )
    out = io.StringIO()
    code = doctor.run_doctor(tmp_path / "not" / "yet", stream=out)
    return code, out.getvalue().splitlines()


def test_doctor_warns_about_cpu_only_torch_wheels_on_aarch64(monkeypatch, tmp_path):
    code, lines = _report(monkeypatch, tmp_path, machine="aarch64")
    assert code == 0
    arch = next(line for line in lines if "cpu architecture" in line)
    assert arch.startswith("[warn]") and "aarch64" in arch and "CPU-only torch" in arch


def test_doctor_names_a_missing_optional_dependency_and_what_needs_it(monkeypatch, tmp_path):
    code, lines = _report(monkeypatch, tmp_path, missing=("rasterio",))
    assert code == 0
    assert any(
        line.startswith("[warn] rasterio") and "missing: trainset sar patches" in line
        for line in lines
    )
    assert lines[-1] == "usable"


def test_doctor_measures_free_disk_at_the_nearest_existing_parent(monkeypatch, tmp_path):
    _, lines = _report(monkeypatch, tmp_path)
    disk = next(line for line in lines if "free disk" in line)
    assert disk.endswith(f"GB at {tmp_path}")


def test_doctor_without_torch_fails_and_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    code, lines = _report(monkeypatch, tmp_path)
    assert code == 1
    torch_line = next(line for line in lines if " torch " in line)
    assert torch_line.startswith("[FAIL]") and "pip install torch==2.13.0" in torch_line
    assert lines[-1] == "NOT usable: fix the FAIL lines above"


def test_doctor_fails_when_a_required_dependency_is_missing(monkeypatch, tmp_path):
    code, lines = _report(monkeypatch, tmp_path, missing=("matplotlib",))
    assert code == 1
    assert any(line.startswith("[FAIL] matplotlib") for line in lines)


def test_doctor_reports_the_pinned_diffusers_for_genfocus(monkeypatch, tmp_path):
    from trainset.focus.genfocus.deps import DIFFUSERS_VERSION

    versions = {"diffusers": "0.30.0"}
    monkeypatch.setattr(doctor, "_distribution_version", lambda name: versions.get(name))
    _, lines = _report(monkeypatch, tmp_path)
    line = next(line for line in lines if "] diffusers" in line)
    assert line.startswith("[warn]") and f"0.30.0 is not the tested {DIFFUSERS_VERSION}" in line
    assert "pip install 'trainset[genfocus]'" in line


def test_doctor_reports_gpu_memory_against_what_genfocus_needs():
    class Props:
        def __init__(self, gb, name):
            self.total_memory, self.name = gb * 1024**3, name

    class Cuda:
        def __init__(self):
            self.props = [Props(80, "H100"), Props(24, "RTX 4090")]

        def device_count(self):
            return len(self.props)

        def get_device_properties(self, i):
            return self.props[i]

    class Torch:
        cuda = Cuda()

    lines = doctor.gpu_memory_lines(Torch())
    assert lines[0].startswith("[  ok] gpu 0 memory") and "80 GiB (H100): enough" in lines[0]
    assert lines[1].startswith("[info] gpu 1 memory") and "genfocus needs ~48 GB" in lines[1]
