"""Fixtures of the GenFocus tests: one torch thread (small models on a shared 2-core machine
run several times faster), and the tests skip when the genfocus extra is not installed."""

from __future__ import annotations

import pytest

from tests.focus.torch_threads import _one_torch_thread  # noqa: F401  (a fixture)

pytest.importorskip("diffusers", reason="GenFocus needs the genfocus extra (diffusers)")
