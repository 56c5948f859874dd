"""Flips and 90-degree rotations of square patches: the 8 elements of the dihedral group D4.

A code ``c`` in 0..7 stands for ``np.rot90(np.fliplr(x) if c >= 4 else x, c % 4)`` over the last
two axes. Drawing a code uniformly is the same distribution as the SAR plan's augmentation
(50% ``fliplr``, 50% ``flipud``, ``rot90`` by k in 0..3): each of the 8 elements arises from
exactly 2 of those 16 equally likely combinations.

Codes are drawn per sample by :func:`d4_codes` from (seed, epoch, record index) alone, so every
thread, worker or resumed run draws the same ones. They are applied either to a whole batch on
the device (:func:`apply_d4`, one gather) or fused into the one CPU copy (:func:`d4_copy_into`).
"""

from __future__ import annotations

import numpy as np
import torch

from trainset.errors import InputError

# Number of elements of D4: 4 rotations, each with or without a mirror.
N_D4 = 8

_MASK64 = 0xFFFFFFFFFFFFFFFF


def d4_view(x: np.ndarray, code: int) -> np.ndarray:
    """View of ``x`` (..., H, W) transformed by D4 ``code`` (no copy; negative strides)."""
    c = int(code)
    if not 0 <= c < N_D4:
        raise InputError("D4 code out of range", expected="0..7", found=c)
    # Plain slicing and swapaxes (what np.fliplr/np.rot90 amount to, without their overhead).
    if c == 0:
        return x
    if c == 1:  # rot90(x, 1)
        return x[..., ::-1].swapaxes(-1, -2)
    if c == 2:  # rot90(x, 2)
        return x[..., ::-1, ::-1]
    if c == 3:  # rot90(x, 3)
        return x.swapaxes(-1, -2)[..., ::-1]
    if c == 4:  # fliplr(x)
        return x[..., ::-1]
    if c == 5:  # rot90(fliplr(x), 1): the transpose
        return x.swapaxes(-1, -2)
    if c == 6:  # rot90(fliplr(x), 2) = flipud(x)
        return x[..., ::-1, :]
    return x[..., ::-1, ::-1].swapaxes(-1, -2)  # rot90(fliplr(x), 3): the anti-transpose


def d4_copy_into(src: np.ndarray, code: int, dst: np.ndarray) -> None:
    """Write ``src`` (H, W) transformed by ``code`` into ``dst`` (H, W): one copy."""
    if int(code) == 2 and src.flags.c_contiguous and dst.flags.c_contiguous:
        # A half turn reverses the flat record: one 1-D reversed copy, faster than 2-D.
        np.copyto(dst.reshape(-1), src.reshape(-1)[::-1])
        return
    np.copyto(dst, d4_view(src, code))


def _mix64_int(x: int) -> int:
    """SplitMix64 finaliser on one Python int (taken modulo 2**64)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (numpy's uint64 arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def d4_codes(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """D4 codes (B,) uint8 in 0..7 for records ``indices`` (B,) in ``epoch``.

    A pure function of (seed, epoch, record index): the same in every process and for any
    batching, so augmentation is identical for any number of threads or workers.
    """
    key = _mix64_int(_mix64_int(int(seed) & _MASK64) ^ (int(epoch) & _MASK64))
    idx = np.asarray(indices).astype(np.uint64)
    return (_mix64(idx ^ np.uint64(key)) >> np.uint64(61)).astype(np.uint8)


_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def d4_gather_table(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(8, size*size) int64: for code c and output pixel p, the input pixel it comes from."""
    dev = torch.device(device)
    key = (size, size, str(dev))
    table = _TABLES.get(key)
    if table is None:
        src = np.arange(size * size, dtype=np.int64).reshape(size, size)
        rows = [np.ascontiguousarray(d4_view(src, c)).reshape(-1) for c in range(N_D4)]
        table = torch.from_numpy(np.stack(rows)).to(dev)
        _TABLES[key] = table
    return table


def apply_d4(batch: torch.Tensor, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Apply per-sample D4 ``codes`` (B,) to ``batch`` (B, H, W) or (B, C, H, W) with H == W.

    Runs where ``batch`` lives (one gather on the GPU); returns a new tensor.
    """
    if batch.dim() not in (3, 4) or batch.shape[-1] != batch.shape[-2]:
        raise InputError(
            "D4 augmentation needs square patches",
            expected="(B, H, W) or (B, C, H, W) with H == W",
            found=tuple(batch.shape),
        )
    c = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
    if c.shape != (batch.shape[0],):
        raise InputError(
            "one D4 code per sample is needed", expected=(batch.shape[0],), found=tuple(c.shape)
        )
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= N_D4):
        raise InputError("D4 code out of range", expected="0..7", found=int(c.max()))
    size = int(batch.shape[-1])
    table = d4_gather_table(size, batch.device)
    idx = table[c.to(device=batch.device, dtype=torch.long)]  # (B, H*W)
    lead = batch.shape[:-2]
    flat = batch.reshape(*lead, size * size)
    if batch.dim() == 4:
        idx = idx[:, None, :].expand(*lead, size * size)
    return torch.gather(flat, -1, idx).reshape(batch.shape)
