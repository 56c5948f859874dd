"""GenFocus LoRA files: peft file format, checked against the FLUX transformer they adapt.

Keys: ``transformer.<module>.lora_A.weight`` (r, in_features) and
``transformer.<module>.lora_B.weight`` (out_features, r), as diffusers' ``save_lora_weights``
writes them; the in-memory peft spelling ``...lora_A.<adapter>.weight`` is accepted when its
adapter name is the one asked for. A module GenFocus switches per branch
(:data:`SWITCHED_MODULES`) gets its delta ``B @ A`` on condition branches only, with scale
exactly 1; a module outside that set gets it on every branch with peft's usual scale
``lora_alpha / r`` (alpha from the file's ``lora_adapter_metadata``, else diffusers' default: the
most common rank).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainset.errors import InputError

# Modules the official GenFocus code switches per branch (Genfocus/pipeline/flux.py): LoRA on
# condition branches only. Patterns relative to the transformer.
SWITCHED_MODULES = (
    re.compile(r"x_embedder"),
    re.compile(
        r"transformer_blocks\.\d+\.(norm1\.linear|attn\.to_[qkv]|attn\.to_out\.0|ff\.net\.2)"
    ),
    re.compile(r"single_transformer_blocks\.\d+\.(norm\.linear|proj_mlp|proj_out|attn\.to_[qkv])"),
)
# Adapter names of the official scripts (load_lora_weights(..., adapter_name=...)).
ADAPTERS = ("deblurring", "bokeh")

_KEY = re.compile(
    r"^transformer\.(?P<module>.+)\.lora_(?P<part>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$"
)


def is_switched(module_name: str) -> bool:
    """Whether GenFocus applies this module's LoRA to condition branches only."""
    return any(p.fullmatch(module_name) for p in SWITCHED_MODULES)


@dataclass(frozen=True)
class LoraWeights:
    """One module's low-rank delta ``scale * B @ A``: A (r, in), B (out, r)."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float


def check_adapter(adapter: str, *, file: object = None) -> str:
    """``adapter`` if it is an official GenFocus adapter name, else InputError."""
    if adapter not in ADAPTERS:
        raise InputError(
            "unknown GenFocus adapter name",
            file=file,
            key="adapter",
            expected=ADAPTERS,
            found=adapter,
        )
    return adapter


def _read(path: str | os.PathLike[str], tensors: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors (or with ``tensors=False`` their shapes) and metadata of a ``.safetensors`` file;
    InputError when it is missing or unreadable."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise InputError("LoRA file not found", file=file, expected="a .safetensors file")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys())
            if tensors:
                return {key: handle.get_tensor(key) for key in keys}, metadata
            return {key: tuple(handle.get_slice(key).get_shape()) for key in keys}, metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"unreadable LoRA file: {exc}", file=file) from exc


def read_lora_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` LoRA file; InputError when missing or unreadable."""
    return _read(path, tensors=True)


def lora_shapes(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Shapes and metadata of a ``.safetensors`` LoRA file without reading its tensors."""
    return _read(path, tensors=False)


def _alphas(
    metadata: Mapping[str, str], ranks: Mapping[str, int], file: object
) -> dict[str, float]:
    """``lora_alpha`` per module: the file's peft config when present, else diffusers' default
    (alpha = the most common rank for every module)."""
    common = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    raw = metadata.get("lora_adapter_metadata")
    if raw is None:
        return {module: float(common) for module in ranks}
    try:
        config = json.loads(raw)
        alpha = float(config.get("lora_alpha", config.get("r", common)))
        pattern = {str(k): float(v) for k, v in (config.get("alpha_pattern") or {}).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(
            "unreadable lora_adapter_metadata", file=file, key="lora_adapter_metadata", found=raw
        ) from exc
    out = {}
    for module in ranks:
        matches = [v for k, v in pattern.items() if module == k or module.endswith("." + k)]
        out[module] = matches[0] if matches else alpha
    return out


def parse_lora(
    shapes: Mapping[str, tuple[int, ...]],
    adapter: str,
    linear_shapes: Mapping[str, tuple[int, int]],
    *,
    file: object = None,
) -> dict[str, tuple[int, int, int]]:
    """Check LoRA keys and shapes against a transformer; ``{module: (rank, in, out)}``.

    ``shapes``: key -> tensor shape of the file; ``linear_shapes``: module name -> (in, out) of
    every ``nn.Linear`` of the transformer. InputError names the file and the first bad key: a
    key not in peft format, another adapter's key, a module the transformer lacks, or a shape of
    another base model.
    """
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in sorted(shapes.items()):
        match = _KEY.match(key)
        if match is None:
            raise InputError(
                "not a peft-format FLUX transformer LoRA key",
                file=file,
                key=key,
                expected="transformer.<module>.lora_A.weight / lora_B.weight",
                found=key,
            )
        named = match.group("adapter")
        if named is not None and named != adapter:
            raise InputError(
                "LoRA key of another adapter", file=file, key=key, expected=adapter, found=named
            )
        module = match.group("module")
        if module not in linear_shapes:
            raise InputError(
                "LoRA for another base model: the transformer has no such linear layer",
                file=file,
                key=key,
                expected="a module of FluxTransformer2DModel",
                found=module,
            )
        parts.setdefault(module, {})[match.group("part")] = shape
    if not parts:
        raise InputError("LoRA file holds no weights", file=file, expected="lora_A/lora_B keys")
    out = {}
    for module, pair in parts.items():
        in_f, out_f = linear_shapes[module]
        down, up = pair.get("A"), pair.get("B")
        if down is None or up is None:
            missing = "lora_B" if up is None else "lora_A"
            raise InputError(
                f"LoRA pair incomplete: {missing} missing",
                file=file,
                key=f"transformer.{module}.{missing}.weight",
            )
        rank = down[0] if len(down) == 2 else -1
        if len(down) != 2 or down[1] != in_f:
            raise InputError(
                "LoRA for another base model: lora_A shape",
                file=file,
                key=f"transformer.{module}.lora_A.weight",
                expected=f"(r, {in_f})",
                found=down,
            )
        if len(up) != 2 or up != (out_f, rank):
            raise InputError(
                "LoRA for another base model: lora_B shape",
                file=file,
                key=f"transformer.{module}.lora_B.weight",
                expected=(out_f, rank),
                found=up,
            )
        out[module] = (rank, in_f, out_f)
    return out


def linear_shapes(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (in_features, out_features)}`` of every ``nn.Linear`` in ``module``."""
    return {
        name: (sub.in_features, sub.out_features)
        for name, sub in module.named_modules()
        if isinstance(sub, torch.nn.Linear)
    }


def load_lora(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    adapter: str,
    transformer: torch.nn.Module,
    *,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, LoraWeights]:
    """Checked LoRA weights of ``source`` (a file or a state dict) for ``transformer``."""
    file: object = None
    if isinstance(source, Mapping):
        tensors = dict(source)
        meta = dict(metadata or {})
    else:
        file = Path(source)
        tensors, meta = read_lora_file(file)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    modules = parse_lora(shapes, adapter, linear_shapes(transformer), file=file)
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise InputError(
                "LoRA weight is not floating point", file=file, key=key, found=tensor.dtype
            )
        if not bool(torch.isfinite(tensor).all()):
            raise InputError("LoRA weight has NaN or Inf", file=file, key=key, found="non-finite")
    alphas = _alphas(meta, {m: r for m, (r, _, _) in modules.items()}, file)
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is not None:  # every key matches: parse_lora checked them
            by_module.setdefault(match.group("module"), {})[match.group("part")] = tensor
    return {
        module: LoraWeights(
            pair["A"],
            pair["B"],
            1.0 if is_switched(module) else alphas[module] / modules[module][0],
        )
        for module, pair in by_module.items()
    }
