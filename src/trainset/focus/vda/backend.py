"""Depth backend ``vda``: metric Video-Depth-Anything with official checkpoints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainset.errors import InputError
from trainset.focus.depth_backends import DepthScene
from trainset.focus.vda.checkpoint import load_vda_model
from trainset.focus.vda.dinov2 import PATCH_SIZE
from trainset.focus.vda.inference import (
    BLEND,
    KEYFRAMES,
    STRIDE,
    WINDOW,
    ModelWindowPredictor,
    stream_video_depth,
)

DEFAULT_INPUT_SIZE = 518  # official input size (short side, pixels)
BACKEND_VERSION = 1  # bump when the output of this backend changes for the same inputs


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise InputError(
            "bad device", key="device", expected="auto|cpu|cuda[:N]", found=device
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "CUDA is not available", key="device", expected="auto or cpu", found=device
        )
    return resolved


class VDADepthBackend:
    """Metric depth (metres) per frame from Video-Depth-Anything, 32-frame windows, stride 22.

    checkpoint: official ``metric_video_depth_anything_{vits,vitb,vitl}.pth``; encoder inferred
    from the file when None. input_size: short side fed to the model (multiple of 14).
    device: ``auto``, ``cpu`` or ``cuda[:N]``. batch: frames per backbone pass (halved once on
    CUDA out-of-memory).
    """

    name = "vda"

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        encoder: str | None = None,
        input_size: int = DEFAULT_INPUT_SIZE,
        device: str = "auto",
        batch: int = WINDOW,
    ) -> None:
        if input_size < PATCH_SIZE or input_size % PATCH_SIZE:
            raise InputError(
                "input size must be a positive multiple of 14",
                key="input_size",
                expected="14, 28, ..., 518",
                found=input_size,
            )
        if not 1 <= batch <= WINDOW:
            raise InputError(
                "batch out of range", key="batch", expected=f"1..{WINDOW}", found=batch
            )
        self.checkpoint = Path(checkpoint)
        try:
            info = self.checkpoint.stat()
        except OSError as err:
            raise InputError(
                "checkpoint not found", file=self.checkpoint, key="checkpoint", found="nothing"
            ) from err
        # The checkpoint's identity without reading it: planning (and a SLURM --dry-run on the
        # submit host) hashes these parameters, and a multi-GB file must not be read for that.
        self.checkpoint_id = {"path": str(self.checkpoint.resolve()), "bytes": info.st_size,
                              "mtime_ns": info.st_mtime_ns}  # fmt: skip
        try:
            torch.device(device if device != "auto" else "cpu")
        except RuntimeError as err:
            raise InputError(
                "bad device", key="device", expected="auto|cpu|cuda[:N]", found=device
            ) from err
        self.encoder_option = encoder
        self.device_option = device
        self.input_size = input_size
        self.batch = batch
        self._predictor: ModelWindowPredictor | None = None
        self._device: torch.device | None = None

    def params(self) -> dict[str, Any]:
        """Everything that shapes the output, from the options alone (hashed into the stage
        sentinel; nothing is loaded): the checkpoint by path, size and modification time, the
        requested encoder (``auto``: read from the checkpoint) and device (CUDA runs in fp16
        autocast, the CPU in fp32)."""
        return {
            "backend": self.name,
            "version": BACKEND_VERSION,
            "encoder": self.encoder_option or "auto",
            "checkpoint": self.checkpoint_id,
            "input_size": self.input_size,
            "device": self.device_option,
            "window": WINDOW,
            "stride": STRIDE,
            "keyframes": list(KEYFRAMES),
            "crossfade": BLEND,
        }

    def prepare(self) -> None:
        """Load the model now (the depth step does before its scenes, so a bad checkpoint or a
        missing GPU is an error of the invocation, not of every scene)."""
        self.predictor()

    def predictor(self) -> tuple[ModelWindowPredictor, torch.device]:
        """The model, loaded on first use (once per process)."""
        if self._predictor is None or self._device is None:
            self._device = resolve_device(self.device_option)
            model = load_vda_model(self.checkpoint, self.encoder_option, self._device)
            self._predictor = ModelWindowPredictor(model, self._device, self.batch)
        return self._predictor, self._device

    def predict(self, scene: DepthScene) -> Iterator[np.ndarray]:
        """(H, W) float32 depth in metres for each frame of ``scene``, in order."""
        predictor, device = self.predictor()
        return stream_video_depth(scene.iter_frames(), predictor, self.input_size, device)


def _int_option(value: int | str, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise InputError("not an integer", key=key, expected="an integer", found=value) from err


def make_vda_backend(
    checkpoint: str | os.PathLike[str] | None = None,
    encoder: str | None = None,
    input_size: int | str = DEFAULT_INPUT_SIZE,
    device: str = "auto",
    batch: int | str = WINDOW,
) -> VDADepthBackend:
    """Factory for the depth-backend registry (``trainset focus depth --backend vda``).

    Options may arrive as strings (``--backend-option KEY=VALUE``); ``encoder`` ``auto`` or
    None infers the size from the checkpoint.
    """
    if checkpoint is None:
        raise InputError(
            "backend vda needs --checkpoint PATH (metric_video_depth_anything_vitl.pth)",
            key="checkpoint",
        )
    return VDADepthBackend(
        checkpoint,
        None if encoder in (None, "", "auto") else encoder,
        _int_option(input_size, "input_size"),
        device,
        _int_option(batch, "batch"),
    )
