"""The optional dependencies of GenFocus, imported lazily with an install hint."""

from __future__ import annotations

import importlib.util

# The diffusers release this implementation is tested with: it reuses FLUX internals
# (block modules, RoPE, AdaLN) whose code changes between releases.
DIFFUSERS_VERSION = "0.42.1"
INSTALL_HINT = "pip install 'trainset[genfocus]'"


def require_diffusers() -> str:
    """The installed diffusers version; ImportError with the install hint when missing or when
    it is not the tested release."""
    if importlib.util.find_spec("diffusers") is None:
        raise ImportError(f"GenFocus needs diffusers=={DIFFUSERS_VERSION}: {INSTALL_HINT}")
    import diffusers

    if diffusers.__version__ != DIFFUSERS_VERSION:
        raise ImportError(
            f"GenFocus is tested with diffusers=={DIFFUSERS_VERSION}, found "
            f"{diffusers.__version__}: {INSTALL_HINT}"
        )
    return str(diffusers.__version__)
