"""Codecs: deterministic NPZ, page-aligned NPY headers, PNG, CSV text, JSON/YAML reading.

Readers never unpickle: every ``np.load`` here passes ``allow_pickle=False``, and errors name
the file and key.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from trainset.errors import InputError

# Page size: a .npy header padded to this makes every fixed-size record page-aligned.
NPY_ALIGN = 4096
# Fixed zip time stamp (the earliest zip allows) so NPZ bytes do not depend on the clock.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ArrayHeader(NamedTuple):
    """What an ``.npy`` header says: shape, dtype, Fortran order."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool


def npy_header_bytes(
    shape: tuple[int, ...], dtype: np.dtype[Any] | type, *, align: int | None = None
) -> bytes:
    """Return the bytes of an ``.npy`` (version 1.0) header for C-order data.

    With ``align`` the header is padded with spaces so that its length (= the data offset) is a
    multiple of ``align``; numpy's own alignment of 64 applies otherwise.
    """
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise InputError(
            "object arrays cannot be stored without pickle", expected="plain dtype", found=str(dt)
        )
    header = np.lib.format.header_data_from_array_1_0(np.empty((0,), dtype=dt))
    header["shape"] = tuple(int(s) for s in shape)
    text = repr({"descr": header["descr"], "fortran_order": False, "shape": header["shape"]})
    block = align or 64
    base = len(np.lib.format.MAGIC_PREFIX) + 2 + 2  # magic, version, uint16 header length
    total = base + len(text) + 1
    padded = -(-total // block) * block
    if padded - base > 0xFFFF:
        raise InputError(f"npy header of {padded} bytes exceeds version 1.0 limit")
    text = text + " " * (padded - total) + "\n"
    raw = text.encode("latin1")
    return np.lib.format.magic(1, 0) + len(raw).to_bytes(2, "little") + raw


def write_npz_to(fh: IO[bytes], arrays: Mapping[str, np.ndarray], *, compress: bool = True) -> None:
    """Write named arrays as a zip of ``.npy`` members, with a fixed time stamp."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fh, "w", compression=method, allowZip64=True) as zf:
        for key, value in arrays.items():
            arr = np.asanyarray(value)
            if arr.dtype.hasobject:
                raise InputError(
                    "object arrays cannot be stored without pickle",
                    key=key,
                    expected="plain dtype",
                    found=str(arr.dtype),
                )
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


def encode_npz(arrays: Mapping[str, np.ndarray], *, compress: bool = True) -> bytes:
    """Return the bytes of a deterministic NPZ holding ``arrays``."""
    buf = io.BytesIO()
    write_npz_to(buf, arrays, compress=compress)
    return buf.getvalue()


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("is a directory, not an NPZ file", file=path)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable NPZ (zip) file: {exc}", file=path) from exc


def npz_headers(path: str | os.PathLike[str]) -> dict[str, ArrayHeader]:
    """Read shape and dtype of every array in an NPZ from the headers alone (no data is read)."""
    p = Path(path)
    headers: dict[str, ArrayHeader] = {}
    with _open_zip(p) as zf:
        for name in zf.namelist():
            key = name[:-4] if name.endswith(".npy") else name
            try:
                with zf.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InputError(f"unreadable array header: {exc}", file=p, key=key) from exc
            headers[key] = ArrayHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran))
    return headers


def read_npz_array(path: str | os.PathLike[str], key: str) -> np.ndarray:
    """Load one array from an NPZ without ever unpickling; errors name file and key."""
    p = Path(path)
    with _open_zip(p) as zf:
        if f"{key}.npy" not in zf.namelist():
            raise InputError(
                "required array is missing",
                file=p,
                key=key,
                expected=key,
                found=sorted(n.removesuffix(".npy") for n in zf.namelist()),
            )
        try:
            with zf.open(f"{key}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"cannot load array without pickle: {exc}", file=p, key=key) from exc
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"corrupt array data: {exc}", file=p, key=key) from exc


def encode_png(image: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode an (H, W) or (H, W, 3|4) uint8 image, or (H, W) uint16, as PNG bytes."""
    arr = np.asarray(image)
    if arr.dtype == np.uint16 and arr.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(arr))
    elif arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        pil = Image.fromarray(np.ascontiguousarray(arr))
    else:
        raise InputError(
            "cannot encode as PNG",
            expected="(H,W[,3|4]) uint8 or (H,W) uint16",
            found=f"{arr.shape} {arr.dtype}",
        )
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def read_png(path: str | os.PathLike[str], *, mode: str | None = "RGB") -> np.ndarray:
    """Decode an image file into an array (``mode='RGB'`` gives (H, W, 3) uint8)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            out = img.convert(mode) if mode is not None and img.mode != mode else img
            return np.asarray(out)
    except FileNotFoundError as exc:
        raise InputError("file not found", file=p) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"corrupt or unreadable image: {exc}", file=p) from exc


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; errors name the file and the position of the problem."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("file not found", file=p) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}", file=p) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read JSON: {exc.strerror or exc}", file=p, expected="a readable file"
        ) from exc


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file with the safe loader."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("file not found", file=p) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid YAML: {exc}", file=p) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read YAML: {exc.strerror or exc}", file=p, expected="a readable file"
        ) from exc


def encode_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text: ``header`` then ``rows``, ``\n`` line ends, quoting where a field needs it."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
