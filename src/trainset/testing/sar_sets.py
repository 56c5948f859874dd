"""Compare SAR patch sets file by file (shards, per-patch table, manifest without provenance)."""

from __future__ import annotations

import json
from pathlib import Path

from trainset.store import sha256_file


def set_files(folder: Path) -> dict[str, object]:
    """Every file of a set by name: its sha256, and for manifest.json its content without the
    provenance (which names the command and the time)."""
    found: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text())
            manifest.pop("provenance")
            found[path.name] = manifest
        else:
            found[path.name] = sha256_file(path)
    return found
