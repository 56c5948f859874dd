"""`trainset sar report`: one static HTML page to judge a SAR patch set by looking at it.

The page (default ``{manifest dir}/report/index.html``, images in a folder beside it, written
as :mod:`trainset.store.report_page` describes) shows the set's parameters (units, clip
bounds in dB, quality filter, shards), patch counts per source and split (the split
:class:`trainset.sar.datamodule.SARDataModule` makes with its defaults), the invalid-pixel
fractions per source, a histogram of the normalised values of a seeded sample of patches with
a dB axis, a seeded mosaic of patches per source, and the manifest's provenance.

The manifest is read with :func:`trainset.sar.manifest.load_manifest`; patches are read one at
a time from memory-mapped shards (one shard open at a time), so memory stays bounded whatever
the size of the set, and neither torch nor lightning is imported.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike

from trainset.errors import InputError
from trainset.pipeline.progress import Progress
from trainset.pipeline.seeds import derive_seed
from trainset.sar.manifest import Manifest, find_manifest, load_manifest
from trainset.sar.splits import (
    DEFAULT_SPLIT,
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    split_patches,
)
from trainset.store.report_page import (
    Html,
    ReportPage,
    figure_png,
    join,
    key_values,
    table,
    tag,
    thumbnail_jpeg,
)

HIST_BINS = 100


@dataclass(frozen=True)
class SarReportOptions:
    """What the report shows (the CLI takes its defaults from here)."""

    mosaic: int = 8  # patches shown per source (seeded choice)
    max_patches: int = 2048  # patches in the value histogram (seeded sample)
    seed: int = 0  # seed of both samples


@dataclass(frozen=True)
class SarReport:
    """What :func:`build_sar_report` wrote."""

    path: Path
    size_bytes: int
    images: int
    patches: int
    sources: int


def report_path_for(manifest: Manifest) -> Path:
    """Default page of ``trainset sar report``: ``report/index.html`` beside the manifest."""
    return manifest.root / "report" / "index.html"


def _splits(groups: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(N,) bool "in val" of every patch under SARDataModule's default split, and a caption;
    None with the reason when that split cannot be made (e.g. one source)."""
    caption = (
        f"SARDataModule's default split: {DEFAULT_SPLIT}, val_fraction {DEFAULT_VAL_FRACTION}, "
        f"seed {DEFAULT_SPLIT_SEED}"
    )
    try:
        _, val = split_patches(groups, DEFAULT_VAL_FRACTION, DEFAULT_SPLIT_SEED, DEFAULT_SPLIT)
    except InputError as exc:
        return None, f"{caption}: not possible ({exc})"
    is_val = np.zeros(len(groups), dtype=bool)
    is_val[val] = True
    return is_val, caption


def _column(manifest: Manifest, key: str) -> np.ndarray | None:
    """Per-patch column ``key`` of the manifest as an array, None when it has none."""
    names = manifest.patches.dtype.names or ()
    return np.asarray(manifest.patches[key]) if key in names else None


def _described(manifest: Manifest, key: str) -> Any:
    """A descriptive manifest field (band_mode, clip, quality, provenance) or None."""
    return getattr(manifest, key, None)


def _text(value: Any) -> str:
    """A small mapping as ``key value, ...``; anything else as it is."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "-" if value is None else str(value)


def _quality_text(quality: Any) -> str:
    if not isinstance(quality, dict):
        return _text(quality)
    return (
        f"keep a patch when >= {quality.get('min_fraction')} of its pixels are valid and inside "
        f"({quality.get('low')}, {quality.get('high')}) after normalisation"
    )


def read_patches(manifest: Manifest, patches: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(patch index, (channels, P, P) float32) for each of the sorted ``patches``, reading one
    memory-mapped shard at a time. InputError naming the shard when it cannot be read."""
    starts = np.concatenate([[0], np.cumsum(manifest.patch_counts())]).astype(np.int64)
    paths = manifest.shard_paths()
    wanted = np.asarray(patches, dtype=np.int64)
    shard_of = np.searchsorted(starts, wanted, side="right") - 1
    size, channels = manifest.patch_size, manifest.channels
    for shard in np.unique(shard_of):
        path = paths[int(shard)]
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(
                "cannot read shard; check the set with `trainset sar verify`",
                file=path,
                found=str(exc),
            ) from exc
        expected = (manifest.patch_counts()[int(shard)] * channels, size, size)
        if data.shape != expected:
            raise InputError(
                "shard does not match the manifest; check the set with `trainset sar verify`",
                file=path,
                expected=expected,
                found=data.shape,
            )
        for p in wanted[shard_of == shard]:
            first = int(p - starts[shard]) * channels
            yield int(p), np.array(data[first : first + channels], dtype=np.float32)
        del data


def _source_name(source: dict[str, Any], i: int) -> str:
    return Path(str(source.get("path", f"source {i}"))).name


def _sources_table(manifest: Manifest, groups: np.ndarray, is_val: np.ndarray | None) -> Html:
    found = _column(manifest, "valid_fraction")
    valid = np.zeros(0) if found is None else found.astype(np.float64)
    rows = []
    for i, source in enumerate(manifest.sources):
        mine = groups == i
        n = int(mine.sum())
        pixels = int(source.get("width", 0)) * int(source.get("height", 0))
        pixels *= max(len(source.get("bands") or [1]), 1)
        raster_valid = source.get("valid_pixels")
        rows.append(
            [
                tag("span", _source_name(source, i), title=str(source.get("path"))),
                f"{source.get('width')} x {source.get('height')}",
                "-" if source.get("nodata") is None else source["nodata"],
                source.get("candidates", "-"),
                n,
                "-" if is_val is None else int((mine & ~is_val).sum()),
                "-" if is_val is None else int((mine & is_val).sum()),
                f"{1 - float(valid[mine].mean()):.2%}" if n and valid.size else "-",
                f"{1 - float(valid[mine].min()):.2%}" if n and valid.size else "-",
                f"{1 - raster_valid / pixels:.2%}"
                if isinstance(raster_valid, int) and pixels
                else "-",
            ]
        )
    headers = [
        "source",
        "size (px)",
        "nodata",
        "candidate patches",
        "patches kept",
        "train",
        "val",
        "invalid px, mean of kept patches",
        "invalid px, worst kept patch",
        "invalid px in the raster",
    ]
    return table(headers, rows)


def _histogram(manifest: Manifest, options: SarReportOptions, log: TextIO) -> tuple[bytes, int]:
    """PNG of the value histogram of a seeded sample of patches, and the sample size."""
    n = manifest.num_patches
    rng = np.random.default_rng(derive_seed(options.seed, "histogram"))
    take = min(n, max(options.max_patches, 1))
    sample = np.sort(rng.choice(n, size=take, replace=False))
    counts = np.zeros(HIST_BINS, dtype=np.int64)
    with Progress(len(sample), "report: histogram", stream=log) as bar:
        for _, values in read_patches(manifest, sample):
            counts += np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))[0]
            bar.update(1)
    return _histogram_plot(counts, manifest, take), take


def _histogram_plot(counts: np.ndarray, manifest: Manifest, sampled: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=90)
    ax.stairs(counts, edges, fill=True, color="0.5")
    ax.set_yscale("log")
    ax.set_xlabel("normalised value (0 = vmin, 1 = vmax; invalid pixels are 0)")
    ax.set_ylabel("pixels")
    vmin, vmax = manifest.vmin, manifest.vmax
    if vmin is not None and vmax is not None:
        low, span = float(vmin), float(vmax - vmin)

        def to_db(x: ArrayLike) -> np.ndarray:
            return low + np.asarray(x, dtype=np.float64) * span

        def from_db(d: ArrayLike) -> np.ndarray:
            return (np.asarray(d, dtype=np.float64) - low) / span

        top = ax.secondary_xaxis("top", functions=(to_db, from_db))
        top.set_xlabel(f"dB (vmin {vmin:.2f}, vmax {vmax:.2f})")
    ax.set_title(f"{sampled} of {manifest.num_patches} patches (seeded sample)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def _mosaic(
    page: ReportPage,
    manifest: Manifest,
    groups: np.ndarray,
    options: SarReportOptions,
    log: TextIO,
) -> Html:
    rows = []
    row, col, band = (_column(manifest, k) for k in ("row", "col", "band"))
    valid = _column(manifest, "valid_fraction")
    with Progress(len(manifest.sources), "report: mosaic", stream=log) as bar:
        for i, source in enumerate(manifest.sources):
            mine = np.flatnonzero(groups == i)
            rng = np.random.default_rng(derive_seed(options.seed, f"mosaic:{i}"))
            chosen = np.sort(rng.choice(mine, size=min(len(mine), options.mosaic), replace=False))
            cells: list[Any] = [_source_name(source, i)]
            for p, patch in read_patches(manifest, chosen):
                grey = np.round(np.clip(patch[0], 0, 1) * 255).astype(np.uint8)  # first channel
                where = (
                    f"row {row[p]}, col {col[p]}, band {band[p]}"
                    if row is not None and col is not None and band is not None
                    else ""
                )
                note = f"valid {float(valid[p]):.0%}" if valid is not None else ""
                image = page.image(
                    f"src{i:04d}_p{p:08d}.jpg", thumbnail_jpeg(grey), alt=f"patch {p}", title=where
                )
                cells.append(join([image, tag("div", note)]))
            rows.append(cells)
            bar.update(1, _source_name(source, i))
    return tag("div", table([], rows, cls="strip"), cls="scroll")


def build_sar_report(
    path_or_dir: str | Path,
    options: SarReportOptions = SarReportOptions(),
    *,
    output: str | Path | None = None,
    stream: TextIO | None = None,
) -> SarReport:
    """Write the report of the patch set whose manifest is ``path_or_dir`` (or in it)."""
    if options.mosaic < 0 or options.max_patches < 1:
        raise InputError(
            "mosaic must be >= 0 and max_patches >= 1",
            key="--mosaic/--max-patches",
            found=(options.mosaic, options.max_patches),
        )
    manifest = load_manifest(path_or_dir)
    log = stream if stream is not None else sys.stderr
    page_path = Path(output) if output is not None else report_path_for(manifest)
    groups = manifest.source_of_patches()
    is_val, split_caption = _splits(groups)
    shard_bytes = sum(p.stat().st_size for p in manifest.shard_paths() if p.is_file())
    with ReportPage(page_path, f"SAR patch set report: {manifest.path}") as page:
        page.add_heading(
            f"SAR patch set: {find_manifest(path_or_dir)}",
            "trainset sar report",
            "Check the shards themselves with "
            f"`trainset sar verify {shlex.quote(str(manifest.root))} --deep`.",
        )
        page.add(
            key_values(
                [
                    ("patches", f"{manifest.num_patches} from {len(manifest.sources)} source(s)"),
                    (
                        "shards",
                        f"{len(manifest.shards)}, {manifest.dtype}, {shard_bytes / 1e6:.3g} MB",
                    ),
                    ("patch size / stride", f"{manifest.patch_size} / {manifest.stride} px"),
                    ("units of the input", manifest.units),
                    (
                        "channels",
                        f"{manifest.channels} (band mode {_described(manifest, 'band_mode')})",
                    ),
                    (
                        "clip bounds",
                        f"vmin {manifest.vmin:.4f} dB, vmax {manifest.vmax:.4f} dB "
                        f"({_text(_described(manifest, 'clip'))})"
                        if manifest.vmin is not None and manifest.vmax is not None
                        else "-",
                    ),
                    ("quality filter", _quality_text(_described(manifest, "quality"))),
                ]
            )
        )
        page.add(tag("h2", "Patches per source and split"))
        page.add(tag("p", split_caption))
        page.add(_sources_table(manifest, groups, is_val))
        page.add(tag("h2", "Values of the normalised patches"))
        png, _ = _histogram(manifest, options, log)
        page.add(page.image("histogram.png", png, alt="value histogram"))
        page.add(tag("h2", f"Patches per source (seeded choice of up to {options.mosaic})"))
        page.add(_mosaic(page, manifest, groups, options, log))
        page.add(tag("h2", "Provenance"))
        provenance = _described(manifest, "provenance")
        provenance = provenance if isinstance(provenance, dict) else {}
        page.add(
            key_values(
                [
                    (k, shlex.join(map(str, v)) if isinstance(v, list) else v)
                    for k, v in provenance.items()
                ]
            )
        )
        written = page.publish()
        size = page.published_bytes()
        images = page.n_images
    return SarReport(written, size, images, manifest.num_patches, len(manifest.sources))
