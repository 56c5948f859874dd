"""Phase 2: sharp frames. Backends, the temporal batch machinery of model backends, the stage.

Output per scene: ``frames_sharp/frame_XXXX.png`` (RGB uint8); logs ``sharpness.csv``
(variance of the Laplacian per frame), ``sharpness_warnings.txt`` (frames far below their
scene's median sharpness) and ``deblur_psnr.csv`` (PSNR of sharp vs raw per scene).

Video model backends see a scene as a video: frames go through the model in overlapping
temporal batches (16 frames, stride 8, overlaps averaged); on CUDA out-of-memory the batch is
halved and retried once, then the scene fails (the runner logs it and goes on). ``genfocus``
(:mod:`trainset.focus.genfocus.backends`, registered on first use) is a per-image model: its
batches are plain batches of frames, nothing is averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from trainset.errors import InputError, TrainsetError
from trainset.focus.backend_registry import BackendRegistry
from trainset.focus.config import DEFAULT_SHARPNESS_RATIO
from trainset.focus.layout import SHARP_DIR, scene_frames
from trainset.pipeline.dataset_files import write_scene_log
from trainset.store.atomic import atomic_write_png
from trainset.store.codecs import encode_csv, read_png

if TYPE_CHECKING:
    import torch

SHARPNESS_LOG = "sharpness.csv"
SHARPNESS_WARNINGS = "sharpness_warnings.txt"
PSNR_LOG = "deblur_psnr.csv"
# The plan's temporal batching: 16-frame batches with stride 8, overlapping predictions averaged.
DEFAULT_BATCH = 16
DEFAULT_STRIDE = 8

T = TypeVar("T")


class SceneFailed(TrainsetError):
    """A scene could not be processed (for example CUDA out of memory twice)."""


def frame_name(t: int) -> str:
    """``frame_XXXX.png`` for frame index ``t``."""
    return f"frame_{t:04d}.png"


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luma (0.299 R + 0.587 G + 0.114 B, 0..255).

    ``rgb``: (H, W, 3) uint8. Border pixels are left out (valid region only).
    """
    img = np.asarray(rgb, dtype=np.float64)
    luma = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    lap = (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * luma[1:-1, 1:-1]
    )
    return float(lap.var())


def psnr_db(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """PSNR in dB of uint8 frames ``test`` against ``reference`` over the whole scene (inf if equal)."""
    total = 0.0
    count = 0
    for ref, out in zip(reference, test):
        diff = ref.astype(np.float64) - out.astype(np.float64)
        total += float(np.square(diff).sum())
        count += diff.size
    mse = total / max(count, 1)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def temporal_windows(n_frames: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` of ``size`` frames every ``stride`` frames covering ``n_frames``.

    The last window ends at ``n_frames`` (shifted back to keep its full size when possible).
    """
    if size < 1 or stride < 1:
        raise InputError(
            "batch size and stride must be positive", expected=">= 1", found=(size, stride)
        )
    if n_frames <= size:
        return [(0, n_frames)] if n_frames > 0 else []
    windows = []
    start = 0
    while start + size < n_frames:
        windows.append((start, start + size))
        start += stride
    windows.append((n_frames - size, n_frames))
    return windows


def run_temporal_batches(
    frames: torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = DEFAULT_BATCH,
    stride: int = DEFAULT_STRIDE,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Run ``model`` over (T, C, H, W) ``frames`` in overlapping windows, averaging overlaps.

    ``model`` maps a (t, C, H, W) window to a (t, C, H, W) prediction. The result is float32
    (T, C, H, W) on the CPU.
    """
    import torch

    total = torch.zeros(frames.shape, dtype=torch.float32)
    hits = torch.zeros((frames.shape[0], 1, 1, 1), dtype=torch.float32)
    with torch.no_grad():
        for start, end in temporal_windows(int(frames.shape[0]), batch_size, stride):
            window = frames[start:end].to(device)
            pred = model(window)
            if tuple(pred.shape) != tuple(window.shape):
                raise SceneFailed(
                    f"model output shape {tuple(pred.shape)} differs from input {tuple(window.shape)}"
                )
            total[start:end] += pred.detach().float().cpu()
            hits[start:end] += 1.0
    return total / hits


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (torch's class, or its message on older builds)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def with_oom_retry(run: Callable[[int], T], batch_size: int) -> T:
    """``run(batch_size)``; on CUDA out-of-memory empty the cache and retry once with half the
    batch; a second out-of-memory raises :class:`SceneFailed`."""
    try:
        return run(batch_size)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        # Keep only the message: the exception's traceback holds frames that hold GPU tensors.
        first = str(exc)
    _empty_cuda_cache()
    half = max(batch_size // 2, 1)
    try:
        return run(half)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        _empty_cuda_cache()
        raise SceneFailed(
            f"CUDA out of memory with batch {batch_size} ({first}) and again with batch {half}"
        ) from exc


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DeblurBackend(Protocol):
    """Turns a scene's raw frames into sharp frames."""

    name: str

    def params(self) -> dict[str, Any]:
        """Everything that shapes the output (goes into the sentinel hash)."""
        ...

    def sharpen(self, frames: Sequence[np.ndarray], *, scene_id: str = "") -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames of scene ``scene_id`` in, as many (H, W, 3) uint8 out."""
        ...


class Passthrough:
    """Frames are already sharp: decode and re-encode as RGB PNG (JPEG inputs become PNG)."""

    name = "passthrough"

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}

    def sharpen(self, frames: Sequence[np.ndarray], *, scene_id: str = "") -> Iterator[np.ndarray]:
        """The frames unchanged."""
        yield from frames


class TorchVideoDeblur:
    """A torch module run over a scene in overlapping temporal batches with OOM retry.

    ``module`` maps (t, 3, H, W) float [0, 1] to the same shape; output is converted with the
    plan's ``(arr * 255).round().clip(0, 255).astype(np.uint8)``.
    """

    def __init__(
        self,
        name: str,
        module: torch.nn.Module,
        *,
        batch_size: int = DEFAULT_BATCH,
        stride: int = DEFAULT_STRIDE,
        device: str = "cpu",
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        if stride > batch_size:
            raise InputError(
                "stride larger than batch leaves frames out",
                key="stride",
                expected=f"<= {batch_size}",
                found=stride,
            )
        self.name = name
        self.module = module.eval().to(device)
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.device = device
        self.extra_params = dict(extra_params or {})

    def params(self) -> dict[str, Any]:
        """Batch size, stride and the backend's own parameters (device does not shape output)."""
        return {"batch_size": self.batch_size, "stride": self.stride, **self.extra_params}

    def sharpen(self, frames: Sequence[np.ndarray], *, scene_id: str = "") -> Iterator[np.ndarray]:
        """Sharpened frames, uint8 RGB."""
        import torch

        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0

        def attempt(batch: int) -> torch.Tensor:
            # Halving the batch keeps half-window overlap (stride scaled alike).
            stride = max(1, self.stride * batch // self.batch_size)
            return run_temporal_batches(
                video, self.module, batch_size=batch, stride=stride, device=self.device
            )

        out = with_oom_retry(attempt, self.batch_size)
        arr = out.permute(0, 2, 3, 1).numpy()
        for frame in arr:
            yield (frame * 255).round().clip(0, 255).astype(np.uint8)


def make_unsharp(
    amount: float | str = 0.5, sigma: float | str = 1.0, device: str = "cpu"
) -> TorchVideoDeblur:
    """Unsharp masking ``x + amount * (x - gaussian(x, sigma))`` as a torch model backend."""
    import torch

    amount_f, sigma_f = float(amount), float(sigma)
    if sigma_f <= 0 or amount_f < 0:
        raise InputError(
            "unsharp needs sigma > 0 and amount >= 0",
            expected="sigma > 0, amount >= 0",
            found=(sigma_f, amount_f),
        )
    radius = max(1, math.ceil(3 * sigma_f))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma_f**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, -1, -1).contiguous()

    class Unsharp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("kernel", kernel)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            padded = torch.nn.functional.pad(frames, (radius,) * 4, mode="replicate")
            blurred = torch.nn.functional.conv2d(padded, self.get_buffer("kernel"), groups=3)
            return (frames + amount_f * (frames - blurred)).clamp(0.0, 1.0)

    return TorchVideoDeblur(
        "unsharp", Unsharp(), device=device, extra_params={"amount": amount_f, "sigma": sigma_f}
    )


DeblurFactory = Callable[..., DeblurBackend]
_REGISTRY: BackendRegistry[DeblurBackend] = BackendRegistry(
    "deblur",
    {"passthrough": Passthrough, "unsharp": make_unsharp},
    lazy={"genfocus": "trainset.focus.genfocus.backends"},
)


def register_deblur_backend(name: str, factory: DeblurFactory) -> None:
    """Make ``make_deblur_backend(name, **options)`` call ``factory(**options)``."""
    _REGISTRY.register(name, factory)


def deblur_backend_names() -> list[str]:
    """Registered deblur backend names."""
    return _REGISTRY.names()


def make_deblur_backend(name: str, **options: Any) -> DeblurBackend:
    """Build deblur backend ``name``; InputError for an unknown name or option."""
    return _REGISTRY.make(name, **options)


def deblur_backend_for(params: Mapping[str, Any]) -> DeblurBackend:
    """The backend named by ``params['backend']`` with ``params['options']``, built once per
    process (a model backend keeps its weights between scenes)."""
    return _REGISTRY.shared(str(params["backend"]), **dict(params.get("options", {})))


def run_deblur_scene(out_root: Path, scene_id: str, params: Mapping[str, Any]) -> dict[str, int]:
    """Stage function: sharp frames and sharpness/PSNR logs for one scene.

    ``params``: ``backend`` (name), ``options`` (backend options), ``sharpness_ratio``.
    """
    backend = deblur_backend_for(params)
    ratio = float(params.get("sharpness_ratio", DEFAULT_SHARPNESS_RATIO))
    raw_paths = scene_frames(out_root, scene_id)
    raw = [read_png(p, mode="RGB") for p in raw_paths]
    sharp = list(backend.sharpen(raw, scene_id=scene_id))
    if len(sharp) != len(raw):
        raise SceneFailed(f"backend {backend.name} returned {len(sharp)} frames for {len(raw)}")
    out_dir = Path(out_root) / scene_id / SHARP_DIR
    scores = []
    for t, (src, frame) in enumerate(zip(raw, sharp)):
        if frame.dtype != np.uint8 or frame.shape != src.shape:
            raise SceneFailed(
                f"backend {backend.name} frame {t}: expected {src.shape} uint8, "
                f"found {frame.shape} {frame.dtype}"
            )
        atomic_write_png(out_dir / frame_name(t), frame)
        scores.append(laplacian_variance(frame))
    for stale in out_dir.glob("frame_*.png"):
        if stale.name not in {frame_name(t) for t in range(len(sharp))}:
            stale.unlink()
    median = float(np.median(scores))
    warnings = [
        f"{scene_id} {frame_name(t)}: sharpness {s:.3f} below {ratio:g} x scene median {median:.3f}\n"
        for t, s in enumerate(scores)
        if s < ratio * median
    ]
    write_scene_log(
        out_root,
        SHARPNESS_LOG,
        scene_id,
        encode_csv(
            ["scene_id", "frame", "sharpness"],
            [[scene_id, frame_name(t), f"{s:.6g}"] for t, s in enumerate(scores)],
        ),
    )
    write_scene_log(out_root, SHARPNESS_WARNINGS, scene_id, "".join(warnings))
    psnr = psnr_db(raw, sharp)
    write_scene_log(
        out_root,
        PSNR_LOG,
        scene_id,
        encode_csv(["scene_id", "frames", "psnr_db"], [[scene_id, len(sharp), f"{psnr:.4f}"]]),
    )
    return {"frames": len(sharp), "sharpness_warnings": len(warnings)}
