"""Loading GenFocus for real use: FLUX.1-dev in diffusers layout, a LoRA file, cached prompts.

``flux_dir`` is a local copy of ``black-forest-labs/FLUX.1-dev`` (``transformer/``, ``vae/``,
``scheduler/``; ``text_encoder*/`` and ``tokenizer*/`` only until the prompt embeddings are
cached). Nothing is downloaded. :func:`check_weights` checks files and the LoRA against the
transformer's config without reading weights (the transformer is built on the meta device).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from trainset.errors import InputError
from trainset.focus.genfocus.deps import require_diffusers
from trainset.focus.genfocus.lora import check_adapter, linear_shapes, lora_shapes, parse_lora
from trainset.focus.genfocus.model import GenFocusModel
from trainset.store import atomic_path, sha256_bytes

require_diffusers()

from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
)

# The components GenFocus loads and the file each needs (diffusers layout).
COMPONENTS = {
    "transformer": "config.json",
    "vae": "config.json",
    "scheduler": "scheduler_config.json",
}
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# FLUX.1-dev's T5 prompt length (FluxPipeline default, used by the official scripts).
MAX_SEQUENCE_LENGTH = 512
PROMPT_CACHE_FORMAT = "trainset.genfocus.prompt/1"


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of one diffusers component (single file or sharded with an index)."""
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    index = folder / f"{WEIGHTS_NAME}.index.json"
    if not index.is_file():
        raise InputError(
            "weights not found",
            file=folder,
            key=WEIGHTS_NAME,
            expected=f"{WEIGHTS_NAME} or {WEIGHTS_NAME}.index.json (diffusers layout)",
            found="neither",
        )
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError("unreadable weight index", file=index, key="weight_map") from exc
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise InputError(
            "weight shard missing", file=folder / missing[0], key="weight_map", found="no file"
        )
    return [folder / s for s in shards]


def check_weights(
    flux_dir: str | os.PathLike[str], lora: str | os.PathLike[str], adapter: str
) -> None:
    """InputError naming file and key when a component or weight file is missing, or when the
    LoRA is for another base model or adapter. Reads configs and the LoRA header only."""
    root = Path(flux_dir)
    if not root.is_dir():
        raise InputError(
            "FLUX model folder not found", file=root, expected="FLUX.1-dev in diffusers layout"
        )
    for name, config in COMPONENTS.items():
        if not (root / name / config).is_file():
            raise InputError(
                f"FLUX component '{name}' missing",
                file=root / name / config,
                key=name,
                found="no file",
            )
    for name in ("transformer", "vae"):
        _weight_files(root / name)
    check_adapter(adapter, file=lora)
    shapes, _ = lora_shapes(lora)
    with torch.device("meta"):
        skeleton = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(root / "transformer")
        )
    parse_lora(shapes, adapter, linear_shapes(skeleton), file=Path(lora))


def from_pretrained(
    flux_dir: str | os.PathLike[str],
    lora_path: str | os.PathLike[str],
    adapter: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> GenFocusModel:
    """FLUX transformer, VAE and scheduler from ``flux_dir`` with the LoRA ``lora_path`` loaded
    as ``adapter`` ("deblurring" or "bokeh"), on ``device`` in ``dtype``."""
    check_weights(flux_dir, lora_path, adapter)
    root = Path(flux_dir)
    transformer = FluxTransformer2DModel.from_pretrained(root / "transformer", dtype=dtype)
    vae = AutoencoderKL.from_pretrained(root / "vae", dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler")
    model = GenFocusModel(transformer.to(device), vae.to(device), scheduler)
    model.load_lora(lora_path, adapter)
    return model


def prompt_cache_path(flux_dir: str | os.PathLike[str], prompt: str, cache_dir: Path) -> Path:
    """Where the embeddings of ``prompt`` by the text encoders of ``flux_dir`` are cached."""
    key = json.dumps(
        {
            "flux_dir": str(Path(flux_dir).resolve()),
            "prompt": prompt,
            "max_len": MAX_SEQUENCE_LENGTH,
        },
        sort_keys=True,
    )
    return cache_dir / f"prompt-{sha256_bytes(key.encode('utf-8'))[:24]}.safetensors"


def read_prompt_cache(path: Path, prompt: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Cached (prompt_embeds (1, T, 4096), pooled (1, 768)), or None when absent or for
    another prompt; InputError when the file is corrupt."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != PROMPT_CACHE_FORMAT or meta.get("prompt") != prompt:
                return None
            return handle.get_tensor("prompt_embeds"), handle.get_tensor("pooled_prompt_embeds")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"unreadable prompt cache (delete it): {exc}", file=path) from exc


def write_prompt_cache(path: Path, prompt: str, embeds: torch.Tensor, pooled: torch.Tensor) -> None:
    """Write the cache atomically (float32 on the CPU)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "prompt_embeds": embeds.detach().float().cpu().contiguous(),
        "pooled_prompt_embeds": pooled.detach().float().cpu().contiguous(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": PROMPT_CACHE_FORMAT, "prompt": prompt})


def prompt_embeddings(
    flux_dir: str | os.PathLike[str],
    prompt: str,
    cache_dir: str | os.PathLike[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (1, T, 4096), pooled (1, 768)) float32 on the CPU for ``prompt``.

    Read from ``cache_dir`` when cached; else FLUX's CLIP and T5 encoders in ``flux_dir`` run
    once (fp32 on the CPU; needs ``transformers``) and the result is cached.
    """
    path = prompt_cache_path(flux_dir, prompt, Path(cache_dir))
    cached = read_prompt_cache(path, prompt)
    if cached is not None:
        return cached
    root = Path(flux_dir)
    for name in TEXT_COMPONENTS:
        if not (root / name).is_dir():
            raise InputError(
                f"prompt embeddings not cached and text component '{name}' missing",
                file=root / name,
                key=name,
                expected=f"{path} or FLUX.1-dev's text encoders",
                found="no folder",
            )
    try:
        from diffusers import FluxPipeline
    except ImportError as exc:  # the pipeline module imports transformers
        raise InputError(
            f"encoding the prompt needs transformers ({exc}): pip install 'trainset[genfocus]'",
            key="transformers",
        ) from exc
    pipe = FluxPipeline.from_pretrained(root, transformer=None, vae=None, dtype=torch.float32)
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device="cpu", max_sequence_length=MAX_SEQUENCE_LENGTH
        )
    del pipe
    write_prompt_cache(path, prompt, embeds, pooled)
    return embeds.float(), pooled.float()
