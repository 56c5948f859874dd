"""Fixtures of the GenFocus tests: one torch thread (small models on a shared 2-core machine
run several times faster), and the tests skip when the genfocus extra is not installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("diffusers", reason="GenFocus needs the genfocus extra (diffusers)")


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
