"""Correctness and speed of the project's CUDA paths, each against its CPU counterpart.

Checks, each printed as ``PASS``/``FAIL name: figures``:

- d4:        ``apply_d4`` on the device equals numpy's flips/rotations; batches/s
- ring:      ``ThreadedLoader(augment="device", device=...)`` (pinned ring, one event per
             buffer) equals the CPU-fused loader over two epochs; buffers pinned; patches/s
- sar/dm:    ``SARDataModule(device=..., augment_on_device=True)`` + ``on_after_batch_transfer``
             equals the CPU datamodule; ``FocusDataModule(device=...)`` equals the CPU one
- lightning: ``Trainer(accelerator=<device>).fit`` over the SAR datamodule: the batches the model
             gets are on the device and equal the CPU reference
- render:    ``LayeredRenderer`` on the device against the CPU renderer (max |difference| of the
             uint8 output), renders/s
- vda:       Video-Depth-Anything (vits, random weights) fp16 autocast against fp32 on the
             device: relative difference of the depth, ms/window

``--device cpu --small`` runs the same code on the CPU with tiny sizes (a smoke test of this
script where no GPU is present; the figures then mean nothing); the default ``--device auto``
does that when no GPU is present (so ``make bench`` runs everywhere). Exit 0 when every check
passes, 1 otherwise, 2 when ``--device cuda`` is asked for and missing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainset.focus.datamodule import FocusDataModule
from trainset.loading import EpochSampler, ShardReader, ThreadedLoader, apply_d4, d4_view
from trainset.loading.loader import Augment
from trainset.sar.datamodule import SARDataModule
from trainset.sar.manifest import FORMAT, VERSION, write_manifest
from trainset.store import NPY_ALIGN, atomic_write_npy


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def patch_set(root: Path, n: int, size: int) -> Path:
    """n patches of size x size in 4 shards; patch i holds i / n at pixel (0, 0)."""
    rng = np.random.default_rng(0)
    counts = [n // 4] * 3 + [n - 3 * (n // 4)]
    first = 0
    for k, c in enumerate(counts):
        data = rng.random((c, size, size), dtype=np.float32)
        data[:, 0, 0] = np.arange(first, first + c) / n
        atomic_write_npy(root / f"shard_{k:05d}.npy", data, align=NPY_ALIGN)
        first += c
    write_manifest(
        root,
        {
            "format": FORMAT,
            "version": VERSION,
            "patch_size": size,
            "dtype": "float32",
            "shards": [
                {"path": f"shard_{k:05d}.npy", "count": c, "sha256": None}
                for k, c in enumerate(counts)
            ],
            "patches": {
                "source": (np.arange(n) * 8 // n).tolist(),
                "band": [1] * n,
                "row": [0] * n,
                "col": [0] * n,
            },
            "sources": [{"path": f"s{i}.tif"} for i in range(8)],
        },
    )
    return root


def check_d4(device: torch.device, small: bool) -> str:
    size, batch = (16, 8) if small else (256, 64)
    x = torch.rand(batch, 1, size, size)
    codes = torch.arange(batch, dtype=torch.uint8) % 8
    got = apply_d4(x.to(device), codes).cpu().numpy()
    want = np.stack([[d4_view(r[0], int(c))] for r, c in zip(x.numpy(), codes)])
    assert np.array_equal(got, want), "device D4 differs from numpy's flips/rotations"
    xd = x.to(device)
    n = 5 if small else 200
    apply_d4(xd, codes)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        apply_d4(xd, codes)
    sync(device)
    rate = n / (time.perf_counter() - t0)
    return f"{rate:,.0f} batches/s of {batch}x{size}x{size} ({rate * batch:,.0f} patches/s)"


def check_ring(root: Path, device: torch.device, small: bool) -> str:
    reader = ShardReader(sorted(root.glob("shard_*.npy")))
    batch = 8 if small else 64

    def loader(augment: Augment, dev: torch.device | None) -> ThreadedLoader:
        sampler = EpochSampler(len(reader), batch, seed=3)
        return ThreadedLoader(reader, sampler, threads=4, augment=augment, device=dev)

    cpu, on_dev = loader("cpu", None), loader("device", device)
    for _ in range(2):  # two epochs: every buffer is refilled after its copy to the device
        for j, (a, b) in enumerate(zip(cpu, on_dev, strict=True)):
            assert b.device.type == device.type, "batch is not on the device"
            assert torch.equal(a, b.cpu()), f"batch {j}: device D4 differs from the CPU's"
    pinned = on_dev._buffers is not None and on_dev._buffers.tensors[0].is_pinned()
    assert pinned or device.type != "cuda", "ring buffers are not pinned"
    t0 = time.perf_counter()
    n = 0
    for b in on_dev:
        n += b.shape[0]
    sync(device)
    rate = n / (time.perf_counter() - t0)
    return f"{rate:,.0f} patches/s to the device, D4 there; buffers pinned: {pinned}"


def check_datamodules(root: Path, focus: Path, device: torch.device, small: bool) -> str:
    kw: dict[str, Any] = {"batch_size": 8, "val_fraction": 0.25, "seed": 5}
    ref = [b.clone() for b in SARDataModule(root, **kw).train_dataloader()]
    dm = SARDataModule(root, augment_on_device=True, device=device, **kw)
    got = [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]
    assert len(got) == len(ref) > 0
    for j, (a, b) in enumerate(zip(ref, got)):
        assert b.device.type == device.type and torch.equal(a, b.cpu()), f"SAR batch {j}"
    fref = list(FocusDataModule(focus, batch_size=2, clip_len=4, recycle=False).train_dataloader())
    fdev = FocusDataModule(focus, batch_size=2, clip_len=4, device=device).train_dataloader()
    for j, (a, b) in enumerate(zip(fref, fdev, strict=True)):
        assert b["frames"].device.type == device.type, "clip batch is not on the device"
        for m in ("frames", "focus", "depth", "bokeh"):
            assert torch.equal(a[m], b[m].cpu()), f"focus batch {j} {m}"
    return f"{len(got)} SAR and {len(fref)} clip batches on {device} equal the CPU's"


def check_lightning(root: Path, device: torch.device, small: bool) -> str:
    import lightning

    seen: list[torch.Tensor] = []

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            assert batch.device.type == device.type
            seen.append(batch.detach().cpu().clone())
            return (batch * self.w).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    kw: dict[str, Any] = {"batch_size": 8, "val_fraction": 0.25, "seed": 6}
    ref = [b.clone() for b in SARDataModule(root, **kw).train_dataloader()]
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    trainer = lightning.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    t0 = time.perf_counter()
    trainer.fit(Tiny(), datamodule=SARDataModule(root, augment_on_device=True, **kw))
    took = time.perf_counter() - t0
    assert len(seen) == len(ref) and all(torch.equal(a, b) for a, b in zip(ref, seen))
    return f"one epoch of {len(seen)} batches on {accelerator} in {took:.1f} s, equal to the CPU's"


def check_render(device: torch.device, small: bool) -> str:
    from trainset.focus.render import LayeredRenderer

    size = 64 if small else 512
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    radius = np.linspace(-20, 20, size, dtype=np.float32)
    coc = np.repeat(radius[:, None] * 2.0, size, axis=1)
    cpu = LayeredRenderer(device="cpu").render(image, coc)
    renderer = LayeredRenderer(device=device)
    out = renderer.render(image, coc)
    diff = int(np.abs(out.astype(np.int16) - cpu.astype(np.int16)).max())
    assert diff <= 1, f"device render differs from the CPU's by {diff} (uint8 levels)"
    n = 2 if small else 10
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        renderer.render(image, coc)
    sync(device)
    rate = n / (time.perf_counter() - t0)
    return f"{size}x{size}, radii -20..+20 px: max |device - cpu| = {diff}, {rate:.1f} renders/s"


def check_vda(device: torch.device, small: bool) -> str:
    from trainset.focus.vda.inference import WINDOW
    from vda import random_model

    size = 28 if small else 518
    model = random_model("vits", device)
    x = torch.randn(1, WINDOW, 3, size, size, device=device)
    with torch.inference_mode():
        ref = model(x).float()
        cuda = device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            half = model(x).float()
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            model(x)
        sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    rel = float(((half - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)).item())
    assert torch.isfinite(half).all(), "fp16 autocast gave non-finite depth"
    assert rel < 0.05, f"fp16 autocast differs from fp32 by {rel:.3f} (mean relative)"
    what = "fp16 autocast" if device.type == "cuda" else "fp32 (autocast is CUDA only)"
    return (
        f"vits {WINDOW}x{size}x{size}: {what} vs fp32 mean rel. diff {rel:.2e}, {ms:.0f} ms/window"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when present)")
    ap.add_argument("--small", action="store_true", help="tiny sizes (a CPU smoke test)")
    ap.add_argument("--only", default=None, help="comma-separated checks to run")
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu" and not args.small:
            print("no CUDA device: running the CPU smoke test (--small); figures mean nothing")
            args.small = True
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_checks: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, small={args.small}")
    tmp = Path(tempfile.mkdtemp(prefix="trainset-gpu-checks-"))
    try:
        n, size = (64, 16) if args.small else (2048, 256)
        root = patch_set(tmp / "sar", n, size)
        focus = tmp / "focus"
        from clip_loader import build_set

        build_set(focus, 2, 8, 32 if args.small else 128)
        checks: dict[str, Callable[[], str]] = {
            "d4": lambda: check_d4(device, args.small),
            "ring": lambda: check_ring(root, device, args.small),
            "datamodules": lambda: check_datamodules(root, focus, device, args.small),
            "lightning": lambda: check_lightning(root, device, args.small),
            "render": lambda: check_render(device, args.small),
            "vda": lambda: check_vda(device, args.small),
        }
        chosen = args.only.split(",") if args.only else list(checks)
        failed = []
        for key in chosen:
            t0 = time.perf_counter()
            try:
                figures = checks[key]()
                print(f"PASS {key}: {figures} ({time.perf_counter() - t0:.1f} s)", flush=True)
            except Exception as exc:  # report every check, then fail
                failed.append(key)
                print(f"FAIL {key}: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
        print(f"{len(chosen) - len(failed)} of {len(chosen)} checks passed")
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
