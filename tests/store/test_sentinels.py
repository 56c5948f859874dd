import json
import subprocess
import sys

from trainset.store import params_hash, read_sentinel, sha256_file, write_sentinel
from trainset.store.provenance import provenance_record


def test_sentinel_holds_stage_version_params_hash_counts_and_inputs(tmp_path):
    inputs = {"deblur": "ab" * 32}
    write_sentinel(
        tmp_path, "depth", 1, {"backend": "provided", "scale": 1.0}, {"frames": 24}, inputs
    )
    data = json.loads((tmp_path / ".done").read_text())
    assert data["stage"] == "depth" and data["stage_version"] == 1
    assert data["counts"] == {"frames": 24}
    assert data["params_hash"] == params_hash({"scale": 1.0, "backend": "provided"})
    sentinel = read_sentinel(tmp_path)
    assert sentinel is not None and sentinel.inputs == inputs


def test_corrupt_or_missing_sentinel_reads_as_none(tmp_path):
    assert read_sentinel(tmp_path) is None
    (tmp_path / ".done").write_text("{not json")
    assert read_sentinel(tmp_path) is None


def test_params_hash_is_stable_across_processes():
    code = "from trainset.store import params_hash; print(params_hash({'b': [1, 2], 'a': 'x'}))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {params_hash({"a": "x", "b": [1, 2]})}


def test_sha256_file_streams_and_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 10000
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_provenance_has_versions_command_and_utc_time():
    record = provenance_record(["trainset", "ptycho", "fixture"])
    assert record["command"] == ["trainset", "ptycho", "fixture"]
    assert record["trainset_version"]
    assert record["numpy"]
    assert record["created_utc"].endswith("Z")
    assert record["git_commit"] is None or len(record["git_commit"]) == 40
