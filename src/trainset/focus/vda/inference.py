"""Video inference with the official Video-Depth-Anything semantics, streaming.

Windows of 32 frames start every 22 frames. In every window after the first, the first 10 inputs
are replaced by the previous window's inputs at the keyframe slots (0, 12, 24..31); the outputs of
slots 2..9 are cross-faded linearly with the previous window's outputs of the same frames (slots
24..31), slots 10..31 are new. Metric output: no scale/shift alignment between windows. The tail is
padded by repeating the last frame. Frames stream through: memory holds two windows of model
inputs and eight pending depth maps, never the whole video.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainset.errors import InputError
from trainset.focus.deblur import with_oom_retry
from trainset.focus.vda.dinov2 import PATCH_SIZE
from trainset.focus.vda.model import VideoDepthAnything

WINDOW = 32  # frames per model call (official INFER_LEN)
OVERLAP = 10  # leading slots of a later window taken from the previous window (OVERLAP)
STRIDE = WINDOW - OVERLAP  # 22: first new frame of consecutive windows
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)  # previous-window slots copied into slots 0..9
BLEND = 8  # overlapping output frames cross-faded (INTERP_LEN)
SKIP = OVERLAP - BLEND  # 2: slots 0, 1 of a later window are context only, their output is dropped
MAX_ASPECT = 1.78  # above this aspect ratio the input size shrinks (official memory rule)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WindowPredictor = Callable[[torch.Tensor], torch.Tensor]
"""(1, 32, 3, h, w) normalised inputs -> (32, h, w) float32 depth in metres."""


def effective_input_size(height: int, width: int, input_size: int) -> int:
    """Input size after the official aspect rule: shrink to int(size*1.777/aspect) above 1.78."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT:
        input_size = int(input_size * 1.777 / ratio)
        input_size = round(input_size / PATCH_SIZE) * PATCH_SIZE
    return input_size


def _multiple_at_least(value: float, minimum: int) -> int:
    rounded = int(np.round(value / PATCH_SIZE) * PATCH_SIZE)
    if rounded < minimum:
        rounded = int(math.ceil(value / PATCH_SIZE) * PATCH_SIZE)
    return rounded


def model_input_shape(height: int, width: int, input_size: int) -> tuple[int, int]:
    """(h, w) the model sees: short side scaled to ``input_size``, aspect kept, multiples of 14.

    Follows the official resize ("lower bound", rounded to a multiple of 14, never below the size).
    """
    size = effective_input_size(height, width, input_size)
    scale = max(size / height, size / width)
    return _multiple_at_least(scale * height, size), _multiple_at_least(scale * width, size)


def window_starts(n_frames: int) -> list[int]:
    """First frame of every window: 0, 22, 44, ... below ``n_frames``."""
    return list(range(0, n_frames, STRIDE))


def window_inputs(n_frames: int) -> list[list[int]]:
    """Input frame index of every slot of every window (tail padding repeats the last frame).

    Slot 0 is always frame 0, slot 1 of window k >= 1 is frame 22k - 10, slots 2..31 are
    frames 22k + 2 .. 22k + 31.
    """
    last = n_frames - 1
    windows = []
    for k, start in enumerate(window_starts(n_frames)):
        slots = [min(start + i, last) for i in range(WINDOW)]
        if k > 0:
            slots[0] = 0
            slots[1] = min(start - STRIDE + KEYFRAMES[1], last)
        windows.append(slots)
    return windows


def blend_weights() -> list[float]:
    """Weight of the newer window for each of the 8 cross-faded frames: 0, 1/7, ..., 1."""
    return [i / (BLEND - 1) for i in range(BLEND)]


def output_sources(n_frames: int) -> list[list[tuple[int, int, float]]]:
    """For every output frame: the (window, slot, weight) terms whose sum is its depth."""
    weights = blend_weights()
    sources: list[list[tuple[int, int, float]]] = [[] for _ in range(n_frames)]
    starts = window_starts(n_frames)
    for k, start in enumerate(starts):
        first_new = 0 if k == 0 else OVERLAP
        for slot in range(first_new, WINDOW):
            frame = start + slot
            if frame >= n_frames:
                break
            sources[frame] = [(k, slot, 1.0)]
        if k > 0:
            for i in range(BLEND):
                frame = start + SKIP + i
                if frame >= n_frames:
                    break
                prev = sources[frame][0]
                sources[frame] = [(prev[0], prev[1], 1.0 - weights[i]), (k, SKIP + i, weights[i])]
    return sources


def preprocess_frame(
    frame: np.ndarray, shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, h, w) float32: /255, bicubic resize, ImageNet normalisation."""
    x = torch.from_numpy(np.require(frame, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])).to(device)
    x = x.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    x = F.interpolate(x, size=shape, mode="bicubic", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std)[0]


class ModelWindowPredictor:
    """Runs one window through the model: fp32 on CPU, fp16 autocast on CUDA.

    ``batch`` frames go through the backbone at a time. On CUDA out-of-memory the batch is halved
    and the window retried once (:func:`trainset.focus.deblur.with_oom_retry`, later windows keep
    the smaller batch); a second out-of-memory raises ``SceneFailed``.
    """

    def __init__(self, model: VideoDepthAnything, device: torch.device, batch: int = WINDOW):
        self.model = model
        self.device = device
        self.batch = batch

    def _run(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type="cuda", dtype=torch.float16, enabled=self.device.type == "cuda"
            ),
        ):
            depth = self.model(x, backbone_chunk=batch)
        self.batch = batch
        return depth[0].float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return with_oom_retry(lambda batch: self._run(x, batch), self.batch)


def _check_frame(frame: np.ndarray, index: int, shape: tuple[int, ...] | None) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(
            f"frame {index} is not an RGB uint8 image",
            expected="(H, W, 3) uint8",
            found=f"{frame.shape} {frame.dtype}",
        )
    if shape is not None and frame.shape != shape:
        raise InputError(
            f"frame {index} differs in size from frame 0", expected=shape, found=frame.shape
        )


class _FrameFeed:
    """Preprocessed frames one at a time; after the last real frame it repeats that frame."""

    def __init__(self, frames: Iterable[np.ndarray], input_size: int, device: torch.device):
        self.source = iter(frames)
        self.device = device
        self.read = 0
        self.last: torch.Tensor | None = None
        first = next(self.source, None)
        self.frame_shape: tuple[int, ...] = () if first is None else first.shape
        if first is not None:
            _check_frame(first, 0, None)
            self.shape = model_input_shape(first.shape[0], first.shape[1], input_size)
            self._take(first)

    def _take(self, frame: np.ndarray) -> None:
        self.read += 1
        self.last = preprocess_frame(frame, self.shape, self.device)

    def next(self) -> torch.Tensor:
        """The next preprocessed frame (3, h, w), or the last one again after the end."""
        frame = next(self.source, None)
        if frame is not None:
            _check_frame(frame, self.read, self.frame_shape)
            self._take(frame)
        assert self.last is not None
        return self.last


def stream_video_depth(
    frames: Iterable[np.ndarray],
    predict: WindowPredictor,
    input_size: int,
    device: torch.device,
) -> Iterator[np.ndarray]:
    """Depth (H, W) float32 metres for each (H, W, 3) uint8 frame, in order, streaming.

    ``predict`` maps one window (1, 32, 3, h, w) to (32, h, w); outputs are resized back to
    (H, W) bilinearly (aligned corners) after the cross-fade (both are linear, so the order
    does not change the result).
    """
    feed = _FrameFeed(frames, input_size, device)
    if feed.last is None:
        return
    height, width = feed.frame_shape[:2]
    weights = torch.tensor(blend_weights(), device=device).view(BLEND, 1, 1)

    def to_frames(depth: torch.Tensor, count: int) -> Iterator[np.ndarray]:
        if count <= 0:
            return
        full = F.interpolate(
            depth[:count].unsqueeze(1), (height, width), mode="bilinear", align_corners=True
        )
        for plane in full[:, 0].cpu().numpy():
            yield np.ascontiguousarray(plane, dtype=np.float32)

    current = torch.stack([feed.last] + [feed.next() for _ in range(WINDOW - 1)])
    start, emitted = 0, 0
    pending: torch.Tensor | None = None
    while True:
        depth = predict(current.unsqueeze(0)).float()
        known = feed.read  # real frames read so far (>= frames needed unless at the end)
        if pending is None:
            ready = depth[: WINDOW - BLEND]
        else:
            blended = pending * (1.0 - weights) + depth[SKIP:OVERLAP] * weights
            ready = torch.cat([blended, depth[OVERLAP : WINDOW - BLEND]])
        pending = depth[WINDOW - BLEND :]
        for plane in to_frames(ready, min(len(ready), known - emitted)):
            emitted += 1
            yield plane
        if known <= start + STRIDE:
            break
        start += STRIDE
        fresh = [feed.next() for _ in range(WINDOW - OVERLAP)]
        current = torch.cat([current[list(KEYFRAMES)], torch.stack(fresh)])
    yield from to_frames(pending, feed.read - emitted)
