"""``trainset doctor``: is this environment usable, and what is missing."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import sys
from pathlib import Path
from typing import TextIO

# Required dependencies (pyproject's `dependencies`) and what needs them.
REQUIRED = {
    "numpy": "every array",
    "scipy": "sample_coc_params (Beta(2,2) draw)",
    "PIL": "PNG/JPEG frames (pillow)",
    "yaml": "config.yaml (pyyaml)",
    "matplotlib": "the CoC histogram plot of trainset focus calibrate",
}
# Optional dependencies and what needs them.
OPTIONAL = {
    "rasterio": "trainset sar patches (GeoTIFF reading): pip install 'trainset[sar]'",
    "h5py": "trainset ptycho import --format cxi (CXI/HDF5 reading): pip install 'trainset[ptycho]'",
    "lightning": "SARDataModule under lightning.Trainer: pip install lightning",
}
# GPU memory GenFocus needs: FLUX.1-dev in bf16 (~24 GB of transformer weights, the VAE and
# activations of 512-px tiles); the official README reports ~45 GB peak (docs/focus-genfocus.md).
GENFOCUS_GPU_GB = 48


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def genfocus_lines() -> list[str]:
    """diffusers (pinned), transformers and peft for the GenFocus backends."""
    from trainset.focus.genfocus.deps import DIFFUSERS_VERSION, INSTALL_HINT

    lines = []
    found = _distribution_version("diffusers")
    if found == DIFFUSERS_VERSION:
        lines.append(_line("ok", "diffusers", f"{found} (genfocus backends)"))
    else:
        state = "missing" if found is None else f"{found} is not the tested {DIFFUSERS_VERSION}"
        lines.append(_line("warn", "diffusers", f"{state}: genfocus backends; {INSTALL_HINT}"))
    found = _distribution_version("transformers")
    detail = found or f"missing: genfocus encodes its prompts once (then cached); {INSTALL_HINT}"
    lines.append(_line("ok" if found else "info", "transformers", detail))
    found = _distribution_version("peft")
    detail = f"{found} (not used: trainset applies GenFocus LoRA itself)" if found else "not needed"
    lines.append(_line("info", "peft", detail))
    return lines


def gpu_memory_lines(torch: object) -> list[str]:
    """Total memory of each visible GPU, against what GenFocus needs."""
    cuda = torch.cuda  # type: ignore[attr-defined]
    lines = []
    for i in range(cuda.device_count()):
        props = cuda.get_device_properties(i)
        gb = props.total_memory / 1024**3
        enough = gb >= GENFOCUS_GPU_GB
        note = "enough for genfocus" if enough else f"genfocus needs ~{GENFOCUS_GPU_GB} GB"
        lines.append(
            _line(
                "ok" if enough else "info",
                f"gpu {i} memory",
                f"{gb:.0f} GiB ({props.name}): {note}",
            )
        )
    return lines


def _line(status: str, what: str, detail: str) -> str:
    return f"[{status:>4}] {what:<22} {detail}"


def run_doctor(out_root: Path, stream: TextIO = sys.stdout) -> int:
    """Print the environment report; return 0 when trainset is usable, 1 otherwise."""
    usable = True
    arch = platform.machine()
    print(_line("ok", "python", f"{platform.python_version()} on {platform.system()}"), file=stream)
    if arch in ("aarch64", "arm64"):
        print(
            _line(
                "warn",
                "cpu architecture",
                f"{arch}: PyPI's CUDA torch wheels are x86_64; "
                "on ARM (e.g. GH200 Grace) pip can silently give a CPU-only torch. Use "
                "conda-forge or an NGC container, then check CUDA below.",
            ),
            file=stream,
        )
    else:
        print(_line("ok", "cpu architecture", arch), file=stream)
    try:
        import torch
    except ImportError as exc:
        print(
            _line("FAIL", "torch", f"not importable ({exc}); pip install torch==2.13.0"),
            file=stream,
        )
        usable = False
    else:
        print(_line("ok", "torch", torch.__version__), file=stream)
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            print(
                _line("ok", "cuda", f"{torch.version.cuda}; GPUs: {', '.join(names)}"), file=stream
            )
            for line in gpu_memory_lines(torch):
                print(line, file=stream)
        else:
            built = "CPU-only build" if torch.version.cuda is None else "no GPU visible"
            print(
                _line("info", "cuda", f"not available ({built}): stages run on the CPU"),
                file=stream,
            )
    for module, purpose in REQUIRED.items():
        if importlib.util.find_spec(module) is None:
            print(_line("FAIL", module, f"missing: {purpose}; pip install trainset"), file=stream)
            usable = False
        else:
            print(_line("ok", module, "present"), file=stream)
    for module, purpose in OPTIONAL.items():
        present = importlib.util.find_spec(module) is not None
        status, detail = ("ok", "present") if present else ("warn", f"missing: {purpose}")
        print(_line(status, module, detail), file=stream)
    for line in genfocus_lines():
        print(line, file=stream)
    probe = out_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    status = "ok" if free_gb >= 10 else "warn"
    print(_line(status, "free disk", f"{free_gb:.1f} GB at {probe}"), file=stream)
    print("usable" if usable else "NOT usable: fix the FAIL lines above", file=stream)
    return 0 if usable else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``trainset doctor``."""
    from trainset.cli_tools import flag

    p = sub.add_parser(
        "doctor",
        help="check the environment (arch, torch, CUDA, deps, disk)",
        description="Check CPU architecture, torch and CUDA, GPUs, optional "
        "dependencies and free disk. Exit 0 when usable.",
    )
    p.add_argument(
        *flag("--out-root"),
        dest="out_root",
        type=Path,
        default=Path("."),
        help="where output will go (free disk is measured there)",
    )
    p.set_defaults(func=lambda args: run_doctor(args.out_root))
