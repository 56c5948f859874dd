"""Diffraction layout: canonical (N, H, W) or legacy (H, W, N), decided by the coordinate count."""

from __future__ import annotations

from typing import Literal

import numpy as np

from trainset.errors import InputError

Layout = Literal["nhw", "hwn"]
LAYOUTS: tuple[Layout, ...] = ("nhw", "hwn")


def detect_layout(
    shape: tuple[int, ...],
    n_coords: int,
    *,
    override: str | None = None,
    file: object = None,
    key: str = "diffraction",
) -> Layout:
    """Return the layout of a 3-D diffraction stack with ``n_coords`` scan positions.

    ``shape[0] == n_coords`` means (N, H, W); ``shape[2] == n_coords`` means legacy (H, W, N).
    When both match the answer is ambiguous and ``override`` ('nhw' or 'hwn') must decide;
    an override that contradicts the shape is refused. Never guesses.
    """
    if len(shape) != 3:
        raise InputError(
            "diffraction must be a 3-D stack of patterns",
            file=file,
            key=key,
            expected="3-D (N,H,W) or (H,W,N)",
            found=f"{len(shape)}-D shape {tuple(shape)}",
        )
    first, last = shape[0] == n_coords, shape[2] == n_coords
    if override is not None:
        if override not in LAYOUTS:
            raise InputError(
                "unknown layout", key="--layout", expected="nhw or hwn", found=repr(override)
            )
        fits = first if override == "nhw" else last
        if not fits:
            axis = "first" if override == "nhw" else "last"
            raise InputError(
                f"--layout {override} puts N on the {axis} axis, which does not match the "
                "coordinate count",
                file=file,
                key=key,
                expected=f"axis of length {n_coords}",
                found=f"shape {tuple(shape)}",
            )
        return "nhw" if override == "nhw" else "hwn"
    if first and last:
        raise InputError(
            "layout is ambiguous (first and last axis both match the coordinate count); "
            "pass --layout nhw|hwn",
            file=file,
            key=key,
            expected="exactly one axis of length N",
            found=f"shape {tuple(shape)} with N={n_coords}",
        )
    if first:
        return "nhw"
    if last:
        return "hwn"
    raise InputError(
        "coordinate count matches neither the first nor the last axis",
        file=file,
        key=key,
        expected=f"shape (N,H,W) or (H,W,N) with N={n_coords}",
        found=f"shape {tuple(shape)}",
    )


def to_canonical(stack: np.ndarray, layout: Layout) -> np.ndarray:
    """Return a (N, H, W) view of a stack in ``layout`` (legacy (H, W, N) is transposed)."""
    return stack if layout == "nhw" else np.transpose(stack, (2, 0, 1))
