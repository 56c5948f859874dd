"""Codecs: deterministic NPZ, page-aligned NPY headers, PNG, CSV text, JSON/YAML reading.

Readers never unpickle: every ``np.load`` here passes ``allow_pickle=False``, and errors name
the file and key.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from trainset.errors import InputError

# Page size: a .npy header padded to this makes every fixed-size record page-aligned.
NPY_ALIGN = 4096
# Largest array a reader loads by default (1 GiB): a bigger claim, such as a zip bomb or a forged
# header, is refused before anything is allocated; callers raise it explicitly
# (`trainset ptycho check --max-array-mib`).
MAX_ARRAY_BYTES = 1 << 30
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


def claimed_bytes(header: ArrayHeader) -> int:
    """Bytes of array data an ``.npy`` header announces: product of the shape times itemsize."""
    return math.prod(header.shape) * header.dtype.itemsize


def check_array_size(
    file: str | os.PathLike[str],
    key: str,
    header: ArrayHeader,
    stored_bytes: int,
    *,
    max_bytes: int | None = MAX_ARRAY_BYTES,
) -> None:
    """Refuse an array whose header disagrees with the bytes actually stored, or that claims more
    than ``max_bytes`` (None: no limit), before anything is allocated.

    ``stored_bytes`` is what the container records for the data after the header: for an NPZ
    member the zip's uncompressed size minus the header length, for an ``.npy`` file its size on
    disk minus the header length. Object (pickled) arrays have no fixed size and are not checked
    here. Raises InputError naming file, key, expected and found.
    """
    if header.dtype.hasobject:
        return
    claimed = claimed_bytes(header)
    if claimed != stored_bytes:
        raise InputError(
            f"array header claims shape {header.shape} {header.dtype.name} ({claimed} bytes), "
            "which disagrees with the archive's record; the file is corrupt or forged",
            file=file,
            key=key,
            expected=f"{claimed} bytes of data",
            found=f"{stored_bytes} bytes",
        )
    if max_bytes is not None and claimed > max_bytes:
        raise InputError(
            f"array of shape {header.shape} {header.dtype.name} is larger than the limit "
            f"({_mib(max_bytes)}); raise the limit (e.g. --max-array-mib) if the file is trusted",
            file=file,
            key=key,
            expected=f"at most {max_bytes} bytes",
            found=f"{claimed} bytes ({_mib(claimed)})",
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.6g} MiB"


def _read_member_header(
    p: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str
) -> tuple[IO[bytes], ArrayHeader]:
    """Open one member and read its ``.npy`` header; return the open member and the header.

    The member is positioned at the start of the array data (``member.tell()`` is the header
    length).
    """
    member = zf.open(info)
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        member.close()
        raise InputError(f"unreadable array header: {exc}", file=p, key=key) from exc
    except BaseException:
        member.close()
        raise
    header = ArrayHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran))
    return member, header


def npz_headers(
    path: str | os.PathLike[str], *, max_bytes: int | None = None
) -> dict[str, ArrayHeader]:
    """Read shape and dtype of every array in an NPZ from the headers alone (no data is read).

    Every member's header is compared with the zip's record of its size
    (:func:`check_array_size`): a header claiming more (or less) data than the archive holds is
    refused, and so is, when ``max_bytes`` is given, an array larger than that.
    """
    p = Path(path)
    headers: dict[str, ArrayHeader] = {}
    with _open_zip(p) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            member, header = _read_member_header(p, zf, info, key)
            with member:
                stored = info.file_size - member.tell()
            check_array_size(p, key, header, stored, max_bytes=max_bytes)
            headers[key] = header
    return headers


def read_npz_array(
    path: str | os.PathLike[str], key: str, *, max_bytes: int | None = MAX_ARRAY_BYTES
) -> np.ndarray:
    """Load one array from an NPZ without ever unpickling; errors name file and key.

    The member's header is checked first (:func:`check_array_size`): a header that disagrees
    with the zip's record, or an array over ``max_bytes`` (default :data:`MAX_ARRAY_BYTES`;
    None for no limit), is refused before anything is allocated or decompressed.
    """
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
        info = zf.getinfo(f"{key}.npy")
        member, header = _read_member_header(p, zf, info, key)
        with member:
            check_array_size(p, key, header, info.file_size - member.tell(), max_bytes=max_bytes)
            try:
                member.seek(0)
                return np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as exc:
                if header.dtype.hasobject:
                    raise InputError(
                        f"cannot load array without pickle: {exc}", file=p, key=key
                    ) from exc
                raise InputError(f"corrupt array data: {exc}", file=p, key=key) from exc
            except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
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
    except Image.DecompressionBombError as exc:
        raise InputError(
            "image too large to decode (PIL's decompression-bomb guard)",
            file=p,
            expected=f"at most {Image.MAX_IMAGE_PIXELS} pixels",
            found=str(exc).split(" pixels")[0].split()[-1] + " pixels",
        ) from exc
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
