"""GenFocus (arXiv 2512.16923): DeblurNet and BokehNet, our implementation on diffusers' FLUX.

Public: :func:`defocus_map` (BokehNet's guidance), :class:`GenFocusModel` (multi-branch FLUX with
condition-only LoRA, Euler flow matching, tiled denoising, VAE encode/decode) and
:func:`from_pretrained` (FLUX.1-dev in diffusers layout plus a LoRA file). The model parts need
the ``genfocus`` extra (diffusers pinned) and import it on first use; see docs/focus-genfocus.md.
"""

from __future__ import annotations

from typing import Any

from trainset.focus.genfocus.defocus import defocus_map

__all__ = ["GenFocusModel", "defocus_map", "from_pretrained"]


def __getattr__(name: str) -> Any:
    if name == "GenFocusModel":
        from trainset.focus.genfocus.model import GenFocusModel

        return GenFocusModel
    if name == "from_pretrained":
        from trainset.focus.genfocus.pretrained import from_pretrained

        return from_pretrained
    raise AttributeError(name)
