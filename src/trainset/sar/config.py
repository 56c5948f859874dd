"""The parameters of a SAR patch set, with their defaults, in one place.

:class:`TilingConfig` holds everything that shapes a set (it is recorded in the manifest); each
of its fields is a command-line option of `trainset sar patches`
(:func:`trainset.cli_tools.option`), so the command, the Python API
(:func:`trainset.sar.steps.run_patches`) and the SLURM steps take the same parameters with the
same defaults. :func:`trainset.cli_tools.config_dict` gives its JSON form (what a SLURM step
spec holds) and :meth:`TilingConfig.from_dict` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from trainset.cli_tools import option
from trainset.errors import InputError
from trainset.sar.manifest import DTYPES
from trainset.sar.preprocessing import (
    CLIP_METHODS,
    DEFAULT_FIXED_VMAX_DB,
    DEFAULT_FIXED_VMIN_DB,
    DEFAULT_HIGH_PCT,
    DEFAULT_LOW_PCT,
    DEFAULT_SIGMA_K,
    UNITS,
    check_clip_bounds,
    check_units,
)

# The reference project's quality filter: keep a patch when >= 90% of its pixels are valid
# and strictly inside (0.01, 0.99) after normalisation.
DEFAULT_QUALITY_LOW = 0.01
DEFAULT_QUALITY_HIGH = 0.99
DEFAULT_QUALITY_FRACTION = 0.9
DEFAULT_SHARD_SIZE = 4096  # patches per shard: 4096 x 256 KiB = 1 GiB of float32 patches
BAND_MODES = ("separate", "stack")


def _number_text(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class ClipSpec:
    """How global clip bounds are chosen: ``percentile:LOW,HIGH``, ``fixed:VMIN,VMAX`` (dB) or
    ``sigma:K``."""

    method: str = "percentile"
    params: tuple[float, ...] = (DEFAULT_LOW_PCT, DEFAULT_HIGH_PCT)

    @classmethod
    def parse(cls, text: str) -> ClipSpec:
        """Parse ``METHOD[:A[,B]]``; a bare method takes the plan's defaults."""
        method, _, rest = text.partition(":")
        method = method.strip()
        defaults = {
            "percentile": (DEFAULT_LOW_PCT, DEFAULT_HIGH_PCT),
            "fixed": (DEFAULT_FIXED_VMIN_DB, DEFAULT_FIXED_VMAX_DB),
            "sigma": (DEFAULT_SIGMA_K,),
        }
        if method not in CLIP_METHODS:
            raise InputError(
                "unknown clip method",
                key="clip",
                expected="percentile:LOW,HIGH | fixed:VMIN,VMAX | sigma:K",
                found=text,
            )
        try:
            params = tuple(float(v) for v in rest.split(",")) if rest else defaults[method]
        except ValueError as exc:
            raise InputError("clip parameters must be numbers", key="clip", found=text) from exc
        if len(params) != len(defaults[method]):
            raise InputError(
                f"'{method}' takes {len(defaults[method])} number(s)", key="clip", found=text
            )
        if method == "percentile" and not 0 <= params[0] < params[1] <= 100:
            raise InputError(
                "percentiles out of order",
                key="clip",
                expected="0 <= LOW < HIGH <= 100",
                found=text,
            )
        if method == "fixed":
            check_clip_bounds(params[0], params[1], method)
        if method == "sigma" and not params[0] > 0:
            raise InputError("sigma K must be > 0", key="clip", found=text)
        return cls(method, params)

    def __str__(self) -> str:
        return f"{self.method}:{','.join(_number_text(p) for p in self.params)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the plan's keyword names."""
        names = {"percentile": ("low_pct", "high_pct"), "fixed": ("vmin", "vmax"), "sigma": ("k",)}
        return {"method": self.method, **dict(zip(names[self.method], self.params))}


@dataclass(frozen=True)
class QualityFilter:
    """Keep a patch when at least ``min_fraction`` of its pixels are valid and in (low, high)."""

    low: float = DEFAULT_QUALITY_LOW
    high: float = DEFAULT_QUALITY_HIGH
    min_fraction: float = DEFAULT_QUALITY_FRACTION

    def __post_init__(self) -> None:
        if not (0.0 <= self.low < self.high <= 1.0 and 0.0 <= self.min_fraction <= 1.0):
            raise InputError(
                "bad quality filter",
                key="quality",
                expected="0 <= low < high <= 1 and 0 <= min_fraction <= 1",
                found=asdict(self),
            )

    @classmethod
    def parse(cls, text: str) -> QualityFilter:
        """Parse ``LOW,HIGH,FRACTION``."""
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError as exc:
            raise InputError("expected numbers", key="--quality", found=text) from exc
        if len(values) != 3:
            raise InputError("expected 3 comma-separated numbers", key="--quality", found=text)
        return cls(*values)

    def __str__(self) -> str:
        return ",".join(_number_text(v) for v in (self.low, self.high, self.min_fraction))


def parse_bands(text: str) -> tuple[int, ...]:
    """``1,2`` -> (1, 2): 1-based band numbers."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise InputError("bands are 1-based integers", key="--bands", found=text) from exc


@dataclass(frozen=True)
class TilingConfig:
    """Everything that shapes a patch set (recorded in the manifest); every field is an option
    of `trainset sar patches`."""

    patch_size: int = option(256, "--patch-size", "patch side, px", metavar="N")
    stride: int = option(128, "--stride", "patch step, px", metavar="N")
    units: str = option(
        "intensity",
        "--units",
        "pixel units of the input: intensity (power), amplitude (squared first), db",
        choices=UNITS,
        metavar="|".join(UNITS),
    )
    clip: ClipSpec = option(
        ClipSpec(),
        "--clip",
        "global clip bounds in dB: percentile:LOW,HIGH | fixed:VMIN,VMAX | sigma:K",
        type=ClipSpec.parse,
        metavar="SPEC",
    )
    quality: QualityFilter = option(
        QualityFilter(),
        "--quality",
        "keep a patch when >= FRACTION of its pixels are valid and in (LOW, HIGH) after "
        "normalisation; 0,1,0 keeps all",
        type=QualityFilter.parse,
        metavar="LOW,HIGH,FRACTION",
    )
    bands: tuple[int, ...] | None = option(
        None, "--bands", "1-based bands, e.g. 1,2 (default: all)", type=parse_bands, metavar="B,B"
    )
    band_mode: str = option(
        "separate",
        "--band-mode",
        "each band its own (1,P,P) patch, or bands stacked as channels (C,P,P)",
        choices=BAND_MODES,
        metavar="|".join(BAND_MODES),
    )
    shard_size: int = option(
        DEFAULT_SHARD_SIZE, "--shard-size", "max patches per shard", metavar="N"
    )
    dtype: str = option(
        "float32",
        "--dtype",
        "shard dtype (float16 halves the size, datasets return float32)",
        choices=DTYPES,
        metavar="|".join(DTYPES),
    )

    def __post_init__(self) -> None:
        check_units(self.units)
        if self.patch_size < 1 or self.stride < 1 or self.shard_size < 1:
            raise InputError(
                "patch size, stride and shard size must be positive",
                key="patch_size/stride/shard_size",
                expected="> 0",
                found=(self.patch_size, self.stride, self.shard_size),
            )
        if self.band_mode not in BAND_MODES:
            raise InputError(
                "unknown band mode", key="band_mode", expected=BAND_MODES, found=self.band_mode
            )
        if self.dtype not in DTYPES:
            raise InputError(
                "unsupported shard dtype", key="dtype", expected=DTYPES, found=self.dtype
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TilingConfig:
        """The config from its JSON form (:func:`trainset.cli_tools.config_dict`)."""
        clip, quality, bands = data["clip"], data["quality"], data.get("bands")
        return cls(
            patch_size=int(data["patch_size"]),
            stride=int(data["stride"]),
            units=str(data["units"]),
            clip=ClipSpec(str(clip["method"]), tuple(float(p) for p in clip["params"])),
            quality=QualityFilter(**{k: float(v) for k, v in quality.items()}),
            bands=None if bands is None else tuple(int(b) for b in bands),
            band_mode=str(data["band_mode"]),
            shard_size=int(data["shard_size"]),
            dtype=str(data["dtype"]),
        )
