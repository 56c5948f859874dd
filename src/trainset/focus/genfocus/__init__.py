"""GenFocus (arXiv 2512.16923): DeblurNet and BokehNet, our implementation on diffusers' FLUX.

Public: :func:`defocus_map` (BokehNet's guidance), :class:`GenFocusModel` (multi-branch FLUX with
condition-only LoRA, Euler flow matching, tiled denoising, VAE encode/decode) and
:func:`from_pretrained` (FLUX.1-dev in diffusers layout plus a LoRA file). Needs the
``genfocus`` extra (diffusers pinned); see docs/focus-genfocus.md.
"""

from trainset.focus.genfocus.defocus import defocus_map
from trainset.focus.genfocus.model import GenFocusModel
from trainset.focus.genfocus.pretrained import from_pretrained

__all__ = ["GenFocusModel", "defocus_map", "from_pretrained"]
