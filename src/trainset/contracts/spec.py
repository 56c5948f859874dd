"""Array specs and contracts; sources that give headers cheaply and values on demand."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trainset.contracts.report import Report
from trainset.contracts.rules import Rule
from trainset.errors import InputError
from trainset.store.codecs import MAX_ARRAY_BYTES, ArrayHeader, npz_headers, read_npz_array


class ArraySource(Protocol):
    """Where a contract reads arrays from: headers first, values only when a rule needs them."""

    name: str

    def keys(self) -> list[str]: ...

    def header(self, key: str) -> ArrayHeader: ...

    def load(self, key: str) -> np.ndarray: ...


class MappingSource:
    """Arrays already in memory."""

    def __init__(self, arrays: Mapping[str, Any], name: str = "<arrays>") -> None:
        self._arrays = {k: np.asanyarray(v) for k, v in arrays.items()}
        self.name = name

    def keys(self) -> list[str]:
        return list(self._arrays)

    def header(self, key: str) -> ArrayHeader:
        arr = self._arrays[key]
        return ArrayHeader(tuple(arr.shape), arr.dtype, False)

    def load(self, key: str) -> np.ndarray:
        return self._arrays[key]


class NpzSource:
    """An NPZ file: shapes and dtypes come from the member headers, data is read per key.

    Opening it refuses (InputError) a member whose header disagrees with the zip's record or
    claims more than ``max_bytes`` (None: no limit), before any data is read.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.max_bytes = max_bytes
        self._headers = npz_headers(self.path, max_bytes=max_bytes)
        self._cache: dict[str, np.ndarray] = {}

    def keys(self) -> list[str]:
        return list(self._headers)

    def header(self, key: str) -> ArrayHeader:
        return self._headers[key]

    def load(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = read_npz_array(self.path, key, max_bytes=self.max_bytes)
        return self._cache[key]


@dataclass(frozen=True)
class ArraySpec:
    """What one named array must be.

    ``dims`` holds a name (shared across specs: the same name must have the same length
    everywhere) or a fixed length per axis; ``dtypes`` lists allowed dtype names (empty = any);
    ``aliases`` are older names accepted for the key (the first present name is used).
    """

    key: str
    dims: tuple[str | int, ...] | None = None
    dtypes: tuple[str, ...] = ()
    required: bool = True
    rules: tuple[Rule, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases)


@dataclass(frozen=True)
class Contract:
    """A named set of array specs. :meth:`validate` collects every failure."""

    name: str
    arrays: tuple[ArraySpec, ...]

    def spec(self, key: str) -> ArraySpec:
        for spec in self.arrays:
            if spec.key == key:
                return spec
        raise KeyError(key)

    def resolve(self, keys: list[str], spec: ArraySpec) -> str | None:
        """The name under which ``spec``'s array is present, or None."""
        return next((name for name in spec.names() if name in keys), None)

    def validate(self, source: ArraySource) -> Report:
        """Check ``source`` against every spec; values are loaded only for value rules."""
        report = Report(self.name, source.name)
        keys = source.keys()
        bound: dict[str, tuple[int, str]] = {}
        for spec in self.arrays:
            present = self.resolve(keys, spec)
            if present is None:
                if spec.required:
                    report.add(
                        spec.key, "required", "key present", f"missing (keys: {sorted(keys)})"
                    )
                continue
            report.checked.append(present)
            header = source.header(present)
            if header.dtype.hasobject:
                report.add(present, "dtype", _dtype_text(spec), "object array (needs pickle)")
                continue
            header_ok = self._check_header(report, present, spec, header, bound)
            if spec.rules and header_ok:
                try:
                    values = source.load(present)
                except InputError as exc:
                    report.add(present, "readable", "loadable array data", str(exc))
                    continue
                for rule in spec.rules:
                    found = rule.check(values)
                    if found is not None:
                        report.add(present, rule.name, rule.expected, found)
        return report

    def validate_npz(
        self, path: str | os.PathLike[str], *, max_bytes: int | None = MAX_ARRAY_BYTES
    ) -> Report:
        """Validate an NPZ file. Raises InputError when it cannot be opened at all, or when a
        member's header disagrees with the zip or claims more than ``max_bytes``."""
        return self.validate(NpzSource(path, max_bytes=max_bytes))

    def validate_arrays(self, arrays: Mapping[str, Any], name: str = "<arrays>") -> Report:
        """Validate arrays held in memory."""
        return self.validate(MappingSource(arrays, name))

    @staticmethod
    def _check_header(
        report: Report,
        key: str,
        spec: ArraySpec,
        header: ArrayHeader,
        bound: dict[str, tuple[int, str]],
    ) -> bool:
        ok = True
        if spec.dtypes and header.dtype.name not in spec.dtypes:
            report.add(key, "dtype", _dtype_text(spec), header.dtype.name)
            ok = False
        if spec.dims is None:
            return ok
        shape = header.shape
        if len(shape) != len(spec.dims):
            report.add(
                key,
                "ndim",
                f"{len(spec.dims)}-D {_dims_text(spec.dims)}",
                f"{len(shape)}-D shape {shape}",
            )
            return False
        for axis, (dim, size) in enumerate(zip(spec.dims, shape)):
            if isinstance(dim, int):
                if size != dim:
                    report.add(key, "shape", f"axis {axis} of length {dim}", f"shape {shape}")
                    ok = False
            elif dim in bound and bound[dim][0] != size:
                length, origin = bound[dim]
                report.add(
                    key,
                    "shape",
                    f"{dim}={length} (as in '{origin}')",
                    f"{dim}={size} in shape {shape}",
                )
                ok = False
            else:
                bound.setdefault(dim, (size, key))
        return ok


def _dtype_text(spec: ArraySpec) -> str:
    return " or ".join(spec.dtypes) if spec.dtypes else "any plain dtype"


def _dims_text(dims: tuple[str | int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"
