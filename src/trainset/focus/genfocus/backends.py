"""Deblur backend and renderer ``genfocus``: DeblurNet and BokehNet as pipeline stages.

Both take their options as strings (``--backend-option`` / ``--renderer-option KEY=VALUE``):
``flux_dir`` (FLUX.1-dev, diffusers layout) and ``lora`` (``deblurNet.safetensors`` /
``bokehNet.safetensors``) are required; ``adapter``, ``steps``, ``guidance``, ``long_side``,
``tiled``, ``device``, ``precision``, ``cache_dir`` (prompt embeddings), ``batch_size``
(deblur) and ``seed`` (render) are optional. Building a backend checks files and the LoRA
against the transformer's config and hashes its parameters from the options alone; the
weights load when the first scene runs, once per process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainset.errors import InputError
from trainset.focus.deblur import SceneFailed, register_deblur_backend, with_oom_retry
from trainset.focus.genfocus.defocus import MAX_BLUR_PX, defocus_from_coc, genfocus_k
from trainset.focus.genfocus.model import PIXELS_PER_TOKEN, GenFocusModel, pack_latents
from trainset.focus.genfocus.pretrained import (
    TEXT_COMPONENTS,
    check_weights,
    from_pretrained,
    prompt_cache_path,
    prompt_embeddings,
)
from trainset.pipeline.progress import Progress
from trainset.pipeline.seeds import name_seed

# Bump when the output of these backends changes for the same inputs and options.
GENFOCUS_VERSION = 1
# Official prompts and guidance (Inference_deblurNet.py, Inference_bokehNet.py; DeblurNet uses
# generate()'s default guidance 3.5), 28 steps, BokehNet's generator seed 1234.
DEBLUR_PROMPT = "a sharp photo with everything in focus"
BOKEH_PROMPT = "an excellent photo with a large aperture"
DEBLUR_GUIDANCE = 3.5
BOKEH_GUIDANCE = 1.0
DEFAULT_STEPS = 28
BOKEH_SEED = 1234
# The plan's batch of 16 frames (Phase 2), halved once on CUDA out-of-memory.
DEFAULT_BATCH = 16
LATENT_CHANNELS = 16
VAE_FACTOR = 8


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/trainset/genfocus`` (default ``~/.cache/trainset/genfocus``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainset" / "genfocus"


def _int(value: object, key: str, low: int) -> int:
    try:
        out = int(str(value))
    except ValueError as exc:
        raise InputError("not an integer", key=key, expected="an integer", found=value) from exc
    if out < low:
        raise InputError("out of range", key=key, expected=f">= {low}", found=out)
    return out


def _float(value: object, key: str) -> float:
    try:
        out = float(str(value))
    except ValueError as exc:
        raise InputError("not a number", key=key, expected="a number", found=value) from exc
    if not math.isfinite(out) or out < 0:
        raise InputError("out of range", key=key, expected="a finite number >= 0", found=out)
    return out


def _choice(value: object, key: str, choices: Sequence[str]) -> str:
    text = str(value)
    if text not in choices:
        raise InputError("unknown value", key=key, expected=" | ".join(choices), found=text)
    return text


@dataclass(frozen=True)
class GenFocusOptions:
    """Checked options of a GenFocus backend (paths absolute)."""

    flux_dir: Path
    lora: Path
    adapter: str
    prompt: str
    steps: int
    guidance: float
    long_side: int
    tiled: str
    device: str
    precision: str
    cache_dir: Path
    batch_size: int
    seed: int | None

    def torch_device(self) -> torch.device:
        """``auto``: CUDA when available, else the CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(self.device)
        except RuntimeError as exc:
            raise InputError("bad device", key="device", found=self.device) from exc
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "CUDA is not available", key="device", expected="auto or cpu", found=self.device
            )
        return resolved

    def resolved_precision(self) -> str:
        """``auto``: bf16 on CUDA (the official runs), fp32 on the CPU."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.torch_device().type == "cuda" else "fp32"

    def torch_dtype(self) -> torch.dtype:
        """The dtype of :meth:`resolved_precision`."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            self.resolved_precision()
        ]

    def tiled_flag(self) -> bool | None:
        """``auto`` -> None (tiles from 512 px on both sides), ``on`` / ``off``."""
        return {"auto": None, "on": True, "off": False}[self.tiled]


def parse_options(
    *,
    adapter_default: str,
    prompt: str,
    guidance_default: float,
    seed_default: int | None,
    flux_dir: str | os.PathLike[str] | None = None,
    lora: str | os.PathLike[str] | None = None,
    adapter: str | None = None,
    steps: object = DEFAULT_STEPS,
    guidance: object = None,
    long_side: object = 0,
    tiled: object = "auto",
    device: object = "auto",
    precision: object = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: object = DEFAULT_BATCH,
    seed: object = None,
) -> GenFocusOptions:
    """Checked :class:`GenFocusOptions` from user options (strings or values)."""
    for key, value in (("flux_dir", flux_dir), ("lora", lora)):
        if value in (None, ""):
            raise InputError(
                f"GenFocus needs the option {key}",
                key=key,
                expected="--backend-option / --renderer-option "
                + (
                    "flux_dir=PATH (FLUX.1-dev, diffusers layout)"
                    if key == "flux_dir"
                    else "lora=PATH.safetensors"
                ),
            )
    return GenFocusOptions(
        flux_dir=Path(str(flux_dir)).expanduser().resolve(),
        lora=Path(str(lora)).expanduser().resolve(),
        adapter=str(adapter or adapter_default),
        prompt=prompt,
        steps=_int(steps, "steps", 1),
        guidance=_float(guidance_default if guidance is None else guidance, "guidance"),
        long_side=_int(long_side, "long_side", 0),
        tiled=_choice(tiled, "tiled", ("auto", "on", "off")),
        device=str(device),
        precision=_choice(precision, "precision", ("auto", "bf16", "fp16", "fp32")),
        cache_dir=Path(str(cache_dir)).expanduser().resolve() if cache_dir else default_cache_dir(),
        batch_size=_int(batch_size, "batch_size", 1),
        seed=seed_default if seed is None else _int(seed, "seed", 0),
    )


def check_ready(options: GenFocusOptions) -> None:
    """InputError unless the weights, the LoRA and the prompt embeddings (cached, or text
    encoders to make them) are there; reads no weights."""
    check_weights(options.flux_dir, options.lora, options.adapter)
    cached = prompt_cache_path(options.flux_dir, options.prompt, options.cache_dir).is_file()
    if not cached:
        for name in TEXT_COMPONENTS:
            if not (options.flux_dir / name).is_dir():
                raise InputError(
                    f"text component '{name}' missing and prompt embeddings not cached",
                    file=options.flux_dir / name,
                    key=name,
                    expected=f"FLUX.1-dev's text encoders or {options.cache_dir}",
                    found="no folder",
                )
    options.torch_device()


def working_size(height: int, width: int, long_side: int = 0) -> tuple[int, int]:
    """(H, W) multiples of 16 the model runs at for a frame of ``height`` x ``width``.

    ``long_side`` 0: each side rounded up to a multiple of 16 (the official scripts); else the
    longer side scaled to ``long_side`` and both sides rounded down to multiples of 16. The
    frame is resized, not cropped, so the output covers all of it.
    """
    if long_side <= 0:
        return (
            math.ceil(height / PIXELS_PER_TOKEN) * PIXELS_PER_TOKEN,
            math.ceil(width / PIXELS_PER_TOKEN) * PIXELS_PER_TOKEN,
        )
    scale = long_side / max(height, width)
    return (
        max(int(height * scale) // PIXELS_PER_TOKEN, 1) * PIXELS_PER_TOKEN,
        max(int(width * scale) // PIXELS_PER_TOKEN, 1) * PIXELS_PER_TOKEN,
    )


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8 with Lanczos (unchanged when equal)."""
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) float -> (height, width) float32, bilinear (unchanged when equal)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.shape == (height, width):
        return arr
    return np.asarray(
        Image.fromarray(arr, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [0, 1] -> B (H, W, 3) uint8 (``(x * 255).round()``, diffusers' way)."""
    arr = images.permute(0, 2, 3, 1).float().cpu().numpy()
    return [(frame * 255).round().clip(0, 255).astype(np.uint8) for frame in arr]


@dataclass
class _Loaded:
    key: tuple[Any, ...]
    model: GenFocusModel
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor


_LOADED: list[_Loaded] = []  # at most one model per process (FLUX.1-dev is 12B parameters)


def loaded_model(options: GenFocusOptions) -> _Loaded:
    """The model and prompt embeddings for ``options``, loaded on first use in this process."""
    device, dtype = options.torch_device(), options.torch_dtype()
    key = (
        str(options.flux_dir),
        str(options.lora),
        options.adapter,
        options.prompt,
        str(device),
        dtype,
    )
    if _LOADED and _LOADED[0].key == key:
        return _LOADED[0]
    _LOADED.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    embeds, pooled = prompt_embeddings(options.flux_dir, options.prompt, options.cache_dir)
    model = from_pretrained(
        options.flux_dir, options.lora, options.adapter, device=device, dtype=dtype
    )
    _LOADED.append(_Loaded(key, model, embeds.to(device, dtype), pooled.to(device, dtype)))
    return _LOADED[0]


def initial_noise(seed: int, height: int, width: int, n: int) -> list[torch.Tensor]:
    """``n`` float32 CPU draws (1, 16, H/8, W/8) from ``torch.Generator().manual_seed(seed)``:
    the initial latents first, then the VAE posterior noise of each condition."""
    gen = torch.Generator().manual_seed(int(seed))
    shape = (1, LATENT_CHANNELS, height // VAE_FACTOR, width // VAE_FACTOR)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def generate(
    options: GenFocusOptions,
    loaded: _Loaded,
    init: torch.Tensor,
    conds: list[torch.Tensor],
    size: tuple[int, int],
) -> list[np.ndarray]:
    """Denoise ``init`` (B, N, 64) under condition tokens, decode: B uint8 images of ``size``
    (the working (H, W))."""
    latents = loaded.model.denoise(
        init,
        conds,
        loaded.prompt_embeds,
        loaded.pooled,
        height=size[0],
        width=size[1],
        steps=options.steps,
        guidance=options.guidance,
        tiled=options.tiled_flag(),
    )
    return to_uint8(loaded.model.decode(latents, *size))


def _common_params(options: GenFocusOptions) -> dict[str, Any]:
    return {
        "version": GENFOCUS_VERSION,
        "flux_dir": str(options.flux_dir),
        "lora": str(options.lora),
        "adapter": options.adapter,
        "prompt": options.prompt,
        "steps": options.steps,
        "guidance": options.guidance,
        "long_side": options.long_side,
        "tiled": options.tiled,
        "precision": options.resolved_precision(),
    }


class GenFocusDeblur:
    """Deblur backend ``genfocus``: GenFocus DeblurNet on every frame.

    Frames run in batches of ``batch_size`` (halved once on CUDA out-of-memory, then the scene
    fails); every frame of a scene starts from the same initial noise and VAE posterior noise,
    seeded from the scene id, so sharpened frames do not flicker. No temporal averaging: the
    model sees one image at a time.
    """

    name = "genfocus"

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(
            adapter_default="deblurring",
            prompt=DEBLUR_PROMPT,
            guidance_default=DEBLUR_GUIDANCE,
            seed_default=None,
            **options,
        )
        if self.options.seed is not None:
            raise InputError(
                "the deblur noise is seeded from the scene id",
                key="seed",
                expected="no seed option",
            )
        check_ready(self.options)

    def params(self) -> dict[str, Any]:
        """Everything that shapes the output (hashed from the options; loads nothing)."""
        return {
            "backend": self.name,
            **_common_params(self.options),
            "noise_seed": "sha256('genfocus-deblur:' + scene_id)",
        }

    def sharpen(self, frames: Sequence[np.ndarray], *, scene_id: str = "") -> Iterator[np.ndarray]:
        """Sharpened (H, W, 3) uint8 frames, one per input frame, in the input's size."""
        if not frames:
            return iter(())
        loaded = loaded_model(self.options)
        model = loaded.model
        height, width = frames[0].shape[:2]
        work_h, work_w = working_size(height, width, self.options.long_side)
        noise, eps = initial_noise(name_seed(f"genfocus-deblur:{scene_id}"), work_h, work_w, 2)
        init = pack_latents(noise).to(model.device, model.dtype)

        def attempt(batch: int) -> list[np.ndarray]:
            out: list[np.ndarray] = []
            with Progress(len(frames), f"genfocus deblur {scene_id}") as bar:
                for start in range(0, len(frames), batch):
                    out.extend(
                        self._sharpen_batch(loaded, frames[start : start + batch], init, eps)
                    )
                    bar.update(min(batch, len(frames) - start))
            return out

        sharp = with_oom_retry(attempt, self.options.batch_size)
        if len(sharp) != len(frames):
            raise SceneFailed(f"genfocus returned {len(sharp)} frames for {len(frames)}")
        return iter(sharp)

    def _sharpen_batch(
        self, loaded: _Loaded, frames: Sequence[np.ndarray], init: torch.Tensor, eps: torch.Tensor
    ) -> list[np.ndarray]:
        """One batch of frames through DeblurNet, back at the frames' size."""
        model = loaded.model
        height, width = frames[0].shape[:2]
        work_h, work_w = working_size(height, width, self.options.long_side)
        chunk = [resize_rgb(f, work_h, work_w) for f in frames]
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
        cond = model.encode_condition(x, eps.expand(len(chunk), -1, -1, -1))
        batch_init = init.expand(len(chunk), -1, -1)
        images = generate(self.options, loaded, batch_init, [cond], (work_h, work_w))
        return [resize_rgb(img, height, width) for img in images]


class GenFocusRenderer:
    """Renderer ``genfocus``: GenFocus BokehNet guided by the defocus map of a CoC map.

    ``render(image, coc_px_signed)`` takes the CoC *diameter* in pixels at the frame's
    resolution (as ``layered``); BokehNet's map is ``clip(|c| / 2 * W_work / W / 100, 0, 1)``
    at the working size (its K is a blur radius in pixels there).
    """

    name = "genfocus"
    # Bumped when the output for the same parameters changes (renderer_record).
    version = 1

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(
            adapter_default="bokeh",
            prompt=BOKEH_PROMPT,
            guidance_default=BOKEH_GUIDANCE,
            seed_default=BOKEH_SEED,
            **options,
        )
        check_ready(self.options)

    def params(self) -> dict[str, Any]:
        """Everything that shapes the output (hashed from the options; loads nothing)."""
        return {
            "renderer": self.name,
            **_common_params(self.options),
            "seed": self.options.seed,
            "defocus_map": f"clip(|CoC diameter px| / 2 * W_work / W / {MAX_BLUR_PX:g}, 0, 1)",
        }

    def set_record(self, frame_shape: tuple[int, int], k_diam_px: float) -> dict[str, Any]:
        """What ``metadata.json`` records for one lens set: GenFocus's K (radius px per 1/m at
        the working size) and the working size (H, W)."""
        work_h, work_w = working_size(*frame_shape, self.options.long_side)
        return {
            "genfocus_K": genfocus_k(k_diam_px, work_w / frame_shape[1]),
            "working_size": [work_h, work_w],
        }

    def defocus_condition(self, coc_px_signed: np.ndarray, work_h: int, work_w: int) -> np.ndarray:
        """BokehNet's defocus map (work_h, work_w) float32 in [0, 1] for a frame's CoC map."""
        scale = work_w / coc_px_signed.shape[1]
        return defocus_from_coc(resize_map(coc_px_signed, work_h, work_w), scale)

    def render(self, image: np.ndarray, coc_px_signed: np.ndarray) -> np.ndarray:
        """Render defocus: image (H, W, 3) uint8, signed CoC diameter (H, W) px -> (H, W, 3) uint8."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(
                "renderer input image",
                expected="(H, W, 3) uint8",
                found=f"{image.shape} {image.dtype}",
            )
        if coc_px_signed.shape != image.shape[:2] or not np.all(np.isfinite(coc_px_signed)):
            raise InputError(
                "CoC map", expected=f"finite (H, W) = {image.shape[:2]}", found=coc_px_signed.shape
            )
        loaded = loaded_model(self.options)
        model = loaded.model
        height, width = image.shape[:2]
        work_h, work_w = working_size(height, width, self.options.long_side)
        seed = BOKEH_SEED if self.options.seed is None else self.options.seed
        noise, eps_image, eps_map = initial_noise(seed, work_h, work_w, 3)
        rgb = torch.from_numpy(np.array(resize_rgb(image, work_h, work_w))).permute(2, 0, 1)[None]
        defocus = torch.from_numpy(self.defocus_condition(coc_px_signed, work_h, work_w))
        conds = [
            model.encode_condition(rgb.float() / 255.0 * 2 - 1, eps_image),
            model.encode_condition(defocus[None, None].expand(1, 3, -1, -1), eps_map),
        ]
        init = pack_latents(noise).to(model.device, model.dtype)
        (out,) = generate(self.options, loaded, init, conds, (work_h, work_w))
        return resize_rgb(out, height, width)


def option_names() -> list[str]:
    """Names of the options the GenFocus backends take."""
    return [f.name for f in fields(GenFocusOptions) if f.name != "prompt"]


register_deblur_backend("genfocus", GenFocusDeblur)
