"""Load official Video-Depth-Anything metric checkpoints (``.pth``) into our model, strictly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from trainset.errors import InputError
from trainset.focus.vda.model import ENCODERS, VideoDepthAnything

SHOWN_KEYS = 3  # differing keys named in an error message, per kind


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` file, read with torch's weights-only loader (no arbitrary pickle)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(
            "checkpoint not found; download metric_video_depth_anything_{vits,vitb,vitl}.pth "
            "from the Video-Depth-Anything release and pass it with --checkpoint",
            file=file,
        )
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"cannot read checkpoint: {type(err).__name__}: {str(err).splitlines()[0]}",
            file=file,
            expected="a torch .pth state dict",
        ) from err
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InputError(
            "checkpoint is not a flat state dict of tensors",
            file=file,
            expected="dict[str, Tensor]",
            found=type(loaded).__name__,
        )
    return {str(k): v for k, v in loaded.items()}


def infer_encoder(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> str:
    """Model size from the backbone width (``pretrained.pos_embed`` last dimension)."""
    key = "pretrained.pos_embed"
    if key not in state:
        raise InputError(
            "not a Video-Depth-Anything checkpoint (cannot infer the encoder)",
            file=path,
            key=key,
            expected="present",
            found="missing",
        )
    width = int(state[key].shape[-1])
    for name, cfg in ENCODERS.items():
        if cfg.embed_dim == width:
            return name
    raise InputError(
        "unknown backbone width",
        file=path,
        key=key,
        expected=sorted(c.embed_dim for c in ENCODERS.values()),
        found=width,
    )


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{shown}{more}"


def check_state_dict(
    state: Mapping[str, torch.Tensor], model: VideoDepthAnything, path: str | os.PathLike[str]
) -> None:
    """Raise InputError naming the file and the first missing, extra and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or extra or shapes):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s): {_first(extra)}")
    if shapes:
        detail = "; ".join(
            f"{k} expected {list(expected[k].shape)} found {list(state[k].shape)}"
            for k in shapes[:SHOWN_KEYS]
        )
        more = f" and {len(shapes) - SHOWN_KEYS} more" if len(shapes) > SHOWN_KEYS else ""
        problems.append(f"{len(shapes)} shape mismatch(es): {detail}{more}")
    first = (missing or extra or shapes)[0]
    raise InputError(
        f"checkpoint does not match Video-Depth-Anything {model.config.name}: "
        + "; ".join(problems),
        file=path,
        key=first,
    )


def load_vda_model(
    path: str | os.PathLike[str], encoder: str | None = None, device: str | torch.device = "cpu"
) -> VideoDepthAnything:
    """Build the model for ``encoder`` (inferred from the file when None) and load ``path``.

    Loading is ``load_state_dict(strict=True)``; floating tensors are kept as float32 on
    ``device``. Returns the model in eval mode.
    """
    state = read_state_dict(path)
    if encoder is not None and encoder not in ENCODERS:
        raise InputError("unknown encoder", key="encoder", expected=sorted(ENCODERS), found=encoder)
    if encoder is None or "pretrained.pos_embed" in state:
        found = infer_encoder(state, path)
        if encoder is not None and found != encoder:
            raise InputError(
                "checkpoint is for a different encoder",
                file=path,
                key="pretrained.pos_embed",
                expected=encoder,
                found=found,
            )
        encoder = found
    with torch.device("meta"):
        model = VideoDepthAnything(encoder)
    check_state_dict(state, model, path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()
